"""OBD and OBS on quadratics with known Hessians; Hutchinson's diagonal; OBD in the callback."""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.pruning.saliency import (
    MAX_OBS_INPUTS,
    hutchinson_diagonal,
    layer_inputs,
    obd_scores,
    obs_prune,
    obs_prune_model,
)

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)
to_numpy = keras.ops.convert_to_numpy


def regression(scales, weights, n=64):
    """A linear least-squares problem at its optimum, Hessian 2 X^T X / n, diagonal."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(n, len(scales))))
    x = (q * np.sqrt(n) * np.asarray(scales)).astype("float32")  # orthogonal columns
    y = (x @ np.asarray(weights, "float32"))[:, None]
    fc = keras.layers.Dense(1, use_bias=False, name="fc")
    model = keras.Sequential([keras.Input((len(scales),)), fc])
    model.get_layer("fc").set_weights([np.asarray(weights, "float32")[:, None]])
    return model, x, y


def test_obd_saliency_is_the_loss_increase_and_differs_from_magnitude():
    scales, weights = [3.0, 1.0, 0.2, 1.0], [0.2, 0.5, 1.0, -0.3]
    model, x, y = regression(scales, weights)
    saliency = obd_scores([(x, y)], "mse", estimator="hutchinson")(model)["fc/kernel"].ravel()
    increase = []
    for k in range(4):
        pruned = np.array(weights, "float32")
        pruned[k] = 0
        increase.append(float(np.mean((x @ pruned - y[:, 0]) ** 2)))  # loss was 0
    np.testing.assert_allclose(saliency, increase, rtol=1e-4)
    assert np.argmin(saliency) == 2 and np.argmin(np.abs(weights)) == 0  # OBD != magnitude


@pytest.mark.slow
def test_hutchinson_converges_to_the_true_diagonal(tf):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, "tanh", name="a"),
                              keras.layers.Dense(2, name="b")])  # fmt: skip
    x = np.random.default_rng(2).normal(size=(32, 3)).astype("float32")
    y = np.random.default_rng(3).normal(size=(32, 2)).astype("float32")
    kernel = model.get_layer("a").kernel
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = keras.losses.mean_squared_error(y, model(x))
            loss = tf.reduce_mean(loss)
        grad = tf.reshape(inner.gradient(loss, kernel.value), [-1])
    exact = np.diag(np.asarray(outer.jacobian(grad, kernel.value)).reshape(12, 12))
    errors = [np.abs(hutchinson_diagonal(model, [(x, y)], "mse", samples=n, seed=4)["a/kernel"]
                     .ravel() - exact).max() for n in (30, 3000)]  # fmt: skip
    assert errors[1] < 0.1 * np.abs(exact).max() and errors[1] < errors[0] / 3


def correlated_layer(d=24, out=6, n=400, seed=5):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return rng.normal(size=(d, out)), rng.normal(size=(n, d)) @ mix


def error(x, w, w_hat):
    return 0.5 * np.sum((x @ (w - w_hat)) ** 2) / len(x)


def test_obs_update_gives_exactly_the_predicted_error_and_beats_no_update():
    w, x = correlated_layer()
    new, mask, predicted = obs_prune(w, x, 0.5, damping=0.0, block=8)
    assert np.all(mask.sum(axis=0) == 12) and np.all(new[~mask] == 0)
    assert error(x, w, new) == pytest.approx(predicted, rel=1e-8)
    # Hassibi & Stork's loss increase for removing the set R at once: w_R^T [H^-1]_RR^-1 w_R / 2.
    inverse = np.linalg.inv(x.T @ x / len(x))
    obs = sum(0.5 * w[r, j] @ np.linalg.solve(inverse[np.ix_(r, r)], w[r, j])
              for j in range(w.shape[1]) for r in [~mask[:, j]])  # fmt: skip
    assert predicted == pytest.approx(obs, rel=1e-6)
    magnitude = np.where(np.abs(w) >= np.median(np.abs(w), axis=0), w, 0.0)
    assert error(x, w, new) < error(x, w, magnitude)
    assert error(x, w, new) < error(x, w, np.where(mask, w, 0.0))  # same mask, no update


def test_obs_with_a_diagonal_hessian_is_obd():
    rng = np.random.default_rng(6)
    x = np.linalg.qr(rng.normal(size=(200, 10)))[0] * np.sqrt(200) * rng.uniform(0.2, 3, 10)
    w = rng.normal(size=(10, 3))
    new, mask, _ = obs_prune(w, x, 0.3, damping=0.0, block=10)
    h = np.diag(x.T @ x / 200)
    for column in range(3):
        obd = 0.5 * h * w[:, column] ** 2
        np.testing.assert_array_equal(np.sort(np.flatnonzero(~mask[:, column])),
                                      np.sort(np.argsort(obd)[:3]))  # fmt: skip
    np.testing.assert_allclose(new[mask], w[mask], atol=1e-9)  # nothing to correct


def test_obs_prunes_dense_and_conv_layers_and_bounds_the_size():
    keras.utils.set_random_seed(7)
    layers = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 2)), layers.Conv2D(4, 3, name="conv"),
                              layers.Flatten(), layers.Dense(5, name="fc")])  # fmt: skip
    x = np.random.default_rng(8).normal(size=(32, 8, 8, 2)).astype("float32")
    errors = obs_prune_model(model, x, {"conv": 0.5, "fc": 0.75})
    assert set(errors) == {"conv", "fc"} and all(e >= 0 for e in errors.values())
    assert (to_numpy(model.get_layer("conv").kernel) == 0).mean() == 0.5
    assert (to_numpy(model.get_layer("fc").kernel) == 0).mean() == pytest.approx(0.75, abs=0.02)
    with pytest.raises(ValueError, match=f"limit is MAX_OBS_INPUTS = {MAX_OBS_INPUTS}"):
        obs_prune(np.zeros((MAX_OBS_INPUTS + 1, 1)), np.zeros((2, MAX_OBS_INPUTS + 1)), 0.5)


@pytest.mark.parametrize(
    "other",
    [keras.layers.SeparableConv2D(4, 3, name="other"), keras.layers.Conv2D(4, 3, dilation_rate=2,
     name="other"), keras.layers.TimeDistributed(keras.layers.Dense(4), name="other")],
    ids=["separable", "dilated", "time_distributed"],
)  # fmt: skip
def test_obs_refuses_other_layers_by_name_before_pruning_any(other):
    # A SeparableConv2D or TimeDistributed failed with "no attribute 'kernel'", and a dilated
    # Conv2D was refused only after the layers before it had been pruned in place.
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 1, name="conv"),
                              other, keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    before = to_numpy(model.get_layer("conv").kernel).copy()
    x = np.random.default_rng(8).normal(size=(8, 8, 8, 2)).astype("float32")
    with pytest.raises(ValueError, match=r"layer 'other' \(\w+\): OBS (takes|handles)"):
        obs_prune_model(model, x, {"conv": 0.5, "other": 0.5})
    np.testing.assert_array_equal(to_numpy(model.get_layer("conv").kernel), before)


def test_obs_reaches_a_layer_of_a_nested_backbone():
    # OBS looked layers up among the outer model's only ("No such layer: conv").
    layers = keras.layers
    image = keras.Input((8, 8, 2))
    backbone = keras.Model(
        image, layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="conv")(image))
    )
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, layers.Dense(3)(backbone(layers.Rescaling(2.0)(inputs))))
    x = np.random.default_rng(8).normal(size=(32, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(layer_inputs(model, "conv", x), 2.0 * x, rtol=1e-6)
    obs_prune_model(model, x, {"conv": 0.5})
    assert (to_numpy(backbone.get_layer("conv").kernel) == 0).mean() == 0.5


def test_obd_drives_the_pruning_callback():
    scales, weights = [3.0, 1.0, 0.2, 1.0, 0.1, 2.0], [0.2, 0.5, 1.0, -0.3, 2.0, 0.1]
    plain, x, y = regression(scales, weights)
    model = kc.make_prunable(plain)
    model.compile(keras.optimizers.SGD(0.0), "mse")  # no weight change: only the ranking
    saliency = obd_scores([(x, y)], "mse", estimator="hutchinson")
    callback = kc.MagnitudePruning(0.5, "constant", saliency=saliency)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[callback])
    kept = np.flatnonzero(to_numpy(kc.strip(model).get_layer("fc").kernel).ravel())
    obd = 0.5 * (2 * np.asarray(scales) ** 2) * np.asarray(weights) ** 2
    np.testing.assert_array_equal(kept, np.sort(np.argsort(obd)[3:]))
    with pytest.raises(ValueError, match="saliency ranks weights"):
        kc.MagnitudePruning(0.5, criterion="std", saliency=saliency)


def test_per_example_fisher_is_the_mean_of_squared_example_gradients():
    model, x, _ = regression([1.0, 2.0, 0.5], [0.3, -0.2, 0.7], n=16)
    y = np.random.default_rng(9).normal(size=(16, 1)).astype("float32")  # residuals != 0
    fisher = kc.core.hessian.fisher_diagonal(model, [(x[:8], y[:8]), (x[8:], y[8:])], "mse",
                                        per_example=True)["fc/kernel"]  # fmt: skip
    residual = x @ to_numpy(model.get_layer("fc").kernel) - y  # d loss_n / d w = 2 r_n x_n
    expected = np.mean((2 * residual * x) ** 2, axis=0)[:, None]
    np.testing.assert_allclose(fisher, expected, rtol=1e-4)
