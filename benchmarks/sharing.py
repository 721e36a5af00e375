"""Weight sharing on pruned LeNet-300-100 and LeNet-5 (Fashion-MNIST), Deep Compression stage 2.

For each model: train, prune to Han et al.'s levels with prune/retrain rounds, then for each
quantizer (k-means with linear/density/forgy init, Hessian-weighted k-means with the
empirical Fisher diagonal, uniform, ECSQ) and bit width: accuracy right after clustering and
after centroid fine-tuning, and the entropy of the cluster indices in bits per non-zero weight
(what Huffman coding would spend). Also the wall time of a fine-tuning epoch against a plain
training epoch of the same model, in the same run (goal: ratio <= 1.3).

    python benchmarks/sharing.py            # ~15 minutes on 2 cores
    python benchmarks/sharing.py --quick    # subset smoke run
"""

from __future__ import annotations

import argparse
import statistics

import keras
import results_io
from fashion import BATCH, LOSS, accuracy, compiled, data, prune_to_han_levels
from timing import EpochTimer

import keras_compress as kc
from keras_compress.coding.entropy import entropy_bits

BITS = {  # Deep Compression's widths first, then narrower ones
    "lenet_300_100": [{"dense": 6}, {"dense": 4}, {"dense": 3}],
    "lenet5": [{"conv": 8, "dense": 5}, {"conv": 4, "dense": 3}, {"conv": 3, "dense": 2}],
}
QUANTIZERS = [
    ("kmeans", "linear"), ("kmeans", "density"), ("kmeans", "forgy"),
    ("hessian_kmeans", "linear"), ("uniform", "linear"), ("ecsq", "linear"),
]  # fmt: skip
# ECSQ's multiplier (per bit, relative to each tensor's weighted variance), by dense bits:
# roughly the slope of the rate-distortion curve at that rate.
ECSQ_LAMBDA = {6: 0.003, 5: 0.005, 4: 0.01, 3: 0.02, 2: 0.05}


def index_entropy(model):
    """Bits per non-zero weight of the cluster indices, over all shared tensors."""
    bits, count = 0.0, 0
    for layer in model.layers:
        if isinstance(layer, kc.WeightSharingWrapper):
            for idx, nz in zip(layer.indices, layer.nonzero):
                labels = idx.numpy()[nz.numpy()]
                bits += entropy_bits(labels) * labels.size
                count += labels.size
    return bits / count


def pruned_model(build, name, x, y, cfg):
    keras.utils.set_random_seed(0)
    model = compiled(build(), 1e-3)
    model.fit(x, y, batch_size=BATCH, epochs=cfg["epochs"], verbose=0)
    return kc.strip(prune_to_han_levels(model, name, x, y, cfg["retrain"]))


def epoch_time_ratio(plain, shared, x, y, repeats):
    """Median wall and CPU seconds per epoch, alternating the two models after a warm-up.

    Epochs are timed inside ``fit`` (a callback): on this machine ``fit`` with NumPy inputs
    sometimes idles ~9 s after ``on_train_end``, while its data pipeline is torn down, for
    either model alike; that is not part of an epoch. CPU time is recorded as well.
    """
    compiled(plain, 1e-4), compiled(shared, 1e-4)
    for model in (plain, shared):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # trace and warm up
    timers = {"plain": EpochTimer(), "shared": EpochTimer()}
    for _ in range(repeats):
        for key, model in (("plain", plain), ("shared", shared)):
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[timers[key]])
    wall = {k: t.wall for k, t in timers.items()}
    cpu = {k: t.cpu for k, t in timers.items()}
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return (
        med["plain"],
        med["shared"],
        med["shared"] / med["plain"],
        med_cpu["shared"] / med_cpu["plain"],
    )


def run_model(name, build, data, cfg):
    (x, y), (xt, yt) = data
    pruned = pruned_model(build, name, x, y, cfg)
    pruned_acc = accuracy(pruned, xt, yt)
    sparsity = kc.sparsity(pruned)["total"]
    print(f"{name}: pruned to {sparsity:.4f}, accuracy {pruned_acc:.4f}")
    rows = [{"model": name, "quantizer": "none (pruned float)", "accuracy_after": pruned_acc,
             "sparsity": sparsity}]  # fmt: skip
    calibration = [(x[i : i + 256], y[i : i + 256]) for i in range(0, 256 * 20, 256)]
    hessian = kc.core.hessian.fisher_diagonal(pruned, calibration, LOSS)
    for bits in BITS[name][: cfg["bit_settings"]]:
        for quantizer, init in QUANTIZERS:
            keras.utils.set_random_seed(0)
            lam = ECSQ_LAMBDA[bits["dense"]]
            shared = kc.share_weights(pruned, bits=bits, quantizer=quantizer, init=init,
                                      hessian=hessian, lam=lam)  # fmt: skip
            before = accuracy(shared, xt, yt)
            compiled(shared, 1e-4).fit(x, y, batch_size=BATCH, epochs=cfg["finetune"], verbose=0)
            after = accuracy(shared, xt, yt)
            distinct = max(r["distinct"] for r in kc.weight_rows(shared))
            row = {
                "model": name, "bits": bits, "quantizer": quantizer, "init": init,
                "accuracy_before_finetune": before, "accuracy_after": after,
                "entropy_bits_per_nonzero": index_entropy(shared),
                "max_distinct_per_tensor": distinct,
                "sparsity": kc.sparsity(shared)["total"],
            }  # fmt: skip
            rows.append(row)
            print(
                f"{name} {bits} {quantizer}/{init}: {before:.4f} -> {after:.4f}, "
                f"{row['entropy_bits_per_nonzero']:.2f} bits/nz"
            )
    shared = kc.share_weights(pruned, bits=BITS[name][0])
    plain_s, shared_s, ratio, cpu_ratio = epoch_time_ratio(
        kc.strip(pruned), shared, x, y, cfg["repeats"]
    )
    rows.append({"model": name, "quantizer": "epoch_time", "plain_s": plain_s,
                 "finetune_s": shared_s, "ratio": ratio, "cpu_ratio": cpu_ratio})  # fmt: skip
    print(f"{name}: epoch {plain_s:.2f} s plain, {shared_s:.2f} s fine-tuning, ratio {ratio:.3f}"
          f" (CPU time ratio {cpu_ratio:.3f})")  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    args = parser.parse_args()
    (x, y), (xt, yt) = dataset = data(args.quick)
    cfg = {"epochs": 8, "retrain": 2, "finetune": 2, "bit_settings": 3, "repeats": 5}
    if args.quick:
        cfg = {"epochs": 2, "retrain": 1, "finetune": 1, "bit_settings": 1, "repeats": 1}
    rows = run_model("lenet_300_100", kc.examples.lenet_300_100, dataset, cfg)
    rows += run_model("lenet5", kc.examples.lenet5, dataset, cfg)
    goals = []
    for name in ("lenet_300_100", "lenet5"):
        timing = next(r for r in rows if r["model"] == name and r["quantizer"] == "epoch_time")
        goals.append(
            results_io.goal(f"{name}_finetune_epoch_time_ratio", timing["ratio"], "<=", 1.3)
        )
    md = (
        f"Data: Fashion-MNIST, {len(x)} train / {len(xt)} test. Baseline {cfg['epochs']} epochs, "
        f"pruned to Han et al.'s per-layer levels (3 rounds + {cfg['retrain']} epochs), then "
        f"shared and fine-tuned {cfg['finetune']} epochs (Adam 1e-4, gradient = sum over each "
        "cluster). Hessian: empirical Fisher diagonal over 20 batches of 256. ECSQ starts from "
        f"2^bits levels with lam (x the tensor's weighted variance, per bit) {ECSQ_LAMBDA} "
        "by dense bits.\n\n"
        + results_io.table(
            [r for r in rows if r["quantizer"] != "epoch_time"],
            [
                "model",
                "bits",
                "quantizer",
                "init",
                "accuracy_before_finetune",
                "accuracy_after",
                "entropy_bits_per_nonzero",
                "max_distinct_per_tensor",
                "sparsity",
            ],
        )  # fmt: skip
        + "\n\n"
        + results_io.table(
            [r for r in rows if r["quantizer"] == "epoch_time"],
            ["model", "plain_s", "finetune_s", "ratio", "cpu_ratio"],
        )
    )
    print(results_io.write("sharing_quick" if args.quick else "sharing", goals, rows, md))


if __name__ == "__main__":
    main()
