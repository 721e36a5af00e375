"""Structured pruning (blocks, N:M, channels), channel surgery and sparse-encoded export."""

import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc
from keras_compress.pruning.structure import n_of_m_mask, parse_structure

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _pruned(model, x, y, epochs=2, **kwargs):
    wrapped = kc.make_prunable(model)
    wrapped.compile("adam", LOSS)
    callback = kc.MagnitudePruning(end_step=8, frequency=2, **kwargs)
    wrapped.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[callback])
    return wrapped, callback


def _runs(kernel, size):
    """Kernel as (positions, runs of `size` consecutive inputs, size, outputs); whole runs only."""
    k = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
    whole = k.shape[1] // size * size
    return k[:, :whole].reshape(k.shape[0], whole // size, size, k.shape[-1])


@pytest.mark.parametrize(
    "spec, inputs", [pytest.param("1x4", 4, marks=pytest.mark.slow), ("1x16", 16)]
)
def test_blocks_of_consecutive_inputs_are_pruned_whole(toy_data, spec, inputs):
    x, y = toy_data
    model, _ = _pruned(mlp(), x, y, target=0.75, structure=spec)
    for wrapper in kc.pruning_wrappers(model):
        kernel = np.asarray(wrapper.compressed_variables[0].numpy())
        nonzero = (_runs(kernel, inputs) != 0).sum(axis=2)
        assert np.all((nonzero == 0) | (nonzero == inputs)), wrapper.name
        groups = -(-kernel.shape[0] // inputs) * kernel.shape[1]
        pruned_groups = groups - len({(i // inputs, o) for i, o in zip(*np.nonzero(kernel))})
        assert pruned_groups == round(0.75 * groups), wrapper.name


def test_two_of_four_keeps_at_most_two_in_every_run_and_never_revives(toy_data):
    x, y = toy_data
    model, callback = _pruned(mlp(), x, y, structure="2:4")
    assert callback.target == 0.5
    for wrapper in kc.pruning_wrappers(model):
        kernel = np.asarray(wrapper.compressed_variables[0].numpy())
        assert (_runs(kernel, 4) != 0).sum(axis=2).max() <= 2
        assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.05)
    w = np.array([[0.0], [5.0], [4.0], [3.0]])
    mask = np.array([[False], [True], [True], [True]])
    assert n_of_m_mask(w, mask, 2, 4, 0.5).ravel().tolist() == [False, True, True, False]


def _small_cnn():
    return keras.Sequential([
        keras.Input((12, 12, 3)), keras.layers.Conv2D(16, 3, activation="relu", name="c1"),
        keras.layers.Conv2D(32, 3, activation="relu", name="c2"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name="fc")])  # fmt: skip


@pytest.mark.parametrize("structure", ["kernels", pytest.param(None, marks=pytest.mark.slow)])
def test_kernel_level_pruning_keeps_or_drops_whole_spatial_kernels(structure):
    x = np.random.default_rng(0).normal(size=(128, 12, 12, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, 128)
    model, _ = _pruned(_small_cnn(), x, y, target=0.75, structure=structure)
    kernel = np.asarray(model.get_layer("pruned_c2").compressed_variables[0].numpy())
    alive = (kernel != 0).sum(axis=(0, 1))  # (3, 3, 16, 32): per (input, output) pair
    if structure:
        assert np.all((alive == 0) | (alive == 9))
        assert (alive == 0).mean() == pytest.approx(0.75, abs=1 / alive.size)
    else:
        assert 0 < ((alive > 0) & (alive < 9)).mean()
    assert (kernel == 0).mean() == pytest.approx(0.75, abs=0.01)


def test_whole_kernels_code_smaller_than_scattered_zeros(tf):
    rng = np.random.default_rng(0)
    # A (outputs, h, w, inputs) kernel as the .tflite stores it, 16 shared values, 75% zeros:
    # pruned in whole 3x3 kernels, or weight by weight.
    values = rng.choice(np.linspace(-1, 1, 16).astype("<f4"), size=(32, 3, 3, 16))
    kernels = (rng.permutation(32 * 16) < 128).reshape(32, 1, 1, 16)
    weights = (rng.permutation(values.size) < 9 * 128).reshape(values.shape)
    coded = {}
    for name, keep in [("kernels", np.broadcast_to(kernels, values.shape)), ("weights", weights)]:
        data = np.where(keep, values, np.float32(0)).tobytes()
        encoding, payload = kc.deploy.sidecar.encode_tensor(data, 4, shape=values.shape,
                                                            arithmetic=True)  # fmt: skip
        assert encoding == kc.deploy.sidecar.ARITHMETIC_CODED
        coded[name] = len(payload)
    # Values cost the same; the positions: about one decision per kernel instead of per weight.
    assert coded["kernels"] < 0.8 * coded["weights"]


def test_structure_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown pruning structure 'diagonal'"):
        kc.MagnitudePruning(0.5, structure="diagonal")
    with pytest.raises(ValueError, match="0 < N < M"):
        parse_structure("4:4")
    with pytest.raises(ValueError, match="means sparsity 0.5, but the target is 0.8"):
        kc.MagnitudePruning(0.8, structure="2:4")
    with pytest.raises(ValueError, match="not with 'std'"):
        kc.MagnitudePruning(1.0, criterion="std", structure="1x4")
    with pytest.raises(ValueError, match="rank >= 2"):
        parse_structure("1x4").group_ids((7,))
    # Channels of an LSTM's kernel are gates, not units: refused, naming the weight.
    rnn = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm"),
                            keras.layers.Dense(2, name="out")])  # fmt: skip
    model = kc.make_prunable(rnn, layers=["lstm"])
    model.compile("adam", "mse")
    with pytest.raises(
        ValueError, match="cannot prune the recurrent layer of lstm/lstm_cell/kernel"
    ):
        model.fit(np.zeros((8, 5, 3)), np.zeros((8, 2)), verbose=0,
                  callbacks=[kc.MagnitudePruning(0.5, structure="channels")])  # fmt: skip


@pytest.mark.slow
def test_structure_survives_save_load_and_config(toy_data, tmp_path):
    x, y = toy_data
    model, callback = _pruned(mlp(), x, y, epochs=1, target=0.5, structure="1x4")
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    again = kc.MagnitudePruning.from_config(callback.get_config())
    assert again.structure == parse_structure("1x4")
    restored.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[again])
    for before, after in zip(kc.pruning_wrappers(model), kc.pruning_wrappers(restored)):
        old, new = np.asarray(before.masks[0].numpy()), np.asarray(after.masks[0].numpy())
        assert not np.any(new & ~old)  # nothing revived
        nonzero = _runs(new, 4).sum(axis=2)
        assert np.all((nonzero == 0) | (nonzero == 4))


def test_channel_pruning_then_surgery_gives_the_same_outputs_and_fewer_units(toy_data):
    x, y = toy_data
    # No biases: a pruned unit's output is then exactly zero, so surgery changes nothing.
    model = keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(32, activation="relu", use_bias=False, name="fc1"),
        keras.layers.Dense(16, activation="relu", use_bias=False, name="fc2"),
        keras.layers.Dense(2, name="out"),
    ])  # fmt: skip
    wrapped, _ = _pruned(model, x, y, target=0.5, structure="channels_l2",
                         layer_targets={"out": 0.0})  # fmt: skip
    small = kc.remove_pruned_channels(wrapped)
    assert [layer.units for layer in small.layers] == [16, 8, 2]
    np.testing.assert_allclose(small.predict(x, verbose=0),
                               kc.strip(wrapped).predict(x, verbose=0), atol=1e-5)  # fmt: skip


def _conv_head(pooled_output: bool, head: str = "dense") -> keras.Model:
    """Two convolutions, pooled; a classifier on top unless the pooling is the output.

    ``head``: "dense", "softmax" (a Dense, then a Softmax layer) or "conv" (MobileNetV3's:
    a 1x1 convolution on the pooled map, Flatten, then the activation).
    """
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(8, 3, activation="relu", use_bias=False, name="c1")(inputs)
    h = keras.layers.Conv2D(6, 3, use_bias=False, name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(keepdims=head == "conv", name="pool")(h)
    if pooled_output:
        return keras.Model(inputs, h)
    if head == "conv":
        h = keras.layers.Flatten()(keras.layers.Conv2D(4, 1, name="out")(h))
        return keras.Model(inputs, keras.layers.Activation("linear")(h))
    h = keras.layers.Dense(4, name="out")(h)
    return keras.Model(inputs, keras.layers.Softmax()(h) * 10.0 if head == "softmax" else h)


@pytest.mark.parametrize("head", ["dense", "softmax", "conv"])
def test_channel_pruning_leaves_the_units_of_output_layers_whole(head):
    # Zeroing a classifier's output unit would silence its class: "out" is not pruned, also
    # behind a Softmax layer (and a keras.ops call) or behind Flatten and an activation.
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 6, 6, 2), dtype=np.float32), rng.integers(0, 4, 64)
    with pytest.warns(UserWarning, match=r"leaves \['out/kernel'\] unpruned"):
        wrapped, _ = _pruned(
            _conv_head(False, head), x, y, epochs=4, target=0.5, structure="channels"
        )
    kernels = {w.layer.name: np.asarray(keras.ops.convert_to_numpy(w.layer.kernel))
               for w in kc.pruning_wrappers(wrapped)}  # fmt: skip
    zero_channels = {n: int((np.abs(k).reshape(-1, k.shape[-1]).sum(0) == 0).sum())
                     for n, k in kernels.items()}  # fmt: skip
    assert zero_channels == {"c1": 4, "c2": 3, "out": 0}
    small = kc.remove_pruned_channels(wrapped)
    assert [small.get_layer(n).filters for n in ("c1", "c2")] == [4, 3]
    assert keras.ops.convert_to_numpy(small.get_layer("out").kernel).shape[-1] == 4
    # Asked for explicitly, it is an error naming the layer.
    with pytest.raises(ValueError, match=r"would zero units of \['out'\]"):
        _pruned(_conv_head(False), x, y, target=0.5, structure="channels",
                layer_targets={"out": 0.5})  # fmt: skip


def test_channel_pruning_leaves_layers_no_surgery_trims_with_a_warning_first():
    # Grouped and channels_first convolutions were channel-pruned (accuracy lost) and only
    # remove_pruned_channels, after training, said their zero channels had to stay.
    layers = keras.layers
    inputs = keras.Input((6, 6, 4))
    h = layers.Conv2D(8, 3, groups=2, padding="same", name="grouped")(inputs)
    h = layers.Permute((3, 1, 2))(h)
    h = layers.Conv2D(6, 3, data_format="channels_first", name="first")(h)
    h = layers.GlobalAveragePooling2D(data_format="channels_first")(h)
    h = layers.Dense(8, activation="relu", name="fc")(h)
    model = keras.Model(inputs, layers.Dense(3, name="out")(h))
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 6, 6, 4), dtype=np.float32), rng.integers(0, 3, 64)
    expected = r"grouped/kernel \(a grouped convolution\), first/kernel \(channels_first\)"
    with pytest.warns(UserWarning, match=expected):
        wrapped, _ = _pruned(model, x, y, target=0.5, structure="channels")
    sparsity = kc.sparsity(wrapped)
    assert sparsity["grouped/kernel"] == sparsity["first/kernel"] == 0.0
    assert sparsity["fc/kernel"] == pytest.approx(0.5)
    wrapped, _ = _pruned(model, x, y, target=0.5, structure="channels",
                         layer_targets={"grouped": 0.5})  # asked for: pruned  # fmt: skip
    assert kc.sparsity(wrapped)["grouped/kernel"] == pytest.approx(0.5)


def test_remove_pruned_channels_keeps_channels_that_flow_into_an_output():
    # A feature extractor: c2's channels, pooled, are the model's output.
    model = _conv_head(True)
    for name, dead in (("c1", [1, 5]), ("c2", [0])):
        kernel = model.get_layer(name).get_weights()[0]
        kernel[..., dead] = 0.0
        model.get_layer(name).set_weights([kernel])
    with pytest.warns(UserWarning, match=r"keeps the zero channels of c2 \(1\)"):
        small = kc.remove_pruned_channels(model)
    assert (small.get_layer("c1").filters, small.get_layer("c2").filters) == (6, 6)
    x = np.random.default_rng(0).random((4, 6, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("nested", [False, True], ids=["top", "nested_backbone"])
def test_a_residual_chain_into_an_output_keeps_the_channels_all_its_branches_pruned(nested):
    # Each branch's removal passed alone (the Add keeps a channel some branch keeps); both
    # together changed the output, and remove_pruned_channels raised instead of keeping them.
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(a)
    c = keras.layers.Conv2D(5, 1, name="c")(inputs)  # not in the chain: its channel goes
    merged = keras.layers.Concatenate()([keras.layers.Add()([a, b]), c])
    features = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(merged), name="features")
    model = features
    if nested:
        model = keras.Sequential([keras.Input((6, 6, 2)), features, keras.layers.Dense(3)])
    for name in ("a", "b", "c"):
        kernel, bias = features.get_layer(name).get_weights()
        kernel[..., 1], bias[1] = 0.0, 0.0
        features.get_layer(name).set_weights([kernel, bias])
    with pytest.warns(UserWarning, match=r"zero channels of a \(1\), b \(1\), c \(1\)"):
        small = kc.remove_pruned_channels(model)
    kept = small.get_layer("features") if nested else small
    assert [kept.get_layer(n).filters for n in "abc"] == [4, 4, 5]  # c feeds the output too
    x = np.random.default_rng(0).random((4, 6, 6, 2), dtype=np.float32)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "kind",
    ["dense", "conv_then_batchnorm", "one_pixel_map", "bidirectional_gru", "separable",
     "transposed"],
)  # fmt: skip
def test_removed_channels_leave_their_constant_in_the_next_bias(kind):
    # A pruned channel still output a constant (its bias through the activation, or the
    # BatchNorm shift): the smaller model dropped it and was off by 0.64 and 1.26 here.
    rng = np.random.default_rng(0)
    layers = keras.layers
    if kind == "dense":
        inputs = keras.Input((12,))
        h = layers.Dense(16, activation="relu", name="fc1")(inputs)
        h = layers.Dense(8, activation="relu", name="fc2")(h)
        dead, shape = {"fc1": [1, 5, 7], "fc2": [2]}, (32, 12)
    elif kind == "one_pixel_map":  # a 3x3 "same" convolution sees one tap of 9 (late layers)
        inputs = keras.Input((4, 4, 3))
        h = layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", name="c1")(inputs)
        h = layers.Flatten()(layers.Conv2D(5, 3, padding="same", name="c2")(h))
        dead, shape = {"c1": [1, 2]}, (6, 4, 4, 3)
    elif kind == "transposed":  # a decoder's upsampling: exact on average (pooled after it)
        inputs = keras.Input((6, 6, 3))
        h = layers.Conv2D(6, 3, activation="relu", name="c1")(inputs)
        h = layers.Conv2DTranspose(4, 3, strides=2, name="up")(h)
        h = layers.GlobalAveragePooling2D()(h)
        dead, shape = {"c1": [1, 4]}, (4, 6, 6, 3)
    elif kind == "separable":  # depthwise then pointwise, Xception's reader
        inputs = keras.Input((8, 8, 3))
        h = layers.Conv2D(6, 3, activation="relu", name="c1")(inputs)
        h = layers.Flatten()(layers.SeparableConv2D(4, 3, depth_multiplier=2, name="sep")(h))
        dead, shape = {"c1": [1, 4]}, (4, 8, 8, 3)
    elif kind == "bidirectional_gru":  # each step's input projection, in both directions
        inputs = keras.Input((10, 3))
        h = layers.Conv1D(6, 3, activation="relu", name="c1")(inputs)
        h = layers.Bidirectional(layers.GRU(4), name="gru")(h)
        dead, shape = {"c1": [0, 5]}, (4, 10, 3)
    else:  # a bias-free convolution before its BatchNorm: the mean moves instead
        inputs = keras.Input((10, 10, 3))
        h = layers.Conv2D(8, 3, name="c1")(inputs)
        h = layers.ReLU()(layers.BatchNormalization(name="bn1")(h))
        h = layers.Conv2D(6, 3, use_bias=False, name="c2")(h)
        h = layers.Flatten()(layers.BatchNormalization(name="bn2")(h))
        dead, shape = {"c1": [0, 3]}, (8, 10, 10, 3)
    model = keras.Model(inputs, layers.Dense(3, name="out")(h))
    for layer in model.layers:
        layer.set_weights([w + rng.uniform(0.5, 1.0, w.shape) if w.ndim == 1 else w
                           for w in layer.get_weights()])  # fmt: skip
    for name, channels in dead.items():
        weights = model.get_layer(name).get_weights()
        weights[0][..., channels] = 0.0
        model.get_layer(name).set_weights(weights)
    small = kc.remove_pruned_channels(model)
    assert all(
        small.get_layer(n).get_weights()[0].shape[-1]
        < model.get_layer(n).get_weights()[0].shape[-1]
        for n in dead
    )
    x = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_remove_pruned_channels_keeps_what_no_surgery_can_remove_and_removes_the_rest():
    # A ConvNeXt-like block: a depthwise convolution written as a grouped Conv2D, then a
    # LayerNormalization; neither can lose channels. The MLP expansion after it can.
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", groups=4, name="dw")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Dense(8, activation="gelu", name="expand")(x)
    x = keras.layers.Dense(4, name="project")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(x)))
    for name, dead in (("dw", [1]), ("expand", [2, 5])):
        weights = model.get_layer(name).get_weights()
        weights[0][..., dead] = 0.0
        weights[1][dead] = 0.0
        model.get_layer(name).set_weights(weights)
    with pytest.warns(
        UserWarning, match=r"no surgery can remove.*dw \(1\): layer 'dw' \(Conv2D\) is a grouped"
    ):
        small = kc.remove_pruned_channels(model)
    assert (small.get_layer("dw").filters, small.get_layer("expand").units) == (4, 6)
    x = np.random.default_rng(0).random((4, 6, 6, 4), dtype=np.float32)
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.slow  # 2 s: out of the quick subset
@pytest.mark.parametrize("time_distributed", [False, True], ids=["plain", "time_distributed"])
def test_channel_pruning_of_a_transposed_convolution_prunes_its_filters(time_distributed):
    # Its kernel is (h, w, filters, inputs): the filters, not the inputs, must go; also when
    # a TimeDistributed applies it to each frame.
    frames = (3,) if time_distributed else ()
    x = np.random.default_rng(0).random((32, *frames, 5, 5, 4), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 2, 32)
    up = keras.layers.Conv2DTranspose(8, 3, use_bias=False, name="up" if frames else "t")
    layers = [keras.layers.TimeDistributed(up, name="t") if time_distributed else up,
              keras.layers.Flatten(), keras.layers.Dense(2, name="out")]  # fmt: skip
    model = keras.Sequential([keras.Input(x.shape[1:]), *layers])
    wrapped = kc.make_prunable(model, layers=["t"])
    wrapped.compile("adam", LOSS)
    callback = kc.MagnitudePruning(0.5, end_step=4, frequency=2, structure="channels")
    wrapped.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    kernel = np.asarray(kc.strip(wrapped).get_layer("t").get_weights()[0])
    dead = [f for f in range(8) if not kernel[:, :, f, :].any()]
    assert len(dead) == 4 and all(kernel[..., i].any() for i in range(4))
    small = kc.remove_pruned_channels(wrapped)
    assert kc.core.graph.step_layer(small.get_layer("t")).filters == 4
    np.testing.assert_allclose(small.predict(x, verbose=0),
                               kc.strip(wrapped).predict(x, verbose=0), atol=1e-5)  # fmt: skip


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_channel_pruning_of_a_cnn_removes_filters_by_surgery():
    x = np.random.default_rng(0).random((160, 28, 28, 1), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, 160)
    wrapped, _ = _pruned(kc.examples.lenet5(), x, y, target=0.5, structure="channels",
                         layer_targets={"fc2": 0.0})  # fmt: skip
    small = kc.remove_pruned_channels(wrapped)
    widths = [getattr(layer, "filters", getattr(layer, "units", None)) for layer in small.layers]
    assert widths == [10, None, 25, None, None, 250, 10]
    assert small.count_params() < 0.3 * wrapped.count_params()


@pytest.mark.slow  # three conversions and a verified export: 13 s
def test_sparse_export_stores_blocks_for_litert_sparse_kernels(toy_data, tmp_path, tf):
    from keras_compress.deploy.converter import convert

    x, y = toy_data
    model, _ = _pruned(mlp(), x, y, target=0.75, structure="1x4")
    plain = kc.strip(model)
    dense, sparse = convert(plain), convert(plain, sparse=True)
    kernels = kc.pruning.sparse_kernels(sparse)
    assert [k.storage for k in kernels] == ["block 1x4"] * 3
    assert all(k.sparse_kernel for k in kernels)
    assert not any(k.sparse_kernel for k in kc.pruning.sparse_kernels(dense))
    assert len(sparse) < len(dense)
    from keras_compress.deploy.litert import run

    np.testing.assert_allclose(run(sparse, [x[:8]])[0], run(dense, [x[:8]])[0], atol=1e-5)
    report = kc.export(plain, tmp_path / "mlp", sparse=True)  # checks the byte-exact round trip
    assert (tmp_path / "mlp.tflite").read_bytes() == sparse
    assert report.totals["tflite_bytes"] == len(sparse)


def test_latency_plan_prunes_only_what_litert_speeds_up():
    plan = {p.layer: p for p in kc.pruning.latency_plan(kc.examples.lenet5(), "1x4")}
    assert [name for name, p in plan.items() if p.prune] == ["fc1", "fc2"]
    assert "no sparse kernel" in plan["conv1"].reason
    assert "output layer" in plan["fc2"].reason
    targets = kc.pruning.latency_targets(list(plan.values()), 0.9)
    assert targets == {"fc1": 0.9, "fc2": 0.5}
    channels = kc.pruning.latency_plan(kc.examples.lenet5(), "channels")
    assert [p.layer for p in channels if p.prune] == ["conv1", "conv2", "fc1"]
    unstructured = kc.pruning.latency_plan(kc.examples.lenet_300_100(), "2:4")
    assert not any(p.prune for p in unstructured)
    assert "1x4 or 1x16" in unstructured[0].reason
    # A classifier nested in the model is still its output layer.
    nested = keras.Sequential([keras.Input((28, 28, 1)), kc.examples.lenet5()])
    plan = {p.layer: p for p in kc.pruning.latency_plan(nested, "1x4")}
    assert "output layer" in plan["fc2"].reason and plan["fc2"].max_level == 0.5
