import heapq

import numpy as np
import pytest

from keras_compress.coding import huffman

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def huffman_cost(counts):
    """Reference: the optimal (unlimited) Huffman cost is the sum of all merged weights."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


@pytest.mark.parametrize("seed", range(10))
def test_lengths_are_optimal_when_the_limit_does_not_bind(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 1000, size=rng.integers(2, 60))
    counts[0] = max(counts[0], 1)
    counts[1] = max(counts[1], 1)
    lengths = huffman.code_lengths(counts, max_length=32)
    assert int(np.sum(counts * lengths)) == huffman_cost(counts)
    assert np.sum(2.0 ** -lengths[lengths > 0]) == pytest.approx(1.0)  # complete code


def test_length_limit_holds_on_a_skewed_distribution():
    counts = np.array([2**i for i in range(30)])  # Fibonacci-like skew wants 29-bit codes
    unlimited = huffman.code_lengths(counts, max_length=32)
    assert unlimited.max() == 29
    limited = huffman.code_lengths(counts, max_length=12)
    assert limited.max() == 12
    assert np.sum(2.0**-limited) <= 1.0
    assert np.sum(counts * limited) >= np.sum(counts * unlimited)


def test_canonical_codes_are_prefix_free_and_ordered():
    lengths = huffman.code_lengths(np.random.default_rng(1).integers(1, 100, size=40))
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths)]
    for i, a in enumerate(words):
        for j, b in enumerate(words):
            assert i == j or not b.startswith(a)
    by_length = sorted(range(40), key=lambda s: (lengths[s], s))
    assert [codes[s] << (15 - lengths[s]) for s in by_length] == sorted(
        codes[s] << (15 - lengths[s]) for s in by_length
    )


@pytest.mark.parametrize("alphabet", [1, 2, 17, 256])
def test_round_trip_matches_a_naive_bit_string(alphabet):
    rng = np.random.default_rng(alphabet)
    symbols = rng.zipf(1.5, size=5000) % alphabet
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    data, nbits = huffman.encode(symbols, lengths, chunk=777)  # several chunks
    codes = huffman.canonical_codes(lengths)
    naive = "".join(format(int(codes[s]), f"0{int(lengths[s])}b") for s in symbols)
    assert nbits == len(naive)
    assert data == int(naive + "0" * (-len(naive) % 8), 2).to_bytes(len(data), "big")
    np.testing.assert_array_equal(huffman.decode(data, symbols.size, lengths, nbits), symbols)


def test_corrupt_streams_are_rejected_with_the_bit_offset():
    symbols = np.random.default_rng(0).integers(0, 5, size=1000)
    lengths = huffman.code_lengths(np.bincount(symbols))
    data, nbits = huffman.encode(symbols, lengths)
    with pytest.raises(ValueError, match="ended at bit"):
        huffman.decode(data[: len(data) // 2], symbols.size, lengths)
    with pytest.raises(ValueError, match="bits left"):
        huffman.decode(data, symbols.size - 10, lengths, nbits)
    single = huffman.code_lengths(np.array([0, 5]))  # one symbol: code "0", "1" is invalid
    with pytest.raises(ValueError, match="invalid Huffman code at bit offset 2"):
        huffman.decode(bytes([0b00100000]), 4, single)
    with pytest.raises(ValueError, match="no Huffman code"):
        huffman.encode(np.array([0, 1]), single)
