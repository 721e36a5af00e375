"""The C decoder bare-metal on an emulated Cortex-M4 (QEMU mps2-an386): byte-exact, and it
rejects corrupt sidecars with the host decoder's error. Skips without the Arm toolchain or
QEMU (``apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm``)."""

import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
from helpers import C_SOURCE, build_c, scaled_copy_model

import keras_compress as kc
from keras_compress.deploy import sidecar
from keras_compress.deploy.tflite_buffers import sidecar_cuts

sys.path.insert(0, str(C_SOURCE / "m4"))  # emulate.py: a script beside the C sources
import emulate  # noqa: E402

if emulate.missing_tools():
    pytest.skip(emulate.missing_tools(), allow_module_level=True)

# Emulation and its LeNet-5 fixture take about 20 s: the full suite runs them, not the quick one.
pytestmark = pytest.mark.slow

# The microcontroller build: 8-bit codebooks at most; the skeleton's DEFLATE window (the -Os
# default, 1 KB) or none (raw skeleton: the smallest RAM).
MCU = ("KCZ_MAX_CODEBOOK=256",)


@pytest.fixture(scope="module")
def lenet5(tmp_path_factory):
    """A LeNet-5 pruned 80% and shared (4-bit conv, 5-bit dense), exported: ``.tflite`` bytes."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 28, 28, 1)).astype("float32"), rng.integers(0, 10, 128)
    model = kc.make_prunable(kc.examples.lenet5())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0,
              callbacks=[kc.MagnitudePruning(0.8, end_step=4)])  # fmt: skip
    shared = kc.share_weights(model, bits={"conv.*": 4, "fc.*": 5})
    path = tmp_path_factory.mktemp("m4") / "lenet5"
    kc.export(shared, path, window_bits=10)
    return path.with_suffix(".tflite").read_bytes()


def _files(tmp_path, model: bytes, **split):
    """The skeleton and sidecar files of ``model`` coded with ``sidecar.split``'s options."""
    skeleton, side, _ = sidecar.split(model, sidecar_cuts(model), **split)
    (tmp_path / "model.skeleton").write_bytes(skeleton)
    (tmp_path / "model.kcz").write_bytes(side)
    return tmp_path / "model.skeleton", tmp_path / "model.kcz"


def _assert_rebuilt(report: dict, model: bytes) -> None:
    assert report["status"] == 0, report["stdout"] + report["stderr"]
    assert report["output"] == model  # streamed out through semihosting
    assert report["crc32"] == f"{zlib.crc32(model):x}"  # computed on the device
    assert report["counted_bytes"] == len(model)
    assert report["instructions_per_tick"] == pytest.approx(40.0)  # -icount: 1 insn = 1 ns


def test_m4_decodes_arithmetic_coding_and_deflate_skeleton(lenet5, tmp_path):
    """kc.export's default codings (arithmetic where smaller, DEFLATE skeleton) at -Os."""
    skeleton, side = _files(tmp_path, lenet5, window_bits=10)
    info, entries = sidecar.read_header(side.read_bytes())
    assert info["skeleton_window_bits"] == 10
    assert sidecar.ARITHMETIC_CODED in {e.encoding for e in entries}
    firmware, report = emulate.decode(skeleton, side, tmp_path / "build", "-Os", MCU)
    _assert_rebuilt(report, lenet5)
    assert firmware.sections[".kcz_model"] >= skeleton.stat().st_size + side.stat().st_size


@pytest.mark.parametrize(
    "opt, defines, split, pad, strict",
    [
        # the smallest build: Huffman, raw skeleton, no DEFLATE decoder, inputs at odd addresses
        ("-Os", (*MCU, "KCZ_WINDOW_BITS=0"), {"window_bits": None, "coding": "huffman"}, 1, False),
        # host-speed build: lookup tables on the stack, 32 KB window, full codebooks
        ("-O2", (), {"window_bits": 15}, 2, False),
        # no unaligned access in the code, and the core traps any (a C cast would fault)
        ("-Os", MCU, {"window_bits": 10}, 3, True),
        ("-O2", (), {"window_bits": 15, "coding": "huffman"}, 3, True),
    ],
)
def test_m4_decodes_byte_exact(lenet5, tmp_path, opt, defines, split, pad, strict):
    skeleton, side = _files(tmp_path, lenet5, **split)
    _, report = emulate.decode(skeleton, side, tmp_path / "build", opt, defines, pad, strict)
    _assert_rebuilt(report, lenet5)


@pytest.mark.parametrize("window_bits, defines", [(10, MCU), (None, (*MCU, "KCZ_WINDOW_BITS=0"))])
def test_m4_multiplies_scaled_copies_in_integers(tmp_path, window_bits, defines):
    """Format v5's binary32 products (ties, both ends of the normal range) on a core without
    an FPU in use: the decoder's integer multiply, from the DEFLATE window or a raw skeleton."""
    model, cuts, links = scaled_copy_model(0)
    skeleton, side, entries = sidecar.split(model, cuts, window_bits=window_bits, links=links)
    assert sidecar.SCALED_COPY in {e.encoding for e in entries}
    (tmp_path / "s").write_bytes(skeleton)
    (tmp_path / "k").write_bytes(side)
    _, report = emulate.decode(tmp_path / "s", tmp_path / "k", tmp_path / "build", "-Os",
                               defines, 1)  # fmt: skip
    _assert_rebuilt(report, model)


@pytest.mark.parametrize("coding", ["huffman", "auto"])
def test_m4_decoder_fits_2_kb_of_ram(lenet5, tmp_path, coding):
    """Measured peak stack (painted) + workspace of the -Os build for raw skeletons, <= 2 KB,
    with Huffman and with arithmetic-coded tensors (their state shares the workspace)."""
    skeleton, side = _files(tmp_path, lenet5, window_bits=None, coding=coding)
    build = tmp_path / "build"
    _, report = emulate.decode(skeleton, side, build, "-Os", (*MCU, "KCZ_WINDOW_BITS=0"))
    _assert_rebuilt(report, lenet5)
    assert 0 < report["stack_bytes"] and report["stack_bytes"] + report["workspace_bytes"] <= 2048


def _corruptions(skeleton: bytes, side: bytes, other_skeleton: bytes):
    entries = sidecar.read_header(side)[1]
    flipped = bytearray(side)
    flipped[entries[0].payload_offset + 20] ^= 0x10
    return {
        "magic": (skeleton, b"X" + side[1:]),
        "truncated": (skeleton, side[: len(side) // 2]),
        "payload bit": (skeleton, bytes(flipped)),
        "header only": (skeleton, side[:40]),
        "other skeleton": (other_skeleton, side),
    }


def test_m4_rejects_corrupt_sidecars_with_the_host_error(lenet5, tmp_path, tmp_path_factory):
    host = build_c(tmp_path_factory, "kcz_cli_m4_ref", ["-O1", "-DKCZ_WINDOW_BITS=10"])
    skeleton, side, _ = sidecar.split(lenet5, sidecar_cuts(lenet5), window_bits=10)
    other = sidecar.split(lenet5[:-4] + b"\x01\x02\x03\x04", sidecar_cuts(lenet5),
                          window_bits=10)[0]  # fmt: skip
    objects = emulate.compile_objects(tmp_path / "build", "-Os", MCU)
    seen = set()
    for name, (skel, bad) in _corruptions(skeleton, side, other).items():
        (tmp_path / "s").write_bytes(skel)
        (tmp_path / "k").write_bytes(bad)
        args = [host, tmp_path / "s", tmp_path / "k", tmp_path / "o"]
        expected = subprocess.run([str(a) for a in args], capture_output=True, text=True)
        assert expected.returncode == 2 and expected.stderr.startswith("error: "), name
        firmware = emulate.link(objects, tmp_path / "s", tmp_path / "k", tmp_path / "m4.elf")
        report = emulate.run(firmware)
        assert report["status"] == 2, (name, report["stdout"] + report["stderr"])
        assert report["error"] == expected.stderr.removeprefix("error: ").strip(), name
        assert report["output"] is None, name  # rejected before the first byte was written
        seen.add(report["error"])
    assert len(seen) >= 3  # the cases reach different checks
