"""The ``.kcz`` sidecar: a ``.tflite`` split into a skeleton and Deep-Compression-coded weights.

The format is specified in ``tflite_export/FORMAT.md``; this module is its reference encoder
and decoder. ``split`` cuts the chosen weight buffers out of a ``.tflite`` (the *skeleton* is
what remains) and codes them; ``join`` puts the original file back together byte for byte, or
raises ``SidecarError`` naming the section and byte offset of the first problem. Integrity is
checked three ways: a CRC-32 per section and of the skeleton, sizes and ranges against each
other, and the SHA-256 of the rebuilt file.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from keras_compress.coding import huffman
from keras_compress.coding.sparse_index import absolute_positions, relative_gaps

MAGIC = b"KCZ1"
VERSION = 2
# magic, version, flags, model size, skeleton size, SHA-256 of the model, CRC-32 of the skeleton,
# entry count
HEADER = struct.Struct("<4sHHQQ32sII")
ENTRY = struct.Struct("<QQQIBBH")  # offset, length, payload offset, payload size, enc, elem, 0
CODED = 1  # the only encoding of format version 2
MAX_CODEBOOK = 4096  # more distinct values: not shared, the tensor stays in the skeleton
MAX_GAP_BITS = 8


class SidecarError(ValueError):
    """A sidecar or skeleton that cannot be decoded into the model it was made from."""


@dataclass(frozen=True)
class Entry:
    """One tensor cut out of the model: where it goes and how its payload is coded."""

    offset: int
    length: int
    payload_offset: int
    payload_size: int
    encoding: int
    elem_size: int


def _crc(data: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(data))


# ---------------------------------------------------------------- coding one tensor


def _as_units(data: bytes, elem_size: int) -> np.ndarray:
    """Element bit patterns as unsigned integers (byte-exact: -0.0 differs from +0.0)."""
    return np.frombuffer(data, np.dtype(f"<u{elem_size}"))


def encode_tensor(data: bytes, elem_size: int, max_code_length: int = 15) -> bytes | None:
    """Code one tensor's bytes as codebook + Huffman values + Huffman gaps, or ``None``.

    ``None`` means coding would not make it smaller (or it has over ``MAX_CODEBOOK`` distinct
    non-zero values): the tensor stays in the skeleton. Layout: ``tflite_export/FORMAT.md``.

    Example:
        >>> w = np.zeros(1000, np.float32); w[::10] = 0.5
        >>> len(encode_tensor(w.tobytes(), 4)) < 200
        True
    """
    units = _as_units(data, elem_size)
    nonzero = units != 0
    codebook, symbols = np.unique(units[nonzero], return_inverse=True)
    if codebook.size > MAX_CODEBOOK:
        return None
    best = None
    for gap_bits in _gap_bit_choices(nonzero):
        payload = _encode_with_gaps(units, nonzero, codebook, symbols, gap_bits, max_code_length)
        if best is None or len(payload) < len(best):
            best = payload
    return best if best is not None and len(best) < len(data) else None


def _gap_bit_choices(nonzero: np.ndarray) -> range:
    # gap_bits 0 means dense: every element has an entry, no gap stream.
    return range(0, 1) if nonzero.all() else range(1, MAX_GAP_BITS + 1)


def _encode_with_gaps(units, nonzero, codebook, symbols, gap_bits, max_code_length) -> bytes:
    k = codebook.size
    if gap_bits == 0:
        gaps, real = np.zeros(0, np.int64), np.ones(units.size, bool)
        values = symbols
    else:
        gaps, real = relative_gaps(nonzero, 2**gap_bits - 1)
        values = np.full(real.size, k, dtype=np.int64)  # symbol k: a zero (filler)
        values[real] = symbols
    value_lengths = huffman.code_lengths(np.bincount(values, minlength=k + 1), max_code_length)
    value_stream, value_bits = huffman.encode(values, value_lengths)
    parts = [
        struct.pack("<IBBI", k, gap_bits, max_code_length, values.size),
        codebook.astype(codebook.dtype.newbyteorder("<")).tobytes(),
        value_lengths.astype(np.uint8).tobytes(),
        struct.pack("<II", value_bits, len(value_stream)),
        value_stream,
    ]
    if gap_bits:
        gap_lengths = huffman.code_lengths(
            np.bincount(gaps, minlength=2**gap_bits), max_code_length
        )
        gap_stream, gap_bits_used = huffman.encode(gaps, gap_lengths)
        parts += [
            gap_lengths.astype(np.uint8).tobytes(),
            struct.pack("<II", gap_bits_used, len(gap_stream)),
            gap_stream,
        ]
    return b"".join(parts)


class _Reader:
    """Bounds-checked reads from one payload; errors name the section and absolute offset."""

    def __init__(self, data: bytes, base: int, section: str):
        self.data, self.base, self.section, self.pos = data, base, section, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SidecarError(
                f"{self.section}: needs {n} bytes at byte offset {self.base + self.pos}, "
                f"only {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def decode_tensor(
    payload: bytes, length: int, elem_size: int, base: int = 0, name: str = ""
) -> bytes:
    """Invert ``encode_tensor``: the tensor's original ``length`` bytes.

    Raises:
        SidecarError: the payload is malformed or does not decode to exactly ``length`` bytes.
    """
    section = f"tensor payload {name}".strip()
    r = _Reader(payload, base, section)
    k, gap_bits, max_len, count = r.unpack("<IBBI")
    n = length // elem_size
    if length % elem_size or k > MAX_CODEBOOK or gap_bits > MAX_GAP_BITS or not 1 <= max_len <= 16:
        raise SidecarError(f"{section}: bad tensor header at byte offset {base}")
    if count > n or (gap_bits == 0 and count != n):
        raise SidecarError(f"{section}: {count} entries for {n} elements at byte offset {base}")
    codebook = np.frombuffer(r.take(k * elem_size), np.dtype(f"<u{elem_size}"))
    value_lengths = np.frombuffer(r.take(k + 1), np.uint8).astype(np.int64)
    values = _decode_stream(r, count, value_lengths, max_len, section)
    if np.any(values > k) or (gap_bits == 0 and np.any(values == k)):
        raise SidecarError(f"{section}: value symbol out of range")
    out = np.zeros(n, dtype=np.dtype(f"<u{elem_size}"))
    if gap_bits == 0:
        out[:] = codebook[values]
    else:
        gap_lengths = np.frombuffer(r.take(2**gap_bits), np.uint8).astype(np.int64)
        gaps = _decode_stream(r, count, gap_lengths, max_len, section)
        try:
            positions = absolute_positions(gaps, size=n)
        except ValueError as err:
            raise SidecarError(f"{section}: {err}") from err
        real = values < k
        out[positions[real]] = codebook[values[real]]
    if r.pos != len(payload):
        raise SidecarError(f"{section}: {len(payload) - r.pos} unexpected bytes at the end")
    return out.tobytes()


def _decode_stream(r: _Reader, count: int, lengths: np.ndarray, max_len: int, section: str):
    if np.any(lengths > max_len):
        raise SidecarError(f"{section}: a code length exceeds {max_len} bits")
    if count and np.sum(2.0 ** -lengths[lengths > 0]) > 1.0:
        raise SidecarError(f"{section}: code lengths are not a prefix code (Kraft sum > 1)")
    bit_count, size = r.unpack("<II")
    if (bit_count + 7) // 8 != size:
        raise SidecarError(f"{section}: stream of {size} bytes cannot hold {bit_count} bits")
    start = r.base + r.pos
    stream = r.take(size)
    try:
        return huffman.decode(stream, count, lengths, bit_count)
    except ValueError as err:
        raise SidecarError(f"{section}: stream at byte offset {start}: {err}") from err


# ---------------------------------------------------------------- whole files


def split(model: bytes, cuts: list[tuple[int, int, int]], max_code_length: int = 15):
    """Cut tensors out of a ``.tflite`` and code them.

    Args:
        model: the full ``.tflite`` bytes.
        cuts: ``(offset, length, elem_size)`` of each candidate tensor (non-overlapping).
        max_code_length: longest Huffman code (15; a device table has ``2**15`` entries).

    Returns:
        ``(skeleton, sidecar, entries)``; tensors that would not shrink stay in the skeleton.

    Example:
        >>> model = bytes(16) + np.repeat(np.float32([0.5, 0.0]), 50).tobytes() + bytes(8)
        >>> skeleton, sidecar, entries = split(model, [(16, 400, 4)])
        >>> len(skeleton), join(skeleton, sidecar) == model
        (24, True)
    """
    payloads, placed = [], []
    for offset, length, elem_size in sorted(cuts):
        coded = encode_tensor(model[offset : offset + length], elem_size, max_code_length)
        if coded is not None:
            placed.append((offset, length, elem_size, coded))
    table_size = len(placed) * ENTRY.size + 4
    cursor = HEADER.size + 4 + table_size
    entries = []
    for offset, length, elem_size, coded in placed:
        entries.append(Entry(offset, length, cursor, len(coded), CODED, elem_size))
        payloads.append(coded + _crc(coded))
        cursor += len(coded) + 4
    skeleton = b"".join(
        model[start:end]
        for start, end in _kept_ranges(len(model), [(e.offset, e.length) for e in entries])
    )
    digest = hashlib.sha256(model).digest()
    header = HEADER.pack(
        MAGIC, VERSION, 0, len(model), len(skeleton), digest, zlib.crc32(skeleton), len(entries)
    )
    table = b"".join(
        ENTRY.pack(e.offset, e.length, e.payload_offset, e.payload_size, e.encoding, e.elem_size, 0)
        for e in entries
    )
    sidecar = header + _crc(header) + table + _crc(table) + b"".join(payloads)
    return skeleton, sidecar, entries


def _kept_ranges(size: int, cut: list[tuple[int, int]]):
    position = 0
    for offset, length in cut:
        yield position, offset
        position = offset + length
    yield position, size


def read_header(sidecar: bytes) -> tuple[dict, list[Entry]]:
    """Parse and check the header and entry table (not the payloads).

    Raises:
        SidecarError: wrong magic or version, a CRC mismatch, or inconsistent entries.
    """
    if len(sidecar) < HEADER.size + 4:
        raise SidecarError(
            f"header: file has {len(sidecar)} bytes, the header needs {HEADER.size + 4}"
        )
    raw = sidecar[: HEADER.size]
    magic, version, flags, model_size, skeleton_size, sha, skeleton_crc, count = HEADER.unpack(raw)
    if magic != MAGIC:
        raise SidecarError(f"header: bad magic {magic!r} at byte offset 0 (expected {MAGIC!r})")
    if version != VERSION:
        raise SidecarError(
            f"header: version {version} at byte offset 4; this reader knows {VERSION}"
        )
    if sidecar[HEADER.size : HEADER.size + 4] != _crc(raw):
        raise SidecarError(f"header: CRC-32 mismatch at byte offset {HEADER.size}")
    table_start = HEADER.size + 4
    table_end = table_start + count * ENTRY.size
    if table_end + 4 > len(sidecar):
        raise SidecarError(
            f"entry table: {count} entries run past the end of the file ({len(sidecar)} bytes)"
        )
    table = sidecar[table_start:table_end]
    if sidecar[table_end : table_end + 4] != _crc(table):
        raise SidecarError(f"entry table: CRC-32 mismatch at byte offset {table_end}")
    entries, previous_end, cut_total, payload_at = [], 0, 0, table_end + 4
    for i in range(count):
        fields = ENTRY.unpack_from(table, i * ENTRY.size)
        e = Entry(*fields[:6])
        where = f"entry {i} at byte offset {table_start + i * ENTRY.size}"
        if e.encoding != CODED or e.elem_size not in (1, 2, 4, 8) or fields[6] != 0:
            raise SidecarError(f"entry table: {where}: unknown encoding or element size")
        if e.offset < previous_end or e.offset + e.length > model_size:
            raise SidecarError(f"entry table: {where}: tensor range overlaps or exceeds the model")
        if e.payload_offset != payload_at or e.payload_offset + e.payload_size + 4 > len(sidecar):
            raise SidecarError(f"entry table: {where}: payload not at byte offset {payload_at}")
        previous_end, cut_total = e.offset + e.length, cut_total + e.length
        payload_at = e.payload_offset + e.payload_size + 4
        entries.append(e)
    if payload_at != len(sidecar):
        raise SidecarError(
            f"payloads: the file has {len(sidecar) - payload_at} bytes after the last payload "
            f"(byte offset {payload_at})"
        )
    if model_size - cut_total != skeleton_size:
        raise SidecarError(
            "header: model size minus the cut tensors does not equal the skeleton size"
        )
    info = {"version": version, "flags": flags, "model_size": model_size,
            "skeleton_size": skeleton_size, "sha256": sha.hex(), "skeleton_crc32": skeleton_crc,
            "entries": count}  # fmt: skip
    return info, entries


def join(skeleton: bytes, sidecar: bytes) -> bytes:
    """Rebuild the original ``.tflite`` from its skeleton and sidecar, byte for byte.

    Raises:
        SidecarError: anything malformed, a skeleton of the wrong size, or a rebuilt file
            whose skeleton CRC-32 or SHA-256 differs from the one recorded (a wrong or
            altered skeleton).
    """
    info, entries = read_header(sidecar)
    if len(skeleton) != info["skeleton_size"]:
        raise SidecarError(
            f"skeleton: {len(skeleton)} bytes, the sidecar expects {info['skeleton_size']}"
        )
    if zlib.crc32(skeleton) != info["skeleton_crc32"]:
        raise SidecarError("skeleton: CRC-32 differs from the sidecar's (wrong or changed file?)")
    parts, skeleton_pos, model_pos = [], 0, 0
    for i, e in enumerate(entries):
        keep = e.offset - model_pos
        parts.append(skeleton[skeleton_pos : skeleton_pos + keep])
        skeleton_pos += keep
        payload = sidecar[e.payload_offset : e.payload_offset + e.payload_size]
        crc_at = e.payload_offset + e.payload_size
        if sidecar[crc_at : crc_at + 4] != _crc(payload):
            raise SidecarError(f"tensor payload {i}: CRC-32 mismatch at byte offset {crc_at}")
        parts.append(decode_tensor(payload, e.length, e.elem_size, e.payload_offset, str(i)))
        model_pos = e.offset + e.length
    parts.append(skeleton[skeleton_pos:])
    model = b"".join(parts)
    if hashlib.sha256(model).hexdigest() != info["sha256"]:
        raise SidecarError("model: SHA-256 of the rebuilt .tflite differs (wrong skeleton?)")
    return model
