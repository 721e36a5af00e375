"""Pruning and weight sharing under MultiWorkerMirroredStrategy, two workers on 127.0.0.1.

Starts two worker processes (``TF_CONFIG`` with two local ports) that prune with
``MagnitudePruning`` and fine-tune shared weights with the same callbacks and calls as a
single-process run, plus that single-process run from the same seed on the same global
batches, then compares the masks and codebooks. The workers must match each other and a
single process with the same two-replica split bit for bit; against one device (one full
batch, other float summation order) a few weights near the pruning threshold can differ, which
the summary reports. Bit for bit needs one intra-op thread per process (``--threads 1``, the
default): TensorFlow's multi-threaded CPU kernels (oneDNN convolutions) sum in an order that
depends on how the work is split among threads, so with more threads the single process and
the workers drift apart by float rounding (LeNet-5: codebooks 1e-5 to 1e-2 apart). Training
is a custom loop that drives the Keras callbacks, because Keras 3's ``fit`` does not run under
MultiWorkerMirroredStrategy (keras-team/keras#20585). Prints a JSON summary; exits 1 unless
the workers match the two-replica process exactly.

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
        (x, y), _ = kc.examples.fashion_mnist()
        x = x[: args.examples, ..., None].astype("float32") / 255.0
        return x, y[: args.examples].astype("int32")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, 12)).astype("float32")
    return x, (x[:, :3].sum(axis=1) > 0).astype("int32")


def build(name):
    if name == "lenet5":
        return kc.examples.lenet5()
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
    """One worker of the two (``--worker I``), or a single-process run on ``--replicas``."""
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    if args.worker is not None:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif args.replicas == 2:  # the workers' arithmetic: two half batches, gradients summed
        cpu = tf.config.list_physical_devices("CPU")[0]
        halves = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, halves)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
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


def compare(reference: dict, runs: list[dict]) -> dict:
    """Mask entries and codebooks of ``runs`` against ``reference``."""
    masks = [k for k in reference if k.startswith("mask:")]
    codebooks = [k for k in reference if k.startswith("codebook:")]
    agree = sum(int((run[k] == reference[k]).sum()) for run in runs for k in masks)
    total = sum(reference[k].size for k in masks) * len(runs)
    diff = max(float(np.max(np.abs(run[k] - reference[k]))) for run in runs for k in codebooks)
    scale = max(float(np.max(np.abs(reference[k]))) for k in codebooks)
    return {"mask_entries_equal": agree / total, "max_codebook_difference": diff / scale}


def summarise(one_device: dict, two_replicas: dict, workers: list[dict]) -> dict:
    codebooks = [k for k in one_device if k.startswith("codebook:")]
    masks = [k for k in one_device if k.startswith("mask:")]
    moved = max(float(np.max(np.abs(one_device[k] - one_device["clustered" + k[8:]])))
                for k in codebooks)  # fmt: skip
    size = sum(one_device[k].size for k in masks)
    pruned = sum(int((~one_device[k]).sum()) for k in masks) / size
    same = compare(two_replicas, workers)
    return {"fraction_pruned": pruned, "codebook_change_in_fine_tuning": moved,
            "workers_vs_each_other": compare(workers[0], workers[1:]),
            "workers_vs_one_process_two_replicas": same,
            "workers_vs_one_process_one_device": compare(one_device, workers),
            "identical": same["mask_entries_equal"] == 1.0
            and same["max_codebook_difference"] <= 1e-6}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["mlp", "lenet5"], default="mlp")
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads per process (0: TensorFlow's default)")  # fmt: skip
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:
        job(args)
        return
    work = Path(tempfile.mkdtemp())
    common = [sys.executable, __file__, "--model", args.model, "--examples", str(args.examples),
              "--epochs", str(args.epochs), "--threads", str(args.threads)]  # fmt: skip
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        command = [*common, "--worker", str(i), "--out", str(work / f"w{i}.npz")]
        procs.append(subprocess.Popen(command, env={**env, "TF_CONFIG": tf_config}))
    singles = [subprocess.run([*common, "--replicas", str(r), "--out", str(work / f"s{r}.npz")],
                              env=env).returncode for r in (1, 2)]  # fmt: skip
    codes = [p.wait(timeout=1800) for p in procs] + singles
    if any(codes):
        print(json.dumps({"error": f"exit codes {codes}"}))
        sys.exit(2)
    load = lambda name: dict(np.load(work / name))  # noqa: E731
    summary = summarise(load("s1.npz"), load("s2.npz"), [load("w0.npz"), load("w1.npz")])
    print(json.dumps(summary))
    sys.exit(0 if summary["identical"] else 1)


if __name__ == "__main__":
    main()
