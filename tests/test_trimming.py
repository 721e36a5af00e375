"""Iterative APoZ trimming on real data: smaller models, accuracy within the tolerance."""

import keras
import numpy as np

import keras_compress as kc
from keras_compress.trimming import trim_iteratively

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fashion_subset():
    (x, y), (xt, yt) = kc.datasets.fashion_mnist()
    x, xt = (
        x.reshape(-1, 784).astype("float32") / 255.0,
        xt.reshape(-1, 784).astype("float32") / 255.0,
    )
    return (x[:4000], y[:4000]), (xt[:1000], yt[:1000])


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    return model


def test_trimming_shrinks_the_model_and_keeps_accuracy():
    (x, y), (xv, yv) = fashion_subset()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = compiled(keras.Sequential([keras.Input((784,)), layers.Dense(128, "relu", name="fc1"),
                                       layers.Dense(64, "relu", name="fc2"),
                                       layers.Dense(10, name="out")]))  # fmt: skip
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    monitor = kc.APoZMonitor(xv[:500])

    def retrain(trimmed):
        compiled(trimmed).fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[monitor])

    def score(m):
        return compiled(m).evaluate(xv, yv, verbose=0)[1]

    result = trim_iteratively(model, xv[:500], retrain, score, tolerance=0.02, max_rounds=2)
    first, *later = result.rounds
    assert len(later) >= 1 and len(monitor.history) == len(later)
    assert all(b.params < a.params for a, b in zip(result.rounds, later))
    assert result.model.count_params() < model.count_params()
    kept = next(r for r in result.rounds if r.params == result.model.count_params())
    assert kept.score >= first.score - 0.02
    assert score(result.model) == kept.score
    assert model.get_layer("fc1").units == 128  # the input model is untouched


def test_trimming_stops_at_the_first_round_beyond_the_tolerance():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, "relu", name="fc"),
                              keras.layers.Dense(2, name="out")])  # fmt: skip
    x = np.random.default_rng(2).normal(size=(64, 8)).astype("float32")
    full = model.count_params()
    result = trim_iteratively(model, x, lambda m: None, lambda m: m.count_params() / full,
                              tolerance=0.0, rule="fraction", value=0.25, max_rounds=5)  # fmt: skip
    assert [r.round for r in result.rounds] == [0, 1]
    assert result.model is model  # nothing within tolerance: the untrimmed model stays
    assert len(result.rounds[1].removed["fc"]) == 8
