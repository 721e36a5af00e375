"""Huffman and pruning encoders for TFLM's DECODE, checked by a port of TFLM's decode loops.

The port follows ``decode_state_huffman.{h,cc}`` and ``decode_state_prune.cc`` of tflite-micro
step by step (word reads, look-ups, put-backs) and is itself checked against the encoded stream
and tables of upstream's ``decode_state_huffman_test.cc``. The TFLM runtime checks the same
encoders on whole models in ``test_tflm_decode.py``.
"""

import numpy as np
import pytest

from keras_compress.tflm.encoders import encode_huffman, encode_pruning


def tflm_huffman_decode(encoded: bytes, ancillary: bytes, count: int, dtype) -> np.ndarray:
    """What DecodeStateHuffman::DecompressToBufferWith{16,32}BitTable writes."""
    assert ancillary[0] == 1 and ancillary[1] == 1 and ancillary[4] == 1
    wide = bool(ancillary[5] & 0x01)
    initial = ((ancillary[5] & 0xF0) >> 4) + 1
    table = np.frombuffer(ancillary[16:], "<u4" if wide else "<u2").astype(np.int64)
    found, count_mask, shift, value_mask = (
        (0x80000000, 0x78000000, 27, 0x07FFFFFF) if wide else (0x8000, 0x7800, 11, 0x07FF)
    )
    assert len(encoded) % 4 == 0
    words = np.frombuffer(encoded, ">u4").astype(np.int64)  # big-endian words, as swapped there
    bit = 0  # position in the stream; the C code's head_offset/head_next track the same
    out = []
    for _ in range(count):
        used = initial
        assert (bit + used + 31) // 32 <= words.size, "read past the encoded tensor"
        offset = _bits(words, bit, used)
        bit += used
        value = table[offset]
        while not value & found:
            used = ((value & count_mask) >> shift) + 1
            assert (bit + used + 31) // 32 <= words.size, "read past the encoded tensor"
            index = _bits(words, bit, used)
            bit += used
            offset += (value & value_mask) + index
            value = table[offset]
        out.append(value & (0xFFFF if dtype == np.int16 else 0xFF))
        residual = (value & count_mask) >> shift
        if used > residual:
            bit -= used - residual
    return np.array(out, np.uint16 if dtype == np.int16 else np.uint8).view(dtype)


def _bits(words: np.ndarray, start: int, count: int) -> int:
    value = 0
    for b in range(start, start + count):
        value = (value << 1) | int((words[b // 32] >> (31 - b % 32)) & 1)
    return value


def tflm_prune_decode(encoded: bytes, ancillary: bytes, shape, dtype, zero_point=0) -> np.ndarray:
    """What DecodeStatePrune::DecompressToBuffer writes (single zero point)."""
    assert ancillary[0] == 2 and ancillary[1] == 1 and ancillary[4] == 1
    count = int(np.prod(shape))
    keep = np.unpackbits(np.frombuffer(encoded, np.uint8), bitorder="big")[:count].astype(bool)
    out = np.full(count, zero_point, dtype)
    out[keep] = np.frombuffer(ancillary[16:], np.dtype(dtype).newbyteorder("<"), int(keep.sum()))
    return out.reshape(shape)


def test_port_decodes_upstream_test_vector():
    # decode_state_huffman_test.cc (tflite-micro): 64 symbols coded with an 8-entry first table.
    encoded = bytes.fromhex(
        "f00d79fc9c1a6e4c32af29b35df636025015 8ca795db29683fbab7edb119e2e0".replace(" ", "")
    )
    table16 = [0x986D, 0x9861, 0x986A, 0x0005, 0x0806, 0x0809, 0x000E, 0x000F, 0x886F, 0x8868,
               0x8864, 0x8864, 0x9069, 0x9066, 0x8863, 0x8863, 0x0002, 0x906B, 0x8867, 0x886C,
               0x8865, 0x8862, 0x8870, 0x886E]  # fmt: skip
    dcm = bytes([1, 1, 0, 0, 1, 2 << 4]) + bytes(10)
    got = tflm_huffman_decode(encoded, dcm + np.array(table16, "<u2").tobytes(), 64, np.int8)
    assert got.tobytes() == b"nmmacnanefdacopjomeckifookhbdbdmjjdmjgojfecpbiibmanbbjbnlgjafejp"


@pytest.mark.parametrize(
    "name",
    ["one value", "two values", "sparse shared", "uniform int8", "skewed int8", "int16"],
)
def test_huffman_round_trips_through_tflm_decode_loop(name):
    rng = np.random.default_rng(7)
    sparse = rng.choice([-90, -40, 30, 80, 127], 5000)
    skewed = np.clip(rng.geometric(0.05, 6000) - 1, 0, 255).astype(np.uint8)
    values = {
        "one value": np.full(300, -5, np.int8),
        "two values": rng.choice(np.array([0, 9], np.int8), 1000, p=[0.9, 0.1]),
        "sparse shared": np.where(rng.random(5000) < 0.92, 0, sparse).astype(np.int8),
        "uniform int8": rng.integers(-128, 128, 4000).astype(np.int8),
        "skewed int8": skewed.view(np.int8),
        "int16": rng.normal(0, 300, 3000).astype(np.int16),
    }[name]  # fmt: skip
    encoding = encode_huffman(values)
    decoded = tflm_huffman_decode(encoding.encoded, encoding.ancillary, values.size, values.dtype)
    np.testing.assert_array_equal(decoded, values)
    if values.dtype == np.int8 and name != "uniform int8":
        wide = encode_huffman(values, wide=True)
        assert wide.ancillary[5] & 1 and not encoding.ancillary[5] & 1
        np.testing.assert_array_equal(
            tflm_huffman_decode(wide.encoded, wide.ancillary, values.size, np.int8), values
        )


def test_huffman_costs_about_the_entropy_and_tables_stay_small():
    rng = np.random.default_rng(3)
    values = np.where(rng.random(40000) < 0.9, 0, rng.choice(np.arange(-7, 8) * 15, 40000)).astype(
        np.int8
    )
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    entropy_bytes = values.size * float(-(p * np.log2(p)).sum()) / 8
    encoding = encode_huffman(values)
    # Shannon: an optimal prefix code costs between H and H + 1 bits per symbol (plus padding).
    assert entropy_bytes <= len(encoding.encoded) <= entropy_bytes + values.size / 8 + 8
    # 16 symbols: a binary tree has 30 entries; one full 2**15 table would have 32768.
    assert len(encoding.ancillary) - 16 <= 2 * 64


def test_huffman_rejects_types_tflm_cannot_decode():
    with pytest.raises(ValueError, match="int8 or int16"):
        encode_huffman(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="16-bit Huffman tables"):
        encode_huffman(np.arange(10, dtype=np.int16), wide=False)


def test_pruning_keeps_exactly_the_non_zero_point_values():
    rng = np.random.default_rng(0)
    values = np.where(rng.random((30, 17)) < 0.8, 0, rng.integers(-128, 128, (30, 17))).astype(
        np.int8
    )
    encoding = encode_pruning(values)
    assert len(encoding.encoded) == -(-values.size // 8)
    assert len(encoding.ancillary) == 16 + np.count_nonzero(values)
    np.testing.assert_array_equal(
        tflm_prune_decode(encoding.encoded, encoding.ancillary, values.shape, np.int8), values
    )
    floats = np.where(rng.random(100) < 0.5, 0, rng.normal(size=100)).astype(np.float32)
    e = encode_pruning(floats)
    np.testing.assert_array_equal(
        tflm_prune_decode(e.encoded, e.ancillary, floats.shape, np.float32), floats
    )


def test_pruning_with_per_channel_zero_points():
    values = np.array([[3, 3, 1], [-2, 5, -2]], np.int8)  # channel 0 zero point 3, channel 1 -2
    encoding = encode_pruning(values, np.array([3, -2]), axis=0)
    assert np.unpackbits(np.frombuffer(encoding.encoded, np.uint8))[:6].tolist() == [
        0,
        0,
        1,
        0,
        1,
        0,
    ]
    assert encoding.ancillary[16:] == bytes([1, 5])
    with pytest.raises(ValueError, match="axis 0 or the last"):
        encode_pruning(np.zeros((2, 3, 4), np.int8), np.zeros(3), axis=1)
