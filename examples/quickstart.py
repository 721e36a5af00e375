"""Quickstart: train LeNet-300-100 on Fashion-MNIST, prune it during fit, print the report.

    python examples/quickstart.py [--epochs 3] [--target 0.92]

Data comes from Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

import keras_compress as kc


def main() -> None:
    parser = argparse.ArgumentParser(description="keras-compress quickstart")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of plain training")
    parser.add_argument("--target", type=float, default=0.92, help="fraction of weights to prune")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = kc.examples.fashion_mnist()
    x, x_test = x[..., None] / 255.0, x_test[..., None] / 255.0
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    print("== 1. ordinary training")
    model = kc.examples.lenet_300_100()
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=args.epochs, validation_data=(x_test, y_test))
    baseline = model.evaluate(x_test, y_test, verbose=0)[1]

    print(f"== 2. magnitude pruning to {args.target:.0%} during fit (Han et al. 2015)")
    pruned = kc.make_prunable(model)
    pruned.compile(keras.optimizers.Adam(5e-4), loss, metrics=["accuracy"])
    steps = int(np.ceil(len(x) / 128))
    pruned.fit(
        x,
        y,
        batch_size=128,
        epochs=args.epochs + 1,
        validation_data=(x_test, y_test),
        callbacks=[kc.MagnitudePruning(args.target, end_step=args.epochs * steps // 2)],
    )

    print("== 3. strip the wrappers: a plain Keras model")
    final = kc.strip(pruned)
    final.compile(loss=loss, metrics=["accuracy"])
    accuracy = final.evaluate(x_test, y_test, verbose=0)[1]
    print(kc.summary(final))
    print(f"test accuracy: {baseline:.4f} dense -> {accuracy:.4f} pruned")


if __name__ == "__main__":
    main()
