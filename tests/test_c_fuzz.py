"""A short libFuzzer run of the C decoder (tflite_export/c/fuzz), seeded with a real export."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from helpers import C_SOURCE

CLANG = shutil.which("clang")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CLANG is None, reason="clang is not installed (apt-get install clang)"),
]


@pytest.mark.parametrize("crc", ["checked", "ignored"])
def test_libfuzzer_finds_no_crash_in_ten_seconds(exported, exported_bn, tmp_path, crc):
    """With CRCs checked (the shipped decoder) and ignored (-DKCZ_FUZZ_NO_CRC: mutations reach
    the Huffman, arithmetic and DEFLATE decoders)."""
    binary = tmp_path / "kcz_fuzz"
    sources = [str(C_SOURCE / "kcz_decode.c"), str(C_SOURCE / "fuzz" / "kcz_fuzz.c")]
    flags = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", f"-I{C_SOURCE}"]
    flags += ["-DKCZ_FUZZ_NO_CRC"] if crc == "ignored" else []
    cmd = [CLANG, *flags, *sources, "-o", str(binary)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # Seeds: an MLP's export and a BatchNorm CNN's int8 export (arithmetic-coded kernels and a
    # DEFLATE skeleton). The harness reads the skeleton's length (mod the input size) from the
    # first two bytes.
    for i, path in enumerate([exported, exported_bn]):
        skeleton = Path(f"{path}.skeleton").read_bytes()
        sidecar = Path(f"{path}.kcz").read_bytes()
        (corpus / f"seed{i}").write_bytes(struct.pack("<H", len(skeleton)) + skeleton + sidecar)
    # libFuzzer's RSS limit reads the peak RSS, which Linux carries over fork+exec from this
    # process (4.3 GB after the ResNet50V2 architecture test): bound each allocation instead
    # (the decoder itself allocates nothing).
    limits = ["-rss_limit_mb=0", "-malloc_limit_mb=1024"]
    run = subprocess.run(
        [str(binary), "-max_total_time=10", "-max_len=65536", "-seed=1", *limits, str(corpus)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done" in run.stderr and "ERROR" not in run.stderr
