"""The C99 decoder (tflite_export/c) against files the Python exporter wrote."""

import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import build_c, far_match_model, scaled_copy_model, synthetic_model_bytes

import keras_compress as kc


@pytest.fixture(scope="module", params=[pytest.param("-O1", marks=pytest.mark.slow), "-Os"])
def cli_asan(tmp_path_factory, request):
    flags = ["-g", request.param, "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             "-DKCZ_WINDOW_BITS=15"]  # fmt: skip
    return build_c(tmp_path_factory, "kcz_cli_asan", flags)


def _decode(cli, skeleton, sidecar, out):
    return subprocess.run([str(cli), str(skeleton), str(sidecar), str(out)],
                          capture_output=True, text=True)  # fmt: skip


def _assert_c_rebuilds(cli, skeleton: bytes, side: bytes, model: bytes, tmp_path) -> None:
    """The C decoder turns these skeleton and sidecar bytes into exactly ``model``."""
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    run = _decode(cli, tmp_path / "s", tmp_path / "k", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == model


def test_c_decoder_rebuilds_the_exported_tflite(cli, exported, tmp_path):
    out = tmp_path / "decoded.tflite"
    run = _decode(cli, f"{exported}.skeleton", f"{exported}.kcz", out)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == Path(f"{exported}.tflite").read_bytes()


@pytest.mark.parametrize("coding", ["huffman", "arithmetic"])
@pytest.mark.parametrize("seed", range(4))
def test_c_decoder_matches_python_on_synthetic_sidecars(cli, tmp_path, seed, coding):
    model, cuts = synthetic_model_bytes(seed)
    # Per-channel codebooks and a DEFLATE skeleton with each window, or a raw skeleton.
    skeleton, side, _ = kc.deploy.sidecar.split(
        model, cuts, window_bits=[9, 12, 15, None][seed], coding=coding
    )
    _assert_c_rebuilds(cli, skeleton, side, model, tmp_path)


@pytest.mark.parametrize("window_bits", [None, 10, 15])
def test_c_decoder_multiplies_scaled_copies_exactly_as_ieee(cli_asan, tmp_path, window_bits):
    """Format v5 with ties, both ends of the normal range, copies from a raw skeleton or from
    the DEFLATE window; forged distances and factors (CRC fixed up) stay in bounds."""
    for seed in range(3):
        model, cuts, links = scaled_copy_model(seed)
        skeleton, side, entries = kc.deploy.sidecar.split(
            model, cuts, window_bits=window_bits, links=links
        )
        assert kc.deploy.sidecar.SCALED_COPY in {e.encoding for e in entries}
        _assert_c_rebuilds(cli_asan, skeleton, side, model, tmp_path)
    copy = next(e for e in entries if e.encoding == kc.deploy.sidecar.SCALED_COPY)
    rng = np.random.default_rng(2)
    for _ in range(40):
        payload = bytearray(side[copy.payload_offset : copy.payload_offset + 8])
        payload[int(rng.integers(0, 8))] = int(rng.integers(0, 256))
        forged = bytearray(side)
        forged[copy.payload_offset : copy.payload_offset + 12] = payload + zlib.crc32(
            bytes(payload)
        ).to_bytes(4, "little")
        (tmp_path / "k").write_bytes(bytes(forged))
        run = _decode(cli_asan, tmp_path / "s", tmp_path / "k", tmp_path / "o")
        assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
        assert run.returncode in (0, 2), run.stderr[-2000:]
        if run.returncode == 2:
            assert "bad tensor payload" in run.stderr


def test_c_decoder_handles_codes_longer_than_its_lookup_table(cli, tmp_path):
    """Skewed values over many symbols give codes of up to 15 bits (the table covers 10)."""
    rng = np.random.default_rng(5)
    values = np.minimum(rng.geometric(0.3, 100_000), 3000).astype(np.float32) * np.float32(1e-3)
    values[rng.random(values.size) < 0.5] = 0.0  # sparse: a gap stream as well
    model = bytes(24) + values.tobytes() + bytes(8)
    skeleton, side, entries = kc.deploy.sidecar.split(model, [(24, values.nbytes, 4)])
    assert side[entries[0].payload_offset + 5] > 10  # max_len: the longest code
    _assert_c_rebuilds(cli, skeleton, side, model, tmp_path)


def test_c_decoder_reads_matches_the_whole_window_back(cli_asan, tmp_path):
    model = far_match_model()
    skeleton, side, _ = kc.deploy.sidecar.split(model, [], window_bits=15)
    assert len(skeleton) < 34_000  # it does use 32,767-byte distances
    _assert_c_rebuilds(cli_asan, skeleton, side, model, tmp_path)


@pytest.mark.slow  # its BatchNorm CNN fixture: 4 s, out of the quick subset
def test_c_decoder_rebuilds_a_batchnorm_cnn_in_int8(cli, exported_bn, tmp_path):
    """Per-channel int8 kernels arithmetic-coded and bias scales as scaled copies of the
    kernel scales (format version 5), then the same model Huffman-coded (version 3), each with
    a DEFLATE skeleton."""
    info, entries = kc.deploy.sidecar.read_header(Path(f"{exported_bn}.kcz").read_bytes())
    assert info["version"] == 5 and info["skeleton_window_bits"] == 15
    encodings = [e.encoding for e in entries]
    assert kc.deploy.sidecar.ARITHMETIC_CODED in encodings
    assert encodings.count(kc.deploy.sidecar.SCALED_COPY) == 3  # conv, dw (64 each), pw (128)
    model = Path(f"{exported_bn}.tflite").read_bytes()
    run = _decode(cli, f"{exported_bn}.skeleton", f"{exported_bn}.kcz", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == model
    cuts = kc.deploy.tflite_buffers.sidecar_cuts(model)
    skeleton, side, entries = kc.deploy.sidecar.split(model, cuts, coding="huffman")
    assert kc.deploy.sidecar.read_header(side)[0]["version"] == 3
    _assert_c_rebuilds(cli, skeleton, side, model, tmp_path)


def test_crafted_arithmetic_payloads_never_crash_the_decoder(cli_asan, tmp_path):
    """Arithmetic-coded payloads changed with their CRC-32 fixed up: the C decoder (which
    skips the SHA-256) stays in bounds under ASan/UBSan and ends with an error or a model of
    the right size; Python rejects every one (tests/test_arithmetic.py)."""
    model, cuts = synthetic_model_bytes(6)
    skeleton, side, entries = kc.deploy.sidecar.split(model, cuts, coding="arithmetic")
    coded = [e for e in entries if e.encoding == kc.deploy.sidecar.ARITHMETIC_CODED]
    (tmp_path / "s").write_bytes(skeleton)
    rng = np.random.default_rng(8)
    failures = 0
    for trial in range(120):
        e = coded[trial % len(coded)]
        payload = bytearray(side[e.payload_offset : e.payload_offset + e.payload_size])
        for pos in rng.integers(0, len(payload), 1 + trial % 3):
            payload[pos] = int(rng.integers(0, 256))
        crc = zlib.crc32(bytes(payload)).to_bytes(4, "little")
        forged = (side[: e.payload_offset] + bytes(payload) + crc
                  + side[e.payload_offset + e.payload_size + 4 :])  # fmt: skip
        (tmp_path / "k").write_bytes(forged)
        run = _decode(cli_asan, tmp_path / "s", tmp_path / "k", tmp_path / "o")
        assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
        assert run.returncode in (0, 2), run.stderr[-2000:]
        if run.returncode == 0:
            assert len((tmp_path / "o").read_bytes()) == len(model)
        failures += run.returncode == 2
    assert failures >= 60  # headers, sizes, indices and stream ends catch much of the damage


def test_a_size_optimised_build_keeps_a_1kb_window_and_says_so(tmp_path_factory, tmp_path):
    small = build_c(tmp_path_factory, "kcz_cli_os", ["-Os"])
    nowindow = build_c(tmp_path_factory, "kcz_cli_raw", ["-Os", "-DKCZ_WINDOW_BITS=0"])
    model, cuts = synthetic_model_bytes(1)
    for window_bits, program, ok in [(10, small, True), (15, small, False), (None, nowindow, True),
                                     (9, nowindow, False)]:  # fmt: skip
        skeleton, side, _ = kc.deploy.sidecar.split(model, cuts, window_bits=window_bits)
        refusal = None if ok else "window too large"
        _assert_decodes_or_refuses(program, skeleton, side, model, tmp_path, refusal)


def _assert_decodes_or_refuses(program, skeleton, side, model, tmp_path, refusal) -> None:
    """``program`` rebuilds ``model``, or (``refusal`` names the error) writes nothing."""
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    (tmp_path / "o").unlink(missing_ok=True)
    run = _decode(program, tmp_path / "s", tmp_path / "k", tmp_path / "o")
    if refusal is None:
        assert run.returncode == 0 and (tmp_path / "o").read_bytes() == model, run.stderr
    else:
        assert run.returncode == 2 and refusal in run.stderr, run.stderr
        assert not (tmp_path / "o").exists()


def test_a_build_without_scaled_copies_refuses_version_5_before_writing(tmp_path_factory, tmp_path):
    plain = build_c(tmp_path_factory, "kcz_cli_v4", ["-Os", "-DKCZ_SCALED_COPY=0"])
    model, cuts, links = scaled_copy_model(1)
    # export(..., scaled_copies=False) writes version 4, which such a build decodes.
    for copies, refusal in [(links, "unknown version"), ([], None)]:
        skeleton, side, _ = kc.deploy.sidecar.split(model, cuts, window_bits=10, links=copies)
        _assert_decodes_or_refuses(plain, skeleton, side, model, tmp_path, refusal)


@pytest.mark.slow
def test_crafted_deflate_skeletons_never_crash_the_decoder(cli_asan, tmp_path):
    """Corrupted skeleton streams with their CRC-32 fixed up (what no accident produces): the
    C decoder, which skips the SHA-256, must still stay in bounds and stop with an error or a
    model of the right size."""
    model, cuts = synthetic_model_bytes(2)
    skeleton, side, _ = kc.deploy.sidecar.split(model, cuts)
    size = kc.deploy.sidecar.HEADER.size
    rng = np.random.default_rng(7)
    failures = 0
    for trial in range(150):
        bad = bytearray(skeleton)
        for pos in rng.integers(0, len(bad), 1 + trial % 3):
            bad[pos] = int(rng.integers(0, 256))
        if trial % 10 == 0:
            bad = bad[: int(rng.integers(1, len(bad)))]
        header = bytearray(side[:size])
        header[56:60] = zlib.crc32(bytes(bad)).to_bytes(4, "little")
        forged = bytes(header) + zlib.crc32(bytes(header)).to_bytes(4, "little") + side[size + 4 :]
        (tmp_path / "s").write_bytes(bytes(bad))
        (tmp_path / "k").write_bytes(forged)
        run = _decode(cli_asan, tmp_path / "s", tmp_path / "k", tmp_path / "o")
        assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
        assert run.returncode in (0, 2), run.stderr[-2000:]
        if run.returncode == 0:
            assert len((tmp_path / "o").read_bytes()) == len(model)
        failures += run.returncode == 2
    assert failures > 75  # DEFLATE itself notices most damage (zopfli's stream: 93 of 150)


def test_c_decoder_rejects_a_wrong_skeleton(cli, exported, tmp_path):
    skeleton = bytearray(Path(f"{exported}.skeleton").read_bytes())
    skeleton[len(skeleton) // 2] ^= 0x10
    (tmp_path / "bad").write_bytes(bytes(skeleton))
    run = _decode(cli, tmp_path / "bad", f"{exported}.kcz", tmp_path / "o")
    assert run.returncode == 2 and "skeleton size or CRC mismatch" in run.stderr
    assert not (tmp_path / "o").exists()


def test_a_failed_decode_leaves_the_output_as_it_was_and_inputs_are_never_outputs(
    cli, exported, tmp_path
):
    # The CLI truncated OUT first and deleted it on failure: a model there was lost.
    (tmp_path / "o").write_bytes(b"the previous model")
    side = bytearray(Path(f"{exported}.kcz").read_bytes())
    side[-3] ^= 1
    (tmp_path / "bad.kcz").write_bytes(bytes(side))
    run = _decode(cli, f"{exported}.skeleton", tmp_path / "bad.kcz", tmp_path / "o")
    assert run.returncode == 2
    assert (tmp_path / "o").read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.kcz", "o"]  # no .part left
    # OUT naming an input, spelled differently, is refused before anything is written.
    skeleton = tmp_path / "m.skeleton"
    skeleton.write_bytes(Path(f"{exported}.skeleton").read_bytes())
    for out in (tmp_path / "." / "m.skeleton", tmp_path / "bad.kcz"):
        run = _decode(cli, skeleton, tmp_path / "bad.kcz", out)
        assert run.returncode == 64 and "would overwrite an input" in run.stderr
    assert skeleton.read_bytes() == Path(f"{exported}.skeleton").read_bytes()
    assert (tmp_path / "bad.kcz").read_bytes() == bytes(side)


@pytest.mark.parametrize("which", ["exported", pytest.param("exported_bn", marks=pytest.mark.slow)])
def test_thousands_of_corruptions_are_rejected_under_sanitizers(cli_asan, which, request):
    path = request.getfixturevalue(which)
    run = subprocess.run(
        [str(cli_asan), f"{path}.skeleton", f"{path}.kcz", "--mutate", "4000"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
    rejected = int(run.stdout.split(":")[1].split()[0])
    assert rejected >= 3900, run.stdout  # the rest are mutations that changed nothing
