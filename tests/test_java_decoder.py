"""The Java decoder (tflite_export/java) against files the Python exporter wrote."""

import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import JAVA_SOURCE, far_match_model, scaled_copy_model, synthetic_model_bytes

import keras_compress as kc

SOURCE = JAVA_SOURCE / "kerascompress" / "KczDecoder.java"
JAVAC, JAVA = shutil.which("javac"), shutil.which("java")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        JAVAC is None or JAVA is None, reason="no JDK (apt-get install default-jdk-headless)"
    ),
]


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    out = tmp_path_factory.mktemp("java")
    # Java 8 language and library level: what Android API 21+ accepts.
    cmd = [JAVAC, "--release", "8", "-Xlint:all", "-Werror", "-d", str(out), str(SOURCE)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def _decode(classes, skeleton, sidecar, out):
    cmd = [JAVA, "-cp", str(classes), "kerascompress.KczDecoder", str(skeleton), str(sidecar),
           str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True)


def test_java_decoder_rebuilds_the_exported_tflite(classes, exported, tmp_path):
    run = _decode(classes, f"{exported}.skeleton", f"{exported}.kcz", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == Path(f"{exported}.tflite").read_bytes()


def test_java_decoder_never_writes_over_an_input_and_leaves_no_part_file(
    classes, exported, tmp_path
):
    skeleton = tmp_path / "m.skeleton"
    skeleton.write_bytes(Path(f"{exported}.skeleton").read_bytes())
    run = _decode(classes, skeleton, f"{exported}.kcz", tmp_path / "." / "m.skeleton")
    assert run.returncode == 64 and "would overwrite an input" in run.stderr
    assert skeleton.read_bytes() == Path(f"{exported}.skeleton").read_bytes()
    run = _decode(classes, skeleton, f"{exported}.kcz", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.skeleton", "o"]


def test_java_decoder_rebuilds_a_batchnorm_cnn_in_int8(classes, exported_bn, tmp_path):
    run = _decode(classes, f"{exported_bn}.skeleton", f"{exported_bn}.kcz", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == Path(f"{exported_bn}.tflite").read_bytes()


def test_java_decoder_reads_matches_the_whole_window_back(classes, tmp_path):
    model = far_match_model()
    skeleton, side, _ = kc.deploy.sidecar.split(model, [], window_bits=15)
    assert len(skeleton) < 34_000  # it does use 32,767-byte distances
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    run = _decode(classes, tmp_path / "s", tmp_path / "k", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == model


@pytest.mark.parametrize("window_bits", [None, 15])
def test_java_decoder_multiplies_scaled_copies_exactly_as_ieee(classes, tmp_path, window_bits):
    model, cuts, links = scaled_copy_model(3)
    skeleton, side, _ = kc.deploy.sidecar.split(model, cuts, window_bits=window_bits, links=links)
    assert kc.deploy.sidecar.read_header(side)[0]["version"] == 5
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    run = _decode(classes, tmp_path / "s", tmp_path / "k", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == model


@pytest.mark.parametrize("coding", ["huffman", "arithmetic"])
def test_java_decoder_matches_python_and_rejects_corruption(classes, tmp_path, coding):
    model, cuts = synthetic_model_bytes(5)
    skeleton, side, entries = kc.deploy.sidecar.split(model, cuts, coding=coding)
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    assert _decode(classes, tmp_path / "s", tmp_path / "k", tmp_path / "o").returncode == 0
    assert (tmp_path / "o").read_bytes() == model
    rng = np.random.default_rng(0)
    payload = entries[0].payload_offset
    size = kc.deploy.sidecar.HEADER.size
    digest = bytearray(side)
    digest[30] ^= 1  # the SHA-256 field, with the header CRC fixed up
    digest[size : size + 4] = zlib.crc32(bytes(digest[:size])).to_bytes(4, "little")
    for name, bad_side, bad_skeleton, message in [
        ("header", side[:10] + bytes([side[10] ^ 1]) + side[11:], skeleton, "header: CRC-32"),
        ("table", side[:70] + bytes([side[70] ^ 4]) + side[71:], skeleton, "entry table"),
        ("payload", side[: payload + 20] + bytes([side[payload + 20] ^ 8]) + side[payload + 21 :],
         skeleton, "tensor payload 0"),
        ("truncated", side[: int(rng.integers(80, len(side)))], skeleton, "error"),
        ("skeleton", side, skeleton[:5] + bytes([skeleton[5] ^ 1]) + skeleton[6:], "skeleton"),
        ("digest", bytes(digest), skeleton, "model: SHA-256"),
    ]:  # fmt: skip
        (tmp_path / "bk").write_bytes(bad_side)
        (tmp_path / "bs").write_bytes(bad_skeleton)
        run = _decode(classes, tmp_path / "bs", tmp_path / "bk", tmp_path / name)
        assert run.returncode == 2 and message in run.stderr, (name, run.stderr)
        assert not (tmp_path / name).exists()


def test_java_rejects_crafted_arithmetic_payloads(classes, tmp_path):
    """Arithmetic payloads changed with their CRC-32 fixed up never become a model."""
    model, cuts = synthetic_model_bytes(6)
    skeleton, side, entries = kc.deploy.sidecar.split(model, cuts, coding="arithmetic")
    coded = [e for e in entries if e.encoding == kc.deploy.sidecar.ARITHMETIC_CODED]
    (tmp_path / "s").write_bytes(skeleton)
    rng = np.random.default_rng(9)
    for trial in range(12):
        e = coded[trial % len(coded)]
        payload = bytearray(side[e.payload_offset : e.payload_offset + e.payload_size])
        pos = int(rng.integers(0, len(payload)))
        payload[pos] ^= 1 << int(rng.integers(0, 8))
        crc = zlib.crc32(bytes(payload)).to_bytes(4, "little")
        forged = (side[: e.payload_offset] + bytes(payload) + crc
                  + side[e.payload_offset + e.payload_size + 4 :])  # fmt: skip
        (tmp_path / "k").write_bytes(forged)
        run = _decode(classes, tmp_path / "s", tmp_path / "k", tmp_path / "o")
        assert run.returncode == 2, run.stderr
        assert "tensor payload" in run.stderr or "SHA-256" in run.stderr, run.stderr
        assert not (tmp_path / "o").exists()
