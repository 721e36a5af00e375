"""Network trimming by APoZ (Hu et al. 2016) on Fashion-MNIST, against L1-norm filter pruning.

For LeNet-5 (Caffe's: the only ReLU follows fc1) and a VGG-style CNN (two blocks of two
conv-BatchNorm-ReLU layers, max pooling, a 256-unit ReLU layer): train, then rounds of
APoZ trimming with the paper's rule (APoZ more than one standard deviation above the layer's
mean, measured on 2,000 held-out training images), each followed by one epoch of retraining,
until the validation accuracy falls more than ``--tolerance`` below the untrimmed model's.
The baseline removes, round by round, the same number of units from the same layers, chosen
by the smallest L1 norm of their incoming weights (Li et al. 2016), with the same retraining.
Per round: parameters, validation and test accuracy, the float32 ``.tflite`` size and its
single-image latency in the TFLite interpreter (median of ``--runs`` invokes, same run), both
as ratios to the untrimmed model.

    python benchmarks/apoz.py            # about 20 minutes on 2 cores
    python benchmarks/apoz.py --quick    # subset smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import results_io
from fashion import BATCH, compiled, data, vgg_style

import keras_compress as kc

COLUMNS = ["model", "method", "round", "params", "params_ratio", "val_accuracy", "test_accuracy",
           "tflite_bytes", "size_ratio", "latency_ms", "latency_ratio"]  # fmt: skip


def tflite_bytes(model: keras.Model) -> bytes:
    return kc.deploy.convert(model)


def latency_s(model_bytes: bytes, image: np.ndarray, runs: int) -> float:
    """Median seconds of one single-image ``invoke`` in the TFLite interpreter."""
    interpreter = kc.deploy.litert.interpreter(model_bytes, num_threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, image[None])
    interpreter.invoke()  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def l1_smallest(model: keras.Model, counts: dict[str, int]) -> dict[str, list[int]]:
    """Per layer, the ``count`` units with the smallest L1 norm of their incoming weights."""
    chosen = {}
    for name, count in counts.items():
        kernel = model.get_layer(name).get_weights()[0]
        norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
        chosen[name] = np.argsort(norms, kind="stable")[:count].tolist()
    return chosen


def measure(model, label, round_, reference, val, test, runs) -> dict:
    blob = tflite_bytes(model)
    row = {
        "method": label, "round": round_, "params": model.count_params(),
        "val_accuracy": compiled(model, 1e-3).evaluate(*val, verbose=0)[1],
        "test_accuracy": compiled(model, 1e-3).evaluate(*test, verbose=0)[1],
        "tflite_bytes": len(blob), "latency_ms": 1e3 * latency_s(blob, test[0][0], runs),
    }  # fmt: skip
    base = reference or row
    row["size_ratio"] = row["tflite_bytes"] / base["tflite_bytes"]
    row["latency_ratio"] = row["latency_ms"] / base["latency_ms"]
    row["params_ratio"] = row["params"] / base["params"]
    print(f"  {label} round {round_}: {row['params']} params, val {row['val_accuracy']:.4f}, "
          f"test {row['test_accuracy']:.4f}, {row['tflite_bytes']} B, "
          f"{row['latency_ms']:.3f} ms ({row['latency_ratio']:.2f}x)")  # fmt: skip
    return row


def run_model(name, build, dataset, cfg) -> list[dict]:
    (x, y), test = dataset
    train, val = (x[:-5000], y[:-5000]), (x[-5000:], y[-5000:])
    probe = val[0][:2000]
    keras.utils.set_random_seed(0)
    model = compiled(build(), 1e-3)
    model.fit(*train, batch_size=BATCH, epochs=cfg["epochs"], verbose=2)
    print(f"{name}: trained")
    reference = measure(model, "untrimmed", 0, None, val, test, cfg["runs"])
    rows = [{**reference, "model": name}]

    def retrain(trimmed):
        compiled(trimmed, 5e-4).fit(*train, batch_size=BATCH, epochs=1, verbose=0)

    def score(m):
        return compiled(m, 1e-3).evaluate(*val, verbose=0)[1]

    keras.utils.set_random_seed(0)
    result = kc.trim_iteratively(model, probe, retrain, score, cfg["tolerance"],
                                 max_rounds=cfg["rounds"])  # fmt: skip
    # The baseline: as many units from the same layers each round, by L1 norm, same retraining.
    l1_model = model
    for trim in result.rounds[1:]:
        counts = {layer: len(units) for layer, units in trim.removed.items()}
        l1_model = kc.remove_units(l1_model, l1_smallest(l1_model, counts))
        keras.utils.set_random_seed(trim.round)
        retrain(l1_model)
        for label, trimmed in (("APoZ (std rule)", trim.model), ("L1-norm filters", l1_model)):
            row = measure(trimmed, label, trim.round, reference, val, test, cfg["runs"])
            kept = row["val_accuracy"] >= reference["val_accuracy"] - cfg["tolerance"]
            rows.append({**row, "model": name, "removed": counts, "within_tolerance": kept})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=300, help="invokes per latency median")
    args = parser.parse_args()
    cfg = {"epochs": 4, "rounds": 4, "tolerance": args.tolerance, "runs": args.runs}
    if args.quick:
        cfg = {"epochs": 1, "rounds": 2, "tolerance": args.tolerance, "runs": 20}
    dataset = data(args.quick)
    rows = []
    for name, build in (("lenet5", kc.examples.lenet5), ("vgg_style", vgg_style)):
        rows += run_model(name, build, dataset, cfg)
    goals = []  # the kept APoZ model (last within tolerance) is >= 5% smaller and faster
    for name in dict.fromkeys(r["model"] for r in rows):
        kept = [r for r in rows if r["model"] == name and r["method"].startswith("APoZ")
                and r["within_tolerance"]]  # fmt: skip
        if kept:
            for ratio in ("size_ratio", "latency_ratio"):
                goals.append(results_io.goal(f"{name}_kept_{ratio}", kept[-1][ratio], "<=", 0.95))
    md = (
        f"Fashion-MNIST: {len(dataset[0][0]) - 5000} training images, 5000 validation (APoZ on "
        f"2000 of them), {len(dataset[1][0])} test. Train {cfg['epochs']} epochs, then up to "
        f"{cfg['rounds']} rounds of trim + 1 epoch retraining while the validation accuracy "
        f"stays within {cfg['tolerance']} of the untrimmed model's (APoZ's rounds; the L1-norm "
        "baseline removes as many units from the same layers each round). Latency: median "
        f"single-image invoke of the float32 `.tflite`, 1 thread, {cfg['runs']} runs.\n\n"
        + results_io.table(rows, COLUMNS)
    )
    print(results_io.write("apoz_quick" if args.quick else "apoz", goals, rows, md, cfg=cfg))


if __name__ == "__main__":
    main()
