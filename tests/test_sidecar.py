"""The sidecar format: byte-exact round trips and rejection of every corruption."""

import numpy as np
import pytest
from helpers import synthetic_model_bytes

from keras_compress.deploy import sidecar


def test_round_trip_is_byte_exact_and_skips_tensors_that_do_not_gain():
    model, cuts = synthetic_model_bytes()
    skeleton, side, entries = sidecar.split(model, cuts)
    assert sidecar.join(skeleton, side) == model
    assert [e.offset for e in entries] == [cuts[0][0], cuts[1][0], cuts[3][0]]
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
    skeleton, side, _ = sidecar.split(model, cuts)
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
    newer[4] = 3
    with pytest.raises(sidecar.SidecarError, match="version 3 at byte offset 4"):
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
