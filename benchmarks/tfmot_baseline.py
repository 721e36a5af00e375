"""The baseline users would otherwise pick: tensorflow-model-optimization's pipeline.

Runs under legacy Keras (``TF_USE_LEGACY_KERAS=1``, ``tf_keras``) in its own process, because
tensorflow-model-optimization does not support Keras 3; ``benchmarks/table1.py`` starts it
(and creates its virtual environment) with the same data, architecture and epoch budget as
keras-compress, starting from keras-compress's trained float weights (``--weights``) so that
both pipelines compress the same model. Following TensorFlow's collaborative-optimization
guide: train (or load the weights), then
``prune_low_magnitude`` with a polynomial schedule (Han et al.'s per-layer levels as final
sparsities), ``strip_pruning``, sparsity-preserving ``cluster_weights`` (8 clusters, k-means++
init, as in the guide), fine-tune, ``strip_clustering``, convert to a float32 ``.tflite`` and
gzip it. Also TFLite's own post-training full-integer int8 of the trained float model.

    TF_USE_LEGACY_KERAS=1 python benchmarks/tfmot_baseline.py --data d.npz --model lenet5
        --levels '{"conv1": 0.34, ...}' [--weights float.npz] --out result.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from archs import BUILDERS  # noqa: E402
from tensorflow_model_optimization.python.core.clustering.keras.experimental import (  # noqa: E402
    cluster,
)
from tflite_eval import tflite_accuracy  # noqa: E402

BATCH = 128
PRUNABLE = ("Conv2D", "DepthwiseConv2D", "Dense")  # what "*" in --levels prunes
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(name: str) -> keras.Model:
    """The same architectures as ``keras_compress.examples.zoo`` and ``archs``, in legacy Keras."""
    if name in BUILDERS:
        return BUILDERS[name](keras)
    layers = keras.layers
    if name == "lenet_300_100":
        body = [layers.Flatten(name="flatten"), layers.Dense(300, "relu", name="fc1"),
                layers.Dense(100, "relu", name="fc2"), layers.Dense(10, name="fc3")]  # fmt: skip
    else:
        body = [layers.Conv2D(20, 5, name="conv1"), layers.MaxPooling2D(2, name="pool1"),
                layers.Conv2D(50, 5, name="conv2"), layers.MaxPooling2D(2, name="pool2"),
                layers.Flatten(name="flatten"), layers.Dense(500, "relu", name="fc1"),
                layers.Dense(10, name="fc2")]  # fmt: skip
    return keras.Sequential([keras.Input((28, 28, 1)), *body], name=name)


def compiled(model, lr):
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    return model


def tflite_bytes(model, representative=None, per_channel=True) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if not per_channel:  # one scale per tensor, as keras_compress exports shared weights
        converter._experimental_disable_per_channel = True
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help=".npz with x, y, x_test, y_test")
    parser.add_argument("--model", required=True, choices=["lenet_300_100", "lenet5", *BUILDERS])
    levels_help = 'JSON: layer name -> final sparsity; "*": every Conv/Dense layer'
    parser.add_argument("--levels", required=True, help=levels_help)
    int8_help = (
        "also convert the pruned and clustered model to full int8, with scales per "
        "channel and per tensor"
    )
    parser.add_argument("--int8-pipeline", action="store_true", help=int8_help)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--prune-end", type=int, default=3, help="epochs of the pruning ramp")
    parser.add_argument("--weights", help=".npz of the trained float weights, in layer order")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs without --weights")
    parser.add_argument("--prune-epochs", type=int, default=5)
    parser.add_argument("--prune-lr", type=float, default=5e-4, help="Adam's rate while pruning")
    parser.add_argument("--finetune", type=int, default=2)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="shuffling and k-means++ seed")
    skip_help = "skip the float .tflite and its post-training int8 (they do not vary by seed)"
    parser.add_argument("--skip-float", action="store_true", help=skip_help)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    d = np.load(args.data)
    x, y, xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
    levels = json.loads(args.levels)
    keras.utils.set_random_seed(args.seed)

    model = compiled(build(args.model), 1e-3)
    if args.weights:
        saved = np.load(args.weights)
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    else:
        model.fit(x, y, batch_size=args.batch, epochs=args.epochs, verbose=0)

    def representative():
        for i in range(0, 2560, 256):
            yield [x[i : i + 256]]

    result = {}
    if not args.skip_float:
        float_tflite = tflite_bytes(model)
        int8 = tflite_bytes(model, representative)
        result.update(float_accuracy=tflite_accuracy(float_tflite, xt, yt),
                      float_tflite_bytes=len(float_tflite),
                      int8_accuracy=tflite_accuracy(int8, xt, yt), int8_tflite_bytes=len(int8),
                      int8_gzip_bytes=len(gzip.compress(int8, 9)))  # fmt: skip

    # Pruning: three epochs of polynomial decay to each layer's level, then held (the same
    # budget as keras-compress's three prune/retrain rounds plus retraining).
    steps = int(np.ceil(len(x) / args.batch))

    def prunable(layer):
        level = levels.get(layer.name)
        if level is None and "*" in levels and type(layer).__name__ in PRUNABLE:
            level = levels["*"]
        if level is None:
            return layer
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            0.0, level, 0, args.prune_end * steps, frequency=10
        )
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)

    # The clone function gets the trained layers themselves: the wrappers keep their weights.
    pruned = compiled(keras.models.clone_model(model, clone_function=prunable), args.prune_lr)
    pruned.fit(x, y, batch_size=args.batch, epochs=args.prune_epochs, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])  # fmt: skip
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    result["pruned_accuracy"] = float(compiled(stripped, 1e-4).evaluate(xt, yt, verbose=0)[1])

    clustered = cluster.cluster_weights(
        stripped,
        number_of_clusters=args.clusters,
        cluster_centroids_init=tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=True,
    )
    compiled(clustered, 1e-4).fit(x, y, batch_size=args.batch, epochs=args.finetune, verbose=0)
    final = tfmot.clustering.keras.strip_clustering(clustered)
    final_tflite = tflite_bytes(final)
    kernels = [w for w in final.get_weights() if w.ndim > 1]
    zeros = sum(int((w == 0).sum()) for w in kernels)
    result.update(
        pipeline_accuracy=tflite_accuracy(final_tflite, xt, yt),
        pipeline_tflite_bytes=len(final_tflite),
        pipeline_gzip_bytes=len(gzip.compress(final_tflite, 9)),
        pipeline_sparsity=zeros / sum(w.size for w in kernels),
        pipeline_max_distinct=int(max(np.unique(w).size for w in kernels)),
        epochs={"train": args.epochs, "prune": args.prune_epochs, "finetune": args.finetune},
    )
    if args.int8_pipeline:
        for key, per_channel in (("pipeline_int8", True), ("pipeline_int8_per_tensor", False)):
            int8_final = tflite_bytes(final, representative, per_channel)
            result.update({f"{key}_accuracy": tflite_accuracy(int8_final, xt, yt),
                           f"{key}_tflite_bytes": len(int8_final),
                           f"{key}_gzip_bytes": len(gzip.compress(int8_final, 9))})  # fmt: skip
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
