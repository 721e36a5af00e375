"""Exact 1-D k-means (Lloyd's algorithm) for weight sharing, with Han et al.'s initialisations.

Deep Compression (Han et al. 2016, arXiv:1510.00149, section 3.1) clusters the weights of each
layer in one dimension. In 1-D a Lloyd step needs no distance matrix: with sorted centroids
each cluster is the set of values between two midpoints, so an update only needs the sums of
``w``, ``w*x`` and ``w*x^2`` below each midpoint. This module gets those sums without sorting:
the values are binned once on a 65,536-bin grid with exact per-bin sums (``np.bincount``).
Iterations first split a midpoint's bin in proportion (no values touched at all); the exact
ones after them open only the bins that contain a midpoint (their values sorted). An iteration
then costs ``O(k)`` or ``O(k log n)``, the set-up ``O(n)``; scikit-learn has no 1-D
specialisation and pays ``O(nk)`` per iteration, hence this module.

Optional per-weight importances (``sample_weight``, e.g. a Hessian diagonal) give Choi et
al.'s Hessian-weighted k-means (arXiv:1612.01543, section 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INITS = ("linear", "density", "forgy", "kmeans++")
POLISH = 10  # exact Lloyd iterations after the binned ones


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


def validated(x: np.ndarray, sample_weight: np.ndarray | None = None):
    """``x`` flattened (float32 stays float32) and the weights as float64, after checks.

    Raises:
        ValueError: empty ``x``, NaN or infinity in it, or weights of the wrong size, negative
            or not finite.

    Example:
        >>> validated(np.ones((2, 2)))[0].shape
        (4,)
    """
    flat = np.ravel(np.asarray(x))
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float64)
    if flat.size == 0:
        raise ValueError("cannot cluster an empty array")
    if not np.all(np.isfinite(flat)):
        raise ValueError("values to cluster contain NaN or infinity")
    if sample_weight is None:
        return flat, None
    sw = np.asarray(sample_weight, dtype=np.float64).ravel()
    if sw.shape != flat.shape:
        raise ValueError(f"sample_weight has {sw.size} values, data has {flat.size}")
    if np.any(sw < 0) or not np.all(np.isfinite(sw)):
        raise ValueError("sample_weight must be finite and >= 0")
    return flat, sw


def _prefix(values: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(values)])


class BinnedData:
    """Values binned once, with exact sums of ``w``, ``w*x``, ``w*x^2`` below any threshold.

    The bin of a value is ``floor((x - min) * scale)``, monotone in ``x``: a value in a lower
    bin than a threshold's is below it, one in a higher bin above it. So the sums below a
    threshold are the sums of the bins below its bin (prefix sums of ``np.bincount``) plus, in
    its own bin, the members up to it. ``split`` opens the bins of the given thresholds: one
    pass over the bin indices collects their members, which are sorted (a few per bin).

    Example:
        >>> data = BinnedData(np.array([3.0, 1.0, 2.0]))
        >>> data.split(np.array([2.5]))
        >>> data.below(np.array([2.5]))[1].tolist()  # sum of the values <= 2.5
        [3.0]
    """

    MAX_BINS = 1 << 16
    REACH = 4

    def __init__(self, x: np.ndarray, sample_weight: np.ndarray | None = None):
        self.flat, self.w = validated(x, sample_weight)
        self.shape = np.shape(x)
        x64 = self.flat.astype(np.float64)
        self.lo, self.hi = float(x64.min()), float(x64.max())
        self.nbins = min(self.MAX_BINS, x64.size)
        self.scale = self.nbins / (self.hi - self.lo) if self.hi > self.lo else 0.0
        self.top = np.nextafter(self.nbins, 0)  # the largest position in the last bin
        # The same arithmetic as bin_position, in place on the big array (x >= lo, so t >= 0);
        # intp bins spare np.bincount a conversion per call.
        t = np.subtract(x64, self.lo)
        t *= self.scale
        self.bins = t.astype(np.intp)
        np.minimum(self.bins, self.nbins - 1, out=self.bins)
        wx = x64 if self.w is None else np.multiply(self.w, x64)
        weight = np.bincount(self.bins, self.w, self.nbins).astype(np.float64)
        linear = np.bincount(self.bins, wx, self.nbins)
        np.multiply(wx, x64, out=t)
        square = np.bincount(self.bins, t, self.nbins)
        # Row r, column b: sum of w*x^r over bins < b.
        self.prefix = np.stack([_prefix(v) for v in (weight, linear, square)])
        # Rows w and w*x of prefix at column b - 1, padded: 0 for b = 0, the total for nbins + 2.
        self.padded = np.concatenate([np.zeros((2, 1)), self.prefix[:2], self.prefix[:2, -1:]], 1)
        self.open = np.zeros(self.nbins, dtype=bool)
        self.members = self.order = np.zeros(0, dtype=np.intp)
        self._collect(self.members)

    def bin_position(self, values: np.ndarray) -> np.ndarray:
        """Position on the grid (float64 arithmetic, clipped): the bin is its integer part."""
        t = (np.asarray(values, dtype=np.float64) - self.lo) * self.scale
        return np.minimum(np.maximum(t, 0.0), self.top)

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        """Bin index of each value."""
        return self.bin_position(values).astype(np.intp)

    def split(self, thresholds: np.ndarray, reach: int = 0) -> None:
        """Open the bins of ``thresholds`` (if not open yet): collect and sort their members.

        Bins within ``reach`` of a threshold's are opened with it (``REACH`` while thresholds
        creep over Lloyd's iterations); each opening is one pass over the bin indices.
        """
        wanted = self.bin_of(thresholds)
        if self.open[wanted].all():
            return
        around = wanted[:, None] + np.arange(-reach, reach + 1)[None, :]
        fresh = np.zeros(self.nbins, dtype=bool)
        fresh[np.clip(around, 0, self.nbins - 1)] = True
        fresh &= ~self.open
        self.open |= fresh
        self._collect(np.concatenate([self.members, np.flatnonzero(fresh[self.bins])]))

    def open_all(self) -> None:
        """Open every bin: all values sorted once, cheap for a small input."""
        self.open[:] = True
        self._collect(np.arange(self.flat.size))

    def _collect(self, members: np.ndarray) -> None:
        old = self.order.size
        self.members, self.member_values = members, self.flat[members].astype(np.float64)
        # The members collected before are sorted already: sorting the new ones and merging the
        # two runs with a stable sort (timsort) takes linear time.
        runs = np.concatenate([self.order, np.argsort(self.member_values[old:]) + old])
        self.order = runs[np.argsort(self.member_values[runs], kind="stable")]
        self.values = self.member_values[self.order]
        w = np.ones(members.size) if self.w is None else self.w[members[self.order]]
        self.member_bins = self.bin_of(self.values)
        wx = w * self.values
        self.member_prefix = np.stack([_prefix(v) for v in (w, wx, wx * self.values)])

    def below(self, thresholds: np.ndarray, reach: int = 0) -> np.ndarray:
        """Exact sums of ``w``, ``w*x``, ``w*x^2`` (rows) over the values ``<= thresholds``.

        The bins within ``reach`` of the thresholds' are opened with them (see ``split``).
        """
        self.split(thresholds, reach)
        j = self.bin_of(thresholds)
        start = np.searchsorted(self.member_bins, j, side="left")
        stop = np.searchsorted(self.values, thresholds, side="right")
        return self.prefix[:, j] + self.member_prefix[:, stop] - self.member_prefix[:, start]

    def _per_cluster(self, inner: np.ndarray) -> np.ndarray:
        """Sums per cluster from the sums below each midpoint (rows as in ``prefix``)."""
        rows = inner.shape[0]
        return np.diff(np.concatenate([np.zeros((rows, 1)), inner, self.prefix[:rows, -1:]], 1), 1)

    def cluster_sums(self, centroids: np.ndarray, reach: int = 0) -> np.ndarray:
        """Exact sums of ``w``, ``w*x``, ``w*x^2`` (rows) per cluster of sorted ``centroids``."""
        return self._per_cluster(self.below((centroids[1:] + centroids[:-1]) / 2.0, reach))

    def approximate_sums(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums of ``w``, ``w*x`` per cluster, each midpoint's bin split in proportion; empties.

        The proportional split (as if a bin's values were spread evenly) needs no bin opened:
        a cheap and close approximation for the iterations before the exact ones. Which
        clusters are empty is decided exactly.
        """
        # Cluster boundaries on the grid: -1 and nbins stand for minus and plus infinity.
        t = np.empty(centroids.size + 1)
        t[0], t[-1] = -1.0, self.nbins
        t[1:-1] = self.bin_position((centroids[1:] + centroids[:-1]) / 2.0)
        j = t.astype(np.intp) + 1
        low, high = self.padded[:, j], self.padded[:, j + 1]
        below = low + (t - (j - 1)) * (high - low)
        sums = below[:, 1:] - below[:, :-1]
        # Weight in the bins strictly between a cluster's two boundary bins: positive for all
        # clusters in the usual case, and then none is empty.
        if np.all(low[0, 1:] > high[0, :-1]):
            return sums, np.zeros(centroids.size, dtype=bool)
        return sums, self.empty(centroids)

    def empty(self, centroids: np.ndarray) -> np.ndarray:
        """Which clusters of sorted ``centroids`` have no weight, decided exactly.

        A cluster spans the bins of its two midpoints and the bins between. If the bins between
        hold weight it is not empty; if they and the two end bins hold none it is; only
        otherwise (a cluster within a bin or two) are the end bins opened.
        """
        j = self.bin_of((centroids[1:] + centroids[:-1]) / 2.0)
        first, last = np.concatenate([[-1], j]), np.concatenate([j, [self.nbins]])
        w = self.prefix[0]
        inside = w[np.maximum(last, first + 1)] - w[first + 1]
        in_bin = np.diff(w)
        ends = (first >= 0) & (in_bin[np.maximum(first, 0)] > 0)
        ends |= (last < self.nbins) & (in_bin[np.minimum(last, self.nbins - 1)] > 0)
        empty = (inside <= 0) & ~ends
        unsure = (inside <= 0) & ends
        if unsure.any():
            empty |= unsure & (self.cluster_sums(centroids)[0] <= 0)
        return empty

    def labels(self, centroids: np.ndarray) -> np.ndarray:
        """Nearest-centroid index per input value (ties to the lower), in the input's shape."""
        mids = (centroids[1:] + centroids[:-1]) / 2.0
        self.split(mids)
        # A bin without a midpoint has one label for all its members: the midpoints below it.
        per_bin = np.searchsorted(self.bin_of(mids), np.arange(self.nbins), side="left")
        dtype = np.uint8 if centroids.size <= 256 else np.int32
        labels = per_bin.astype(dtype)[self.bins]
        labels[self.members] = np.searchsorted(mids, self.member_values, side="left")
        return labels.reshape(self.shape)

    def inertia(self, centroids: np.ndarray) -> float:
        """Weighted squared error of assigning every value to its nearest centroid."""
        sw, swx, swxx = self.cluster_sums(centroids)
        return float(np.sum(swxx - 2.0 * centroids * swx + centroids * centroids * sw).clip(0))

    def farthest(self, centroids: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` values with the largest (weighted) error to their nearest centroid.

        Unweighted, the distance to the nearest centroid is 1-Lipschitz, so its values at a
        bin's edges bound it over the bin: only the bins whose upper bound reaches the
        ``count``-th largest lower bound (each bin counted with its members) can hold a
        winner, and only their members are looked at. Weighted errors have no such bound
        and are computed for every value.
        """
        if self.w is not None or not self.scale:
            nearest = centroids.astype(self.flat.dtype)[self.labels(centroids).ravel()]
            err = np.abs(self.flat - nearest)
            if self.w is not None:
                err = err * err * self.w
            return self.flat[np.argpartition(err, -count)[-count:]].astype(np.float64)
        width = 1.0 / self.scale
        margin = 1e-6 * width  # values may fall this far outside their bin by rounding
        edge = _distance(self.lo + np.arange(self.nbins + 1) * width, centroids)
        upper = (edge[:-1] + edge[1:] + width) / 2.0 + margin
        lower = np.maximum(edge[:-1], edge[1:]) - width - margin
        counts = np.diff(self.prefix[0])
        # Each bin holds a value at least its lower bound away: the count-th largest lower
        # bound over the filled bins is reached by count values.
        filled = np.flatnonzero(counts)
        order = filled[np.argsort(-lower[filled], kind="stable")]
        reached = np.searchsorted(np.cumsum(counts[order]), count)  # n >= count: always found
        bound = lower[order[reached]]
        candidates = np.flatnonzero(((upper >= bound) & (counts > 0))[self.bins])
        values = self.flat[candidates].astype(np.float64)
        return values[np.argpartition(_distance(values, centroids), -count)[-count:]]


def _distance(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Distance from each value to the nearest of the sorted ``centroids``."""
    mids = (centroids[1:] + centroids[:-1]) / 2.0
    return np.abs(values - centroids[np.searchsorted(mids, values, side="left")])


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
    tol: float = 1e-8,
) -> Clustering:
    """Lloyd's k-means on 1-D data, run until the assignment stops changing (or ``tol``).

    For more than ``BinnedData.MAX_BINS`` values the iterations first run on the binned sums
    (a threshold's own bin split in proportion); if they converge, up to ``POLISH`` exact
    iterations follow. Smaller inputs are sorted outright and all iterations are exact.
    Labels and inertia are exact for the returned centroids: every value goes to its nearest
    centroid, ties to the lower one.

    Args:
        x: values to cluster (any shape; labels come back in that shape).
        k: number of clusters.
        init: a name from ``INITS`` or an array of ``k`` initial centroids.
        sample_weight: per-value importance (Hessian-weighted k-means); ``None``: all 1.
        max_iter: upper bound on the binned Lloyd iterations.
        seed: seed for the random initialisations.
        tol: also stop once the squared centroid shifts of an iteration sum to at most ``tol``
            times the data's (weighted) variance: scikit-learn's rule (its default is 1e-4).

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
    data = BinnedData(x, sample_weight)
    if isinstance(init, str):
        centroids = initial_centroids(x, k, init, seed, sample_weight)
    else:
        centroids = np.sort(np.asarray(init, dtype=np.float64).ravel())
        if centroids.size != k:
            raise ValueError(f"init has {centroids.size} centroids, k is {k}")
    total_w, total_wx, total_wxx = data.prefix[:, -1]
    limit = tol * max(total_wxx / total_w - (total_wx / total_w) ** 2, 0.0) if total_w else 0.0
    # Iterations on the binned sums until they converge (at most max_iter), then exact ones
    # from there until the assignment is stable (at most POLISH): the start is close, and an
    # exact Lloyd step never raises the inertia. If the binned ones used up max_iter, the
    # exact ones are skipped as scikit-learn stops at max_iter.
    if data.flat.size <= BinnedData.MAX_BINS:  # about one value per bin: no use binning
        data.open_all()
        centroids, iterations, _ = _lloyd(data, centroids, True, max_iter, limit)
        return Clustering(centroids, data.labels(centroids), data.inertia(centroids), iterations)
    centroids, iterations, converged = _lloyd(data, centroids, False, max_iter, limit)
    if converged:
        centroids, polished, _ = _lloyd(data, centroids, True, POLISH, limit)
        iterations += polished
    labels = data.labels(centroids)
    return Clustering(centroids, labels, data.inertia(centroids), iterations)


def _lloyd(
    data: BinnedData, centroids: np.ndarray, exact: bool, budget: int, limit: float
) -> tuple[np.ndarray, int, bool]:
    """Up to ``budget`` Lloyd iterations on exact or binned sums: (centroids, count, converged)."""
    for iteration in range(1, budget + 1):
        if exact:
            sw, swx, _ = data.cluster_sums(centroids, BinnedData.REACH)
            empty = sw <= 0
        else:
            (sw, swx), empty = data.approximate_sums(centroids)
        updated = np.divide(swx, sw, out=centroids.copy(), where=sw > 0)
        moved = empty.any()
        if moved:
            # As scikit-learn does: move empty clusters onto the values farthest from the
            # centroids they were just assigned to.
            far = data.farthest(centroids, int(empty.sum()))
            fresh = far[~np.isin(far, updated)]
            slots = np.flatnonzero(empty)[: fresh.size]
            updated[slots] = fresh[: slots.size]
            updated.sort()  # otherwise the means of consecutive runs of values are sorted
        step = updated - centroids
        centroids = updated
        # An unchanged assignment gives a zero shift.
        if not moved and np.dot(step, step) <= limit:
            return centroids, iteration, True
    return centroids, budget, False
