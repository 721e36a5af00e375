"""Magnitude vs OBD vs OBS pruning of LeNet-300-100 on Fashion-MNIST, with and without retraining.

One float model (8 epochs) is pruned to 50/70/80/90% in every layer at once by: magnitude;
OBD with the empirical Fisher diagonal (per-example squared gradients) and with Hutchinson's
estimate (``1/2 * H_kk * w_k^2``); and layer-wise OBS (``kc.pruning.saliency.obs_prune_model``, the
layers' inputs on 2,048 training images, damping 0.01). Test accuracy right after pruning and
after one epoch of retraining with the masks held; the seconds each method takes to score the
weights (OBS: to choose and correct them, per level). No goal is set by the issue: the
table reports what is measured.

    python benchmarks/saliency.py            # about 10 minutes on 2 cores
    python benchmarks/saliency.py --quick    # subset smoke run
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import results_io
from fashion import BATCH, LOSS, compiled, data

import keras_compress as kc
from keras_compress.pruning.saliency import obd_scores, obs_prune_model

LAYERS = ("fc1", "fc2", "fc3")


def pruned_copy(model: keras.Model, scores: dict[str, np.ndarray], level: float) -> keras.Model:
    """A copy of ``model`` without the ``level`` lowest-scoring weights of each layer."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in LAYERS:
        kernel = copy.get_layer(name).kernel
        score = scores[f"{name}/kernel"].ravel()
        drop = np.argsort(score, kind="stable")[: int(round(level * score.size))]
        values = kernel.numpy().ravel()
        values[drop] = 0
        kernel.assign(values.reshape(kernel.shape))
    return copy


def retrained(model: keras.Model, level: float, x, y) -> keras.Model:
    """One epoch of retraining with the zeros held (the masks of a constant schedule)."""
    wrapped = compiled(kc.make_prunable(model, "fc.*"), 5e-4)
    hold = kc.MagnitudePruning(level, "constant", frequency=10**9)
    wrapped.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[hold])
    return kc.strip(wrapped)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    args = parser.parse_args()
    (x, y), (xt, yt) = data(args.quick)
    epochs = 1 if args.quick else 8
    keras.utils.set_random_seed(0)
    model = compiled(kc.examples.lenet_300_100(), 1e-3)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=2)
    float_accuracy = compiled(model, 1e-3).evaluate(xt, yt, verbose=0)[1]
    calibration = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 2048, 32)]
    methods = {
        "magnitude": lambda: {f"{n}/kernel": np.abs(model.get_layer(n).kernel.numpy())
                              for n in LAYERS},
        "OBD (Fisher)": lambda: obd_scores(calibration, LOSS, "fisher")(model),
        "OBD (Hutchinson)": lambda: obd_scores(calibration, LOSS, "hutchinson")(model),
    }  # fmt: skip
    scores, seconds = {}, {}
    for method, compute in methods.items():  # the saliencies do not depend on the level
        start = time.perf_counter()
        scores[method] = compute()
        seconds[method] = time.perf_counter() - start
    rows = []
    for level in (0.5, 0.7, 0.8, 0.9):
        for method in (*methods, "OBS (layer-wise)"):
            if method.startswith("OBS"):
                start = time.perf_counter()
                pruned = keras.models.clone_model(model)
                pruned.set_weights(model.get_weights())
                obs_prune_model(pruned, x[:2048], dict.fromkeys(LAYERS, level))
                seconds[method] = time.perf_counter() - start
            else:
                pruned = pruned_copy(model, scores[method], level)
            row = {"sparsity": level, "method": method, "seconds": seconds[method],
                   "accuracy": compiled(pruned, 1e-3).evaluate(xt, yt, verbose=0)[1]}  # fmt: skip
            keras.utils.set_random_seed(1)
            again = retrained(pruned, level, x, y)
            row["accuracy_retrained_1_epoch"] = compiled(again, 1e-3).evaluate(xt, yt, verbose=0)[1]
            row["sparsity_measured"] = kc.sparsity(again)["total"]
            print(row)
            rows.append(row)
    md = (
        f"Fashion-MNIST ({len(x)} training, {len(xt)} test images). LeNet-300-100 trained "
        f"{epochs} epochs: {float_accuracy:.4f}. Every layer pruned to the level at once; "
        "calibration: 2,048 training images (OBD: 64 batches of 32, per-example squared "
        "gradients or 1 Hutchinson vector per batch; OBS: the layers' inputs). Retraining: 1 "
        "epoch, Adam 5e-4, zeros held.\n\n"
        + results_io.table(
            rows,
            [
                "sparsity",
                "method",
                "accuracy",
                "accuracy_retrained_1_epoch",
                "seconds",
                "sparsity_measured",
            ],
        )  # fmt: skip
    )
    print(results_io.write("saliency_quick" if args.quick else "saliency", [], rows, md,
                           float_accuracy=float_accuracy))  # fmt: skip


if __name__ == "__main__":
    main()
