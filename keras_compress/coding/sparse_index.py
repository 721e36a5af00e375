"""Deep Compression's relative indexing of non-zero positions, with filler entries.

Han et al. 2016 (arXiv:1510.00149, section 2, Figure 2) store a pruned tensor as a stream of
entries, each the number of zeros skipped since the previous entry (a small *gap*, at most
``max_gap``) and a value. A run of zeros longer than ``max_gap`` is bridged by *filler*
entries: an entry with gap ``max_gap`` whose value is zero. Trailing zeros need no entry, the
tensor's length being known. Gaps and values are then Huffman-coded (``huffman``).
"""

from __future__ import annotations

import numpy as np


def relative_gaps(nonzero: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode the positions of ``True`` entries as gaps, inserting fillers where needed.

    Args:
        nonzero: boolean array (any shape, read flat in C order).
        max_gap: the largest gap one entry can express, ``>= 1`` (e.g. ``2**bits - 1``).

    Returns:
        ``(gaps, real)``: one gap per entry and whether the entry is a real non-zero
        (``False`` for fillers, which stand for a zero at their position).

    Raises:
        ValueError: ``max_gap < 1``.

    Example:
        >>> gaps, real = relative_gaps(np.array([0, 1, 0, 0, 0, 0, 0, 1], bool), max_gap=3)
        >>> gaps.tolist(), real.tolist()
        ([1, 3, 1], [True, False, True])
    """
    if not isinstance(max_gap, (int, np.integer)) or max_gap < 1:
        raise ValueError(f"max_gap must be an integer >= 1, got {max_gap!r}")
    positions = np.flatnonzero(np.ravel(nonzero))
    skipped = np.diff(positions, prepend=-1) - 1
    fillers = skipped // (max_gap + 1)
    # An entry's slot: every filler before it, then itself.
    slots = np.cumsum(fillers + 1) - 1
    total = int(slots[-1]) + 1 if slots.size else 0
    gaps = np.full(total, max_gap, dtype=np.int64)
    real = np.zeros(total, dtype=bool)
    gaps[slots] = skipped - fillers * (max_gap + 1)
    real[slots] = True
    return gaps, real


def absolute_positions(gaps: np.ndarray, size: int | None = None) -> np.ndarray:
    """Flat positions of the entries described by ``gaps`` (fillers included).

    Args:
        gaps: the gap of each entry.
        size: the tensor's length, to check that every position fits.

    Raises:
        ValueError: a negative gap, or a position at or beyond ``size``.

    Example:
        >>> absolute_positions(np.array([1, 3, 1])).tolist()
        [1, 5, 7]
    """
    gaps = np.asarray(gaps, dtype=np.int64)
    if gaps.size and gaps.min() < 0:
        raise ValueError("gaps must be >= 0")
    positions = np.cumsum(gaps + 1) - 1
    if size is not None and positions.size and positions[-1] >= size:
        raise ValueError(
            f"entry {positions.size - 1} lands at position {int(positions[-1])}, "
            f"beyond the tensor's {size} values"
        )
    return positions
