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
    x = L.Conv2DTranspose(12, 3, strides=2, use_bias=False, name="tconv")(x)  # (h, w, out, in)
    x = L.ReLU()(L.BatchNormalization(name="tconv_bn")(x))
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
    for name in ("conv_bn", "dw_bn", "sep_bn", "tconv_bn", "fc_bn"):
        assert isinstance(folded.get_layer(name), L.Identity)
    assert all(folded.get_layer(n).use_bias for n in ("conv", "dw", "sep", "tconv", "fc"))
    x = np.random.default_rng(1).normal(size=(8, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert model.get_layer("conv_bn").__class__ is L.BatchNormalization  # input untouched


def test_time_distributed_batchnorm_folds_into_the_time_distributed_layer_before_it():
    # A CNN-LSTM: per-frame convolutions, each followed by a BatchNorm (TimeDistributed or
    # plain over the last axis, the same per-channel transform).
    frames = keras.Input((3, 8, 8, 2))
    x = L.TimeDistributed(L.Conv2D(6, 3, use_bias=False), name="conv")(frames)
    x = L.TimeDistributed(L.ReLU())(L.TimeDistributed(L.BatchNormalization(), name="bn")(x))
    x = L.TimeDistributed(L.Conv2DTranspose(4, 3), name="up")(x)
    x = L.BatchNormalization(name="up_bn")(x)
    x = L.TimeDistributed(L.GlobalAveragePooling2D())(x)
    model = keras.Model(frames, L.Dense(2)(L.LSTM(3)(x)))
    rng = np.random.default_rng(2)
    for name in ("bn", "up_bn"):
        layer = model.get_layer(name)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.weights])
    folded = kc.core.fold_batchnorm(model)
    assert isinstance(folded.get_layer("bn"), L.Identity)
    assert isinstance(folded.get_layer("up_bn"), L.Identity)
    assert folded.get_layer("conv").layer.use_bias
    x = rng.normal(size=(4, 3, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


def test_channels_first_batchnorm_folds_only_over_the_channel_axis():
    # After a channels_first convolution the channels are axis 1; a BatchNorm over the last
    # axis there normalizes image columns, which no kernel scale can express.
    inputs = keras.Input((2, 6, 6))
    x = L.Conv2D(4, 3, data_format="channels_first", name="conv")(inputs)
    x = L.BatchNormalization(axis=1, name="bn")(x)
    x = L.Conv2D(4, 3, data_format="channels_first", name="conv2")(L.ReLU()(x))
    x = L.BatchNormalization(axis=-1, name="columns_bn")(x)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    _randomize_statistics(model, seed=3)
    folded = kc.core.fold_batchnorm(model)
    assert isinstance(folded.get_layer("bn"), L.Identity)
    assert isinstance(folded.get_layer("columns_bn"), L.BatchNormalization)
    x = np.random.default_rng(4).normal(size=(4, 2, 6, 6)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # Per frame (TimeDistributed): channels are axis 2 of (batch, time, C, H, W), time axis 1.
    frames = keras.Input((3, 2, 6, 6))
    conv = L.Conv2D(4, 3, data_format="channels_first")
    x = L.BatchNormalization(axis=2, name="bn")(L.TimeDistributed(conv, name="conv")(frames))
    conv2 = L.Conv2D(4, 3, data_format="channels_first")
    x = L.BatchNormalization(axis=1, name="time_bn")(L.TimeDistributed(conv2, name="conv2")(x))
    model = keras.Model(frames, L.Dense(2)(L.Flatten()(x)))
    _randomize_statistics(model, seed=5)
    folded = kc.core.fold_batchnorm(model)
    assert isinstance(folded.get_layer("bn"), L.Identity)
    assert isinstance(folded.get_layer("time_bn"), L.BatchNormalization)
    x = np.random.default_rng(6).normal(size=(4, 3, 2, 6, 6)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.slow
def test_a_backbone_nested_in_a_sequential_classifier_folds():
    # Keras passes no call_function below a Sequential: the nested backbone was cloned
    # replaying the BatchNorm node's mask argument into the layer that replaced it.
    image = keras.Input((8, 8, 3))
    h = L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(4, 3, name="conv")(image)))
    backbone = keras.Model(image, L.GlobalAveragePooling2D()(h), name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Rescaling(0.5), backbone, L.Dense(2)])
    _randomize_statistics(backbone)
    folded = kc.fold_batchnorm(model)
    inner = [type(layer).__name__ for layer in folded.get_layer("backbone").layers]
    assert "BatchNormalization" not in inner
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


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


@pytest.mark.slow
def test_per_tensor_int8_keeps_shared_values_and_codes_smaller(tmp_path, tf):
    model = _bn_net()
    _randomize_statistics(model)
    shared = kc.strip(kc.share_weights(kc.core.fold_batchnorm(model), bits=4))
    x = np.random.default_rng(3).normal(size=(64, 12, 12, 3)).astype("float32")
    results = {}
    for per_channel in (True, False):
        prefix = tmp_path / f"per_channel_{per_channel}"
        report = kc.export(shared, prefix, "int8", lambda: (x[i : i + 1] for i in range(64)),
                           per_channel=per_channel)  # fmt: skip
        model_bytes = prefix.with_suffix(".tflite").read_bytes()
        skeleton, side = (prefix.with_suffix(s).read_bytes() for s in (".skeleton", ".kcz"))
        assert kc.deploy.sidecar.join(skeleton, side) == model_bytes
        rows = [r for r in report.tensors if r["dtype"] == "int8" and len(r["shape"]) > 1]
        assert len(rows) == 8  # conv, dw, sep's two, relu_conv, tconv, fc, out
        interpreter = kc.deploy.litert.interpreter(model_bytes)
        details = {
            t["name"]: t["quantization_parameters"] for t in interpreter.get_tensor_details()
        }
        # (Per tensor, the converter still writes a Dense kernel's one scale once per row.)
        scales = {r["tensor"]: np.unique(details[r["tensor"]]["scales"]).size for r in rows}
        distinct = [r["distinct"] for r in rows]
        outputs = kc.deploy.litert.run(model_bytes, x[:16])[0]
        results[per_channel] = (report.totals["deployable_bytes"], scales, max(distinct), outputs)
    (channel_bytes, channel_scales, channel_distinct, channel_out) = results[True]
    (tensor_bytes, tensor_scales, tensor_distinct, tensor_out) = results[False]
    assert max(channel_scales.values()) > 1 and set(tensor_scales.values()) == {1}
    assert channel_distinct > 17 >= tensor_distinct  # 16 shared values (and zero) per kernel
    assert tensor_bytes < channel_bytes
    # The same function: the (dequantized) outputs differ by a few quantization steps.
    assert np.abs(tensor_out - channel_out).mean() < 0.1 * np.ptp(channel_out)


def test_per_tensor_scales_need_int8(tf):
    with pytest.raises(ValueError, match="per_channel=False.*int8"):
        kc.deploy.convert(_bn_net(), "float32", per_channel=False)
