"""Magnitude pruning on Fashion-MNIST: LeNet-300-100 and LeNet-5 (Han et al. 2015).

Measures, in one run: the float baseline; accuracy after pruning to Han et al.'s per-layer
levels (about 92% of the weights) with iterative prune/retrain rounds; the accuracy vs
fraction-pruned curve without retraining (class-uniform and class-blind) and with retraining
(the shape of Han et al.'s Figure 5); and the wall time of a training epoch with the pruning
wrapper + callback against a plain epoch of the same model.

    python benchmarks/pruning.py            # full run, ~25 minutes on 2 cores
    python benchmarks/pruning.py --quick    # a smoke run on a subset (minutes)
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import results_io
from fashion import BATCH, accuracy, compiled, data, prune_to_han_levels

import keras_compress as kc
from keras_compress.pruning.masks import compute_masks

CURVE_LEVELS = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97, 0.98]
RETRAIN_LEVELS = [0.5, 0.7, 0.8, 0.9, 0.95, 0.97]


def one_shot(model, level, criterion):
    """Prune a copy of ``model`` by magnitude, without retraining (numpy oracle path)."""
    copy = kc.strip(model)
    layers = [layer for layer in copy.layers if hasattr(layer, "kernel")]
    weights = [layer.kernel.numpy() for layer in layers]
    ones = [np.ones(w.shape, bool) for w in weights]
    masks = compute_masks(criterion, weights, ones, [level] * len(weights))
    for layer, w, m in zip(layers, weights, masks):
        layer.kernel.assign(np.where(m, w, 0))
    return copy


def prune_and_retrain(baseline, x, y, callback, epochs):
    model = compiled(kc.make_prunable(baseline), 5e-4)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[callback])
    return model


def epoch_time_ratio(build, x, y, repeats):
    """Median wall time of an epoch with pruning / without, alternating, after a warm-up."""
    plain = compiled(build(), 1e-3)
    pruned = compiled(kc.make_prunable(build()), 1e-3)
    callback = kc.MagnitudePruning(0.9, schedule="constant", frequency=100)
    plain.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # trace and warm up both
    pruned.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback])
    times = {"plain": [], "pruning": []}
    for _ in range(repeats):
        start = time.perf_counter()
        plain.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        times["plain"].append(time.perf_counter() - start)
        start = time.perf_counter()
        pruned.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback])
        times["pruning"].append(time.perf_counter() - start)
    plain_s, pruning_s = statistics.median(times["plain"]), statistics.median(times["pruning"])
    return plain_s, pruning_s, pruning_s / plain_s


def run_model(name, build, data, cfg):
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(0)
    baseline = compiled(build(), 1e-3)
    start = time.perf_counter()
    baseline.fit(x, y, batch_size=BATCH, epochs=cfg["epochs"], verbose=2)
    base_acc = accuracy(baseline, xt, yt)
    print(f"{name}: baseline accuracy {base_acc:.4f} ({time.perf_counter() - start:.0f} s)")
    rows = [{"model": name, "experiment": "baseline", "fraction_pruned": 0.0, "accuracy": base_acc}]

    steps = int(np.ceil(len(x) / BATCH))
    han = prune_to_han_levels(baseline, name, x, y, cfg["retrain"])
    report = kc.sparsity(han)
    han_acc = accuracy(han, xt, yt)
    rows.append(
        {
            "model": name,
            "experiment": "han_levels_iterative",
            "fraction_pruned": report["total"],
            "accuracy": han_acc,
            "accuracy_drop_points": 100 * (base_acc - han_acc),
            "per_layer": {k: round(v, 4) for k, v in report.items() if k != "total"},
            "epochs": 3 + cfg["retrain"],
        }
    )
    print(f"{name}: Han levels, {report['total']:.4f} pruned, accuracy {han_acc:.4f}")

    for criterion in ("class_uniform", "class_blind"):
        for level in CURVE_LEVELS:
            acc = accuracy(one_shot(baseline, level, criterion), xt, yt)
            rows.append(
                {
                    "model": name,
                    "experiment": f"no_retrain_{criterion}",
                    "fraction_pruned": level,
                    "accuracy": acc,
                }
            )
    for level in cfg["retrain_levels"]:
        # A one-epoch ramp: masks follow it every step (10 coarse steps cost 1-14 points at
        # 95-97%, measured).
        callback = kc.MagnitudePruning(level, end_step=steps, frequency=1)
        model = prune_and_retrain(baseline, x, y, callback, epochs=1 + cfg["retrain"])
        acc = accuracy(model, xt, yt)
        rows.append(
            {
                "model": name,
                "experiment": "retrain_class_uniform",
                "fraction_pruned": kc.sparsity(model)["total"],
                "accuracy": acc,
            }
        )
        print(f"{name}: {level:.2f} pruned with retraining: accuracy {acc:.4f}")

    plain_s, pruning_s, ratio = epoch_time_ratio(build, x, y, cfg["repeats"])
    rows.append(
        {
            "model": name,
            "experiment": "epoch_time",
            "plain_s": plain_s,
            "pruning_s": pruning_s,
            "ratio": ratio,
        }
    )
    print(f"{name}: epoch {plain_s:.2f} s plain, {pruning_s:.2f} s pruning, ratio {ratio:.3f}")
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        base = next(
            r["accuracy"] for r in rows if r["model"] == name and r["experiment"] == "baseline"
        )
        for experiment, style in (
            ("no_retrain_class_uniform", "o-"),
            ("no_retrain_class_blind", "s--"),
            ("retrain_class_uniform", "^-"),
            ("han_levels_iterative", "*"),
        ):
            pts = [
                (r["fraction_pruned"], 100 * (r["accuracy"] - base))
                for r in rows
                if r["model"] == name and r["experiment"] == experiment
            ]
            if pts:
                xs, ys = zip(*sorted(pts))
                ax.plot(
                    [100 * v for v in xs],
                    ys,
                    style,
                    label=experiment.replace("_", " "),
                    markersize=10 if style == "*" else 5,
                )
        ax.axhline(0, color="gray", lw=0.5)
        ax.set(
            title=f"{name} on Fashion-MNIST",
            xlabel="parameters pruned away (%)",
            ylabel="accuracy change (points)",
            ylim=(-10, 3),
        )
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    args = parser.parse_args()
    (x, y), (xt, yt) = dataset = data(args.quick)
    cfg = {"epochs": 10, "retrain": 3, "retrain_levels": RETRAIN_LEVELS, "repeats": 5}
    if args.quick:
        cfg = {"epochs": 2, "retrain": 1, "retrain_levels": [0.9], "repeats": 1}
    rows = run_model("lenet_300_100", kc.examples.lenet_300_100, dataset, cfg)
    rows += run_model("lenet5", kc.examples.lenet5, dataset, cfg)

    goals = []
    for name in ("lenet_300_100", "lenet5"):
        timing = next(r for r in rows if r["model"] == name and r["experiment"] == "epoch_time")
        goals.append(results_io.goal(f"{name}_epoch_time_ratio", timing["ratio"], "<=", 1.10))
        han = next(
            r for r in rows if r["model"] == name and r["experiment"] == "han_levels_iterative"
        )
        goals.append(
            results_io.goal(
                f"{name}_han_levels_accuracy_drop_points", han["accuracy_drop_points"], "<=", 0.5
            )
        )
    name = "pruning_quick" if args.quick else "pruning"
    png = results_io.RESULTS / f"{name}.png"
    results_io.RESULTS.mkdir(exist_ok=True)
    plot(rows, png)
    md = (
        f"Data: Fashion-MNIST, {len(x)} train / {len(xt)} test images. Adam, batch {BATCH}; "
        f"baseline {cfg['epochs']} epochs (lr 1e-3); pruning runs start from the baseline, "
        f"lr 5e-4. Han levels: 3 prune/retrain rounds of one epoch to 50/80/100% of Han et al.'s "
        f"per-layer levels, then {cfg['retrain']} retraining epochs. Curve with retraining: "
        f"one epoch of cubic ramp, then {cfg['retrain']} epochs.\n\n"
        + results_io.table(
            [r for r in rows if r["experiment"] != "epoch_time"],
            ["model", "experiment", "fraction_pruned", "accuracy", "accuracy_drop_points"],
        )
        + "\n\n"
        + results_io.table(
            [r for r in rows if r["experiment"] == "epoch_time"],
            ["model", "plain_s", "pruning_s", "ratio"],
        )
        + f"\n\n![accuracy vs fraction pruned]({png.name})\n"
    )
    print(results_io.write(name, goals, rows, md, plot=png.name))


if __name__ == "__main__":
    main()
