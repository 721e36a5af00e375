"""Entropy bounds: the fewest bits a coder that treats elements independently can reach."""

from __future__ import annotations

import numpy as np


def entropy_bits(labels: np.ndarray) -> float:
    """Empirical entropy of cluster indices in bits per value (Huffman's lower bound).

    Example:
        >>> entropy_bits(np.array([0, 0, 1, 1]))
        1.0
    """
    counts = np.bincount(np.ravel(labels))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def entropy_bytes(values: np.ndarray) -> float:
    """Bytes a coder needs at least for ``values`` if it codes each element on its own.

    The sum of two empirical entropies: which elements are non-zero, as independent draws
    with the tensor's density (``n * H(density)`` bits), and the non-zero values, as
    independent draws from their histogram. A coder that treats elements independently
    cannot go below it; Deep Compression's Huffman-coded gaps come close and, where zeros
    cluster in runs, slightly below. Codebooks and code tables are not counted.

    Example:
        >>> round(entropy_bytes(np.array([0.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0, -0.5])), 2)
        1.3
    """
    flat = np.ravel(values)
    if flat.size == 0:
        return 0.0
    nonzero = flat != 0
    value_labels = np.unique(flat[nonzero], return_inverse=True)[1]
    value_bits = value_labels.size * entropy_bits(value_labels) if value_labels.size else 0.0
    return (flat.size * entropy_bits(nonzero.astype(np.int64)) + value_bits) / 8
