"""Scalar quantizers besides k-means: uniform, entropy-constrained (ECSQ), linear fixed point.

Choi et al. 2016 (arXiv:1612.01543, section 5) show that, followed by Huffman coding, uniform
quantization and ECSQ beat k-means: they aim at the *entropy* of the cluster indices (what
Huffman coding spends), not only at the number of clusters. Optional per-weight importances
(a Hessian diagonal) weight the distortion, as in their Hessian-weighted variants.
"""

from __future__ import annotations

import numpy as np

from keras_compress.sharing.kmeans1d import Clustering, validated


def uniform_quantize(x: np.ndarray, k: int, sample_weight: np.ndarray | None = None) -> Clustering:
    """Uniform quantization: ``k`` equal-width bins over ``[min, max]``, each bin's (weighted) mean.

    Choi et al. section 5.1: evenly spaced thresholds, each cluster represented by the mean (or
    Hessian-weighted mean) of its members rather than the bin centre. Empty bins are dropped,
    so at most ``k`` centroids come back.

    Example:
        >>> q = uniform_quantize(np.array([0.0, 0.2, 0.9, 1.0]), 2)
        >>> q.centroids.round(6).tolist(), q.labels.tolist()
        ([0.1, 0.95], [0, 0, 1, 1])
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"number of levels must be an integer >= 1, got {k!r}")
    flat, w = validated(x, sample_weight)
    flat = flat.astype(np.float64)
    edges = np.linspace(flat.min(), flat.max(), k + 1)[1:-1]
    bins = np.searchsorted(edges, flat, side="right")  # bin j: edges[j-1] <= x < edges[j]
    n = np.bincount(bins, minlength=k)
    used = np.flatnonzero(n > 0)  # drop empty bins
    sw = n if w is None else np.bincount(bins, w, k)
    swx = np.bincount(bins, flat if w is None else w * flat, k)
    # A bin whose members all have zero importance takes its plain mean.
    plain_mean = np.bincount(bins, flat, k)[used] / n[used]
    centroids = np.where(sw[used] > 0, swx[used] / np.where(sw[used] > 0, sw[used], 1), plain_mean)
    labels = np.searchsorted(used, bins)
    err = (flat - centroids[labels]) ** 2
    inertia = float(np.sum(err if w is None else w * err))
    return Clustering(centroids, labels.reshape(np.shape(x)), inertia)


def ecsq(
    x: np.ndarray,
    k: int,
    lam: float,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 100,
    chunk: int = 1 << 16,
    tol: float = 1e-4,
) -> Clustering:
    """Entropy-constrained scalar quantization by Chou, Lookabaugh & Gray's iteration.

    Choi et al. section 5.2: start from ``k`` uniform levels; repeat (1) assign each value to
    the cluster minimising ``h_i * (x_i - c_j)^2 + lam * (-log2 p_j)`` and (2) set each ``c_j`` to
    its members' (weighted) mean and ``p_j`` to its share of the values, dropping empty clusters,
    until the assignment is stable. ``lam`` trades distortion for index entropy: 0 is plain
    (weighted) k-means from a uniform start; larger values merge clusters.

    Args:
        x: values to quantize.
        k: initial (and largest) number of clusters.
        lam: the Lagrange multiplier, >= 0, in units of distortion per bit.
        sample_weight: per-value importance ``h_i`` (``None``: 1).
        max_iter: upper bound on iterations.
        chunk: values per block of the assignment step (bounds memory to ``chunk * k``).
        tol: stop when at most this fraction of the values changed cluster (0: exact).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.laplace(size=2000)
        >>> len(ecsq(x, 16, lam=0.0).centroids) > len(ecsq(x, 16, lam=0.5).centroids)
        True
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    flat = np.asarray(x, dtype=np.float64).ravel()
    h = np.ones_like(flat) if sample_weight is None else np.ravel(sample_weight).astype(float)
    start = uniform_quantize(flat, k, h)
    centroids, labels = start.centroids, start.labels.ravel()
    centroids, labels, iterations = _ecsq_iterate(
        flat, h, centroids, labels, lam, max_iter, chunk, tol
    )
    order = np.argsort(centroids)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    centroids, labels = centroids[order], rank[labels]
    inertia = float(np.sum(h * (flat - centroids[labels]) ** 2))
    return Clustering(centroids, labels.reshape(np.shape(x)), inertia, iterations)


def _ecsq_iterate(flat, h, centroids, labels, lam, max_iter, chunk, tol):
    """Chou-Lookabaugh-Gray iterations at one ``lam``; returns centroids, labels, iterations."""
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        counts = np.bincount(labels, minlength=centroids.size)
        keep = counts > 0
        remap = np.cumsum(keep) - 1
        centroids, counts, labels = centroids[keep], counts[keep], remap[labels]
        code_length = -np.log2(counts / flat.size)
        new = np.empty_like(labels)
        for lo in range(0, flat.size, chunk):
            part, hp = flat[lo : lo + chunk, None], h[lo : lo + chunk, None]
            cost = hp * (part - centroids[None, :]) ** 2 + lam * code_length[None, :]
            new[lo : lo + chunk] = np.argmin(cost, axis=1)
        sw = np.bincount(new, weights=h, minlength=centroids.size)
        swx = np.bincount(new, weights=h * flat, minlength=centroids.size)
        sx = np.bincount(new, weights=flat, minlength=centroids.size)
        n = np.bincount(new, minlength=centroids.size)
        means = np.where(sw > 0, swx / np.where(sw > 0, sw, 1), sx / np.maximum(n, 1))
        centroids = np.where(n > 0, means, centroids)
        converged = np.count_nonzero(new != labels) <= tol * flat.size
        labels = new
        if converged:
            break
    used = np.unique(labels)
    remap = np.zeros(centroids.size, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return centroids[used], remap[labels], iterations


def linear_quantize(
    x: np.ndarray, bits: int, axis: int | None = None, power_of_two: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric linear (fixed-point) quantization to ``bits`` bits, per tensor or per channel.

    ``q = round(x / scale)`` clipped to ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` with
    ``scale = max|x| / (2^(bits-1) - 1)`` over the tensor, or over each slice along ``axis``
    (per output channel). With ``power_of_two`` the scale is rounded up to a power of two, which
    is true fixed point (ESE, arXiv:1612.00694, uses 12-bit fixed point for LSTM weights).
    Rounding error is at most half a step.

    Args:
        x: the values.
        bits: from 2 to 16.
        axis: the channel axis for per-channel scales; ``None`` for one scale.
        power_of_two: round scales up to powers of two.

    Returns:
        ``(q, scale)``: integers (int16 or int32) of ``x``'s shape and the scale(s), broadcastable
        against ``q``; ``q * scale`` is the dequantized tensor.

    Example:
        >>> q, scale = linear_quantize(np.array([-1.0, 0.5, 1.0]), bits=8)
        >>> q.tolist(), float(scale)
        ([-127, 64, 127], 0.007874015748031496)
    """
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
    x = np.asarray(x, dtype=np.float64)
    qmax = 2 ** (bits - 1) - 1
    if axis is None:
        peak = np.max(np.abs(x))
    else:
        reduce = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        peak = np.max(np.abs(x), axis=reduce, keepdims=True)
    scale = np.where(peak > 0, peak / qmax, 1.0)
    if power_of_two:
        scale = 2.0 ** np.ceil(np.log2(scale))
    q = np.clip(np.round(x / scale), -qmax, qmax)
    return q.astype(np.int16 if bits <= 16 else np.int32), scale
