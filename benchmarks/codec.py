"""The sidecar codec on a pruned + shared LeNet-5 (Fashion-MNIST), against zlib/gzip and xz.

Measured in one run: the sidecar's size against gzip -9 and xz -9e of the same weight bytes
(goal: smaller than both); the C decoder's throughput in MB/s of restored model against
zlib inflate of the same weight bytes (goal: ratio >= 1.0); the C decoder's code and RAM on a
Cortex-M4 (goals: at most 1.5 KB and 2 KB); Python encode/decode throughput;
and the time to encode a synthetic 25M-weight tensor (90% pruned, 32 shared values).

    python benchmarks/codec.py [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import results_io
from fashion import BATCH, compiled, data, prune_to_han_levels

import keras_compress as kc
from keras_compress import sidecar
from keras_compress.tflite_buffers import weight_buffers

C_SOURCE = Path(__file__).resolve().parent.parent / "tflite_export" / "c"


def compressed_lenet5(x, y, epochs):
    keras.utils.set_random_seed(0)
    model = compiled(kc.zoo.lenet5(), 1e-3)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    pruned = prune_to_han_levels(model, "lenet5", x, y, retrain=1)
    shared = compiled(kc.share_weights(pruned, bits={"conv": 8, "dense": 5}), 1e-4)
    shared.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    return shared


def cortex_m4_footprint(work: Path) -> dict:
    """Code and RAM of the C decoder for a Cortex-M4 (Debian's gcc-arm-none-eabi), or {}."""
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        print(
            "arm-none-eabi-gcc not found: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"
        )
        return {}
    flags = ["-std=c99", "-mcpu=cortex-m4", "-mthumb", "-Os", "-DKCZ_MAX_CODEBOOK=256"]
    obj = work / "kcz_m4.o"
    subprocess.run([gcc, *flags, "-fstack-usage", "-c", str(C_SOURCE / "kcz_decode.c"), "-o",
                    str(obj)], check=True, cwd=work)  # fmt: skip
    size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True)
    code = int(size.stdout.splitlines()[1].split()[0])  # .text (code and constant tables)
    probe = work / "ws.c"
    probe.write_text('#include "kcz_decode.h"\nchar ws[sizeof(kcz_workspace)];\n')
    subprocess.run([gcc, *flags, "-I", str(C_SOURCE), "-c", str(probe), "-o", str(work / "ws.o")],
                   check=True)  # fmt: skip
    ws = subprocess.run(
        ["arm-none-eabi-size", "-A", str(work / "ws.o")], capture_output=True, text=True
    )
    workspace = next(
        int(line.split()[1]) for line in ws.stdout.splitlines() if line.startswith(".bss")
    )
    frames = {}
    for line in (work / "kcz_m4.su").read_text().splitlines():
        name, size_, _ = line.rsplit(maxsplit=2)[-3:]
        frames[name.rsplit(":", 1)[-1]] = int(size_)
    # The deepest call chain (functions inlined by -Os have no frame of their own).
    chain = ["kcz_decode", "decode_tensor", "emit_zeros", "emit", "sha_update", "sha_block"]
    stack = sum(frames.get(f, 0) for f in chain)
    return {"m4_code_bytes": code, "m4_workspace_bytes": workspace, "m4_stack_bytes": stack,
            "m4_ram_bytes": workspace + stack}  # fmt: skip


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    args = parser.parse_args()
    (x, y), _ = data(args.quick)
    work = Path(tempfile.mkdtemp())
    kc.export(compressed_lenet5(x, y, 1 if args.quick else 3), work / "lenet5")
    model = (work / "lenet5.tflite").read_bytes()
    skeleton, side = (work / "lenet5.skeleton").read_bytes(), (work / "lenet5.kcz").read_bytes()
    _, entries = sidecar.read_header(side)
    weights = b"".join(model[e.offset : e.offset + e.length] for e in entries)
    all_weights = b"".join(model[b.offset : b.offset + b.length] for b in weight_buffers(model))
    sizes = {
        "weights_raw": len(weights),
        "sidecar": len(side),
        "gzip_9": len(gzip.compress(weights, 9)),
        "xz_9e": len(lzma.compress(weights, preset=9 | lzma.PRESET_EXTREME)),
        "tflite": len(model),
        "skeleton": len(skeleton),
        "all_weight_bytes_in_tflite": len(all_weights),
    }
    print(sizes)

    binary = work / "kcz_cli"
    gcc = shutil.which("gcc")
    subprocess.run([gcc, "-std=c99", "-O2", "-o", str(binary), str(C_SOURCE / "kcz_decode.c"),
                    str(C_SOURCE / "kcz_cli.c")], check=True)  # fmt: skip
    reps = 20 if args.quick else 200
    bench = [str(binary), str(work / "lenet5.skeleton"), str(work / "lenet5.kcz"), "--bench"]
    out = subprocess.run(bench + [str(reps)], check=True, capture_output=True, text=True)
    restored, seconds = out.stdout.split()
    c_mbs = int(restored) * reps / float(seconds) / 1e6
    packed = zlib.compress(weights, 9)
    zlib_s = best_of(lambda: [zlib.decompress(packed) for _ in range(reps)], 3)
    zlib_mbs = len(weights) * reps / zlib_s / 1e6
    py_encode_s = best_of(
        lambda: sidecar.split(model, [(e.offset, e.length, e.elem_size) for e in entries]), 1
    )
    py_decode_s = best_of(lambda: sidecar.join(skeleton, side), 1)
    rng = np.random.default_rng(0)
    big = np.where(rng.random(25_000_000) < 0.1, rng.integers(0, 32, 25_000_000), 0)
    big = (big * np.float32(0.01)).astype(np.float32).tobytes()
    encode_25m_s = best_of(lambda: sidecar.encode_tensor(big, 4), 1)
    footprint = cortex_m4_footprint(work)
    rows = [
        {**sizes, **footprint, "c_decoder_mb_s": c_mbs, "zlib_inflate_mb_s": zlib_mbs,
         "python_encode_mb_s": len(model) / py_encode_s / 1e6,
         "python_decode_mb_s": len(model) / py_decode_s / 1e6, "encode_25m_weights_s": encode_25m_s}
    ]  # fmt: skip
    print(rows[0])
    goals = [
        results_io.goal("c_decoder_vs_zlib_throughput", c_mbs / zlib_mbs, ">=", 1.0),
        results_io.goal("sidecar_over_gzip9_bytes", len(side) / sizes["gzip_9"], "<=", 1.0),
        results_io.goal("sidecar_over_xz_bytes", len(side) / sizes["xz_9e"], "<=", 1.0),
    ]
    if footprint:
        goals += [
            results_io.goal("cortex_m4_code_bytes", footprint["m4_code_bytes"], "<=", 1536),
            results_io.goal("cortex_m4_ram_bytes", footprint["m4_ram_bytes"], "<=", 2048),
        ]
    md = (
        "LeNet-5 on Fashion-MNIST, pruned to Han et al.'s levels and shared (conv 8 bits, dense "
        "5 bits), float32 .tflite. gzip and xz compress the same weight bytes the sidecar "
        "replaces; throughputs are MB/s of output (the whole model for the C decoder, the "
        "weights for zlib).\n\n" + results_io.table(rows, list(rows[0]))
    )
    print(results_io.write("codec_quick" if args.quick else "codec", goals, rows, md))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
