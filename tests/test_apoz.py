"""APoZ statistics (Hu et al. 2016, equation 1) and the selection rules."""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.trimming.apoz import APoZMonitor, measure_apoz, relu_points, select_units

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

L = keras.layers


def conv_net():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 2)), L.Conv2D(6, 3, name="conv"), L.BatchNormalization(name="bn"),
        L.ReLU(name="relu"), L.MaxPooling2D(2), L.Flatten(), L.Dense(5, "relu", name="fc"),
        L.Dense(3, name="out"),
    ])  # fmt: skip


def test_apoz_equals_the_fraction_of_zeros_over_examples_and_positions():
    model = conv_net()
    x = np.random.default_rng(1).normal(size=(70, 8, 8, 2)).astype("float32")
    scores = measure_apoz(model, x, batch_size=16)  # 70 = 4 full batches and a partial one
    assert set(scores) == {"conv", "fc"}  # never the output layer
    relu = keras.Model(model.inputs, model.get_layer("relu").output).predict(x, verbose=0)
    np.testing.assert_allclose(scores["conv"], (relu == 0).mean(axis=(0, 1, 2)))
    fc = keras.Model(model.inputs, model.get_layer("fc").output).predict(x, verbose=0)
    np.testing.assert_allclose(scores["fc"], (fc == 0).mean(axis=0))


def test_dead_and_live_units_are_told_apart_from_a_dataset(tf):
    model = keras.Sequential([keras.Input((3,)), L.Dense(4, "relu", name="fc"), L.Dense(1)])
    kernel = np.zeros((3, 4), "float32")
    bias = np.array([-1.0, 1.0, 0.0, 0.0], "float32")
    kernel[0, 2] = 1.0  # unit 2 is zero exactly when x0 <= 0
    model.get_layer("fc").set_weights([kernel, bias])
    x = np.random.default_rng(2).normal(size=(200, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(200))).batch(32)
    scores = measure_apoz(model, data)["fc"]
    assert scores[0] == 1.0 and scores[1] == 0.0
    assert scores[2] == pytest.approx(np.mean(x[:, 0] <= 0))
    assert scores[3] == 1.0  # relu(0) = 0: a unit that never fires counts as zero


def test_relu_behind_batchnorm_belongs_to_the_convolution():
    assert list(relu_points(conv_net())) == ["conv", "fc"]
    inputs = keras.Input((4,))
    hidden = L.Dense(3, name="h")(inputs)
    functional = keras.Model(inputs, L.Dense(2, name="o")(L.Activation("relu")(hidden)))
    assert list(relu_points(functional)) == ["h"]
    with pytest.raises(ValueError, match="no ReLU follows layer\\(s\\) \\['o'\\]"):
        measure_apoz(functional, np.zeros((2, 4)), layers=["o"])


def test_selection_rules():
    scores = {"a": np.array([0.1, 0.2, 0.15, 0.9, 0.12]), "b": np.full(4, 0.5)}
    assert {k: v.tolist() for k, v in select_units(scores).items()} == {"a": [3]}
    assert select_units(scores, "fraction", 0.4)["a"].tolist() == [1, 3]
    assert select_units(scores, "cutoff", 0.4)["b"].tolist() == [0, 1, 2]
    assert select_units(scores, "cutoff", 0.4, min_units=2)["b"].size == 2
    with pytest.raises(ValueError, match="unknown selection rule"):
        select_units(scores, "median")
    with pytest.raises(ValueError, match="needs a value from 0 to 1"):
        select_units(scores, "fraction", 1.5)
    with pytest.raises(ValueError, match="min_units"):
        select_units(scores, min_units=0)


def test_monitor_logs_mean_apoz_during_fit():
    model = conv_net()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 8, 8, 2)).astype("float32"), rng.integers(0, 3, 64)
    monitor = APoZMonitor(x[:32])
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    assert len(monitor.history) == 2
    assert history.history["apoz/conv"][-1] == pytest.approx(monitor.history[-1]["conv"].mean())


def test_mirrored_strategy_gives_the_same_apoz_and_trims(mirrored):
    x = np.random.default_rng(4).normal(size=(48, 8, 8, 2)).astype("float32")
    plain = conv_net()
    with mirrored.scope():
        distributed = conv_net()
        distributed.set_weights(plain.get_weights())
        scores = measure_apoz(distributed, x, batch_size=16)
        trimmed = kc.remove_units(distributed, select_units(scores, "fraction", 0.5))
    reference = measure_apoz(plain, x, batch_size=16)
    for name in reference:
        np.testing.assert_allclose(scores[name], reference[name])
    assert trimmed.get_layer("conv").filters == 3
    expected = kc.remove_units(plain, select_units(reference, "fraction", 0.5))
    np.testing.assert_allclose(trimmed.predict(x, verbose=0), expected.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_the_whole_relu_family_counts_including_mobilenet_relu6_behind_batchnorm():
    model = keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=4)
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    scores = measure_apoz(model, x)
    # Conv -> BatchNorm -> ReLU(6): the expansion convolutions are measured, the projections
    # (no ReLU after them) and the classifier are not.
    assert "Conv1" in scores and "block_1_expand" in scores
    assert "block_1_project" not in scores and "predictions" not in scores
    assert all(((s >= 0) & (s <= 1)).all() for s in scores.values())
    capped = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(3, "relu6", name="a"),
        keras.layers.Dense(3, name="b"), keras.layers.ReLU(6.0, threshold=0.1),
        keras.layers.Dense(2, name="out"),
    ])  # fmt: skip
    assert sorted(relu_points(capped)) == ["a", "b"]


def test_a_model_without_relu_says_which_layers_were_considered():
    layers = [keras.layers.Dense(3, name="fc"), keras.layers.LeakyReLU(),
              keras.layers.Dense(2, name="out")]  # fmt: skip
    model = keras.Sequential([keras.Input((4,)), *layers])
    with pytest.raises(
        ValueError, match=r"no unit .* reaches a ReLU.* fc \(Dense\), out \(Dense\)"
    ):
        measure_apoz(model, np.zeros((2, 4), "float32"))


def test_time_distributed_layers_have_relu_points():
    frames = keras.Input((3, 6, 6, 1))
    h = L.TimeDistributed(L.Conv2D(4, 3, activation="relu"), name="conv")(frames)
    h = L.TimeDistributed(L.Flatten(), name="flat")(h)
    h = L.TimeDistributed(L.Dense(5), name="fc")(h)
    h = L.TimeDistributed(L.ReLU(max_value=6.0), name="relu6")(h)
    model = keras.Model(frames, L.Dense(2, name="out")(L.GRU(3)(h)))
    assert list(relu_points(model)) == ["conv", "fc"]
    x = np.random.default_rng(0).normal(size=(8, 3, 6, 6, 1)).astype("float32")
    apoz = measure_apoz(model, x)
    outputs = keras.Model(frames, [model.get_layer("conv").output, model.get_layer("relu6").output])
    for name, out in zip(("conv", "fc"), outputs.predict(x, verbose=0)):
        np.testing.assert_allclose(apoz[name], (out == 0).reshape(-1, out.shape[-1]).mean(0))


def test_channels_first_convolutions_are_refused_by_name():
    # Zeros are counted per channel on the last axis; axis 1 would be read as positions.
    model = keras.Sequential([keras.Input((2, 6, 6)),
                              keras.layers.Conv2D(4, 3, data_format="channels_first",
                                                  activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])  # fmt: skip
    x = np.zeros((4, 2, 6, 6), "float32")
    with pytest.raises(ValueError, match="\\['conv'\\] have data_format='channels_first'"):
        measure_apoz(model, x)


def test_a_nested_backbone_is_measured_and_trimmed_by_its_layers_names():
    # Transfer learning: a backbone model called inside the classifier. Its ReLUs were
    # invisible ("no unit reaches a ReLU"); now measured as when measuring it alone.
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 2))
    h = L.Conv2D(6, 3, name="conv")(image)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.Conv2D(4, 3, activation="relu", name="conv2")(h)
    backbone = keras.Model(image, L.GlobalAveragePooling2D()(h), name="backbone")
    inputs = keras.Input((8, 8, 2))
    features = L.Dense(5, activation="relu", name="fc")(backbone(inputs, training=False))
    model = keras.Model(inputs, L.Dense(3, name="out")(features))
    x = np.random.default_rng(0).normal(size=(40, 8, 8, 2)).astype("float32")
    scores = measure_apoz(model, x, batch_size=16)
    alone = measure_apoz(backbone, x, batch_size=16)
    assert set(scores) == {"conv", "fc"} and set(alone) == {"conv"}  # conv2 feeds its output
    np.testing.assert_allclose(scores["conv"], alone["conv"])
    trimmed = kc.remove_units(model, select_units(scores, "fraction", 0.5))
    assert trimmed.get_layer("backbone").get_layer("conv").filters == 3
    assert trimmed.get_layer("fc").units == 3  # of 5: the 2 with the most zeros removed


def test_several_inputs_take_a_list_or_dict_of_arrays():
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = L.Dense(4, "relu", name="fc")(L.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, L.Dense(1, name="out")(h))
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(30, 3)), rng.normal(size=(30, 2))
    reference = keras.Model(model.inputs, model.get_layer("fc").output)
    want = (reference.predict({"a": xa, "b": xb}, verbose=0) == 0).mean(axis=0)
    as_dict = measure_apoz(model, {"a": xa, "b": xb}, batch_size=8)["fc"]
    np.testing.assert_allclose(as_dict, want)
    listed = keras.Model([a, b], model.outputs)
    np.testing.assert_allclose(measure_apoz(listed, [xa, xb], batch_size=8)["fc"], want)


def test_images_of_any_size_are_measured():
    model = keras.Sequential([
        keras.Input((None, None, 1)), L.Conv2D(3, 3, activation="relu", name="conv"),
        L.GlobalAveragePooling2D(), L.Dense(2, name="out"),
    ])  # fmt: skip
    x = np.random.default_rng(0).normal(size=(6, 9, 7, 1)).astype("float32")
    relu = keras.Model(model.inputs, model.get_layer("conv").output).predict(x, verbose=0)
    np.testing.assert_allclose(measure_apoz(model, x)["conv"], (relu == 0).mean(axis=(0, 1, 2)))
