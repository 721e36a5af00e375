"""Pruning masks from weight magnitudes: pure numpy, no Keras state.

A *weight class* is a group of weights that share one pruning decision rule (See et al. 2016,
arXiv:1606.09274, section 3.2): by default one weight tensor. Every function takes the current
weights and the current masks of each class (``True`` = kept) and returns new masks that only
ever remove weights: a weight pruned once stays pruned.

Criteria:

* ``class_blind``: one global magnitude threshold across all classes; a fraction ``s`` of all
  weights is pruned (See et al.).
* ``class_uniform``: a fraction ``s_c`` of each class is pruned (See et al.; the layer-wise
  rule of most pruning tools).
* ``class_distribution``: class ``c`` is pruned below ``lambda * std_c``; ``lambda`` is solved so
  that a fraction ``s`` of all weights is pruned (See et al.).
* ``lamp`` (Lee et al. 2021, arXiv:2010.07611, "layer-adaptive magnitude-based pruning"): a
  kept weight ``u`` of class ``c`` scores ``w_u^2 / sum(w_v^2 for kept v of c with |w_v| >=
  |w_u|)`` and the lowest scores over all classes go until a fraction ``s`` of all weights is
  pruned. The score does not change when a class is rescaled (a kernel in front of a
  BatchNorm has no scale of its own) and the largest weight of a class scores 1, so no class
  is emptied; large classes end up pruned more than small ones.
* ``std`` (Han et al. 2015, arXiv:1506.02626): class ``c`` is pruned below ``q_c * std_c`` for a
  given quality parameter ``q_c``. Repeated prune/retrain rounds prune more each time.

Load-balance-aware pruning (ESE, Han et al. 2017, arXiv:1612.00694, section 3.2):
``load_balanced_masks`` prunes each processing element's share of a class to the same level,
so that every PE holds the same number of non-zeros (``pe_groups``, ``load_imbalance``).

``std_c`` is the standard deviation of the weights of class ``c`` that are still kept.
Sparsity targets are met exactly: ``round(s * n)`` weights are pruned (ties broken by position).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CRITERIA = ("class_blind", "class_uniform", "class_distribution", "lamp", "std")


def _check_pair(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    if len(weights) != len(masks):
        raise ValueError(f"got {len(weights)} weight arrays but {len(masks)} masks")
    for i, (w, m) in enumerate(zip(weights, masks, strict=True)):
        if w.shape != m.shape:
            raise ValueError(f"class {i}: weights {w.shape} and mask {m.shape} differ in shape")


def _check_sparsity(s: float, name: str = "sparsity") -> None:
    if not 0.0 <= s < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {s}")


def _scores(weights: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Magnitudes divided by ``scale``, with already-pruned weights at -1 so they go first.

    In the weights' own precision (at least float32): a float64 copy of a few million weights
    made a mask update several times slower and ranks them no differently.
    """
    dtype = np.result_type(weights.dtype, np.float32)
    magnitude = np.abs(weights.astype(dtype, copy=False))
    if scale != 1.0:
        magnitude = magnitude / dtype.type(scale)
    return np.where(mask, magnitude, dtype.type(-1.0)).ravel()


def _prune_lowest(scores: np.ndarray, mask: np.ndarray, n_prune: int) -> np.ndarray:
    """Keep all but the ``n_prune`` lowest scores; never revive a pruned weight."""
    already = mask.size - int(np.count_nonzero(mask))
    if n_prune <= already:
        return mask.copy()
    flat = mask.ravel().copy()
    kept = np.flatnonzero(flat)  # only kept weights compete: pruned ones stay pruned
    more = n_prune - already
    values = scores[kept]
    threshold = np.partition(values, more - 1)[more - 1]
    if np.isnan(threshold):  # NaN sorts last: every number goes, then the first NaNs
        drop, at = ~np.isnan(values), np.isnan(values)
    else:
        drop, at = values < threshold, values == threshold
    ties = np.flatnonzero(at)[: more - int(np.count_nonzero(drop))]
    drop[ties] = True  # the first (by position) of the weights at the threshold
    flat[kept[drop]] = False
    return flat.reshape(mask.shape)


def kept_std(weights: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation of the kept weights (1.0 if fewer than two are kept).

    Example:
        >>> kept_std(np.array([1.0, -1.0, 5.0]), np.array([True, True, False]))
        1.0
    """
    kept = weights[mask]
    return float(np.std(kept)) if kept.size > 1 else 1.0


def class_uniform_masks(
    weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], sparsities: Sequence[float]
) -> list[np.ndarray]:
    """Prune the fraction ``sparsities[c]`` of each class ``c`` by magnitude.

    Example:
        >>> w = [np.array([0.1, -0.5, 0.3, 2.0])]
        >>> class_uniform_masks(w, [np.ones(4, bool)], [0.5])[0]
        array([False,  True, False,  True])
    """
    _check_pair(weights, masks)
    out = []
    for w, m, s in zip(weights, masks, sparsities, strict=True):
        _check_sparsity(s)
        out.append(_prune_lowest(_scores(w, m), m, int(round(s * m.size))))
    return out


def _global_masks(
    weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], sparsity: float, scales
) -> list[np.ndarray]:
    _check_pair(weights, masks)
    scores = [_scores(w, m, s) for w, m, s in zip(weights, masks, scales)]
    return _prune_globally(masks, sparsity, scores)


def _prune_globally(masks, sparsity: float, scores) -> list[np.ndarray]:
    """Prune the ``sparsity`` lowest of all classes' flat ``scores`` (pruned ones at -1)."""
    _check_sparsity(sparsity)
    scores = np.concatenate(scores)
    flat_mask = np.concatenate([m.ravel() for m in masks])
    flat = _prune_lowest(scores, flat_mask, int(round(sparsity * flat_mask.size)))
    splits = np.cumsum([m.size for m in masks])[:-1]
    return [part.reshape(m.shape) for part, m in zip(np.split(flat, splits), masks)]


def class_blind_masks(
    weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], sparsity: float
) -> list[np.ndarray]:
    """Prune the fraction ``sparsity`` of all weights with one global magnitude threshold.

    Example:
        >>> w = [np.array([0.1, 0.2]), np.array([5.0, 6.0])]
        >>> [m.tolist() for m in class_blind_masks(w, [np.ones(2, bool)] * 2, 0.5)]
        [[False, False], [True, True]]
    """
    return _global_masks(weights, masks, sparsity, [1.0] * len(weights))


def class_distribution_masks(
    weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], sparsity: float
) -> list[np.ndarray]:
    """Prune below ``lambda * std_c`` per class, ``lambda`` chosen to prune ``sparsity`` overall.

    Pruning the lowest ``|w| / std_c`` over all classes at once is the same as searching for
    ``lambda``: the threshold on the normalised magnitudes is ``lambda`` itself.

    Example:
        >>> w = [np.array([0.1, 0.2, -0.1, -0.2]), np.array([10.0, 20.0, -10.0, -20.0])]
        >>> [m.tolist() for m in class_distribution_masks(w, [np.ones(4, bool)] * 2, 0.5)]
        [[False, True, False, True], [False, True, False, True]]
    """
    scales = [kept_std(w, m) for w, m in zip(weights, masks)]
    return _global_masks(weights, masks, sparsity, scales)


def lamp_scores(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """LAMP scores of one class, flat; pruned weights at -1.

    A kept weight scores ``w_u^2`` over the sum of ``w_v^2`` of the kept weights at least as
    large (ties in the order of position). A NaN or infinite weight (a diverged run) scores
    NaN, out of the sums: it is pruned after every number.

    Example:
        >>> lamp_scores(np.array([3.0, -1.0, 2.0, 9.0]), np.array([True, True, True, False]))
        array([ 1.        ,  0.07142857,  0.30769231, -1.        ])
    """
    flat = weights.ravel()
    kept = np.flatnonzero(mask.ravel() & np.isfinite(flat))
    squares = np.square(flat[kept].astype(np.float64))
    order = np.argsort(squares, kind="stable")
    ordered = squares[order]
    tails = np.cumsum(ordered[::-1])[::-1]  # tails[i]: the sum of ordered[i:]
    ratios = np.zeros_like(ordered)
    np.divide(ordered, tails, out=ratios, where=tails > 0)
    scores = np.where(mask.ravel(), np.nan, -1.0)
    scores[kept[order]] = ratios
    return scores


def lamp_masks(
    weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], sparsity: float
) -> list[np.ndarray]:
    """Prune the fraction ``sparsity`` of all weights by their LAMP scores (``lamp_scores``).

    Example:
        >>> w = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([100.0, 1.0])]
        >>> [m.tolist() for m in lamp_masks(w, [np.ones(4, bool), np.ones(2, bool)], 0.5)]
        [[False, False, True, True], [True, False]]
    """
    _check_pair(weights, masks)
    scores = [lamp_scores(w, m) for w, m in zip(weights, masks)]
    return _prune_globally(masks, sparsity, scores)


def std_masks(
    weights: Sequence[np.ndarray], masks: Sequence[np.ndarray], qualities: Sequence[float]
) -> list[np.ndarray]:
    """Han et al.'s rule: prune class ``c`` where ``|w| <= qualities[c] * std_c``.

    Example:
        >>> w = [np.array([0.1, -1.0, 1.0, -0.1])]
        >>> std_masks(w, [np.ones(4, bool)], [0.5])[0]
        array([False,  True,  True, False])
    """
    _check_pair(weights, masks)
    out = []
    for w, m, q in zip(weights, masks, qualities, strict=True):
        if q < 0:
            raise ValueError(f"quality parameter must be >= 0, got {q}")
        out.append(m & (np.abs(w) > q * kept_std(w, m)))
    return out


def pe_groups(shape: Sequence[int], num_pe: int) -> np.ndarray:
    """The processing element of each weight: output index (last axis) modulo ``num_pe``.

    ESE interleaves the rows of each LSTM weight matrix (one row per output, i.e. a Keras
    kernel's last axis) over its PEs: row ``j`` goes to PE ``j mod N``.

    Example:
        >>> pe_groups((2, 4), 2).tolist()
        [[0, 1, 0, 1], [0, 1, 0, 1]]
    """
    if num_pe < 1:
        raise ValueError(f"num_pe must be >= 1, got {num_pe}")
    shape = tuple(shape) or (1,)
    return np.broadcast_to(np.arange(shape[-1]) % num_pe, shape).copy()


def load_balanced_masks(
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    sparsities: Sequence[float],
    groups: Sequence[np.ndarray],
) -> list[np.ndarray]:
    """Class-uniform pruning done per processing element: each PE's part pruned to the level.

    Within class ``c`` the weights of each PE (``groups[c] == p``) are pruned to the fraction
    ``sparsities[c]`` by magnitude, so every PE keeps the same number of weights (equal when
    the PEs hold equally many; within one otherwise) and none waits for another (ESE).

    Example:
        >>> w = [np.array([[9.0, 1.0, 8.0, 2.0], [7.0, 3.0, 6.0, 4.0]])]
        >>> load_balanced_masks(w, [np.ones((2, 4), bool)], [0.5], [pe_groups((2, 4), 2)])[0]
        array([[ True, False,  True, False],
               [False,  True, False,  True]])
    """
    _check_pair(weights, masks)
    out = []
    for w, m, s, g in zip(weights, masks, sparsities, groups, strict=True):
        _check_sparsity(s)
        g = np.asarray(g).reshape(w.shape)
        new = np.asarray(m, bool).copy()
        for pe in np.unique(g):
            members = g == pe
            part = _prune_lowest(
                _scores(w[members], new[members]), new[members], round(s * int(members.sum()))
            )
            new[members] = part
        out.append(new)
    return out


def load_imbalance(mask: np.ndarray, groups: np.ndarray) -> float:
    """Max over mean of the non-zeros per processing element (1.0: perfectly balanced).

    Example:
        >>> load_imbalance(np.array([[1, 1, 1, 0]], bool), pe_groups((1, 4), 2))
        1.3333333333333333
    """
    counts = np.bincount(np.asarray(groups).ravel(), weights=np.asarray(mask).ravel().astype(float))
    return float(counts.max() / counts.mean()) if counts.mean() > 0 else 1.0


def compute_masks(
    criterion: str,
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    levels: Sequence[float],
) -> list[np.ndarray]:
    """Dispatch to one criterion; ``levels`` holds one level (sparsity or quality) per class.

    The global criteria (``class_blind``, ``class_distribution``, ``lamp``) need one level for all
    classes and take ``levels[0]``; the others take one level per class.

    Example:
        >>> w = [np.array([0.1, -0.5, 0.3, 2.0])]
        >>> compute_masks("class_blind", w, [np.ones(4, bool)], [0.25])[0]
        array([False,  True,  True,  True])
    """
    if criterion == "class_blind":
        return class_blind_masks(weights, masks, levels[0])
    if criterion == "class_distribution":
        return class_distribution_masks(weights, masks, levels[0])
    if criterion == "lamp":
        return lamp_masks(weights, masks, levels[0])
    if criterion == "class_uniform":
        return class_uniform_masks(weights, masks, levels)
    if criterion == "std":
        return std_masks(weights, masks, levels)
    raise ValueError(f"unknown pruning criterion {criterion!r}; choose one of {CRITERIA}")
