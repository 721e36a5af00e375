"""The sidecar format: byte-exact round trips and rejection of every corruption."""

import struct
import zlib

import numpy as np
import pytest
from helpers import far_match_model, scaled_copy_model, synthetic_model_bytes

from keras_compress.deploy import sidecar


def test_round_trip_is_byte_exact_and_skips_tensors_that_do_not_gain():
    model, cuts = synthetic_model_bytes()
    skeleton, side, entries = sidecar.split(model, cuts)
    assert sidecar.join(skeleton, side) == model
    assert [e.offset for e in entries] == [cuts[0][0], cuts[1][0], cuts[3][0], cuts[4][0]]
    assert len(skeleton) + len(side) < len(model) / 2
    # -0.0 is kept distinct from +0.0 (bit patterns, not values, are coded).
    assert sidecar.join(skeleton, side).count(np.float32(-0.0).tobytes()) == model.count(
        np.float32(-0.0).tobytes()
    )


def test_every_single_bit_flip_in_the_sidecar_is_rejected():
    model, cuts = synthetic_model_bytes(1)
    skeleton, side, _ = sidecar.split(model, cuts)
    rng = np.random.default_rng(0)
    positions = np.unique(
        np.concatenate([np.arange(min(200, len(side))), rng.integers(0, len(side), 1500)])
    )
    for pos in positions:
        bad = bytearray(side)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(sidecar.SidecarError):
            sidecar.join(skeleton, bytes(bad))


def test_truncation_extension_and_wrong_skeleton_are_rejected():
    model, cuts = synthetic_model_bytes(2)
    skeleton, side, _ = sidecar.split(model, cuts, window_bits=None)
    for n in list(range(0, 120, 7)) + [len(side) - 1, len(side) // 2]:
        with pytest.raises(sidecar.SidecarError):
            sidecar.join(skeleton, side[:n])
    with pytest.raises(sidecar.SidecarError, match="after the last payload"):
        sidecar.join(skeleton, side + b"\x00")
    with pytest.raises(sidecar.SidecarError, match="skeleton: .* bytes"):
        sidecar.join(skeleton[:-1], side)
    other = bytearray(skeleton)
    other[10] ^= 0x40
    with pytest.raises(sidecar.SidecarError, match="skeleton: CRC-32"):
        sidecar.join(bytes(other), side)


def test_the_sha256_of_the_rebuilt_model_is_checked():
    """A header whose digest was altered (its CRC fixed up) never yields a model."""
    import zlib

    model, cuts = synthetic_model_bytes(2)
    skeleton, side, _ = sidecar.split(model, cuts)
    bad = bytearray(side)
    bad[30] ^= 1  # inside the SHA-256 field (bytes 24..55)
    size = sidecar.HEADER.size
    bad[size : size + 4] = zlib.crc32(bytes(bad[:size])).to_bytes(4, "little")
    with pytest.raises(sidecar.SidecarError, match="model: SHA-256"):
        sidecar.join(skeleton, bytes(bad))


def test_wrong_version_and_magic_name_the_offset():
    model, cuts = synthetic_model_bytes(3)
    skeleton, side, _ = sidecar.split(model, cuts)
    with pytest.raises(sidecar.SidecarError, match="bad magic .* at byte offset 0"):
        sidecar.join(skeleton, b"XXXX" + side[4:])
    newer = bytearray(side)
    newer[4] = 6
    with pytest.raises(sidecar.SidecarError, match="version 6 at byte offset 4"):
        sidecar.join(skeleton, bytes(newer))


def test_a_crafted_payload_with_a_bad_crc_fixed_up_is_still_rejected():
    """Recomputing the CRC after a change must not let a malformed payload through."""
    import struct
    import zlib

    model, cuts = synthetic_model_bytes(4)
    skeleton, side, entries = sidecar.split(model, cuts)
    e = entries[0]
    payload = bytearray(side[e.payload_offset : e.payload_offset + e.payload_size])
    payload[0] ^= 0xFF  # codebook size field
    crc = struct.pack("<I", zlib.crc32(bytes(payload)))
    forged = (
        side[: e.payload_offset]
        + bytes(payload)
        + crc
        + side[e.payload_offset + e.payload_size + 4 :]
    )
    with pytest.raises(sidecar.SidecarError, match="tensor payload 0"):
        sidecar.join(skeleton, forged)


def test_per_channel_codebooks_are_chosen_where_they_are_smaller():
    model, cuts = synthetic_model_bytes(3)
    offset, length, _, shape = cuts[4]
    data = model[offset : offset + length]
    encoding, payload = sidecar.encode_tensor(data, 1, shape=shape)
    _, tensor_wide = sidecar.encode_tensor(data, 1)
    assert encoding == sidecar.CHANNEL_CODED and len(payload) < 0.8 * len(tensor_wide)
    assert struct.unpack_from("<III", payload) == (24, 300, 4)  # 4 shared tables, a map
    assert sidecar.decode_tensor(payload, length, 1, encoding=encoding) == data
    # Every channel with its own values: one table per channel, in channel order, no map.
    rng = np.random.default_rng(0)
    books = np.sort(rng.choice(np.arange(-127, 128), (16, 7)), axis=1)
    own = np.take_along_axis(books, rng.integers(0, 7, (16, 400)), 1).astype(np.int8)
    encoding, payload = sidecar.encode_tensor(own.tobytes(), 1, shape=own.shape)
    assert encoding == sidecar.CHANNEL_CODED and struct.unpack_from("<III", payload)[2] == 16
    assert sidecar.decode_tensor(payload, own.size, 1, encoding=encoding) == own.tobytes()
    # Channels along the last axis (a depthwise kernel's layout) are found as well.
    last = np.ascontiguousarray(np.frombuffer(data, np.int8).reshape(shape).T)
    encoding, payload = sidecar.encode_tensor(last.tobytes(), 1, shape=last.shape)
    assert encoding == sidecar.CHANNEL_CODED
    assert sidecar.decode_tensor(payload, length, 1, encoding=encoding) == last.tobytes()


def test_the_skeleton_is_deflated_only_where_it_pays_and_huffman_files_keep_old_versions():
    model, cuts = synthetic_model_bytes(4)
    raw_skeleton, raw_side, _ = sidecar.split(model, cuts, window_bits=None, coding="huffman")
    skeleton, side, _ = sidecar.split(model, cuts, window_bits=10, coding="huffman")
    assert len(skeleton) < 0.8 * len(raw_skeleton)
    info, _ = sidecar.read_header(side)
    assert info["version"] == 3 and info["skeleton_window_bits"] == 10
    assert sidecar.join(skeleton, side) == sidecar.join(raw_skeleton, raw_side) == model
    # Without per-channel tensors or a coded skeleton the file is version 2, as before.
    plain, plain_side, _ = sidecar.split(model, cuts[:4], window_bits=None, coding="huffman")
    assert sidecar.read_header(plain_side)[0]["version"] == 2
    assert sidecar.join(plain, plain_side) == model
    incompressible = np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes()
    _, side, _ = sidecar.split(incompressible, [], window_bits=15)
    assert sidecar.read_header(side)[0]["skeleton_window_bits"] is None
    with pytest.raises(ValueError, match="window_bits"):
        sidecar.split(model, cuts, window_bits=16)


def test_the_skeleton_is_deflated_with_the_whole_32kb_window():
    model = far_match_model()
    skeleton, side, _ = sidecar.split(model, [], window_bits=15)
    assert len(skeleton) < 34_000  # zlib -9: over 64 KB (zopfli reached the 32,767-byte matches)
    assert sidecar.join(skeleton, side) == model
    # A smaller window gets zlib's stream, which keeps to it.
    skeleton, side, _ = sidecar.split(model, [], window_bits=14)
    assert sidecar.read_header(side)[0]["skeleton_window_bits"] in (14, None)
    assert sidecar.join(skeleton, side) == model


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_a_corrupted_deflate_skeleton_is_rejected_even_with_its_crc_fixed_up():
    import zlib

    model, cuts = synthetic_model_bytes(5)
    skeleton, side, _ = sidecar.split(model, cuts)
    size = sidecar.HEADER.size
    rng = np.random.default_rng(1)
    for pos in rng.integers(0, len(skeleton), 200):
        bad = bytearray(skeleton)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        header = bytearray(side[:size])
        header[56:60] = zlib.crc32(bytes(bad)).to_bytes(4, "little")
        forged = bytes(header) + zlib.crc32(bytes(header)).to_bytes(4, "little") + side[size + 4 :]
        with pytest.raises(sidecar.SidecarError, match="skeleton|model: SHA-256"):
            sidecar.join(bytes(bad), forged)
    for cut in (1, len(skeleton) // 2):  # a truncated stream, CRC fixed up as well
        short = skeleton[:-cut]
        header = bytearray(side[:size])
        header[56:60] = zlib.crc32(short).to_bytes(4, "little")
        forged = bytes(header) + zlib.crc32(bytes(header)).to_bytes(4, "little") + side[size + 4 :]
        with pytest.raises(sidecar.SidecarError, match="skeleton"):
            sidecar.join(short, forged)


def test_version_2_files_may_not_use_version_3_features():
    import zlib

    model, cuts = synthetic_model_bytes(0)
    _, side, _ = sidecar.split(model, cuts[:4], window_bits=None, coding="huffman")
    size = sidecar.HEADER.size
    header = bytearray(side[:size])
    header[6] = 0xF1  # flags: a DEFLATE skeleton, which version 2 does not have
    forged = bytes(header) + zlib.crc32(bytes(header)).to_bytes(4, "little") + side[size + 4 :]
    with pytest.raises(sidecar.SidecarError, match="unknown flags 0xf1 at byte offset 6"):
        sidecar.read_header(forged)


def test_scaled_copies_round_trip_and_are_used_only_where_they_hold():
    """Format v5: each vector that is exactly another times a factor becomes an 8-byte payload;
    the vector one element off its product stays in the skeleton; copies whose source would
    be out of the DEFLATE window are not made."""
    model, cuts, links = scaled_copy_model(0)
    for window_bits, copies in [(None, 6), (15, 6), (9, 2)]:
        skeleton, side, entries = sidecar.split(model, cuts, window_bits=window_bits, links=links)
        assert sidecar.join(skeleton, side) == model
        scaled = [e for e in entries if e.encoding == sidecar.SCALED_COPY]
        assert len(scaled) == copies and {e.payload_size for e in scaled} == {8}
        assert sidecar.read_header(side)[0]["version"] == 5
        if window_bits:
            assert all(struct.unpack_from("<I", side, e.payload_offset)[0] <= 2**window_bits
                       for e in scaled)  # fmt: skip
    skeleton, side, entries = sidecar.split(model, cuts)  # no links: an older version
    assert sidecar.join(skeleton, side) == model
    assert sidecar.read_header(side)[0]["version"] == 4


def test_scaled_copy_is_the_ieee_product_and_undefined_outside_the_normal_range():
    rng = np.random.default_rng(1)
    x = (rng.uniform(1, 2, 5000) * 2.0 ** rng.integers(-60, 60, 5000)).astype(np.float32)
    for factor in np.float32([1.5, 0.75, 3.0, 1e-3, 7.1e5]):
        got = np.frombuffer(sidecar.scaled_copy(x.tobytes(), int(factor.view(np.uint32))), "<f4")
        np.testing.assert_array_equal(got, x * factor)  # numpy's float32 product: IEEE
    one = int(np.float32(1).view(np.uint32))
    for bad in [[1e-39], [-0.0], [np.inf], [np.nan]]:  # subnormal, -0 (not all zeros), inf, NaN
        assert sidecar.scaled_copy(np.float32(bad).tobytes(), one) is None
    tiny, huge = (int(np.float32(v).view(np.uint32)) for v in (2.0**-100, 2.0**100))
    assert sidecar.scaled_copy(np.float32([2.0**-27]).tobytes(), tiny) is None  # below 2^-126
    assert sidecar.scaled_copy(np.float32([2.0**28]).tobytes(), huge) is None  # infinite
    assert sidecar.scaled_copy(np.float32([1.0]).tobytes(), 0) is None  # a zero factor


def test_forged_scaled_copies_are_rejected_naming_the_payload():
    model, cuts, links = scaled_copy_model(1)
    skeleton, side, entries = sidecar.split(model, cuts, window_bits=None, links=links)
    i, e = next((i, e) for i, e in enumerate(entries) if e.encoding == sidecar.SCALED_COPY)
    distance, factor = struct.unpack_from("<II", side, e.payload_offset)
    for payload, message in [
        (struct.pack("<II", e.length - 4, factor), "outside"),  # overlaps the copy itself
        (struct.pack("<II", 10**9, factor), "outside"),  # before the skeleton's start
        (struct.pack("<II", distance, 0x7F800000), "not a normal binary32"),  # infinity
        (struct.pack("<II", distance, factor ^ 1), "SHA-256"),  # another model
    ]:
        forged = bytearray(side)
        forged[e.payload_offset : e.payload_offset + 8] = payload
        at = e.payload_offset + 8
        forged[at : at + 4] = struct.pack("<I", zlib.crc32(payload))
        with pytest.raises(sidecar.SidecarError, match=message) as err:
            sidecar.join(skeleton, bytes(forged))
        assert message == "SHA-256" or f"tensor payload {i}" in str(err.value)


def test_nothing_is_cut_where_deflate_of_the_whole_model_is_smaller():
    """Weights DEFLATE finds long repeats in but a codebook cannot share (1,000 distinct
    values, tiled): cutting them would cost more than coding the whole file, so nothing is
    cut; with a raw skeleton they are cut."""
    values = np.random.default_rng(2).normal(size=1000).astype(np.float32)
    model = bytes(64) + np.tile(values, 20).tobytes() + b"tail"
    cut = [(64, 80_000, 4)]
    skeleton, side, entries = sidecar.split(model, cut)
    assert entries == [] and sidecar.join(skeleton, side) == model
    assert len(side) == sidecar.HEADER.size + 8  # the header and an empty table, their CRCs
    assert len(skeleton) <= len(zlib.compress(model, 9))
    skeleton, side, entries = sidecar.split(model, cut, window_bits=None)
    assert len(entries) == 1 and sidecar.join(skeleton, side) == model
