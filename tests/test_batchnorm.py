"""Folding BatchNormalization ahead of sharing: exact, keeps zeros, keeps the shared values."""

import keras
import numpy as np
import pytest

import keras_compress as kc

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

L = keras.layers


def _bn_net():
    inputs = keras.Input((12, 12, 3))
    x = L.BatchNormalization(name="pre_bn")(inputs)  # nothing before it: stays
    x = L.Conv2D(16, 3, name="conv")(x)
    x = L.ReLU()(L.BatchNormalization(name="conv_bn")(x))
    x = L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = L.ReLU()(L.BatchNormalization(name="dw_bn", center=False)(x))
    x = L.SeparableConv2D(24, 3, name="sep")(x)
    x = L.BatchNormalization(name="sep_bn", scale=False)(x)
    branch = L.Conv2D(24, 1, activation="relu", name="relu_conv")(x)
    x = L.Add()([L.BatchNormalization(name="after_relu_bn")(branch), x])  # activation: stays
    x = L.Dense(32, name="fc")(L.GlobalAveragePooling2D()(x))
    x = L.BatchNormalization(name="fc_bn")(x)
    return keras.Model(inputs, L.Dense(4, name="out")(L.ReLU()(x)), name="bn_net")


def _randomize_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else
                               rng.normal(0.0, 0.3, w.shape) for w in layer.weights])  # fmt: skip


def test_folding_is_exact_and_removes_every_foldable_batchnorm():
    model = _bn_net()
    _randomize_statistics(model)
    folded = kc.core.fold_batchnorm(model)
    left = [layer.name for layer in folded.layers if isinstance(layer, L.BatchNormalization)]
    assert left == ["pre_bn", "after_relu_bn"]
    for name in ("conv_bn", "dw_bn", "sep_bn", "fc_bn"):
        assert isinstance(folded.get_layer(name), L.Identity)
    assert all(folded.get_layer(n).use_bias for n in ("conv", "dw", "sep", "fc"))
    x = np.random.default_rng(1).normal(size=(8, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert model.get_layer("conv_bn").__class__ is L.BatchNormalization  # input untouched


@pytest.mark.slow
def test_pruned_zeros_survive_folding():
    model = _bn_net()
    _randomize_statistics(model)
    pruned = kc.make_prunable(model, layers=["conv", "dw", "sep", "fc"])
    x = np.random.default_rng(2).normal(size=(32, 12, 12, 3)).astype("float32")
    pruned.compile("adam", "mse")
    pruned.fit(x, np.zeros((32, 4)), epochs=1, verbose=0,
               callbacks=[kc.MagnitudePruning(0.7, "constant")])  # fmt: skip
    before = dict(kc.core.compressed_weights(kc.strip(pruned)))
    after = dict(kc.core.compressed_weights(kc.core.fold_batchnorm(pruned)))
    assert {"conv/kernel", "dw/kernel", "sep/depthwise_kernel", "fc/kernel"} <= set(after)
    for name in ("conv/kernel", "dw/kernel", "sep/pointwise_kernel", "fc/kernel"):
        np.testing.assert_array_equal(after[name] == 0, before[name] == 0)
        assert (after[name] == 0).mean() >= 0.69, name


@pytest.mark.slow
def test_shared_values_reach_the_tflite_only_when_folded_first(tmp_path, tf):
    model = _bn_net()
    _randomize_statistics(model)
    kernels = {}
    for label, source in [("folded", kc.core.fold_batchnorm(model)), ("unfolded", model)]:
        shared = kc.share_weights(source, bits=3)
        report = kc.export(shared, tmp_path / label)
        kernels[label] = [r["distinct"] for r in report.tensors if len(r["shape"]) > 1]
    assert max(kernels["folded"]) <= 8
    assert max(kernels["unfolded"]) > 8  # the converter folded BatchNorm into shared kernels
