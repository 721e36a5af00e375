"""Sidecar encoding 3: context-adaptive binary arithmetic coding (format version 4)."""

import struct
import zlib

import numpy as np
import pytest
from helpers import synthetic_model_bytes

from keras_compress.coding import arithmetic, entropy_bytes
from keras_compress.deploy import sidecar


def smooth_kernel(rows=64, side=28, seed=0):
    """A Dense kernel fed by ``side x side`` images: each output's weights are a smooth field
    over the pixels (neighbours share sign), pruned to its largest 10% and shared to 8 values,
    with the border pixels dead in every row, as after pruning an image model."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(rows, side // 4, side // 4))
    field = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :side, :side]
    field = field + 0.3 * rng.normal(size=field.shape)
    field[:, :3], field[:, -3:], field[:, :, :3], field[:, :, -3:] = 0, 0, 0, 0
    w = field.reshape(rows, side * side)
    w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0
    levels = np.float32([-1.5, -1.0, -0.6, -0.3, 0.3, 0.6, 1.0, 1.5])
    nz = w != 0
    w[nz] = levels[np.clip(np.digitize(w[nz], [-1.2, -0.8, -0.45, 0, 0.45, 0.8, 1.2]), 0, 7)]
    return w.astype(np.float32)


def test_context_coding_goes_below_the_element_wise_entropy_bound():
    w = smooth_kernel()
    units = w.view(np.uint32)
    cls = arithmetic.classes(units)
    assert arithmetic.choose_stride(cls, w.shape[1])[0] == 28  # the pixel above
    encoding, payload = sidecar.encode_tensor(w.tobytes(), 4, shape=w.shape, arithmetic=True)
    assert encoding == sidecar.ARITHMETIC_CODED
    assert len(payload) < 0.9 * entropy_bytes(w)
    huffman = sidecar.encode_tensor(w.tobytes(), 4, shape=w.shape)[1]
    assert len(payload) < 0.9 * len(huffman)
    assert sidecar.decode_tensor(payload, w.nbytes, 4, encoding=encoding) == w.tobytes()


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<i1", "<f8", "<u4"])
def test_round_trips_of_every_element_size_and_odd_shapes(dtype):
    rng = np.random.default_rng(1)
    for rows, width, k, density in [
        (1, 1, 1, 1.0),
        (7, 1, 3, 0.5),
        (5, 300, 1, 0.1),
        (40, 17, 200, 0.3),
        (3, 2, 256, 1.0),
        (50, 9, 2, 0.05),
    ]:
        values = rng.choice(np.arange(1, 30000), k, replace=False).astype(dtype)
        w = np.where(rng.random((rows, width)) < density, rng.choice(values, (rows, width)), 0)
        w = w.astype(dtype)
        w[rng.random(w.shape) < 0.2] = 0
        if rows > 2:
            w[1] = 0  # a dead row
        data = w.tobytes()
        nonzero = np.unique(w[w != 0]).size
        if nonzero == 0:
            continue
        payload = sidecar._encode_arithmetic(
            np.frombuffer(data, f"<u{w.itemsize}"), (w != 0).ravel(), w.shape,
            next(sidecar._codebook_choices(np.frombuffer(data, f"<u{w.itemsize}"), ())),
        )  # fmt: skip
        out = sidecar.decode_tensor(payload, len(data), w.itemsize, encoding=3)
        assert out == data


def test_bit_patterns_survive_negative_zero_and_nan():
    w = np.float32([0.5, -0.0, np.nan, 0.0, -0.5, 0.5] * 50)
    # A raw skeleton: DEFLATE of this periodic file would beat cutting the tensor.
    skeleton, side, entries = sidecar.split(
        w.tobytes(), [(0, w.nbytes, 4)], window_bits=None, coding="arithmetic"
    )
    assert entries[0].encoding == sidecar.ARITHMETIC_CODED
    assert sidecar.join(skeleton, side) == w.tobytes()


def test_codings_choose_the_version_and_auto_stops_at_its_budget(monkeypatch):
    model, cuts = synthetic_model_bytes(3)
    for coding, versions in [("huffman", {2, 3}), ("arithmetic", {4}), ("auto", {4})]:
        skeleton, side, entries = sidecar.split(model, cuts, coding=coding)
        assert sidecar.read_header(side)[0]["version"] in versions
        assert sidecar.join(skeleton, side) == model
        if coding == "huffman":
            huffman_size = len(side)
        else:
            assert len(side) <= huffman_size  # the smaller coding per tensor
    monkeypatch.setattr(sidecar, "AUTO_ARITHMETIC_ELEMENTS", 100)
    _, side, entries = sidecar.split(model, cuts, coding="auto")
    assert sidecar.ARITHMETIC_CODED not in {e.encoding for e in entries}
    with pytest.raises(ValueError, match="coding must be one of"):
        sidecar.split(model, cuts, coding="cabac")


def _forge_payload(side, entry, payload):
    return (side[: entry.payload_offset] + bytes(payload)
            + struct.pack("<I", zlib.crc32(bytes(payload)))
            + side[entry.payload_offset + entry.payload_size + 4 :])  # fmt: skip


def test_crafted_arithmetic_payloads_are_rejected_even_with_crcs_fixed_up():
    """Changed stream bytes, headers and sizes with the payload CRC recomputed (what no
    accident produces) never decode into a model: an error names the payload or the SHA-256."""
    model, cuts = synthetic_model_bytes(6)
    skeleton, side, entries = sidecar.split(model, cuts, coding="arithmetic")
    rng = np.random.default_rng(2)
    arithmetic_entries = [e for e in entries if e.encoding == sidecar.ARITHMETIC_CODED]
    assert len(arithmetic_entries) >= 3
    for trial in range(150):
        e = arithmetic_entries[trial % len(arithmetic_entries)]
        payload = bytearray(side[e.payload_offset : e.payload_offset + e.payload_size])
        for pos in rng.integers(0, len(payload), 1 + trial % 3):
            payload[pos] = int(rng.integers(0, 256))
        if bytes(payload) == side[e.payload_offset : e.payload_offset + e.payload_size]:
            continue
        with pytest.raises(sidecar.SidecarError, match="tensor payload|model: SHA-256"):
            sidecar.join(skeleton, _forge_payload(side, e, payload))
    # Named problems: a stride out of range, an index beyond the codebook.
    e = arithmetic_entries[0]
    payload = bytearray(side[e.payload_offset : e.payload_offset + e.payload_size])
    channels, inner, tables = struct.unpack_from("<III", payload)
    at = 12 + (channels if tables < channels else 0)
    bad = bytearray(payload)
    bad[at + 8 : at + 12] = struct.pack("<I", 257)
    with pytest.raises(sidecar.SidecarError, match="stride 257 out of range"):
        sidecar.join(skeleton, _forge_payload(side, e, bad))


def test_version_3_files_may_not_use_arithmetic_coding():
    model, cuts = synthetic_model_bytes(0)
    _, side, _ = sidecar.split(model, cuts, coding="arithmetic")
    size = sidecar.HEADER.size
    header = bytearray(side[:size])
    header[4] = 3
    forged = bytes(header) + struct.pack("<I", zlib.crc32(bytes(header))) + side[size + 4 :]
    with pytest.raises(sidecar.SidecarError, match="unknown encoding"):
        sidecar.read_header(forged)
