"""LeNet-5 int8 on TensorFlow Lite Micro: plain, TFLM_DECODE (LUT / Huffman / pruning), sidecar.

Trains Caffe's LeNet-5 on Fashion-MNIST, prunes it to Han et al.'s levels (3 prune/retrain
rounds + 2 retraining epochs), shares its weights with k-means (4 bits conv, 3 bits dense) and
fine-tunes 2 epochs, then exports full-integer int8 (200 training images for calibration).
Rows, all measured in this run with TFLM's own Python runtime (reference kernels, x86):

- int8 of the float model (what a user gets without compression) and int8 of the compressed
  model stored plainly;
- the compressed model with every weight tensor LUT-, Huffman- or pruning-coded for TFLM's
  DECODE operator, with each tensor's smallest choice (``keras_compress.tflm``), and the same
  with tensors over 64 KiB left plain (DECODE's outputs take arena RAM);
- our skeleton + sidecar (decoded back to the plain int8 file before it runs).

Columns: file bytes, test accuracy on the 10,000 test images, whether every output equals the
plain compressed int8 model's bit for bit, the tensor arena TFLM allocates, and the median
single-image invoke time (``--runs`` invokes, DECODE included) with its ratio to the plain
compressed int8 model.

    python benchmarks/tflm.py            # about 20 minutes on 2 cores
    python benchmarks/tflm.py --quick    # subset smoke run
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import results_io
from fashion import BATCH, compiled, data, prune_to_han_levels

import keras_compress as kc
from keras_compress import tflm

COLUMNS = ["row", "bytes", "bytes_ratio", "accuracy", "identical", "arena_bytes",
           "latency_ms", "latency_ratio", "chosen"]  # fmt: skip


VARIANTS = [
    ("TFLM LUT", {"methods": ("lut",)}),
    ("TFLM Huffman", {"methods": ("huffman",)}),
    ("TFLM pruning", {"methods": ("pruning",)}),
    ("TFLM smallest per tensor", {}),
    # RAM instead of flash: DECODE writes each tensor into the arena; keep big ones plain.
    ("TFLM smallest, tensors over 64 KiB plain", {"max_decoded_bytes": 64 * 1024}),
]


def quantized(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Inputs quantized with the model's own input scale and zero point."""
    params = tflm.interpreter(model_bytes).get_input_details(0)["quantization_parameters"]
    scale, zero = float(params["scales"][0]), int(params["zero_points"][0])
    return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)


def latency_ms(model_bytes: bytes, image: np.ndarray, runs: int) -> float:
    it = tflm.interpreter(model_bytes)
    times = []
    for _ in range(runs):
        it.set_input(image[None], 0)
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(label: str, model_bytes: bytes, xq, yt, reference, runs: int, chosen="") -> dict:
    outputs = tflm.run(model_bytes, xq)
    row = {"row": label, "bytes": len(model_bytes),
           "accuracy": float(np.mean(np.argmax(outputs, axis=1) == yt)),
           "identical": None if reference is None else bool(np.array_equal(outputs, reference)),
           "arena_bytes": tflm.arena_bytes(model_bytes),
           "latency_ms": latency_ms(model_bytes, xq[0], runs), "chosen": chosen}  # fmt: skip
    print(row, flush=True)
    return row, outputs


def int8_export(model: keras.Model, x: np.ndarray, prefix: Path) -> dict:
    def calibration():
        for row in x[:200]:
            yield [row[None]]

    return kc.export(model, prefix, quantization="int8", representative_data=calibration)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    parser.add_argument("--runs", type=int, default=200, help="invokes timed per model")
    args = parser.parse_args()
    (x, y), (xt, yt) = data(args.quick)
    epochs, retrain, finetune = (1, 1, 1) if args.quick else (8, 2, 2)
    bits = {"conv": 4, "dense": 3}
    keras.utils.set_random_seed(0)
    model = compiled(kc.examples.lenet5(), 1e-3)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=2)
    pruned = kc.strip(prune_to_han_levels(model, "lenet5", x, y, retrain))
    shared = kc.share_weights(pruned, bits=bits)
    compiled(shared, 1e-4).fit(x, y, batch_size=BATCH, epochs=finetune, verbose=2)
    compressed = kc.strip(shared)

    work = Path(tempfile.mkdtemp())
    int8_export(model, x, work / "float")
    report = int8_export(compressed, x, work / "compressed")
    plain = (work / "compressed.tflite").read_bytes()
    xq = quantized(plain, xt)
    rows = []
    original = (work / "float.tflite").read_bytes()
    row, _ = measure(
        "int8 of the float model", original, quantized(original, xt), yt, None, args.runs
    )
    rows.append(row)
    row, reference = measure("int8 of the compressed model, plain", plain, xq, yt, None, args.runs)
    row["identical"] = True
    rows.append(row)
    reports = {}
    for label, options in VARIANTS:
        result = tflm.compress(plain, **options)
        chosen = ", ".join(f"{c.tensor.split('/')[1]}:{c.chosen}" for c in result.choices
                           if c.chosen != "none")  # fmt: skip
        row, _ = measure(label, result.data, xq, yt, reference, args.runs, chosen)
        rows.append(row)
        reports[label] = result.markdown()
    decoded = kc.deploy.sidecar.join((work / "compressed.skeleton").read_bytes(),
                              (work / "compressed.kcz").read_bytes())  # fmt: skip
    row, _ = measure("skeleton + sidecar (decoded before running)", decoded, xq, yt, reference,
                     args.runs)  # fmt: skip
    row["bytes"] = report.totals["deployable_bytes"]
    rows.append(row)
    base = rows[1]
    for row in rows:
        row["bytes_ratio"] = row["bytes"] / base["bytes"]
        row["latency_ratio"] = row["latency_ms"] / base["latency_ms"]
    write(rows, reports, args, bits)


def write(rows, reports, args, bits) -> None:
    decode_rows = [r for r in rows if r["row"].startswith("TFLM")]
    goals = [results_io.goal(re.sub(r"[^a-z0-9]+", "_", r["row"].lower()) + "_outputs_identical",
                             float(r["identical"]), ">=", 1.0) for r in decode_rows]  # fmt: skip
    smallest = next(r for r in rows if r["row"] == "TFLM smallest per tensor")
    markdown = "\n\n".join([
        f"LeNet-5 on Fashion-MNIST ({'subset' if args.quick else '60,000 training images'}), "
        f"pruned to Han et al.'s levels, weight sharing {bits} with k-means, full-integer int8. "
        "Runtime: TFLM's Python interpreter (reference kernels on x86), same run for every row. "
        "Bytes ratio and latency ratio: to the plain int8 file of the compressed model. "
        "Identical: every test output equals that model's bit for bit. Latency: median of "
        f"{args.runs} single-image invokes, DECODE included (it runs on every invoke).",
        results_io.table(rows, COLUMNS),
        f"The smallest-per-tensor model is {smallest['bytes_ratio']:.3f}x the plain int8 file "
        f"and needs {smallest['arena_bytes']:,} arena bytes (plain: {rows[1]['arena_bytes']:,}): "
        "DECODE writes each weight tensor into the arena before its operator runs.",
        "Per-tensor choices (smallest per tensor):\n\n" + reports["TFLM smallest per tensor"],
    ])  # fmt: skip
    results_io.write("tflm_quick" if args.quick else "tflm", goals, rows, markdown)


if __name__ == "__main__":
    main()
