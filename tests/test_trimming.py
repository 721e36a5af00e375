"""Iterative APoZ trimming on real data: smaller models, accuracy within the tolerance."""

import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc
from keras_compress.trimming.iterative import trim_iteratively

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fashion_subset(fashion):
    (x, y), (xt, yt) = fashion
    x, xt = (
        x.reshape(-1, 784).astype("float32") / 255.0,
        xt.reshape(-1, 784).astype("float32") / 255.0,
    )
    return (x[:4000], y[:4000]), (xt[:1000], yt[:1000])


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_trimming_shrinks_the_model_and_keeps_accuracy(fashion):
    (x, y), (xv, yv) = fashion_subset(fashion)
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


@pytest.mark.slow
def test_trimmed_model_is_pruned_shared_and_exported(toy_data, tmp_path, tf):
    # Trimming first, then magnitude pruning and weight sharing on the smaller model, then export.
    x, y = toy_data
    keras.utils.set_random_seed(3)
    model = compiled(mlp())
    model.fit(x, y, epochs=2, verbose=0)
    trimmed = kc.remove_units(model, kc.select_units(kc.measure_apoz(model, x), "fraction", 0.25))
    assert trimmed.get_layer("fc1").units == 24 and trimmed.get_layer("fc2").units == 12
    pruned = compiled(kc.make_prunable(trimmed))
    pruned.fit(x, y, epochs=3, verbose=0, callbacks=[kc.MagnitudePruning(0.7, end_step=10)])
    shared = compiled(kc.share_weights(pruned, bits={"fc.*": 3}))
    shared.fit(x, y, epochs=1, verbose=0)
    kc.export(shared, tmp_path / "mlp")
    decoded = kc.deploy.sidecar.join((tmp_path / "mlp.skeleton").read_bytes(),
                              (tmp_path / "mlp.kcz").read_bytes())  # fmt: skip
    assert decoded == (tmp_path / "mlp.tflite").read_bytes()
    (output,) = kc.deploy.litert.run(decoded, x[:16])
    expected = kc.strip(shared).predict(x[:16], verbose=0)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)
    fc1 = kc.strip(shared).get_layer("fc1").get_weights()[0]
    assert fc1.shape == (12, 24) and np.unique(fc1).size <= 8 and (fc1 == 0).mean() > 0.6
