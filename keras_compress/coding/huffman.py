"""Canonical, length-limited Huffman codes: code lengths, vectorised encoding, table decoding.

Deep Compression's third stage (Han et al. 2016, arXiv:1510.00149, section 4) Huffman-codes
the cluster indices and the sparse index gaps. The codes here are *canonical* (a decoder
needs only the code length of each symbol) and *length-limited* (at most ``max_length`` bits,
so a microcontroller decodes with one table of ``2**max_length`` entries or a few hundred
bytes of canonical-decode state). Lengths come from the package-merge algorithm (Larmore &
Hirschberg 1990), which is optimal under the limit. Python's libraries offer neither canonical
nor length-limited codes for numpy symbol streams, hence this module.

Bit order: codes are written most significant bit first into a byte stream, the last byte
padded with zero bits (the DEFLATE-style LSB-first order is *not* used).
"""

from __future__ import annotations

import numpy as np

MAX_CODE_LENGTH = 15


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal code lengths under a length limit, by package-merge.

    Args:
        counts: occurrences of each symbol (symbols with count 0 get length 0).
        max_length: the longest code allowed; ``2**max_length`` must cover the used symbols.

    Returns:
        ``int`` array of code lengths, one per symbol. A single used symbol gets length 1.

    Raises:
        ValueError: negative counts, or more used symbols than ``max_length`` bits can code.

    Example:
        >>> code_lengths(np.array([10, 1, 1, 5, 0])).tolist()
        [1, 3, 3, 2, 0]
    """
    counts = np.asarray(counts, dtype=np.int64)
    if np.any(counts < 0):
        raise ValueError("symbol counts must be >= 0")
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used] = 1
        return lengths
    if used.size > 2**max_length:
        raise ValueError(f"{used.size} symbols cannot be coded in at most {max_length} bits")
    # Package-merge: each item is (weight, symbols it covers as a count vector over `used`).
    # Items are kept as (weight, index array) pairs; n log n per level, L levels.
    order = used[np.argsort(counts[used], kind="stable")]
    leaves = [(int(counts[s]), (int(s),)) for s in order]
    current = leaves
    for _ in range(max_length - 1):
        packages = [
            (current[i][0] + current[i + 1][0], current[i][1] + current[i + 1][1])
            for i in range(0, len(current) - 1, 2)
        ]
        current = _merge(leaves, packages)
    for _, symbols in current[: 2 * used.size - 2]:
        for s in symbols:
            lengths[s] += 1
    return lengths


def _merge(a: list, b: list) -> list:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i][0] <= b[j][0]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    return out + a[i:] + b[j:]


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values: shorter codes first, ties in symbol order (as DEFLATE does).

    Example:
        >>> canonical_codes(np.array([1, 3, 3, 2, 0])).tolist()
        [0, 6, 7, 2, 0]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for symbol in np.lexsort((np.arange(lengths.size), lengths)):
        length = int(lengths[symbol])
        if length == 0:
            continue
        code <<= length - previous
        codes[symbol] = code
        code += 1
        previous = length
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray, chunk: int = 1 << 22) -> tuple[bytes, int]:
    """Huffman-code a symbol stream, vectorised (memory bounded by ``chunk`` symbols).

    Args:
        symbols: non-negative integer symbols; each must have a non-zero code length.
        lengths: code length per symbol (from ``code_lengths``).
        chunk: symbols coded per numpy block.

    Returns:
        ``(data, bit_count)``: the MSB-first bit stream, zero-padded to whole bytes.

    Raises:
        ValueError: a symbol has no code.

    Example:
        >>> lengths = code_lengths(np.array([3, 1]))
        >>> encode(np.array([0, 1, 0, 0]), lengths)
        (b'@', 4)
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size and (symbols.max() >= lengths.size or np.any(lengths[symbols] == 0)):
        raise ValueError("a symbol to encode has no Huffman code (count 0 when the code was built)")
    codes = canonical_codes(lengths)
    pieces, carry, carry_bits, total = [], np.zeros(0, np.uint8), 0, 0
    for start in range(0, symbols.size, chunk):
        part = symbols[start : start + chunk]
        lens, vals = lengths[part], codes[part]
        ends = np.cumsum(lens)
        nbits = int(ends[-1])
        starts = ends - lens
        bits = np.zeros(nbits, dtype=np.uint8)
        for b in range(int(lens.max())):
            has = lens > b
            bits[starts[has] + b] = (vals[has] >> (lens[has] - 1 - b)) & 1
        bits = np.concatenate([carry, bits])
        whole = (bits.size // 8) * 8
        pieces.append(np.packbits(bits[:whole]).tobytes())
        carry, carry_bits = bits[whole:], bits.size - whole
        total += nbits
    if carry_bits:
        pieces.append(np.packbits(carry).tobytes())
    return b"".join(pieces), total


def decode(
    data: bytes, count: int, lengths: np.ndarray, bit_count: int | None = None
) -> np.ndarray:
    """Decode ``count`` symbols with a ``2**max_length`` lookup table.

    Args:
        data: the bit stream from ``encode``.
        count: number of symbols to decode.
        lengths: the code lengths the stream was encoded with.
        bit_count: the stream's length in bits, if known (checked exactly).

    Returns:
        ``int64`` array of ``count`` symbols.

    Raises:
        ValueError: the stream ends early, holds a bit pattern that is no code, or (with
            ``bit_count``) does not end where declared; the message gives the bit offset.

    Example:
        >>> lengths = code_lengths(np.array([3, 1]))
        >>> decode(b'@', 4, lengths).tolist()
        [0, 1, 0, 0]
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, np.int64)
    max_len = int(lengths.max()) if lengths.size else 0
    if max_len == 0:
        raise ValueError("no Huffman code to decode with (all lengths are 0)")
    codes = canonical_codes(lengths)
    table_symbol = np.full(1 << max_len, -1, dtype=np.int64)
    table_length = np.zeros(1 << max_len, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = max_len - int(lengths[symbol])
        first = int(codes[symbol]) << shift
        table_symbol[first : first + (1 << shift)] = symbol
        table_length[first : first + (1 << shift)] = lengths[symbol]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    available = bits.size if bit_count is None else bit_count
    if bit_count is not None and not 0 <= bit_count <= bits.size:
        raise ValueError(f"declared {bit_count} bits but the stream holds {bits.size}")
    padded = np.concatenate([bits, np.zeros(max_len, np.uint8)])
    # windows[p]: the max_len bits starting at bit p, as one table index.
    windows = np.zeros(bits.size + 1, dtype=np.int64)
    for b in range(max_len):
        windows = (windows << 1) | padded[b : b + bits.size + 1]
    table_symbol_list, table_length_list = table_symbol.tolist(), table_length.tolist()
    window_list = windows.tolist()
    out = np.empty(count, dtype=np.int64)
    position = 0
    for i in range(count):
        if position >= available:
            raise ValueError(f"Huffman stream ended at bit {position} after {i} of {count} symbols")
        window = window_list[position]
        symbol = table_symbol_list[window]
        if symbol < 0:
            raise ValueError(f"invalid Huffman code at bit offset {position}")
        position += table_length_list[window]
        out[i] = symbol
    if position > available:
        raise ValueError(f"Huffman stream overruns its {available} bits (last code at {position})")
    if bit_count is not None and position != bit_count:
        raise ValueError(
            f"Huffman stream has {bit_count - position} bits left after {count} symbols"
        )
    return out
