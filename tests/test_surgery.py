"""Structural surgery: removed units are gone, every surviving weight is carried exactly."""

import keras
import numpy as np
import pytest

from keras_compress.trimming.surgery import SurgeryError, remove_units

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

L = keras.layers


def mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), L.Dense(5, "relu", name="fc1"),
                             L.Dense(4, "relu", name="fc2"), L.Dense(3, name="out")])  # fmt: skip


def random_inputs(model, n=16, seed=1):
    shape = (n, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("drop", [[0], [-1], [1, 2]])
def test_dense_matches_a_model_built_at_the_smaller_width(drop):
    # keras-surgeon's oracle: the same network built narrower, weights copied by hand.
    model = mlp()
    kept = np.setdiff1d(np.arange(5), np.asarray(drop) % 5)
    small = keras.Sequential([keras.Input((6,)), L.Dense(kept.size, "relu"), L.Dense(4, "relu"),
                              L.Dense(3)])  # fmt: skip
    (k1, b1), (k2, b2), (k3, b3) = (layer.get_weights() for layer in model.layers)
    small.set_weights([k1[:, kept], b1[kept], k2[kept], b2, k3, b3])
    trimmed = remove_units(model, {"fc1": drop})
    x = random_inputs(model)
    np.testing.assert_array_equal(trimmed.predict(x, verbose=0), small.predict(x, verbose=0))
    assert model.count_params() - trimmed.count_params() == len(drop) * (6 + 1 + 4)
    assert model.get_layer("fc1").units == 5  # the input model is untouched


def test_conv_batchnorm_pool_flatten_dense_is_exact():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((8, 8, 2)), L.Conv2D(6, 3, name="conv"), L.BatchNormalization(name="bn"),
        L.ReLU(), L.MaxPooling2D(2), L.Dropout(0.3), L.Flatten(), L.Dense(7, name="fc"),
        L.Dense(3, name="out"),
    ])  # fmt: skip
    bn = model.get_layer("bn")  # non-trivial statistics, so the BatchNorm slicing matters
    rng = np.random.default_rng(3)
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6),
                    rng.uniform(0.5, 2, 6)])  # fmt: skip
    drop = [1, 4]
    trimmed = remove_units(model, {"conv": drop})
    # The same model with the removed channels' reads zeroed: Flatten is channel-last, so
    # channel c of position p is row p * 6 + c of the Dense kernel.
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    kernel, bias = masked.get_layer("fc").get_weights()
    rows = (np.arange(9)[:, None] * 6 + np.asarray(drop)[None, :]).ravel()
    kernel[rows] = 0
    masked.get_layer("fc").set_weights([kernel, bias])
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    removed = 2 * (3 * 3 * 2 + 1) + 2 * 4 + 2 * 9 * 7  # conv, bn (4 per channel), fc rows
    assert model.count_params() - trimmed.count_params() == removed


def test_depthwise_and_separable_convolutions_pass_channels_through():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((9, 9, 3)), L.Conv2D(5, 3, activation="relu", name="conv"),
        L.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        L.SeparableConv2D(4, 3, depth_multiplier=2, activation="relu", name="sep"),
        L.GlobalAveragePooling2D(), L.Dense(3, name="out"),
    ])  # fmt: skip
    trimmed = remove_units(model, {"conv": [0, 3], "sep": [2]})
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    # Conv channel c feeds depthwise channels 2c, 2c+1, which feed separable inner channels
    # 4c..4c+3; zero those pointwise rows, and the output Dense's row for filter 2.
    depthwise, pointwise, bias = masked.get_layer("sep").get_weights()
    for c in (0, 3):
        pointwise[:, :, 4 * c : 4 * c + 4, :] = 0
    masked.get_layer("sep").set_weights([depthwise, pointwise, bias])
    kernel, out_bias = masked.get_layer("out").get_weights()
    kernel[2] = 0
    masked.get_layer("out").set_weights([kernel, out_bias])
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert trimmed.get_layer("dw").output.shape[-1] == 6
    assert trimmed.get_layer("sep").output.shape[-1] == 3


def branches(merge):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = L.Conv2D(4 if merge is L.Add else 6, 3, padding="same", activation="relu", name="b")(inputs)
    merged = merge(name="merge")([a, b])
    pooled = L.GlobalAveragePooling2D()(merged)
    return keras.Model(inputs, L.Dense(3, name="out")(pooled))


def zero_rows(model, name, rows):
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    kernel, bias = masked.get_layer(name).get_weights()
    kernel[rows] = 0
    masked.get_layer(name).set_weights([kernel, bias])
    return masked


def test_concatenate_maps_channels_by_offset():
    model = branches(L.Concatenate)
    trimmed = remove_units(model, {"a": [0], "b": [2, 5]})
    masked = zero_rows(model, "out", [0, 4 + 2, 4 + 5])
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert trimmed.get_layer("merge").output.shape[-1] == 7


def test_residual_add_removes_only_channels_every_branch_drops():
    model = branches(L.Add)
    trimmed = remove_units(model, {"a": [1, 2], "b": [2, 3]})  # only channel 2 is common
    assert trimmed.get_layer("merge").output.shape[-1] == 3
    masked = zero_rows(model, "out", [2])
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    # Disagreeing branches are left alone: nothing in common, nothing removed, and said so.
    with pytest.warns(UserWarning, match=r"keeps units of a \[0\]: they meet .*, a sum"):
        untouched = remove_units(model, {"a": [0]})
    assert untouched.count_params() == model.count_params()


def test_a_product_with_a_model_input_keeps_the_channels_and_says_so():
    # Settled as a product, the mask input (untraceable to any layer) raised instead.
    image, mask = keras.Input((6, 6, 3)), keras.Input((6, 6, 4))
    hidden = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(image)
    pooled = L.GlobalAveragePooling2D()(L.Multiply()([hidden, mask]))
    model = keras.Model([image, mask], L.Dense(2, name="out")(pooled))
    with pytest.warns(UserWarning, match=r"keeps units of c1 \[1\].*a product with a model"):
        trimmed = remove_units(model, {"c1": [1]})
    assert trimmed.count_params() == model.count_params()


def test_trimmed_model_saves_and_loads(tmp_path):
    trimmed = remove_units(mlp(), {"fc2": [0, 3]})
    path = tmp_path / "trimmed.keras"
    trimmed.save(path)
    loaded = keras.models.load_model(path)
    x = random_inputs(trimmed)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), trimmed.predict(x, verbose=0))


def test_bad_requests_name_the_layer():
    model = mlp()
    with pytest.raises(SurgeryError, match="output 'out' of model"):
        remove_units(model, {"out": [0]})
    with pytest.raises(SurgeryError, match="no layer 'fc9'"):
        remove_units(model, {"fc9": [0]})
    with pytest.raises(SurgeryError, match="all 5 units of layer 'fc1'"):
        remove_units(model, {"fc1": range(5)})
    with pytest.raises(SurgeryError, match="has 5 units; cannot remove \\[5\\]"):
        remove_units(model, {"fc1": [5]})
    # Dropping channels would change what a LayerNormalization computes for the others.
    normed = keras.Sequential([keras.Input((4, 3)), L.Dense(6, name="proj"),
                               L.LayerNormalization(name="ln"), L.Dense(2)])  # fmt: skip
    with pytest.raises(SurgeryError, match="'ln' \\(LayerNormalization\\) cannot drop input"):
        remove_units(normed, {"proj": [1]})
    recurrent = keras.Sequential([keras.Input((4, 3)), L.LSTM(2, name="lstm"), L.Dense(2)])
    with pytest.raises(SurgeryError, match="'lstm' \\(LSTM\\) has no units or filters"):
        remove_units(recurrent, {"lstm": [1]})


@pytest.mark.parametrize("drop", [[0], [-1], [1, 2]])
def test_conv_matches_a_model_built_at_the_smaller_width(drop):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((7, 7, 3)), L.Conv2D(5, 3, activation="relu", name="c1"),
                              L.Conv2D(4, 3, name="c2"), L.GlobalMaxPooling2D()])  # fmt: skip
    kept = np.setdiff1d(np.arange(5), np.asarray(drop) % 5)
    small = keras.Sequential([keras.Input((7, 7, 3)), L.Conv2D(kept.size, 3, activation="relu"),
                              L.Conv2D(4, 3), L.GlobalMaxPooling2D()])  # fmt: skip
    (k1, b1), (k2, b2) = model.get_layer("c1").get_weights(), model.get_layer("c2").get_weights()
    small.set_weights([k1[..., kept], b1[kept], k2[:, :, kept, :], b2])
    trimmed = remove_units(model, {"c1": drop})
    x = random_inputs(model)
    np.testing.assert_array_equal(trimmed.predict(x, verbose=0), small.predict(x, verbose=0))
    assert model.count_params() - trimmed.count_params() == len(drop) * (27 + 1 + 9 * 4)


def _trimmed_and_built_narrow(build, drop):
    """``build(5)`` with filters ``drop`` of "c1" removed, the same built narrow, and inputs.

    ``build(width)`` makes a model whose "c1" has ``width`` filters and feeds "c2".
    """
    model = build(5)
    kept = np.setdiff1d(np.arange(5), drop)
    small = build(kept.size)
    (k1, b1), (k2, b2) = model.get_layer("c1").get_weights(), model.get_layer("c2").get_weights()
    small.set_weights([k1[..., kept], b1[kept], k2[..., kept, :], b2])
    return remove_units(model, {"c1": drop}), small, random_inputs(model)


def test_volumes_pass_channels_through_3d_pooling_padding_and_upsampling():
    # A Conv3D model (video, medical volumes): the 3-D channel-wise layers pass channels on.
    def build(width):
        return keras.Sequential([
            keras.Input((6, 6, 6, 2)), L.Conv3D(width, 3, activation="elu", name="c1"),
            L.ZeroPadding3D(1), L.MaxPooling3D(2), L.UpSampling3D(2), L.Cropping3D(1),
            L.SpatialDropout3D(0.2), L.AveragePooling3D(2), L.Conv3D(4, 1, name="c2"),
            L.GlobalAveragePooling3D(),
        ])  # fmt: skip

    keras.utils.set_random_seed(9)
    trimmed, small, x = _trimmed_and_built_narrow(build, [0, 3])
    np.testing.assert_array_equal(trimmed.predict(x, verbose=0), small.predict(x, verbose=0))


def test_image_layers_that_keep_channels_apart_pass_them_through():
    # Resizing inside a segmentation model, augmentation left in the classifier: each moves
    # every channel's pixels alike. A per-channel Rescaling would need slicing: refused.
    def build(width, scale=0.5):
        return keras.Sequential([
            keras.Input((8, 8, 2)), L.Conv2D(width, 3, padding="same", name="c1"),
            L.Resizing(12, 12), L.RandomFlip(), L.RandomRotation(0.1), L.RandomZoom(0.1),
            L.RandomTranslation(0.1, 0.1), L.RandomContrast(0.2), L.RandomBrightness(0.1),
            L.CenterCrop(10, 10), L.RandomCrop(8, 8), L.Rescaling(scale, offset=0.1),
            L.Conv2D(4, 1, name="c2"), L.GlobalAveragePooling2D(),
        ])  # fmt: skip

    keras.utils.set_random_seed(3)
    trimmed, small, x = _trimmed_and_built_narrow(build, [1, 4])
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), small.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    per_channel = build(5, scale=[0.5] * 5)
    with pytest.raises(SurgeryError, match=r"'rescaling.*' \(Rescaling\) cannot drop input"):
        remove_units(per_channel, {"c1": [1, 4]})


def test_prelu_slopes_are_sliced_with_their_channels():
    # PReLU (MobileFaceNet, ESPNet) holds a slope per channel, or per position and channel:
    # the surgery refused it ("cannot drop input channels").
    keras.utils.set_random_seed(17)
    inputs = keras.Input((6, 6, 3))
    h = L.PReLU(name="per_pixel")(L.Conv2D(5, 3, padding="same", name="c1")(inputs))
    h = L.PReLU(shared_axes=[1, 2], name="per_channel")(h)
    h = L.PReLU(shared_axes=[1, 2, 3], name="one")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    rng = np.random.default_rng(5)
    for name in ("per_pixel", "per_channel", "one"):
        layer = model.get_layer(name)
        layer.set_weights([rng.uniform(0.1, 0.5, w.shape) for w in layer.get_weights()])
    trimmed = remove_units(model, {"c1": [1, 4]})
    assert trimmed.get_layer("per_pixel").get_weights()[0].shape == (6, 6, 3)
    assert trimmed.get_layer("per_channel").get_weights()[0].shape == (1, 1, 3)
    assert trimmed.get_layer("one").get_weights()[0].shape == (1, 1, 1)
    x = np.random.default_rng(6).normal(size=(4, 6, 6, 3)).astype("float32")
    _assert_same_outputs(trimmed, _zeroed(model, {"c1": [1, 4]}), x)  # PReLU(0) = 0


def test_channels_first_layers_are_refused_by_name():
    # Surgery reads channels on the last axis; a channels_first model was silently mis-sliced
    # (its width read from the last spatial axis) before this was refused.
    first = keras.Sequential([
        keras.Input((3, 8, 8)), L.Conv2D(6, 3, data_format="channels_first", name="c1"),
        L.Conv2D(5, 3, data_format="channels_first", name="c2"),
        L.GlobalAveragePooling2D(data_format="channels_first"), L.Dense(2),
    ])  # fmt: skip
    with pytest.raises(SurgeryError, match="'c2' \\(Conv2D\\) has data_format='channels_first'"):
        remove_units(first, {"c2": [1]})
    last = keras.Sequential([
        keras.Input((8, 8, 3)), L.Conv2D(6, 3, name="c1"),
        L.MaxPooling2D(2, data_format="channels_first", name="pool"), L.Flatten(), L.Dense(2),
    ])  # fmt: skip
    with pytest.raises(SurgeryError, match="'pool' \\(MaxPooling2D\\) has data_format="):
        remove_units(last, {"c1": [1]})


class ScaledDense(L.Dense):
    """A user's Dense subclass: surgery must treat it as a Dense."""


def test_subclasses_of_dense_are_trimmed_like_dense():
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((6,)), ScaledDense(5, activation="relu", name="fc1"),
                              L.Dense(2, name="out")])  # fmt: skip
    trimmed = remove_units(model, {"fc1": [2]})
    assert isinstance(trimmed.get_layer("fc1"), ScaledDense)
    assert trimmed.get_layer("fc1").units == 4
    masked = zero_rows(model, "out", [2])
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_transposed_convolution_loses_filters_and_input_channels():
    # Its kernel is (h, w, filters, inputs): the other way round from Conv2D's.
    keras.utils.set_random_seed(9)
    model = keras.Sequential([keras.Input((5, 5, 3)), L.Conv2D(5, 3, activation="relu", name="c1"),
                              L.Conv2DTranspose(4, 3, strides=2, activation="relu", name="t"),
                              L.GlobalMaxPooling2D(), L.Dense(2, name="out")])  # fmt: skip
    small = keras.Sequential([keras.Input((5, 5, 3)), L.Conv2D(3, 3, activation="relu"),
                              L.Conv2DTranspose(3, 3, strides=2, activation="relu"),
                              L.GlobalMaxPooling2D(), L.Dense(2)])  # fmt: skip
    (k1, b1), (kt, bt), (k3, b3) = [model.get_layer(n).get_weights() for n in ("c1", "t", "out")]
    c_kept, t_kept = np.array([0, 2, 4]), np.array([0, 1, 3])
    small.set_weights([k1[..., c_kept], b1[c_kept], kt[:, :, t_kept][..., c_kept], bt[t_kept],
                       k3[t_kept], b3])  # fmt: skip
    trimmed = remove_units(model, {"c1": [1, 3], "t": [2]})
    assert trimmed.get_layer("t").kernel.shape == (3, 3, 3, 3)
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), small.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "recurrent",
    [lambda: L.LSTM(6), lambda: L.GRU(6),
     lambda: L.Bidirectional(L.LSTM(5, return_sequences=True))],
    ids=["lstm", "gru", "bidirectional_lstm"],
)  # fmt: skip
def test_recurrent_layers_lose_input_rows_and_keep_their_units(recurrent):
    keras.utils.set_random_seed(10)
    inputs = keras.Input((5, 4))
    hidden = L.Dense(8, activation="relu", name="fc")(inputs)
    layer = recurrent()
    model = keras.Model(inputs, L.Dense(3, name="out")(L.Flatten()(layer(hidden))))
    trimmed = remove_units(model, {"fc": [1, 6]})
    kernels = [w for w in trimmed.get_layer(layer.name).weights if w.path.endswith("/kernel")]
    assert kernels and all(w.shape[0] == 6 for w in kernels)  # every direction's input kernel
    # Removing a ReLU unit is zeroing its kernel column and bias (its output is then 0).
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    kernel, bias = masked.get_layer("fc").get_weights()
    kernel[:, [1, 6]], bias[[1, 6]] = 0, 0
    masked.get_layer("fc").set_weights([kernel, bias])
    x = random_inputs(model)
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_time_distributed_layers_are_trimmed_as_the_layers_they_wrap():
    # A CNN-LSTM: per-frame convolution, BatchNorm, pooling, Flatten and Dense, all in
    # TimeDistributed, then an LSTM reading the frames.
    keras.utils.set_random_seed(11)
    frames = keras.Input((3, 8, 8, 1))
    h = L.TimeDistributed(L.Conv2D(6, 3, activation="relu"), name="conv")(frames)
    h = L.TimeDistributed(L.BatchNormalization(), name="bn")(h)
    h = L.TimeDistributed(L.MaxPooling2D(), name="pool")(h)
    h = L.TimeDistributed(L.Flatten(), name="flat")(h)
    h = L.TimeDistributed(L.Dense(7, activation="relu"), name="fc")(h)
    model = keras.Model(frames, L.Dense(3, name="out")(L.LSTM(4, name="lstm")(h)))
    x = random_inputs(model)
    scale = np.linspace(0.5, 1.5, 6, dtype="float32")  # gamma and beta; mean 0, variance 1
    model.get_layer("bn").set_weights([scale, scale, np.zeros(6, "float32"), np.ones(6, "float32")])
    trimmed = remove_units(model, {"conv": [1, 4], "fc": [0, 5]})
    assert trimmed.get_layer("conv").layer.filters == 4
    assert trimmed.get_layer("fc").layer.units == 5
    assert trimmed.get_layer("fc").get_weights()[0].shape == (3 * 3 * 4, 5)
    assert trimmed.get_layer("lstm").get_weights()[0].shape[0] == 5
    # The same as zeroing the removed channels after their ReLU (and the BatchNorm shift).
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for name, drop in (("conv", [1, 4]), ("fc", [0, 5])):
        kernel, bias = masked.get_layer(name).get_weights()
        kernel[..., drop], bias[drop] = 0, 0
        masked.get_layer(name).set_weights([kernel, bias])
    gamma, beta, mean, var = masked.get_layer("bn").get_weights()
    beta[[1, 4]] = 0
    masked.get_layer("bn").set_weights([gamma, beta, mean, var])
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize(
    "width",
    [12, pytest.param(None, marks=pytest.mark.slow)],
    ids=["fixed_width", "variable_width"],
)
def test_crnn_reshape_merging_channels_into_the_features_is_trimmed(width):
    # An OCR-style CRNN: convolution over the image, columns become time steps, each column's
    # rows x channels become the features of a bidirectional LSTM.
    keras.utils.set_random_seed(12)
    image = keras.Input((16, width, 1))
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(image)
    h = L.Permute((2, 1, 3), name="columns")(L.MaxPooling2D(name="pool")(h))  # (W/2, 8, 8)
    h = L.Reshape((-1, 8 * 8), name="features")(h)
    h = L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm")(h)
    model = keras.Model(image, L.Dense(5, name="out")(h))
    trimmed = remove_units(model, {"conv": [2, 5]})
    assert trimmed.get_layer("features").target_shape == (-1, 8 * 6)
    x = np.random.default_rng(1).random((4, 16, 12, 1)).astype("float32")
    _assert_same_outputs(trimmed, _zeroed(model, {"conv": [2, 5]}), x)


def test_squeeze_and_excitation_reshape_keeps_the_channels_last():
    # EfficientNet's block: the excitation is pooled, reshaped (C,) -> (1, 1, C), and scales
    # the block's channels; the expansion and the excitation lose the same channels.
    keras.utils.set_random_seed(14)
    inputs = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 1, activation="relu", name="expand")(inputs)
    s = L.Reshape((1, 1, -1), name="se_reshape")(L.GlobalAveragePooling2D()(h))
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(L.Conv2D(2, 1, name="se")(s))
    h = L.Reshape((36, 8), name="tokens")(L.Multiply()([h, s]))
    model = keras.Model(inputs, L.Dense(3, name="out")(h))
    drop = [1, 4, 5]
    x = np.random.default_rng(2).random((4, 6, 6, 3)).astype("float32")
    # Naming the expansion alone is enough: a removed channel counts as zero, and so does its
    # product with the gate, whose unit goes too (remove_units kept both whole before, and
    # said nothing).
    for request in ({"expand": drop, "se_expand": drop}, {"expand": drop}):
        trimmed = remove_units(model, request)
        assert trimmed.get_layer("se_reshape").target_shape == (1, 1, 5)
        assert trimmed.get_layer("tokens").target_shape == (36, 5)
        assert trimmed.get_layer("se_expand").filters == 5
        _assert_same_outputs(trimmed, _zeroed(model, {"expand": drop}), x)


def test_a_residual_chain_settles_through_depthwise_and_earlier_merges():
    # s2 = s1 + c with s1 = depthwise(a) + b: c keeps all but channel 1, so a (behind the
    # depthwise convolution) and b, the owners of s1's channels, lose only channel 1 too.
    keras.utils.set_random_seed(15)
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(6, 1, activation="relu", use_bias=False, name="a")(inputs)
    dw = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(a)
    s1 = L.Add(name="s1")([dw, L.Conv2D(6, 1, use_bias=False, name="b")(inputs)])
    s2 = L.Add(name="s2")([s1, L.Conv2D(6, 1, use_bias=False, name="c")(s1)])
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(s2)))
    trimmed = remove_units(model, {"a": [1, 2], "b": [1, 2], "c": [1]})
    assert [trimmed.get_layer(n).filters for n in ("a", "b", "c")] == [5, 5, 5]
    x = np.random.default_rng(3).random((4, 6, 6, 3)).astype("float32")
    _assert_same_outputs(trimmed, _zeroed(model, {"a": [1], "b": [1], "c": [1]}), x)


def _zeroed(model, channels):
    """A copy of ``model`` whose given output channels have zero kernels (and biases)."""
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for name, drop in channels.items():
        weights = masked.get_layer(name).get_weights()
        weights[0][..., drop] = 0
        if len(weights) > 1:
            weights[1][drop] = 0
        masked.get_layer(name).set_weights(weights)
    return masked


def _assert_same_outputs(a, b, x):
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_element_wise_keras_ops_calls_pass_channels_through():
    # MobileNetV3's block, written with operators as Keras writes it: hard swish
    # x * relu6(x + 3) / 6 and a squeeze-and-excitation gate relu6(s + 3) * (1 / 6).
    keras.utils.set_random_seed(16)
    inputs = keras.Input((6, 6, 3))
    h = L.BatchNormalization(name="bn")(L.Conv2D(8, 1, name="expand")(inputs))
    h = h * L.ReLU(6.0)(h + 3.0) * (1.0 / 6.0)
    s = L.GlobalAveragePooling2D(keepdims=True)(h)
    s = L.Conv2D(8, 1, name="se_expand")(L.ReLU()(L.Conv2D(2, 1, name="se")(s)))
    h = L.Multiply()([h, L.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)])
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    drop = [0, 3]
    trimmed = remove_units(model, {"expand": drop, "se_expand": drop})
    assert [trimmed.get_layer(n).filters for n in ("expand", "se_expand")] == [6, 6]
    assert all(len(op._inbound_nodes) == 1 for op in model.operations)  # the input untouched
    x = np.random.default_rng(4).random((4, 6, 6, 3)).astype("float32")
    # The removed channels' BatchNorm shift is not zero; with it zeroed the outputs agree.
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    beta[drop], mean[drop] = 0, 0
    bn.set_weights([gamma, beta, mean, var])
    _assert_same_outputs(trimmed, _zeroed(model, {"expand": drop}), x)
    # The expansion alone: its removed channels count as zero, and so do their products with
    # the gate (a keras.ops multiplication here), whose units go too.
    alone = remove_units(model, {"expand": drop})
    assert [alone.get_layer(n).filters for n in ("expand", "se_expand")] == [6, 6]
    _assert_same_outputs(alone, _zeroed(model, {"expand": drop}), x)


@pytest.mark.parametrize(
    "after, message",
    [(lambda h: keras.ops.softmax(h, axis=-1), r"'\w+' \(Softmax, a keras.ops call"),
     (lambda h: h * np.arange(6, dtype="float32"), r"'\w+' \(Multiply, a keras.ops call")],
    ids=["mixes-channels", "array-constant"],
)  # fmt: skip
def test_keras_ops_calls_that_would_lose_channels_are_refused_by_name(after, message):
    inputs = keras.Input((4, 4, 3))
    h = after(L.Conv2D(6, 1, name="conv")(inputs))
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(h)))
    with pytest.raises(SurgeryError, match=message):
        remove_units(model, {"conv": [0]})


@pytest.mark.parametrize(
    "after, message",
    [(lambda: L.Reshape((16, 2, 3), name="odd"), "'odd' \\(Reshape\\) reshapes \\(4, 4, 6\\)"),
     (lambda: L.Permute((3, 1, 2), name="perm"), "'perm' \\(Permute\\) moves the channel axis")],
    ids=["reshape", "permute"],
)  # fmt: skip
def test_reshapes_that_lose_track_of_channels_are_refused_by_name(after, message):
    inputs = keras.Input((4, 4, 3))
    hidden = after()(L.Conv2D(6, 1, name="conv")(inputs))
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(hidden)))
    with pytest.raises(SurgeryError, match=message):
        remove_units(model, {"conv": [0]})


def test_units_inside_a_nested_model_are_trimmed_within_it():
    # A two-input model whose image branch is a nested Sequential backbone.
    keras.utils.set_random_seed(13)
    backbone = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(6, 3, activation="relu",
                                 name="conv_a"), L.Conv2D(5, 3, name="conv_b"),
                                 L.GlobalAveragePooling2D()], name="backbone")  # fmt: skip
    image, extra = keras.Input((8, 8, 3)), keras.Input((4,))
    h = L.Concatenate()([backbone(image), L.Dense(7, activation="relu", name="side")(extra)])
    model = keras.Model([image, extra], L.Dense(2, name="out")(L.Dense(9, name="fc")(h)))
    trimmed = remove_units(model, {"conv_a": [1, 4], "side": [0]})
    assert trimmed.get_layer("backbone").get_layer("conv_a").filters == 4
    assert trimmed.get_layer("backbone").get_layer("conv_b").kernel.shape[2] == 4
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for graph, name, drop in ((masked.get_layer("backbone"), "conv_a", [1, 4]),
                              (masked, "side", [0])):  # fmt: skip
        kernel, bias = graph.get_layer(name).get_weights()
        kernel[..., drop], bias[drop] = 0, 0
        graph.get_layer(name).set_weights([kernel, bias])
    rng = np.random.default_rng(2)
    x = [rng.random((8, 8, 8, 3), dtype=np.float32), rng.random((8, 4), dtype=np.float32)]
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), masked.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    # The backbone's output feeds the outer model: it keeps its width.
    with pytest.raises(SurgeryError, match="output 'global_average_pooling2d' of model 'backbo"):
        remove_units(model, {"conv_b": [0]})
