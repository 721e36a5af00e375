"""Rate-aware training and arithmetic coding: accuracy against deployable bytes (issue 23).

For LeNet-300-100 and the Caffe LeNet-5 on full Fashion-MNIST, from one trained float model
each, for each ``lam`` and three seeds: gradual pruning to Han et al.'s per-layer levels on
tensorflow-model-optimization's schedule (``fashion.prune_gradually``) with
``kc.rate_regularize`` (``lam`` x the estimated coded kilobytes added to the loss; 0 is the
plain pipeline) from the first step, ``kc.prune_to_grid``, k-means sharing, centroid
fine-tuning and export. The goals compare each ``lam``'s seed means with the peer's mean over
the same seeds (its own spread reaches 0.43 points on LeNet-5; ours about +-0.15). Each row is
measured three ways: Huffman codes only (sidecar format 3), ``kc.export``'s default (arithmetic
coding where smaller, format 4), and the arithmetic-coded weights against their element-wise
entropy bound. Peers from the same float weights with the same pruning and fine-tuning epochs:
tensorflow-model-optimization's prune + cluster + gzip (``tfmot_baseline.py`` in its own
virtual environment, as ``table1.py`` runs it) and TFLite's post-training int8; NNCodec, the
MPEG NNR reference coder (``pip install nncodec`` into ``benchmarks/.venv-nncodec``, with
PyTorch: several GB, created by the script), as a peer coder on seed 0's weight tensors.

Goals (issue 23, accuracy of the decoded ``.tflite`` in the LiteRT interpreter): at most 0.5x
tensorflow-model-optimization's bytes at equal or better accuracy; LeNet-300-100 >= 80x and
LeNet-5 >= 100x the float ``.tflite`` within 0.5 points of the float model; arithmetic-coded
weights <= 0.9x their element-wise entropy bound.

    python benchmarks/rate.py            # about 100 minutes on 2 cores
    python benchmarks/rate.py --quick    # subset smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import results_io
from fashion import BATCH, HAN_LEVELS, LOSS, PRUNE_LR, compiled, data, prune_gradually
from table1 import TFMOT_ROW, huffman_only_bytes, tfmot_baseline
from tflite_eval import tflite_accuracy

import keras_compress as kc

HERE = Path(__file__).resolve().parent
LAMS = {"lenet_300_100": [0.0, 0.01, 0.03, 0.04, 0.05], "lenet5": [0.0, 0.01, 0.03, 0.05, 0.1]}
BITS = {"lenet_300_100": {"dense": 3}, "lenet5": {"conv": 4, "dense": 3}}
RATIO_TARGETS = {"lenet_300_100": 80, "lenet5": 100}
NNCODEC_VENV = HERE / ".venv-nncodec"


def rate_row(name, float_weights, lam, seed, dataset, cfg, work: Path, nncodec: str) -> dict:
    """Prune gradually with ``lam`` from the float weights, snap, share, fine-tune, export."""
    (x, y), (xt, yt) = dataset
    keras.utils.set_random_seed(seed)
    model = getattr(kc.examples, name)()
    model.set_weights(float_weights)
    pruned = prune_gradually(model, name, x, y, 3 + cfg["retrain"], 3, lam, BITS[name])
    plain = kc.strip(pruned)
    zeros = kc.prune_to_grid(plain) if lam else {}
    shared = kc.share_weights(plain, bits=BITS[name])
    compiled(shared, 1e-4).fit(x, y, batch_size=BATCH, epochs=cfg["finetune"], verbose=0)
    tag = f"{name}_{lam}_{seed}"
    report = kc.export(kc.strip(shared), work / tag)
    model_bytes = (work / f"{tag}.tflite").read_bytes()
    coded = [r for r in report.tensors if r["stored"] == "sidecar"]
    arithmetic = [r for r in coded if r["coding"] == "arithmetic"]
    peer = (
        nncodec_peer(kc.strip(shared), work, xt, yt) if nncodec == "installed" and not seed else {}
    )
    return {**peer, "coded_weight_bytes": sum(r["bytes_after"] for r in coded),
            "model": name, "lam": lam, "seed": seed,
            "grid_bits": max(BITS[name].values()) if lam else None,
            "row": "ours, rate-aware" if lam else "ours",
            "accuracy": tflite_accuracy(model_bytes, xt, yt),
            "deployable_bytes": report.totals["deployable_bytes"],
            "huffman_deployable_bytes": huffman_only_bytes(model_bytes),
            "tflite_bytes": report.totals["tflite_bytes"], "ratio": report.totals["ratio"],
            "arithmetic_bytes": sum(r["bytes_after"] for r in arithmetic),
            "arithmetic_entropy_bound_bytes": round(sum(r["entropy_bytes"] for r in arithmetic)),
            "zeros_after_grid": zeros,
            "sparsity": kc.sparsity(kc.strip(shared))["total"]}  # fmt: skip


def nncodec_setup() -> str:
    """Install NNCodec in a virtual environment of its own: "installed", or why not.

    NNCodec needs PyTorch: several GB, installed once.
    """
    python = NNCODEC_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(NNCODEC_VENV)], check=True)
    run = subprocess.run([str(python), "-m", "pip", "install", "-q", "nncodec"],
                         capture_output=True, text=True)  # fmt: skip
    if run.returncode:
        return "pip install nncodec failed: " + run.stderr.strip().splitlines()[-1][:300]
    return "installed"


def nncodec_peer(shared: keras.Model, work: Path, xt, yt) -> dict:
    """NNCodec on the shared model's weight tensors (``nncodec_peer.py``).

    Returns its bytes, the largest reconstruction error, and the Keras model's test accuracy
    with the decoded weights.
    """
    variables = [(layer, v) for layer in shared.layers
                 for v in kc.core.weights.compressible_variables(layer)]  # fmt: skip
    np.savez(work / "nnc_in.npz", **{kc.weight_key(layer, v): v.numpy() for layer, v in variables})
    cmd = [str(NNCODEC_VENV / "bin" / "python"), str(HERE / "nncodec_peer.py"),
           str(work / "nnc_in.npz"), str(work / "nnc_out.npz"), str(work / "nnc.json")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    result = json.loads((work / "nnc.json").read_text())
    decoded = np.load(work / "nnc_out.npz")
    for layer, v in variables:
        v.assign(decoded[kc.weight_key(layer, v)])
    shared.compile(metrics=["accuracy"], loss=LOSS)
    accuracy = shared.evaluate(xt, yt, batch_size=1000, verbose=0)[1]
    return {"nncodec_bytes": result["bytes"], "nncodec_max_abs_error": result["max_abs_error"],
            "nncodec_keras_accuracy": accuracy}  # fmt: skip


def run_model(name, dataset, cfg, work: Path, nncodec: str) -> list[dict]:
    (x, y), (xt, yt) = dataset
    keras.utils.set_random_seed(0)
    model = compiled(getattr(kc.examples, name)(), 1e-3)
    model.fit(x, y, batch_size=BATCH, epochs=cfg["epochs"], verbose=2)
    float_weights = model.get_weights()
    float_report = kc.export(model, work / f"{name}_float")
    float_bytes = float_report.totals["tflite_bytes"]
    float_accuracy = tflite_accuracy((work / f"{name}_float.tflite").read_bytes(), xt, yt)
    rows = [{"model": name, "row": "float", "accuracy": float_accuracy,
             "deployable_bytes": float_bytes, "ratio": 1.0}]  # fmt: skip
    for lam in LAMS[name][: cfg["lams"]]:
        for seed in range(cfg["seeds"]):
            row = rate_row(name, float_weights, lam, seed, dataset, cfg, work, nncodec)
            print(row, flush=True)
            rows.append(row)
    for seed in range(cfg["seeds"]):  # the peer over the same seeds: both sides' means compared
        baseline = tfmot_baseline(name, float_weights, dataset, cfg, work, PRUNE_LR, seed,
                                  float_rows=seed == 0)  # fmt: skip
        if not baseline:
            break
        rows.append({"model": name, "row": TFMOT_ROW, "seed": seed,
                     "accuracy": baseline["pipeline_accuracy"],
                     "deployable_bytes": baseline["pipeline_gzip_bytes"],
                     "ratio": float_bytes / baseline["pipeline_gzip_bytes"]})  # fmt: skip
        if seed == 0:  # post-training quantization of the float model: no seed to vary
            rows.append({"model": name, "row": "TFLite post-training int8",
                         "accuracy": baseline["int8_accuracy"],
                         "deployable_bytes": baseline["int8_tflite_bytes"],
                         "ratio": float_bytes / baseline["int8_tflite_bytes"]})  # fmt: skip
    return rows


def by_lam(rows) -> list[dict]:
    """One point per ``lam``: accuracy and bytes averaged over its seeds, with their spread.

    Rows without a ``lam`` (the peer's seeds) give one point with ``lam`` None.
    """
    points = []
    lams = {r.get("lam") for r in rows}
    for lam in sorted(lams - {None}) + ([None] if None in lams else []):
        same = [r for r in rows if r.get("lam") == lam]
        accuracy = [r["accuracy"] for r in same]
        means = {key: float(np.mean([r[key] for r in same]))
                 for key in ("deployable_bytes", "huffman_deployable_bytes", "ratio")
                 if key in same[0]}  # fmt: skip
        points.append({"lam": lam, "seeds": len(same), "accuracy": float(np.mean(accuracy)),
                       "accuracy_min": min(accuracy), "accuracy_max": max(accuracy),
                       **means})  # fmt: skip
    return points


def goals_for(name, rows) -> list[dict]:
    """Goals on seed means: of each ``lam``, and of the peer over the same seeds."""
    mine = [r for r in rows if r["model"] == name]
    ours = [r for r in mine if r["row"].startswith("ours")]
    points = by_lam(ours)
    float_accuracy = next(r["accuracy"] for r in mine if r["row"] == "float")
    good = [p["ratio"] for p in points if p["accuracy"] >= float_accuracy - 0.005]
    goals = [results_io.goal(f"{name}_ratio_within_half_a_point", max(good, default=0.0), ">=",
                             RATIO_TARGETS[name])]  # fmt: skip
    coded = sum(r["arithmetic_bytes"] for r in ours)
    bound = sum(r["arithmetic_entropy_bound_bytes"] for r in ours)
    goals.append(results_io.goal(f"{name}_arithmetic_over_entropy_bound",
                                 coded / bound if bound else float("inf"), "<=", 0.9))  # fmt: skip
    peer = by_lam([r for r in mine if r["row"] == TFMOT_ROW])
    if peer:
        tfmot = peer[0]
        equal = [p["deployable_bytes"] for p in points if p["accuracy"] >= tfmot["accuracy"]]
        smallest = min(equal, default=float("inf"))
        goals.append(results_io.goal(f"{name}_bytes_over_tfmot_equal_accuracy",
                                     smallest / tfmot["deployable_bytes"], "<=", 0.5))  # fmt: skip
    return goals


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in rows if r["model"] == name]
        ours = by_lam([r for r in mine if r["row"].startswith("ours")])
        accuracy = [p["accuracy"] for p in ours]
        spread = [[p["accuracy"] - p["accuracy_min"] for p in ours],
                  [p["accuracy_max"] - p["accuracy"] for p in ours]]  # fmt: skip
        ax.errorbar([p["huffman_deployable_bytes"] for p in ours], accuracy, yerr=spread,
                    fmt="s--", capsize=2, label="ours, Huffman")  # fmt: skip
        ax.errorbar([p["deployable_bytes"] for p in ours], accuracy, yerr=spread, fmt="o-",
                    capsize=2, label="ours, arithmetic (lam sweep: rate-aware)")  # fmt: skip
        for p in ours:
            ax.annotate(f"{p['lam']:g}", (p["deployable_bytes"], p["accuracy"]), fontsize=8)
        for row in dict.fromkeys(r["row"] for r in mine):
            if row.startswith("ours") or row == "float":
                continue
            (p,) = by_lam([r for r in mine if r["row"] == row])
            ax.errorbar(p["deployable_bytes"], p["accuracy"], fmt="^", capsize=2, label=row,
                        yerr=[[p["accuracy"] - p["accuracy_min"]],
                              [p["accuracy_max"] - p["accuracy"]]])  # fmt: skip
        flt = next(r for r in mine if r["row"] == "float")
        ax.axhline(flt["accuracy"] - 0.005, color="gray", lw=0.8, ls=":",
                   label="float accuracy - 0.5 point")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("deployable bytes")
        ax.set_ylabel("test accuracy (decoded .tflite)")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(rows, args, dataset, cfg, nncodec: str) -> None:
    goals = [g for name in dict.fromkeys(r["model"] for r in rows) for g in goals_for(name, rows)]
    name = "rate_quick" if args.quick else "rate"
    plot(rows, results_io.RESULTS / f"{name}.png")
    md = (
        f"Fashion-MNIST ({len(dataset[0][0])} training images, {len(dataset[1][0])} test "
        f"images). Float training {cfg['epochs']} epochs (seed 0); then, for each lam and "
        f"seed 0 to {cfg['seeds'] - 1}, from those weights: gradual pruning to Han's levels "
        f"{HAN_LEVELS} as tensorflow-model-optimization prunes (polynomial over 3 epochs, "
        f"held {cfg['retrain']} more) with `kc.rate_regularize(lam)` from the first step "
        "(lam: loss per estimated kilobyte; 0: none), "
        f"`kc.prune_to_grid`, k-means sharing {BITS}, {cfg['finetune']} fine-tuning epochs. "
        "deployable_bytes: `kc.export`'s default (each tensor Huffman- or arithmetic-coded, the "
        "smaller); huffman_deployable_bytes: the same `.tflite`, Huffman codes only. "
        "arithmetic_bytes against arithmetic_entropy_bound_bytes: the arithmetic-coded "
        "tensors against their element-wise entropy bound. tensorflow-model-optimization: "
        "same float weights, levels and epochs, 8 clusters, gzip -9, over the same seeds "
        "(its shuffling and k-means++ initialisation). NNCodec (MPEG NNR's "
        f"reference coder, {nncodec}): the same shared weight tensors in its codebook mode "
        "with row skipping (nncodec_bytes against our coded_weight_bytes; it quantizes, so "
        "its largest error and the Keras accuracy with its weights are given).\n\n"
        + results_io.table(
            rows,
            [
                "model",
                "row",
                "lam",
                "seed",
                "accuracy",
                "deployable_bytes",
                "huffman_deployable_bytes",
                "ratio",
                "arithmetic_bytes",
                "arithmetic_entropy_bound_bytes",
                "coded_weight_bytes",
                "nncodec_bytes",
                "nncodec_max_abs_error",
                "nncodec_keras_accuracy",
                "sparsity",
            ],
        )  # fmt: skip
        + "\n\nSeed means per lam, and the peer's over the same seeds; the goals use them:\n\n"
        + "\n\n".join(
            f"{model}:\n\n"
            + results_io.table(
                by_lam([r for r in rows if r["model"] == model and r["row"].startswith("ours")])
                + [
                    {**p, "lam": "tfmot"}
                    for p in by_lam(
                        [r for r in rows if r["model"] == model and r["row"] == TFMOT_ROW]
                    )
                ],
                [
                    "lam",
                    "seeds",
                    "accuracy",
                    "accuracy_min",
                    "accuracy_max",
                    "deployable_bytes",
                    "huffman_deployable_bytes",
                    "ratio",
                ],
            )  # fmt: skip
            for model in dict.fromkeys(r["model"] for r in rows)
        )
        + f"\n\n![accuracy against bytes]({name}.png)\n"
    )
    print(results_io.write(name, goals, rows, md, cfg=cfg, nncodec=nncodec))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"])
    keep_help = "keep the rows of models not run now from the last results file"
    parser.add_argument("--keep", action="store_true", help=keep_help)
    args = parser.parse_args()
    dataset = data(args.quick)
    cfg = {"epochs": 8, "retrain": 2, "finetune": 2, "lams": 5, "seeds": 3}
    if args.quick:
        cfg = {"epochs": 1, "retrain": 1, "finetune": 1, "lams": 2, "seeds": 1}
    nncodec = nncodec_setup()
    print("NNCodec:", nncodec)
    work = Path(tempfile.mkdtemp())
    rows = []
    saved = results_io.RESULTS / ("rate_quick.json" if args.quick else "rate.json")
    if args.keep and saved.exists():
        rows = [r for r in json.loads(saved.read_text())["rows"] if r["model"] not in args.models]
    for name in args.models:  # results are written after each model
        rows += run_model(name, dataset, cfg, work, nncodec)
        write(rows, args, dataset, cfg, nncodec)


if __name__ == "__main__":
    main()
