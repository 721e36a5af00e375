"""Pruning and weight sharing under MultiWorkerMirroredStrategy, two workers on 127.0.0.1.

Starts two worker processes (``TF_CONFIG`` with two local ports) that prune with
``MagnitudePruning`` and fine-tune shared weights with the same callbacks and calls as a
single-process run, plus that single-process run from the same seed on the same global
batches, then compares the masks and codebooks. Training is a custom loop that drives the
Keras callbacks, because Keras 3's ``fit`` does not run under MultiWorkerMirroredStrategy
(keras-team/keras#20585). Prints a JSON summary; exits 1 if the masks
differ or the codebooks are not equal to float32 rounding.

    python examples/multiworker.py                     # a small MLP on synthetic data
    python examples/multiworker.py --model lenet5 --examples 6000   # Fashion-MNIST subset
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import keras_compress as kc

GLOBAL_BATCH = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset(args):
    if args.model == "lenet5":
        (x, y), _ = kc.datasets.fashion_mnist()
        x = x[: args.examples, ..., None].astype("float32") / 255.0
        return x, y[: args.examples].astype("int32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, 12)).astype("float32")
    return x, (x[:, :3].sum(axis=1) > 0).astype("int32")


def build(name):
    if name == "lenet5":
        return kc.zoo.lenet5()
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, "relu", name="fc1"),
                             keras.layers.Dense(16, "relu", name="fc2"),
                             keras.layers.Dense(2, name="out")], name="mlp")  # fmt: skip


def train(model, strategy, data, epochs, callbacks=()):
    """``model.fit`` as a custom loop, with the callbacks driven by ``CallbackList``.

    Keras 3's fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the
    step runs with ``strategy.run``, as Keras' guide to custom training loops does.
    """
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    distributed = strategy.experimental_distribute_dataset(data)
    steps = int(data.cardinality())
    hooks = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs, steps=steps)

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                losses = per_example(y, model(x, training=True))
                loss = tf.nn.compute_average_loss(losses, global_batch_size=GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))

        strategy.run(replica_step, args=(x, y))

    hooks.on_train_begin()
    for epoch in range(epochs):
        hooks.on_epoch_begin(epoch)
        for batch, (x, y) in enumerate(distributed):
            hooks.on_train_batch_begin(batch)
            step(x, y)
            hooks.on_train_batch_end(batch)
        hooks.on_epoch_end(epoch)
    hooks.on_train_end()


def job(args) -> None:
    """One worker of the two (``--worker I``), or the single-process reference."""
    if args.worker is None:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = dataset(args)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).with_options(options)
    steps = int(data.cardinality())
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = kc.make_prunable(build(args.model))
        model.optimizer = keras.optimizers.SGD(0.05)
    pruning = kc.MagnitudePruning(0.8, end_step=args.epochs * steps // 2, frequency=steps // 4)
    train(model, strategy, data, args.epochs, [pruning])
    masks = {f"{w.name}/{i}": m.numpy() for w in kc.pruning_wrappers(model)
             for i, m in enumerate(w.masks)}  # fmt: skip
    with strategy.scope():
        shared = kc.share_weights(model, bits=4 if args.model == "lenet5" else {"fc.*": 3})
        shared.optimizer = keras.optimizers.SGD(0.01)

    def codebooks():
        return {f"{layer.name}/{i}": c.numpy() for layer in shared.layers
                if isinstance(layer, kc.WeightSharingWrapper)
                for i, c in enumerate(layer.centroids)}  # fmt: skip

    clustered = codebooks()
    train(shared, strategy, data, 1)
    np.savez(args.out, **{f"mask:{k}": v for k, v in masks.items()},
             **{f"codebook:{k}": v for k, v in codebooks().items()},
             **{f"clustered:{k}": v for k, v in clustered.items()})  # fmt: skip


def compare(files) -> dict:
    runs = [dict(np.load(f)) for f in files]
    reference, workers = runs[0], runs[1:]
    masks = [k for k in reference if k.startswith("mask:")]
    codebooks = [k for k in reference if k.startswith("codebook:")]
    agree = sum(int((w[k] == reference[k]).sum()) for w in workers for k in masks)
    total = sum(reference[k].size for k in masks) * len(workers)
    diff = max(float(np.max(np.abs(w[k] - reference[k]))) for w in workers for k in codebooks)
    scale = max(float(np.max(np.abs(reference[k]))) for k in codebooks)
    moved = max(float(np.max(np.abs(reference[k] - reference["clustered" + k[8:]])))
                for k in codebooks)  # fmt: skip
    pruned = sum(int((~reference[k]).sum()) for k in masks) / sum(reference[k].size for k in masks)
    return {"mask_entries_equal": agree / total, "masks_identical": agree == total,
            "fraction_pruned": pruned, "max_codebook_difference": diff,
            "codebook_scale": scale, "codebook_change_in_fine_tuning": moved,
            "codebooks_equal": diff <= 1e-4 * scale}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["mlp", "lenet5"], default="mlp")
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:
        job(args)
        return
    work = Path(tempfile.mkdtemp())
    common = [sys.executable, __file__, "--model", args.model, "--examples", str(args.examples),
              "--epochs", str(args.epochs)]  # fmt: skip
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        command = [*common, "--worker", str(i), "--out", str(work / f"w{i}.npz")]
        procs.append(subprocess.Popen(command, env={**env, "TF_CONFIG": tf_config}))
    single = subprocess.run([*common, "--out", str(work / "single.npz")], env=env)
    codes = [p.wait(timeout=1800) for p in procs] + [single.returncode]
    if any(codes):
        print(json.dumps({"error": f"exit codes {codes}"}))
        sys.exit(2)
    summary = compare([work / "single.npz", work / "w0.npz", work / "w1.npz"])
    print(json.dumps(summary))
    sys.exit(0 if summary["masks_identical"] and summary["codebooks_equal"] else 1)


if __name__ == "__main__":
    main()
