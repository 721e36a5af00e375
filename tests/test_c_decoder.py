"""The C99 decoder (tflite_export/c) against files the Python exporter wrote."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import build_c, synthetic_model_bytes

import keras_compress as kc


@pytest.fixture(scope="module", params=["-O1", "-Os"])
def cli_asan(tmp_path_factory, request):
    flags = ["-g", request.param, "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    return build_c(tmp_path_factory, "kcz_cli_asan", flags)


def _decode(cli, skeleton, sidecar, out):
    return subprocess.run([str(cli), str(skeleton), str(sidecar), str(out)],
                          capture_output=True, text=True)  # fmt: skip


def test_c_decoder_rebuilds_the_exported_tflite(cli, exported, tmp_path):
    out = tmp_path / "decoded.tflite"
    run = _decode(cli, f"{exported}.skeleton", f"{exported}.kcz", out)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == Path(f"{exported}.tflite").read_bytes()


@pytest.mark.parametrize("seed", range(4))
def test_c_decoder_matches_python_on_synthetic_sidecars(cli, tmp_path, seed):
    model, cuts = synthetic_model_bytes(seed)
    skeleton, side, _ = kc.deploy.sidecar.split(model, cuts)
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    run = _decode(cli, tmp_path / "s", tmp_path / "k", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == model


def test_c_decoder_handles_codes_longer_than_its_lookup_table(cli, tmp_path):
    """Skewed values over many symbols give codes of up to 15 bits (the table covers 10)."""
    rng = np.random.default_rng(5)
    values = np.minimum(rng.geometric(0.3, 100_000), 3000).astype(np.float32) * np.float32(1e-3)
    values[rng.random(values.size) < 0.5] = 0.0  # sparse: a gap stream as well
    model = bytes(24) + values.tobytes() + bytes(8)
    skeleton, side, entries = kc.deploy.sidecar.split(model, [(24, values.nbytes, 4)])
    assert side[entries[0].payload_offset + 5] > 10  # max_len: the longest code
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    run = _decode(cli, tmp_path / "s", tmp_path / "k", tmp_path / "o")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o").read_bytes() == model


def test_c_decoder_rejects_a_wrong_skeleton(cli, exported, tmp_path):
    skeleton = bytearray(Path(f"{exported}.skeleton").read_bytes())
    skeleton[len(skeleton) // 2] ^= 0x10
    (tmp_path / "bad").write_bytes(bytes(skeleton))
    run = _decode(cli, tmp_path / "bad", f"{exported}.kcz", tmp_path / "o")
    assert run.returncode == 2 and "skeleton size or CRC mismatch" in run.stderr
    assert not (tmp_path / "o").exists()


def test_thousands_of_corruptions_are_rejected_under_sanitizers(cli_asan, exported):
    run = subprocess.run(
        [str(cli_asan), f"{exported}.skeleton", f"{exported}.kcz", "--mutate", "4000"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr
    rejected = int(run.stdout.split(":")[1].split()[0])
    assert rejected >= 3900, run.stdout  # the rest are mutations that changed nothing
