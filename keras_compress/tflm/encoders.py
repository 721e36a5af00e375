"""Encoders for TensorFlow Lite Micro's DECODE operator: Huffman and pruning ancillary data.

TFLM's ``TFLM_DECODE`` operator turns an encoded constant tensor plus an *ancillary data tensor*
(a 16-byte DECODE Common Metadata header, then type-specific data) back into the tensor at
inference time. Its runtime decoders exist upstream, but the encoders that ``tflite-micro``
ships for Huffman and pruning are stubs that raise "not yet implemented"; these are the byte
layouts its decoders read:

- Huffman: ``tensorflow/lite/micro/kernels/decode_state_huffman.{h,cc}`` (tflite-micro). The
  codewords are one MSB-first bit stream read as big-endian 32-bit words. The tables are
  multi-level lookup tables of 16-bit (int8 output only) or 32-bit entries: a *found* entry
  holds the symbol and how many of the bits looked up it used (the rest are put back); a
  *pointer* entry holds the bit count of the next table minus one and that table's offset from
  the entry. DCM byte 4 is the Huffman version (1), byte 5 holds log2(initial table size) - 1
  in bits 7-4 and the 32-bit flag in bit 0.
- Pruning: ``tensorflow/lite/micro/kernels/decode_state_prune.{h,cc}``. The encoded tensor is a
  bit mask, MSB first, one bit per element (1: not the zero point); the ancillary data after
  the DCM holds the values of the set bits in element order. DCM byte 4 is the version (1).

Written here because no library produces these layouts (upstream's own are stubs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_compress.coding import huffman

DCM_BYTES = 16
HUFFMAN_TYPE, PRUNING_TYPE = 1, 2
# A found entry stores its used bit count in 4 bits, so no table level looks up more than 15.
MAX_TABLE_BITS = 15
_FOUND16, _COUNT16_SHIFT, _VALUE16_MAX = 0x8000, 11, 0x07FF
_FOUND32, _COUNT32_SHIFT, _VALUE32_MAX = 0x80000000, 27, 0x07FFFFFF


@dataclass(frozen=True)
class Encoding:
    r"""An encoded tensor and its ancillary data tensor, as TFLM's DECODE operator reads them.

    Attributes:
        encoded: the bytes that replace the tensor's data.
        ancillary: DCM header plus decode-type-specific data.

    Example:
        >>> e = encode_pruning(np.array([0, 3, 0, 0, 5, 0, 0, 0], np.int8))
        >>> e.encoded, e.ancillary[16:]
        (b'H', b'\x03\x05')
    """

    encoded: bytes
    ancillary: bytes

    @property
    def size(self) -> int:
        """Bytes the two buffers take together."""
        return len(self.encoded) + len(self.ancillary)


def _dcm(decode_type: int, user: bytes) -> bytes:
    header = bytearray(DCM_BYTES)
    header[0], header[1] = decode_type, 1  # decode type, DCM version 1
    header[4 : 4 + len(user)] = user
    return bytes(header)


def encode_pruning(
    values: np.ndarray, zero_points: np.ndarray | int = 0, axis: int = 0
) -> Encoding:
    """Pruning encoding: a bit mask of the elements that are not the zero point, then their values.

    Args:
        values: the tensor (any dtype; bool/int8 as bytes, float32 as its 32-bit pattern).
        zero_points: one zero point, or one per channel along ``axis`` (int8 only upstream).
        axis: the channel axis for per-channel zero points: 0 or the last axis.

    Returns:
        The encoding (mask bytes; DCM + kept values in element order, little-endian).

    Raises:
        ValueError: per-channel zero points on an axis other than 0 or the last.

    Example:
        >>> encode_pruning(np.array([[0, 1], [2, 0]], np.int8)).encoded
        b'`'
    """
    values = np.asarray(values)
    zp = np.asarray(zero_points).astype(values.dtype)
    if zp.size > 1:
        if axis not in (0, values.ndim - 1):
            raise ValueError(f"TFLM pruning supports channel axis 0 or the last, got axis {axis}")
        zp = zp.reshape([-1 if d == axis else 1 for d in range(values.ndim)])
    keep = (values != zp).ravel()
    kept = values.ravel()[keep].astype(values.dtype.newbyteorder("<"))
    mask = np.packbits(keep, bitorder="big").tobytes()
    return Encoding(mask, _dcm(PRUNING_TYPE, b"\x01") + kept.tobytes())


def encode_huffman(values: np.ndarray, wide: bool | None = None) -> Encoding:
    r"""Huffman encoding with the multi-level decode tables of TFLM's Huffman decoder.

    The code is canonical and length-limited (``keras_compress.coding.huffman``); the tables are
    laid out to be as small as possible: each (sub-)table's bit width is chosen by dynamic
    programming over the code tree, ties going to the wider (faster) table.

    Args:
        values: an int8 or int16 tensor (what the decoder supports).
        wide: force 32-bit table entries; by default 16-bit entries are used for int8 when
            every offset fits their 11 bits, 32-bit otherwise (int16 always needs them).

    Returns:
        The encoding: the codeword stream (big-endian 32-bit words, padded for the decoder's
        look-ahead) and DCM + tables.

    Raises:
        ValueError: a dtype other than int8/int16, or 16-bit tables that cannot hold it.

    Example:
        >>> e = encode_huffman(np.array([0, 0, 0, 7, 0, -3, 0, 0], np.int8))
        >>> len(e.encoded), e.ancillary[:6]
        (4, b'\x01\x01\x00\x00\x01\x10')
    """
    values = np.asarray(values)
    if values.dtype not in (np.int8, np.int16):
        raise ValueError(f"TFLM Huffman decodes int8 or int16 tensors, got {values.dtype}")
    symbols, inverse, counts = np.unique(values.ravel(), return_inverse=True, return_counts=True)
    lengths = huffman.code_lengths(counts)
    codes = huffman.canonical_codes(lengths)
    layout = _table_layout(codes, lengths)
    if wide is None:
        wide = values.dtype == np.int16 or layout.max_offset > _VALUE16_MAX
    if not wide and (values.dtype == np.int16 or layout.max_offset > _VALUE16_MAX):
        raise ValueError("16-bit Huffman tables hold int8 symbols and offsets up to 2047 only")
    table = _table_entries(layout, symbols, wide)
    stream, nbits = huffman.encode(inverse, lengths)
    # The decoder reads whole 32-bit words and may look up to a table's width past the last code.
    words = -(-(nbits + MAX_TABLE_BITS) // 32)
    encoded = stream + bytes(4 * words - len(stream))
    user = bytes([1, ((layout.initial_bits - 1) << 4) | int(wide)])
    return Encoding(encoded, _dcm(HUFFMAN_TYPE, user) + table)


@dataclass(frozen=True)
class _Layout:
    """Tables in memory order: (prefix, depth, bits) each, with their start entry."""

    tables: list[tuple[int, int, int]]
    starts: list[int]
    leaves: dict[tuple[int, int], int]  # (length, code) -> symbol index
    max_offset: int

    @property
    def initial_bits(self) -> int:
        return self.tables[0][2]


def _table_layout(codes: np.ndarray, lengths: np.ndarray) -> _Layout:
    leaves = {(int(n), int(c)): s for s, (n, c) in enumerate(zip(lengths, codes)) if n}
    deepest = int(lengths.max())
    # internal[d]: prefixes of length d that longer codes extend (nodes that need a table).
    internal = [{c >> (n - d) for n, c in leaves if n > d} for d in range(deepest + 1)]
    height = [{} for _ in range(deepest + 1)]
    for n, c in leaves:
        for d in range(n):
            p = c >> (n - d)
            height[d][p] = max(height[d].get(p, 0), n - d)

    def children(prefix: int, depth: int, bits: int) -> list[int]:
        return sorted(q for q in internal[depth + bits] if q >> bits == prefix)

    best: dict[tuple[int, int], tuple[int, int]] = {}  # node -> (entries, bits)
    for depth in range(deepest - 1, -1, -1):
        for prefix in internal[depth]:
            options = []
            for bits in range(1, min(MAX_TABLE_BITS, height[depth][prefix]) + 1):
                below = sum(best[(q, depth + bits)][0] for q in children(prefix, depth, bits))
                options.append((2**bits + below, -bits))
            entries, neg_bits = min(options)
            best[(prefix, depth)] = (entries, -neg_bits)
    tables, starts, queue, position, max_offset = [], [], [(0, 0)], 0, 0
    while queue:  # breadth first, so every pointer points forward
        prefix, depth = queue.pop(0)
        bits = best[(prefix, depth)][1]
        tables.append((prefix, depth, bits))
        starts.append(position)
        position += 2**bits
        queue.extend((q, depth + bits) for q in children(prefix, depth, bits))
    # The offset of a pointer entry is at most its table's start + size to the child's start.
    start_of = {t[:2]: s for t, s in zip(tables, starts)}
    for (prefix, depth, bits), start in zip(tables, starts):
        for q in children(prefix, depth, bits):
            max_offset = max(max_offset, start_of[(q, depth + bits)] - start)
    return _Layout(tables, starts, leaves, max_offset)


def _table_entries(layout: _Layout, symbols: np.ndarray, wide: bool) -> bytes:
    found, shift = (_FOUND32, _COUNT32_SHIFT) if wide else (_FOUND16, _COUNT16_SHIFT)
    symbol_mask = 0xFFFF if wide else 0xFF
    raw = symbols.astype(np.int64) & symbol_mask
    start_of = {(p, d): (s, b) for (p, d, b), s in zip(layout.tables, layout.starts)}
    entries: list[int] = []
    for (prefix, depth, bits), start in zip(layout.tables, layout.starts):
        for pattern in range(2**bits):
            entries.append(_entry(layout, raw, found, shift, prefix, depth, bits, pattern,
                                  start + pattern, start_of))  # fmt: skip
    return (
        np.asarray(entries, np.uint32 if wide else np.uint16)
        .astype("<u4" if wide else "<u2")
        .tobytes()
    )


def _entry(layout, raw, found, shift, prefix, depth, bits, pattern, position, start_of) -> int:
    full = (prefix << bits) | pattern
    for used in range(1, bits + 1):
        symbol = layout.leaves.get((depth + used, full >> (bits - used)))
        if symbol is not None:
            return found | (used << shift) | int(raw[symbol])
    child = start_of.get((full, depth + bits))
    if child is None:  # an unused pattern (a single-symbol code): never reached by valid data
        return found | (bits << shift) | int(raw[0])
    child_start, child_bits = child
    return ((child_bits - 1) << shift) | (child_start - position)
