"""The ``.kcz`` sidecar: a ``.tflite`` split into a skeleton and Deep-Compression-coded weights.

The format is specified in ``tflite_export/FORMAT.md``; this module is its reference encoder
and decoder. ``split`` cuts the chosen weight buffers out of a ``.tflite`` (the *skeleton* is
what remains) and codes them; ``join`` puts the original file back together byte for byte, or
raises ``SidecarError`` naming the section and byte offset of the first problem. Integrity is
checked three ways: a CRC-32 per section and of the skeleton, sizes and ranges against each
other, and the SHA-256 of the rebuilt file.

Format version 3 adds two codings, each used only where it is smaller: per-channel codebooks
(``encoding`` 2: after BatchNorm folding or per-channel int8 quantization each output channel
holds its own few values) and the skeleton itself DEFLATE-coded (header ``flags``). A file
that uses neither is written as version 2, which every earlier reader decodes. Version 4 adds
context-adaptive binary arithmetic coding of a tensor (``encoding`` 3,
``keras_compress.coding.arithmetic``), used where it is smaller than Huffman. Version 5 adds
scaled copies (``encoding`` 4): a float32 vector stored as a factor times skeleton bytes
decoded just before it (a per-channel int8 bias scale is the input scale times the kernel's
channel scales, ``scale_links``). Files keep the lowest version that holds them.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import zopfli.zopfli

from keras_compress.coding import arithmetic as arithmetic_module
from keras_compress.coding import huffman
from keras_compress.coding.sparse_index import absolute_positions, relative_gaps

MAGIC = b"KCZ1"
# 3: per-channel codebooks, DEFLATE-coded skeleton; 4: arithmetic coding; 5: scaled copies
VERSIONS = (2, 3, 4, 5)
# magic, version, flags, model size, skeleton size, SHA-256 of the model, CRC-32 of the skeleton,
# entry count
HEADER = struct.Struct("<4sHHQQ32sII")
ENTRY = struct.Struct("<QQQIBBH")  # offset, length, payload offset, payload size, enc, elem, 0
CODED = 1  # one codebook for the whole tensor
CHANNEL_CODED = 2  # one codebook per channel (version 3)
ARITHMETIC_CODED = 3  # codebook(s) and context-adaptive binary arithmetic coding (version 4)
SCALED_COPY = 4  # float32 skeleton bytes before it, each times one factor (version 5)
ENCODINGS = {v: tuple(range(1, v)) for v in VERSIONS}  # version v knows encodings 1 .. v - 1
SCALED = struct.Struct("<II")  # a scaled copy's payload: distance, factor (binary32 bits)
CODINGS = ("auto", "huffman", "arithmetic")
# "auto" tries arithmetic coding on tensors until this many elements were tried: the coder is
# pure Python (about 1.5 us per element to encode and as much to check by decoding).
AUTO_ARITHMETIC_ELEMENTS = 3_000_000
SKELETON_DEFLATE = 1  # flags & 15: the skeleton is a raw DEFLATE stream (version 3)
WINDOW_BITS = range(9, 16)  # flags >> 4: the DEFLATE window, 2**bits bytes
ZOPFLI_MAX_BYTES = 1 << 20  # larger skeletons: zlib alone (zopfli: 0.4-0.8 MB/s here)
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


def encode_tensor(
    data: bytes,
    elem_size: int,
    max_code_length: int = 15,
    shape: tuple[int, ...] = (),
    arithmetic: bool = False,
) -> tuple[int, bytes] | None:
    """Code one tensor's bytes as codebook(s) + Huffman values + Huffman gaps, or ``None``.

    Tries one codebook for the whole tensor (``CODED``) and, for each axis of ``shape``,
    codebooks shared by groups of channels along that axis (``CHANNEL_CODED``: a per-channel
    int8 kernel holds at most ``2**bits`` values per output channel but many more over the
    tensor, and channels quantized with the same scale share one table) and keeps the
    smallest. With ``arithmetic``, the codebook choice with the fewest value bits is also coded
    with ``keras_compress.coding.arithmetic`` (``ARITHMETIC_CODED``, at most 256 values per
    codebook) and kept if smaller. ``None`` means no coding would make it smaller (or it has
    over ``MAX_CODEBOOK`` distinct non-zero values): the tensor stays in the skeleton. Layout:
    ``tflite_export/FORMAT.md``.

    Returns:
        ``(encoding, payload)``.

    Example:
        >>> w = np.zeros(1000, np.float32); w[::10] = 0.5
        >>> encoding, payload = encode_tensor(w.tobytes(), 4)
        >>> encoding, len(payload) < 200
        (1, True)
    """
    units = _as_units(data, elem_size)
    nonzero = units != 0
    choices = [c for c in _codebook_choices(units, shape) if c[2] <= MAX_CODEBOOK]
    best, best_size = None, len(data)
    # Huffman sizes follow from the symbol counts alone: every combination is sized exactly
    # without coding it, and only the smallest is coded.
    for gap_bits in _gap_bit_choices(nonzero):
        fillers, gap_bytes = 0, 0
        if gap_bits:
            gaps, real = relative_gaps(nonzero, 2**gap_bits - 1)
            fillers = int(real.size - real.sum())
            gap_bytes = 2**gap_bits + 8 + _coded_bytes(np.bincount(gaps), max_code_length)
        for choice in choices:
            _, prefix, slots, ranks, codebooks = choice
            counts = np.bincount(ranks, minlength=slots + 1)
            counts[slots] += fillers  # symbol `slots`: a filler zero
            size = (len(prefix) + 10 + codebooks.nbytes + slots + 1 + 8 + gap_bytes
                    + _coded_bytes(counts, max_code_length))  # fmt: skip
            if size < best_size:
                best, best_size = (choice, gap_bits), size
    coded = None
    if best is not None:
        (encoding, prefix, slots, ranks, codebooks), gap_bits = best
        payload = prefix + _encode_with_gaps(
            units.size, nonzero, codebooks, slots, ranks, gap_bits, max_code_length
        )
        coded = encoding, payload
    fits = [c for c in choices if 1 <= c[2] <= arithmetic_module.MAX_CODEBOOK]
    if arithmetic and fits and units.size > 1:
        # Value bits differ between the codebook choices, significance bits do not.
        choice = min(fits, key=lambda c: c[4].nbytes + _entropy_bits(c[3]) / 8)
        limit = len(coded[1]) if coded else len(data)
        payload = _encode_arithmetic(units, nonzero, shape, choice, limit)
        if payload is not None and len(payload) < limit:
            coded = ARITHMETIC_CODED, payload
    return coded


def _entropy_bits(ranks: np.ndarray) -> float:
    counts = np.bincount(ranks)
    p = counts[counts > 0] / max(ranks.size, 1)
    return float(-(counts[counts > 0] * np.log2(p)).sum())


def _encode_arithmetic(units, nonzero, shape, choice, limit=None) -> bytes | None:
    """Payload of ``ARITHMETIC_CODED``: channel layout, row width, stride, codebooks, stream.

    ``None`` without coding when an estimate (the class entropy given the contexts, plus the
    index entropy given the class; within a few percent of the coded size on the LeNets, a
    little below it) says it cannot beat ``limit`` bytes: the Python coder is the slow part
    of an export.
    """
    encoding, prefix, slots, ranks, codebooks = choice
    n = units.size
    if encoding == CODED:
        prefix = struct.pack("<III", 1, n, 1)
    width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else n
    if width < 1 or n % width:
        width = n
    symbols = np.full(n, -1, np.int64)
    symbols[nonzero] = ranks
    cls = arithmetic_module.classes(units)
    stride, class_bits = arithmetic_module.choose_stride(cls, width)
    index_bits = sum(_entropy_bits(ranks[cls[nonzero] == c]) for c in (1, 2))
    if limit is not None and (class_bits + index_bits) / 8 >= limit:  # it is optimistic
        return None
    stream = arithmetic_module.encode(symbols, cls, slots, width, stride)
    table = codebooks.astype(codebooks.dtype.newbyteorder("<")).tobytes()
    return b"".join(
        [prefix, struct.pack("<III", slots, width, stride), table,
         struct.pack("<I", len(stream)), stream]
    )  # fmt: skip


def _coded_bytes(counts: np.ndarray, max_code_length: int) -> int:
    """Bytes of a Huffman stream of symbols with these counts."""
    lengths = huffman.code_lengths(counts, max_code_length)
    return (int(np.dot(counts, lengths)) + 7) // 8


def _codebook_choices(units: np.ndarray, shape: tuple[int, ...]):
    """``(encoding, prefix, slots, ranks, codebooks)`` for each way to share values.

    ``codebooks`` is ``tables x slots`` (unused slots zero), ``ranks`` the index of each
    non-zero element in its channel's table and ``prefix`` the channel layout that goes before
    the payload's common fields (empty for ``CODED``).
    """
    values = units[units != 0]
    codebook, ranks = np.unique(values, return_inverse=True)
    yield CODED, b"", codebook.size, ranks, codebook[None, :]
    if int(np.prod(shape, dtype=np.int64)) != units.size or units.itemsize > 4:
        return
    position = np.flatnonzero(units)
    for axis, channels in enumerate(shape):
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        if not 1 < channels < units.size:
            continue
        channel = (position // inner) % channels
        sets = [set() for _ in range(channels)]
        pairs = np.unique((channel.astype(np.uint64) << np.uint64(32)) | values.astype(np.uint64))
        for c, v in zip((pairs >> np.uint64(32)).tolist(), (pairs & np.uint64(2**32 - 1)).tolist()):
            sets[c].add(v)
        slots = max((len(x) for x in sets), default=0)
        if slots >= codebook.size:  # no channel is simpler than the whole tensor
            continue
        group, tables = _group_channels(sets, slots)
        codebooks = np.zeros((len(tables), slots), units.dtype)
        channel_ranks = np.empty(values.size, np.int64)
        element_group = group[channel]
        for g, table in enumerate(tables):
            codebooks[g, : len(table)] = table
            mine = element_group == g
            channel_ranks[mine] = np.searchsorted(codebooks[g, : len(table)], values[mine])
        prefix = struct.pack("<III", channels, inner, len(tables))
        if len(tables) < channels:
            prefix += group.astype(np.uint8).tobytes()
        yield CHANNEL_CODED, prefix, slots, channel_ranks, codebooks


def _group_channels(sets: list[set], slots: int) -> tuple[np.ndarray, list[list[int]]]:
    """Channels -> shared tables of at most ``slots`` values (greedy, fullest channels first).

    Per-channel int8 quantization gives channels with the same scale (the same largest shared
    value) the same table, so a handful of tables serve hundreds of channels. As many tables as
    channels, or more than 256 (the map holds bytes): one table per channel, in order.
    """
    group = np.zeros(len(sets), np.int64)
    unions: list[set] = []
    for c in sorted(range(len(sets)), key=lambda c: -len(sets[c])):
        for g, union in enumerate(unions):
            if len(union | sets[c]) <= slots:
                union |= sets[c]
                group[c] = g
                break
        else:
            group[c] = len(unions)
            unions.append(set(sets[c]))
    if len(unions) > 256 or len(unions) == len(sets):  # no map: table c is channel c's
        return np.arange(len(sets)), [sorted(x) for x in sets]
    return group, [sorted(x) for x in unions]


def _gap_bit_choices(nonzero: np.ndarray) -> range:
    # gap_bits 0 means dense: every element has an entry, no gap stream.
    return range(0, 1) if nonzero.all() else range(1, MAX_GAP_BITS + 1)


def _encode_with_gaps(size, nonzero, codebooks, k, symbols, gap_bits, max_code_length) -> bytes:
    if gap_bits == 0:
        gaps, real = np.zeros(0, np.int64), np.ones(size, bool)
        values = symbols
    else:
        gaps, real = relative_gaps(nonzero, 2**gap_bits - 1)
        values = np.full(real.size, k, dtype=np.int64)  # symbol k: a zero (filler)
        values[real] = symbols
    value_lengths = huffman.code_lengths(np.bincount(values, minlength=k + 1), max_code_length)
    value_stream, value_bits = huffman.encode(values, value_lengths)
    parts = [
        struct.pack("<IBBI", k, gap_bits, max_code_length, values.size),
        codebooks.astype(codebooks.dtype.newbyteorder("<")).tobytes(),
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
    payload: bytes,
    length: int,
    elem_size: int,
    base: int = 0,
    name: str = "",
    encoding: int = CODED,
) -> bytes:
    """Invert ``encode_tensor``: the tensor's original ``length`` bytes.

    Raises:
        SidecarError: the payload is malformed or does not decode to exactly ``length`` bytes.
    """
    section = f"tensor payload {name}".strip()
    r = _Reader(payload, base, section)
    n = length // elem_size
    channels, inner, tables = (1, max(n, 1), 1)
    if encoding in (CHANNEL_CODED, ARITHMETIC_CODED):
        channels, inner, tables = r.unpack("<III")
    if not 1 <= channels <= n or inner < 1 or n % channels or (n // channels) % inner:
        raise SidecarError(
            f"{section}: {channels} channels of {inner} for {n} elements at byte offset {base}"
        )
    if not 1 <= tables <= channels or (tables < channels and tables > 256):
        raise SidecarError(f"{section}: {tables} tables for {channels} channels")
    group = np.arange(channels)
    if tables < channels:
        group = np.frombuffer(r.take(channels), np.uint8).astype(np.int64)
        if np.any(group >= tables):
            raise SidecarError(f"{section}: a channel names a table beyond {tables}")
    if encoding == ARITHMETIC_CODED:
        out = _decode_arithmetic(r, n, elem_size, channels, inner, tables, group)
        if r.pos != len(payload):
            raise SidecarError(f"{section}: {len(payload) - r.pos} unexpected bytes at the end")
        return out.tobytes()
    k, gap_bits, max_len, count = r.unpack("<IBBI")
    if length % elem_size or k > MAX_CODEBOOK or gap_bits > MAX_GAP_BITS or not 1 <= max_len <= 16:
        raise SidecarError(f"{section}: bad tensor header at byte offset {base}")
    if count > n or (gap_bits == 0 and count != n):
        raise SidecarError(f"{section}: {count} entries for {n} elements at byte offset {base}")
    dtype = np.dtype(f"<u{elem_size}")
    codebooks = np.frombuffer(r.take(tables * k * elem_size), dtype).reshape(tables, k)
    value_lengths = np.frombuffer(r.take(k + 1), np.uint8).astype(np.int64)
    values = _decode_stream(r, count, value_lengths, max_len, section)
    if np.any(values > k) or (gap_bits == 0 and np.any(values == k)):
        raise SidecarError(f"{section}: value symbol out of range")
    out = np.zeros(n, dtype=dtype)
    if gap_bits == 0:
        positions, real = np.arange(n), np.ones(n, bool)
    else:
        gap_lengths = np.frombuffer(r.take(2**gap_bits), np.uint8).astype(np.int64)
        gaps = _decode_stream(r, count, gap_lengths, max_len, section)
        try:
            positions = absolute_positions(gaps, size=n)
        except ValueError as err:
            raise SidecarError(f"{section}: {err}") from err
        real = values < k
    where = positions[real]
    out[where] = codebooks[group[(where // inner) % channels], values[real]]
    if r.pos != len(payload):
        raise SidecarError(f"{section}: {len(payload) - r.pos} unexpected bytes at the end")
    return out.tobytes()


def _decode_arithmetic(r: _Reader, n, elem_size, channels, inner, tables, group) -> np.ndarray:
    section = r.section
    at = r.base + r.pos
    k, width, stride = r.unpack("<III")
    if not 1 <= k <= arithmetic_module.MAX_CODEBOOK or width < 1 or n % width:
        raise SidecarError(
            f"{section}: bad arithmetic header (k {k}, width {width}) at byte offset {at}"
        )
    if not 1 <= stride <= arithmetic_module.MAX_STRIDE:
        raise SidecarError(f"{section}: stride {stride} out of range at byte offset {at + 8}")
    dtype = np.dtype(f"<u{elem_size}")
    codebooks = np.frombuffer(r.take(tables * k * elem_size), dtype).reshape(tables, k)
    table_cls = arithmetic_module.classes(codebooks).tolist()
    (size,) = r.unpack("<I")
    start = r.base + r.pos
    stream = r.take(size)
    group_of = group.tolist()

    def class_of(i: int, v: int) -> int:
        cls = table_cls[group_of[(i // inner) % channels]][v]
        if cls == 0:
            raise arithmetic_module.StreamError(f"element {i}: index {v} names a padding zero")
        return cls

    try:
        symbols = arithmetic_module.decode(stream, n, width, stride, k, class_of)
    except arithmetic_module.StreamError as err:
        raise SidecarError(f"{section}: stream at byte offset {start}: {err}") from err
    out = np.zeros(n, dtype=dtype)
    where = np.flatnonzero(symbols >= 0)
    out[where] = codebooks[group[(where // inner) % channels], symbols[where]]
    return out


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


def split(
    model: bytes,
    cuts: list[tuple],
    max_code_length: int = 15,
    window_bits: int | None = 15,
    coding: str = "auto",
    links: list[tuple[int, int, int, int]] = (),
):
    """Cut tensors out of a ``.tflite`` and code them; DEFLATE what remains.

    Args:
        model: the full ``.tflite`` bytes.
        cuts: ``(offset, length, elem_size)`` or ``(offset, length, elem_size, shape)`` of
            each candidate tensor (non-overlapping); with a shape, per-channel codebooks
            along each of its axes are tried as well.
        max_code_length: longest Huffman code (15; a device table has ``2**15`` entries).
        window_bits: DEFLATE window of the skeleton, ``2**window_bits`` bytes (9 to 15; the C
            decoder must be built with ``KCZ_WINDOW_BITS`` at least this), or ``None`` to
            store the skeleton raw. It is coded only where that makes it smaller; where
            DEFLATE of the whole model is smaller than skeleton and payloads together (a
            model neither shared nor pruned), nothing is cut.
        coding: ``"huffman"`` (format versions 2 and 3), ``"arithmetic"`` (also try
            context-adaptive arithmetic coding on every tensor, keep the smaller; version 4)
            or ``"auto"``: arithmetic tried until ``AUTO_ARITHMETIC_ELEMENTS`` elements were
            tried (the Python coder takes seconds per million elements), Huffman after.
        links: candidate scaled copies ``(target, source, length, factor)``: float32 bytes at
            ``target`` that may equal those at ``source`` times the binary32 ``factor`` (bit
            pattern), e.g. ``tflite_buffers.scale_links``. Each that holds exactly, whose
            bytes both stay in the skeleton and within the DEFLATE window of each other, and
            that is longer than an entry, is cut as a scaled copy (version 5).

    Returns:
        ``(skeleton, sidecar, entries)``: the skeleton as stored (coded or not); tensors that
        would not shrink stay in it.

    Example:
        >>> model = bytes(16) + np.repeat(np.float32([0.5, 0.0]), 50).tobytes() + bytes(8)
        >>> skeleton, sidecar, entries = split(model, [(16, 400, 4)], window_bits=None)
        >>> len(skeleton), join(skeleton, sidecar) == model
        (24, True)
    """
    if window_bits is not None and window_bits not in WINDOW_BITS:
        raise ValueError(f"window_bits must be None or in 9..15, got {window_bits!r}")
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    budget = {"auto": AUTO_ARITHMETIC_ELEMENTS, "huffman": 0, "arithmetic": None}[coding]
    payloads, placed = [], []
    for offset, length, elem_size, *shape in sorted(cuts):
        try_arithmetic = budget is None or length // elem_size <= budget
        if try_arithmetic and budget is not None:
            budget -= length // elem_size
        coded = encode_tensor(
            model[offset : offset + length], elem_size, max_code_length,
            shape[0] if shape else (), try_arithmetic,
        )  # fmt: skip
        if coded is not None:
            placed.append((offset, length, elem_size, *coded))
    placed += _scaled_copies(model, placed, links, window_bits)
    placed.sort()
    table_size = len(placed) * ENTRY.size + 4
    cursor = HEADER.size + 4 + table_size
    entries = []
    for offset, length, elem_size, encoding, coded in placed:
        entries.append(Entry(offset, length, cursor, len(coded), encoding, elem_size))
        payloads.append(coded + _crc(coded))
        cursor += len(coded) + 4
    skeleton = b"".join(
        model[start:end]
        for start, end in _kept_ranges(len(model), [(e.offset, e.length) for e in entries])
    )
    stored, flags = skeleton, 0
    if window_bits is not None:
        coded_skeleton = _deflate(skeleton, window_bits)
        if len(coded_skeleton) < len(skeleton):
            stored, flags = coded_skeleton, SKELETON_DEFLATE | window_bits << 4
        # Where weights are neither shared nor pruned, cutting them can cost more than DEFLATE
        # of the whole file (a table row and CRC per entry, codes no better than DEFLATE's):
        # then nothing is cut, so no file is much above zlib's.
        cut_total = len(stored) + sum(map(len, payloads)) + table_size - 4
        # zlib first (fast): zopfli saves 5-7% over it, so only a near tie is worth its search.
        whole = _deflate(model, window_bits, search=False) if entries else stored
        if entries and len(whole) < 1.1 * cut_total:
            whole = _deflate(model, window_bits)
        if len(whole) < cut_total:
            entries, payloads, skeleton = [], [], model
            stored, flags = whole, SKELETON_DEFLATE | window_bits << 4
    # The lowest version that holds the file, so that earlier decoders read what they can.
    used = {e.encoding for e in entries}
    version = max([2, *(encoding + 1 for encoding in used), *([3] if flags else [])])
    digest = hashlib.sha256(model).digest()
    header = HEADER.pack(
        MAGIC, version, flags, len(model), len(skeleton), digest, zlib.crc32(stored), len(entries)
    )
    table = b"".join(
        ENTRY.pack(e.offset, e.length, e.payload_offset, e.payload_size, e.encoding, e.elem_size, 0)
        for e in entries
    )
    sidecar = header + _crc(header) + table + _crc(table) + b"".join(payloads)
    return stored, sidecar, entries


def scaled_copy(source: bytes, factor: int) -> bytes | None:
    """Each float32 of ``source`` times the binary32 ``factor``, or ``None`` where undefined.

    IEEE 754 binary32 products rounded to nearest, even on ties; an all-zero element stays
    all zeros. Defined only where ``factor`` and every other element are normal numbers, each
    exact product is at least ``2**-126`` in magnitude and each rounded one finite (``None``
    otherwise), so that no decoder depends on how its platform treats subnormals, infinities
    or NaN payloads (FORMAT.md, "Scaled copy").

    Example:
        >>> two = int(np.float32(2).view(np.uint32))
        >>> np.frombuffer(scaled_copy(np.float32([0.75, 0, -3]).tobytes(), two), np.float32)
        array([ 1.5,  0. , -6. ], dtype=float32)
    """
    units = np.frombuffer(source, "<u4")
    zero = units == 0
    bits = np.array(factor, "<u4")
    if not _normal(bits) or not np.all(_normal(units) | zero):
        return None
    # Both have 24-bit significands: their float64 product is exact, its rounding the IEEE one.
    exact = units.view("<f4").astype(np.float64) * float(bits.view("<f4"))
    with np.errstate(over="ignore"):
        product = exact.astype("<f4").view("<u4")
    if not np.all(((np.abs(exact) >= 2.0**-126) & _normal(product)) | zero):
        return None
    return np.where(zero, 0, product).astype("<u4").tobytes()


def _normal(units: np.ndarray) -> np.ndarray:
    exponent = (units >> 23) & 0xFF
    return (exponent > 0) & (exponent < 255)


def _scaled_copies(model, placed, links, window_bits) -> list[tuple]:
    """The ``links`` that become scaled copies, as ``placed`` rows (offset first).

    A link qualifies when its bytes are exactly the scaled copy of its source, both ranges
    stay in the skeleton, the source ends before the target starts, and the copy is longer
    than what its entry costs (table row, payload, CRC). Its distance is counted in skeleton
    bytes, so links whose source falls out of the DEFLATE window once everything is cut are
    dropped, until none does.
    """
    cut = [(row[0], row[1]) for row in placed]
    smallest = ENTRY.size + SCALED.size + 4

    def overlaps(start, length, ranges):
        return any(start < s + n and s < start + length for s, n in ranges)

    chosen = []
    for target, source, length, factor in sorted(links):
        if length <= smallest or source + length > target or length % 4:
            continue
        cut_or_copied = cut + [(t, n) for t, _, n, _ in chosen]
        sources = [(s, n) for _, s, n, _ in chosen]
        if overlaps(target, length, cut_or_copied + sources) or overlaps(
            source, length, cut_or_copied
        ):
            continue
        if scaled_copy(model[source : source + length], factor) != model[target : target + length]:
            continue
        chosen.append((target, source, length, factor))
    while True:
        ranges = cut + [(t, n) for t, _, n, _ in chosen]

        def in_skeleton(x, ranges=ranges):
            return x - sum(n for s, n in ranges if s + n <= x)

        rows = [(t, n, 4, SCALED_COPY, SCALED.pack(in_skeleton(t) - in_skeleton(s), f))
                for t, s, n, f in chosen]  # fmt: skip
        far = {
            row[0] for row in rows
            if window_bits is not None and SCALED.unpack(row[4])[0] > 2**window_bits
        }  # fmt: skip
        if not far:
            return rows
        chosen = [c for c in chosen if c[0] not in far]


def _deflate(data: bytes, window_bits: int, search: bool = True) -> bytes:
    """A raw DEFLATE stream of ``data`` with matches within ``2**window_bits`` bytes.

    The smaller of zlib at level 9 and, with the full 32 KB window, zopfli (Google's DEFLATE
    encoder that searches for the shortest parse; the PyPI ``zopfli`` bindings): the same
    format, so no decoder changes, 5-7% smaller skeletons (MobileNetV2 0.35 int8: 25,736 ->
    24,085 B; ResNet-20: 6,650 -> 6,251 B), at about 100 times zlib's time, hence
    ``ZOPFLI_MAX_BYTES``. zopfli's window is fixed at 32 KB: smaller windows get zlib's stream.
    ``search=False``: zlib's alone.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -window_bits, 9)
    coded = deflate.compress(data) + deflate.flush()
    if search and window_bits == 15 and len(data) <= ZOPFLI_MAX_BYTES:
        # zopfli writes a zlib stream: a 2-byte header, the DEFLATE data, an Adler-32.
        optimal = zopfli.zopfli.compress(data, numiterations=15)[2:-4]
        if len(optimal) < len(coded):
            coded = optimal
    return coded


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
    if version not in VERSIONS:
        raise SidecarError(
            f"header: version {version} at byte offset 4; this reader knows {VERSIONS}"
        )
    if sidecar[HEADER.size : HEADER.size + 4] != _crc(raw):
        raise SidecarError(f"header: CRC-32 mismatch at byte offset {HEADER.size}")
    coding, window = flags & 15, flags >> 4
    if flags and (version < 3 or coding != SKELETON_DEFLATE or window not in WINDOW_BITS):
        raise SidecarError(f"header: unknown flags {flags:#x} at byte offset 6")
    encodings = ENCODINGS[version]
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
        if e.encoding not in encodings or e.elem_size not in (1, 2, 4, 8) or fields[6] != 0:
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
    info = {"version": version, "flags": flags, "skeleton_window_bits": window if flags else None,
            "model_size": model_size,
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
    deflated = info["skeleton_window_bits"] is not None
    if not deflated and len(skeleton) != info["skeleton_size"]:
        raise SidecarError(
            f"skeleton: {len(skeleton)} bytes, the sidecar expects {info['skeleton_size']}"
        )
    if zlib.crc32(skeleton) != info["skeleton_crc32"]:
        raise SidecarError("skeleton: CRC-32 differs from the sidecar's (wrong or changed file?)")
    if deflated:
        skeleton = _inflate(skeleton, info["skeleton_window_bits"], info["skeleton_size"])
        if len(skeleton) != info["skeleton_size"]:
            raise SidecarError(
                f"skeleton: decodes to {len(skeleton)} bytes, the sidecar expects "
                f"{info['skeleton_size']}"
            )
    for i, e in enumerate(entries):  # every CRC before any decoding, as the C decoder does
        crc_at = e.payload_offset + e.payload_size
        if sidecar[crc_at : crc_at + 4] != _crc(sidecar[e.payload_offset : crc_at]):
            raise SidecarError(f"tensor payload {i}: CRC-32 mismatch at byte offset {crc_at}")
    parts, skeleton_pos, model_pos = [], 0, 0
    window = info["skeleton_window_bits"]
    for i, e in enumerate(entries):
        keep = e.offset - model_pos
        parts.append(skeleton[skeleton_pos : skeleton_pos + keep])
        skeleton_pos += keep
        payload = sidecar[e.payload_offset : e.payload_offset + e.payload_size]
        if e.encoding == SCALED_COPY:
            parts.append(_decode_scaled(payload, e, skeleton, skeleton_pos, window, i))
        else:
            parts.append(
                decode_tensor(payload, e.length, e.elem_size, e.payload_offset, str(i), e.encoding)
            )
        model_pos = e.offset + e.length
    parts.append(skeleton[skeleton_pos:])
    model = b"".join(parts)
    if hashlib.sha256(model).hexdigest() != info["sha256"]:
        raise SidecarError("model: SHA-256 of the rebuilt .tflite differs (wrong skeleton?)")
    return model


def _decode_scaled(payload, e: Entry, skeleton, skeleton_pos, window_bits, index) -> bytes:
    """A scaled copy (``encoding`` 4): skeleton bytes ``distance`` back, times the factor."""
    section = f"tensor payload {index}"
    if e.elem_size != 4 or e.length % 4 or len(payload) != SCALED.size:
        raise SidecarError(
            f"{section}: a scaled copy needs 4-byte elements and an {SCALED.size}-byte payload "
            f"(byte offset {e.payload_offset})"
        )
    distance, factor = SCALED.unpack(payload)
    reach = skeleton_pos if window_bits is None else min(skeleton_pos, 2**window_bits)
    if not e.length <= distance <= reach:
        raise SidecarError(
            f"{section}: distance {distance} at byte offset {e.payload_offset} is outside "
            f"{e.length}..{reach} (the skeleton bytes decoded before it)"
        )
    start = skeleton_pos - distance
    copy = scaled_copy(skeleton[start : start + e.length], factor)
    if copy is None:
        raise SidecarError(
            f"{section}: factor or source (skeleton byte offset {start}) is not a normal "
            f"binary32, or a product is not (byte offset {e.payload_offset})"
        )
    return copy


def _inflate(coded: bytes, window_bits: int, size: int) -> bytes:
    """The skeleton from its raw DEFLATE stream (zlib rejects references past the window)."""
    inflate = zlib.decompressobj(-window_bits)
    try:
        skeleton = inflate.decompress(coded, size + 1)
    except zlib.error as err:
        raise SidecarError(f"skeleton: bad DEFLATE stream: {err}") from err
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        raise SidecarError(
            "skeleton: the DEFLATE stream does not end exactly at the end of the file"
        )
    return skeleton
