"""Exact 1-D k-means (Lloyd's algorithm) for weight sharing, with Han et al.'s initialisations.

Deep Compression (Han et al. 2016, arXiv:1510.00149, section 3.1) clusters the weights of each
layer in one dimension. In 1-D a Lloyd step needs no distance matrix: with the data sorted
once and the centroids sorted, each cluster is the run of points between two midpoints, so an
assignment is a ``searchsorted`` of ``k - 1`` midpoints and a centroid update is a difference of
prefix sums. One iteration costs ``O(k log n)`` after an ``O(n log n)`` sort, against ``O(nk)``
for generic k-means; scikit-learn has no 1-D specialisation, hence this module.

Optional per-weight importances (``sample_weight``, e.g. a Hessian diagonal) give Choi et
al.'s Hessian-weighted k-means (arXiv:1612.01543, section 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INITS = ("linear", "density", "forgy", "kmeans++")


@dataclass
class Clustering:
    """Result of a 1-D clustering.

    Attributes:
        centroids: sorted cluster values, shape ``(k,)`` (float64).
        labels: index into ``centroids`` for every input value, the input's shape.
        inertia: sum of (weighted) squared distances to the assigned centroid.
        iterations: Lloyd iterations run (0 for non-iterative quantizers).
    """

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int = 0

    def values(self) -> np.ndarray:
        """The quantized array: every value replaced by its centroid."""
        return self.centroids[self.labels]


class SortedData:
    """Values sorted once, with prefix sums of ``w``, ``w*x`` and ``w*x^2`` for O(1) range sums.

    Without ``sample_weight`` only a sort (not an argsort) is needed: float32 weights are
    sorted as float32, which is twice as fast, and labels come from the midpoints directly.

    Example:
        >>> data = SortedData(np.array([3.0, 1.0, 2.0]))
        >>> data.range_sums(np.array([0, 2]), np.array([2, 3]))[1].tolist()  # sum of x
        [3.0, 3.0]
    """

    def __init__(self, x: np.ndarray, sample_weight: np.ndarray | None = None):
        flat = np.ravel(np.asarray(x))
        if flat.dtype not in (np.float32, np.float64):
            flat = flat.astype(np.float64)
        if flat.size == 0:
            raise ValueError("cannot cluster an empty array")
        if not np.all(np.isfinite(flat)):
            raise ValueError("values to cluster contain NaN or infinity")
        self.flat, self.shape = flat, np.shape(x)
        zero = np.zeros(1)
        if sample_weight is None:
            self.x = np.sort(flat).astype(np.float64)
            self.w = None
            self.cw = np.arange(flat.size + 1, dtype=np.float64)
        else:
            sw = np.asarray(sample_weight, dtype=np.float64).ravel()
            if sw.shape != flat.shape:
                raise ValueError(f"sample_weight has {sw.size} values, data has {flat.size}")
            if np.any(sw < 0) or not np.all(np.isfinite(sw)):
                raise ValueError("sample_weight must be finite and >= 0")
            order = np.argsort(flat)
            self.x, self.w = flat[order].astype(np.float64), sw[order]
            self.cw = np.concatenate([zero, np.cumsum(self.w)])
        wx = self.x if self.w is None else self.w * self.x
        self.cwx = np.concatenate([zero, np.cumsum(wx)])
        self.cwxx = np.concatenate([zero, np.cumsum(wx * self.x)])

    def range_sums(self, starts: np.ndarray, ends: np.ndarray):
        """Sums of ``w``, ``w*x``, ``w*x^2`` over sorted positions ``[starts, ends)``."""
        return (
            self.cw[ends] - self.cw[starts],
            self.cwx[ends] - self.cwx[starts],
            self.cwxx[ends] - self.cwxx[starts],
        )

    def bounds(self, centroids: np.ndarray) -> np.ndarray:
        """Start position of each cluster (plus ``n``) for sorted ``centroids`` (nearest rule)."""
        mids = (centroids[1:] + centroids[:-1]) / 2.0
        # side="right": a point exactly on a midpoint goes to the lower cluster, as argmin does.
        inner = np.searchsorted(self.x, mids, side="right")
        return np.concatenate([[0], inner, [self.x.size]])

    def labels(self, centroids: np.ndarray) -> np.ndarray:
        """Nearest-centroid index per input value, in the input's order and shape."""
        mids = (centroids[1:] + centroids[:-1]) / 2.0
        return np.searchsorted(mids, self.flat, side="left").reshape(self.shape)

    def farthest(self, centroids: np.ndarray, bounds: np.ndarray, count: int) -> np.ndarray:
        """Sorted positions of the ``count`` values with the largest (weighted) error."""
        assigned = np.repeat(centroids, np.diff(bounds))
        err = (self.x - assigned) ** 2
        if self.w is not None:
            err *= self.w
        return np.argpartition(err, -count)[-count:]

    def inertia(self, centroids: np.ndarray, bounds: np.ndarray) -> float:
        """Weighted squared error of assigning the ranges ``bounds`` to ``centroids``."""
        sw, swx, swxx = self.range_sums(bounds[:-1], bounds[1:])
        return float(np.sum(swxx - 2.0 * centroids * swx + centroids * centroids * sw).clip(0))


def initial_centroids(
    x: np.ndarray,
    k: int,
    init: str = "linear",
    seed: int | None = 0,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Han et al.'s initialisations (Deep Compression, section 3.2) plus k-means++.

    * ``linear``: ``k`` values evenly spaced between the minimum and the maximum.
    * ``density``: the values where the empirical CDF crosses ``(i + 0.5) / k``.
    * ``forgy``: ``k`` distinct values drawn at random from the data.
    * ``kmeans++``: Arthur & Vassilvitskii's D^2 sampling (weighted by ``sample_weight``).

    Args:
        x: the values (any shape).
        k: number of clusters, >= 1.
        init: one of ``INITS``.
        seed: random seed for ``forgy`` and ``kmeans++``.
        sample_weight: per-value importance for ``kmeans++`` sampling.

    Returns:
        Sorted initial centroids, shape ``(k,)``.

    Raises:
        ValueError: unknown ``init``, ``k < 1``, or fewer distinct values than ``k``
            for ``forgy``.

    Example:
        >>> initial_centroids(np.array([0.0, 1.0, 4.0]), 3, "linear").tolist()
        [0.0, 2.0, 4.0]
    """
    flat = np.asarray(x, dtype=np.float64).ravel()
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"number of clusters must be an integer >= 1, got {k!r}")
    rng = np.random.default_rng(seed)
    if init == "linear":
        return np.linspace(flat.min(), flat.max(), k)
    if init == "density":
        return np.quantile(flat, (np.arange(k) + 0.5) / k)
    if init == "forgy":
        distinct = np.unique(flat)
        if distinct.size < k:
            raise ValueError(f"forgy init needs {k} distinct values, the data has {distinct.size}")
        return np.sort(rng.choice(distinct, size=k, replace=False))
    if init == "kmeans++":
        weights = np.ones_like(flat) if sample_weight is None else np.ravel(sample_weight)
        centers = [flat[rng.choice(flat.size, p=weights / weights.sum())]]
        dist = (flat - centers[0]) ** 2
        for _ in range(1, k):
            p = weights * dist
            total = p.sum()
            if total <= 0:
                break
            centers.append(flat[rng.choice(flat.size, p=p / total)])
            dist = np.minimum(dist, (flat - centers[-1]) ** 2)
        return np.sort(np.array(centers))
    raise ValueError(f"unknown k-means init {init!r}; choose one of {INITS}")


def kmeans1d(
    x: np.ndarray,
    k: int,
    init: str | np.ndarray = "linear",
    sample_weight: np.ndarray | None = None,
    max_iter: int = 300,
    seed: int | None = 0,
    tol: float = 1e-9,
) -> Clustering:
    """Lloyd's k-means on 1-D data, run until the assignment stops changing.

    Args:
        x: values to cluster (any shape; labels come back in that shape).
        k: number of clusters.
        init: a name from ``INITS`` or an array of ``k`` initial centroids.
        sample_weight: per-value importance (Hessian-weighted k-means); ``None``: all 1.
        max_iter: upper bound on Lloyd iterations.
        seed: seed for the random initialisations.
        tol: also stop once no centroid moves by more than ``tol`` times the data's range
            (the assignment of a few values can creep for many iterations on long tails).

    Returns:
        A ``Clustering`` with sorted centroids. A cluster that loses all its members is moved
        onto the value worst served by the others, as scikit-learn does.

    Raises:
        ValueError: bad ``k``, ``init`` or ``sample_weight``, or NaN/inf in ``x``.

    Example:
        >>> result = kmeans1d(np.array([0.0, 0.1, 0.9, 1.0]), 2)
        >>> result.centroids.tolist(), result.labels.tolist()
        ([0.05, 0.95], [0, 0, 1, 1])
    """
    data = SortedData(x, sample_weight)
    if isinstance(init, str):
        centroids = initial_centroids(x, k, init, seed, sample_weight)
    else:
        centroids = np.sort(np.asarray(init, dtype=np.float64).ravel())
        if centroids.size != k:
            raise ValueError(f"init has {centroids.size} centroids, k is {k}")
    scale = float(data.x[-1] - data.x[0]) or 1.0
    bounds = data.bounds(centroids)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        sw, swx, _ = data.range_sums(bounds[:-1], bounds[1:])
        empty = sw <= 0
        updated = np.where(empty, centroids, swx / np.where(empty, 1.0, sw))
        if empty.any():
            # As scikit-learn does: move empty clusters onto the values farthest from the
            # centroids they were just assigned to.
            far = data.x[data.farthest(centroids, bounds, int(empty.sum()))]
            fresh = far[~np.isin(far, updated)]
            slots = np.flatnonzero(empty)[: fresh.size]
            updated[slots] = fresh[: slots.size]
        updated.sort()
        shift = np.max(np.abs(updated - centroids))
        centroids = updated
        new_bounds = data.bounds(centroids)
        if np.array_equal(new_bounds, bounds) or shift <= tol * scale:
            bounds = new_bounds
            break
        bounds = new_bounds
    return Clustering(
        centroids, data.labels(centroids), data.inertia(centroids, bounds), iterations
    )
