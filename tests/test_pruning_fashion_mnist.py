"""On real data: Han-style pruning with retraining keeps LeNet-300-100's accuracy."""

import keras
import numpy as np
import pytest

import keras_compress as kc


@pytest.mark.slow
def test_lenet_300_100_pruned_to_90_percent_keeps_accuracy(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    x_train, y_train = x_train[:12000, ..., None] / 255.0, y_train[:12000]
    x_test, y_test = x_test[:3000, ..., None] / 255.0, y_test[:3000]
    model = kc.examples.lenet_300_100()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=4, verbose=0)
    baseline = model.evaluate(x_test, y_test, verbose=0)[1]

    pruned = kc.make_prunable(model)
    pruned.compile(keras.optimizers.Adam(5e-4), loss, metrics=["accuracy"])
    steps = int(np.ceil(len(x_train) / 128))
    # The ramp to 90% lasts only 2 epochs here, so the masks follow it every step: with
    # updates every steps // 4 (cubic jumps of up to 29%) this budget ends 5 points lower.
    callback = kc.MagnitudePruning(0.9, end_step=2 * steps, frequency=1)
    pruned.fit(x_train, y_train, batch_size=128, epochs=4, verbose=0, callbacks=[callback])
    plain = kc.strip(pruned)
    plain.compile(metrics=["accuracy"], loss=loss)
    accuracy = plain.evaluate(x_test, y_test, verbose=0)[1]

    assert kc.sparsity(plain)["total"] > 0.899
    assert baseline > 0.80, baseline
    assert accuracy > baseline - 0.02, (baseline, accuracy)
