"""Rate-aware training: the EntropyRate estimate, its gradient, and the trained trade-off."""

import keras
import numpy as np
import pytest
from helpers import mlp, toy_xy

import keras_compress as kc
from keras_compress.coding import entropy_bytes
from keras_compress.sharing.rate import EntropyRate

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def _grid_quantized(w, bits):
    step = np.abs(w).max() / 2 ** (bits - 1)
    return np.round(w / step) * step


def test_the_estimate_is_the_entropy_of_the_grid_quantized_tensor():
    rng = np.random.default_rng(0)
    for scale, density in [(1.0, 1.0), (0.1, 0.3), (3.0, 0.05)]:
        w = scale * rng.laplace(size=(200, 50)) * (rng.random((200, 50)) < density)
        w = w.astype("float32")
        estimate = float(EntropyRate(bits=3, temperature=0.1).bits(w)) / 8
        exact = entropy_bytes(_grid_quantized(w, 3))
        assert abs(estimate - exact) < 0.06 * exact + 5, (estimate, exact)


def test_descending_the_estimate_lowers_the_real_entropy(tf):
    rng = np.random.default_rng(1)
    w = keras.Variable(rng.normal(size=(100, 40)).astype("float32"))
    rate = EntropyRate(lam=1.0, bits=3)
    before = entropy_bytes(_grid_quantized(w.numpy(), 3))
    optimizer = keras.optimizers.Adam(0.01)

    for _ in range(60):
        with tf.GradientTape() as tape:
            loss = rate(w)
        optimizer.apply([tape.gradient(loss, w)], [w])
    after = entropy_bytes(_grid_quantized(w.numpy(), 3))
    assert after < 0.8 * before


@pytest.mark.slow
def test_rate_aware_fine_tuning_of_a_pruned_model_halves_its_entropy():
    """Pruned 50%, then fine-tuned with and without the rate term: the same accuracy, the
    weights snapped to the grid have more zeros and about half the element-wise entropy, and
    pruned weights stay zero."""
    x, y = toy_xy(512)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = []
    for lam in (0.0, 5.0):
        keras.utils.set_random_seed(0)
        model = kc.make_prunable(kc.examples.numpy_start(mlp()))  # the same start on every backend
        model.compile(keras.optimizers.Adam(0.01), loss)
        model.fit(x, y, epochs=5, verbose=0, callbacks=[kc.MagnitudePruning(0.5, end_step=8)])
        if lam:
            kc.rate_regularize(model, lam=lam, bits={"dense": 3})  # through the wrappers
        model.compile(keras.optimizers.Adam(0.003), loss, metrics=["accuracy"])
        history = model.fit(x, y, epochs=10, verbose=0, callbacks=[kc.MagnitudePruning(0.5)])
        plain = kc.rate_regularize(kc.strip(model), lam=1e-9, bits=3)  # the same grid for both
        zeros = kc.prune_to_grid(plain)
        assert min(zeros.values()) >= 0.5  # the pruned half stayed zero
        kernels = [v.numpy() for v in plain.trainable_variables if v.regularizer is not None]
        results.append((history.history["accuracy"][-1], np.mean(list(zeros.values())),
                        sum(entropy_bytes(k) for k in kernels)))  # fmt: skip
    (accuracy, zeros, entropy), (rate_accuracy, rate_zeros, rate_entropy) = results
    assert rate_accuracy >= accuracy - 0.02
    assert rate_zeros > zeros + 0.1
    assert rate_entropy < 0.7 * entropy


def test_regularizers_reach_wrapped_rnns_and_survive_saving(tmp_path):
    inputs = keras.Input((5, 3))
    h = keras.layers.Bidirectional(keras.layers.LSTM(4))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    kc.rate_regularize(model, lam=0.01, bits={"rnn": 4})
    assert len(model.losses) == 4  # kernel and recurrent kernel, both directions
    dense = kc.rate_regularize(mlp(), lam=0.02, bits={"fc1": 3})
    assert len(dense.losses) == 1
    dense.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert len(loaded.losses) == 1
    assert loaded.get_layer("fc1").kernel_regularizer.get_config() == {
        "lam": 0.02, "bits": 3, "temperature": 0.3}  # fmt: skip
    kc.rate_regularize(dense, lam=0.0, bits=3)  # lam 0 removes them
    assert not dense.losses


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="lam must be >= 0"):
        EntropyRate(lam=-1)
    with pytest.raises(ValueError, match="bits must be an integer in 1..8"):
        EntropyRate(bits=12)
    with pytest.raises(ValueError, match="selects no layer"):
        kc.rate_regularize(mlp(), 0.01, bits={"conv": 4})
