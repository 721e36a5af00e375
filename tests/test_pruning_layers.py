"""Every supported layer type reaches its sparsity and keeps its zeros through fit."""

import keras
import numpy as np
import pytest

import keras_compress as kc

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

L = keras.layers


def _seq(input_shape, *layers):
    return keras.Sequential([keras.Input(input_shape), *layers, L.Flatten(), L.Dense(2)])


def _attention():
    # Query and value of different lengths: the wrapper must build the layer from both shapes.
    inputs = keras.Input((6, 8))
    value = L.Conv1D(8, 2, name="values")(inputs)
    x = L.MultiHeadAttention(2, 4, name="mha")(inputs, value)
    return keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))


CASES = {
    "multi_head_attention": _attention,
    "conv1d": lambda: _seq((10, 3), L.Conv1D(8, 3)),
    "conv2d": lambda: _seq((8, 8, 3), L.Conv2D(8, 3)),
    "conv3d": lambda: _seq((5, 5, 5, 2), L.Conv3D(4, 3)),
    "depthwise": lambda: _seq((8, 8, 4), L.DepthwiseConv2D(3, depth_multiplier=2)),
    "separable": lambda: _seq((8, 8, 4), L.SeparableConv2D(8, 3)),
    "embedding_lstm": lambda: keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            L.Embedding(20, 8, mask_zero=True),
            L.LSTM(8),
            L.Dense(2),
        ]  # fmt: skip
    ),
    "gru": lambda: _seq((6, 4), L.GRU(8)),
    "simple_rnn": lambda: _seq((6, 4), L.SimpleRNN(8)),
    "bidirectional": lambda: _seq((6, 4), L.Bidirectional(L.LSTM(8, return_sequences=True))),
    "time_distributed": lambda: _seq((6, 4), L.TimeDistributed(L.Dense(8))),
}

# Out of the quick subset (2-5 s each): it keeps the 1-D, 2-D and depthwise convolutions
# (test_embedding_mask_reaches_the_lstm_through_the_wrapper prunes an LSTM there).
SLOW_CASES = {"multi_head_attention", "bidirectional", "gru", "simple_rnn", "time_distributed",
              "separable", "conv3d", "embedding_lstm"}  # fmt: skip


def _data(model):
    shape = model.inputs[0].shape[1:]
    rng = np.random.default_rng(0)
    if model.inputs[0].dtype == "int32":
        x = rng.integers(0, 20, size=(64, *shape)).astype("int32")
        x[:, -2:] = 0  # padding, masked by mask_zero
    else:
        x = rng.normal(size=(64, *shape)).astype("float32")
    return x, rng.integers(0, 2, size=64)


@pytest.mark.parametrize(
    "case",
    [c if c not in SLOW_CASES else pytest.param(c, marks=pytest.mark.slow)
     for c in sorted(CASES)],
)  # fmt: skip
def test_every_weight_matrix_reaches_its_sparsity(case):
    model = kc.make_prunable(CASES[case]())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(model)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,
              callbacks=[kc.MagnitudePruning(0.6, end_step=4, frequency=2)])  # fmt: skip
    report = kc.sparsity(model)
    names = [n for n in report if n != "total"]
    if case in ("bidirectional", "embedding_lstm", "gru", "simple_rnn"):
        assert any(n.endswith("recurrent_kernel") for n in names)
    if case == "bidirectional":
        assert any("forward" in n for n in names) and any("backward" in n for n in names)
    for wrapper in kc.pruning_wrappers(model):
        for path, var, mask in zip(
            wrapper.weight_paths, wrapper.compressed_variables, wrapper.masks
        ):
            w, m = var.numpy(), mask.numpy()
            assert (~m).sum() == round(0.6 * m.size), path
            assert np.all(w[~m] == 0) and np.all(w[m] != 0), path
    stripped = kc.strip(model)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert kc.sparsity(stripped)["total"] == pytest.approx(report["total"])


def test_embedding_mask_reaches_the_lstm_through_the_wrapper():
    model = kc.make_prunable(CASES["embedding_lstm"]())
    x, _ = _data(model)
    plain = kc.strip(model)
    # Masked padding must not change the output: compare with and without trailing padding.
    np.testing.assert_allclose(
        model.predict(x[:, :4], verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_a_mask_passed_explicitly_reaches_the_wrapped_lstm():
    tokens, keep = keras.Input((6,), dtype="int32"), keras.Input((6,), dtype="bool")
    h = L.LSTM(4)(L.Embedding(20, 8)(tokens), mask=keep)
    model = keras.Model([tokens, keep], L.Dense(2)(h))
    x = np.random.default_rng(0).integers(1, 20, size=(8, 6)).astype("int32")
    mask = np.arange(6) < np.arange(3, 11)[:, None] % 6 + 1  # 1 to 6 steps kept per row
    expected = keras.ops.convert_to_numpy(model([x, mask]))
    assert not np.allclose(expected, keras.ops.convert_to_numpy(model([x, np.ones_like(mask)])))
    pruned = kc.make_prunable(model)  # nothing pruned yet: the same function
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pruned([x, mask])), expected, atol=1e-6)
    noise = np.where(mask, x, 19 - x)  # other tokens where the mask is False
    for compressed in (pruned, kc.share_weights(model, bits=3)):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(compressed([noise, mask])),
            keras.ops.convert_to_numpy(compressed([x, mask])),
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_functional_model_with_a_nested_sequential_and_tf_data(tf):

    block = keras.Sequential([keras.Input((8,)), L.Dense(16, activation="relu", name="inner")])
    inp = keras.Input((8,))
    h = block(inp)
    merged = L.Add()([L.Dense(8, name="a")(h), L.Dense(8, name="b")(h)])
    model = keras.Model(inp, L.Dense(2, name="out")(merged))
    wrapped = kc.make_prunable(model)
    assert [w.layer.name for w in kc.pruning_wrappers(wrapped)] == ["inner", "a", "b", "out"]
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((256, 8)).astype("float32"), rng.integers(0, 2, 256)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    wrapped.fit(data, epochs=3, verbose=0, callbacks=[kc.MagnitudePruning(0.75, end_step=16)])
    assert kc.sparsity(wrapped)["total"] == pytest.approx(0.75, abs=1 / 200)
    plain = kc.strip(wrapped)
    assert not any(isinstance(layer, kc.PruningWrapper) for layer in plain.layers)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-6
    )
    shared = kc.share_weights(wrapped, bits={"inner": 3, "a": 2, "b": 2})
    np.testing.assert_allclose(
        kc.strip(shared).predict(x, verbose=0), shared.predict(x, verbose=0), atol=1e-6
    )
    assert kc.weight_rows(shared)[0]["distinct"] <= 8


#: Every entry point that rebuilds a model (layer "fc" of it loses unit 0 in remove_units).
REBUILDS = pytest.mark.parametrize(
    "call",
    [kc.make_prunable, lambda m: kc.share_weights(m, bits=3), kc.fold_batchnorm,
     lambda m: kc.remove_units(m, {"fc": [0]})],
    ids=["make_prunable", "share_weights", "fold_batchnorm", "remove_units"],
)  # fmt: skip


@REBUILDS
def test_an_unbuilt_model_is_named_as_unbuilt(call):
    # make_prunable said "no layer with weights to prune": an unbuilt layer has no weights yet.
    model = keras.Sequential([keras.layers.Dense(8, name="fc"), keras.layers.Dense(2)], name="net")
    with pytest.raises(ValueError, match="model 'net' is not built; call it on data"):
        call(model)


@REBUILDS
def test_an_adapted_normalization_keeps_its_statistics_through_every_rebuild(call):
    # The rebuilt model's Normalization got the adapted mean and variance as weights but
    # divided by the fresh layer's zeros and ones (Keras rebuilds them only when loading).
    rng = np.random.default_rng(0)
    norm = L.Normalization()
    norm.adapt(rng.normal(5.0, 3.0, size=(64, 4)).astype("float32"))
    fc = L.Dense(8, name="fc")
    model = keras.Sequential([keras.Input((4,)), L.Rescaling(0.5), norm, fc, L.Dense(2)])
    fc.kernel.assign(np.where(np.arange(8) == 0, 0.0, keras.ops.convert_to_numpy(fc.kernel)))
    x = rng.normal(5.0, 3.0, size=(16, 4)).astype("float32")
    got = kc.strip(call(model))
    assert "normalization" in [layer.name for layer in got.layers]
    if call is kc.make_prunable:  # unchanged weights: the same outputs
        np.testing.assert_allclose(
            got.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
        )
    normalized = keras.Model(got.inputs, got.get_layer("normalization").output)
    assert abs(float(np.mean(normalized.predict(x, verbose=0)))) < 1.0  # ~0, not ~2.5


def test_an_adapted_lookup_keeps_its_vocabulary(tf):
    # An adapted IntegerLookup's vocabulary is an asset, in no weight: rebuilt models lost it
    # ("Table not initialized" at the first call).
    rng = np.random.default_rng(0)
    lookup = L.IntegerLookup(output_mode="multi_hot")
    lookup.adapt(rng.integers(0, 20, (64, 4)))
    model = keras.Sequential([keras.Input((4,), dtype="int64"), lookup, L.Dense(3, name="fc")])
    x = rng.integers(0, 25, (16, 4))
    pruned = kc.make_prunable(model)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert pruned.layers[0].get_vocabulary() == lookup.get_vocabulary()


def _doubled_relu(t):  # a named function, registered nowhere
    return keras.ops.relu(t) * 2.0


class _NoConfig(L.Layer):
    def __init__(self, scale):  # no **kwargs and no get_config: cannot be rebuilt
        super().__init__()
        self.scale = scale

    def call(self, x):
        return x * self.scale


def test_lambda_layers_are_copied_and_a_layer_without_config_is_named():
    # Rebuilding a Lambda from its config failed: Keras refuses a lambda's bytecode in safe
    # mode and cannot find an unregistered def by name.
    inputs = keras.Input((6,))
    h = L.Lambda(lambda t: t - 1.0)(L.Dense(8, name="fc")(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Lambda(_doubled_relu)(h)))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    pruned = kc.make_prunable(model)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0))
    inputs = keras.Input((6,))
    broken = keras.Model(inputs, L.Dense(2)(_NoConfig(2.0)(L.Dense(8)(inputs))))
    rebuilt = r"layer '__no_config' \(_NoConfig\) cannot be rebuilt.*unexpected keyword"
    with pytest.raises(TypeError, match=rebuilt):
        kc.make_prunable(broken)


class _Block(keras.Model):  # a subclassed model used as a layer
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = L.Dense(8)

    def call(self, x):
        return self.fc(x)


@REBUILDS
def test_a_nested_subclassed_model_is_named(call):
    # Keras's clone_model said "Arguments `clone_function` and `input_tensors` are only
    # supported for Sequential models or Functional models", naming neither model.
    inputs = keras.Input((6,))
    hidden = _Block(name="block")(L.Dense(8, name="fc")(inputs))
    model = keras.Model(inputs, L.Dense(2)(hidden), name="net")
    with pytest.raises(TypeError, match="model 'net' holds 'block', a subclassed keras.Model"):
        call(model)


def _lora_model():
    layers = [L.Embedding(20, 8, name="emb"), L.Conv1D(6, 3, name="conv"),
              L.BatchNormalization(name="bn"), L.Flatten(), L.Dense(4, name="fc")]  # fmt: skip
    model = keras.Sequential([keras.Input((6,), dtype="int32"), *layers])
    rng = np.random.default_rng(0)
    for name in ("emb", "conv", "fc"):
        layer = model.get_layer(name)
        layer.enable_lora(2)  # freezes the kernel; lora_kernel_b starts at zero
        for variable in layer.weights:
            if "lora" in variable.path:
                variable.assign(rng.normal(0.0, 0.5, variable.shape))
    return model


def test_lora_layers_are_compressed_as_the_kernel_they_compute_with():
    # A LoRA layer's kernel is frozen, so make_prunable and share_weights skipped it silently
    # (or, all layers LoRA, found "no layer with weights to prune").
    model = _lora_model()
    x = np.random.default_rng(1).integers(0, 20, (32, 6))
    y = np.random.default_rng(2).integers(0, 4, 32)
    merged = kc.core.merge_lora(model)
    assert not any("lora" in w.path for w in merged.weights)
    np.testing.assert_allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert model.get_layer("fc").lora_enabled  # the input model is not changed
    pruned = kc.make_prunable(model)
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[kc.MagnitudePruning(0.5, "constant")])
    plain = kc.strip(pruned)
    for name, attribute in (("emb", "embeddings"), ("conv", "kernel"), ("fc", "kernel")):
        used = keras.ops.convert_to_numpy(getattr(plain.get_layer(name), attribute))
        assert np.mean(used == 0) >= 0.49, name
    shared = kc.strip(kc.share_weights(model, bits=2))
    for name, attribute in (("emb", "embeddings"), ("conv", "kernel"), ("fc", "kernel")):
        used = keras.ops.convert_to_numpy(getattr(shared.get_layer(name), attribute))
        assert np.unique(used).size <= 4, name
    with pytest.raises(ValueError, match="layers emb, conv, fc have LoRA enabled.*merge_lora"):
        kc.rate_regularize(model, 0.01)
    with pytest.raises(ValueError, match="layers fc have LoRA enabled.*OBS.*merge_lora"):
        kc.pruning.saliency.obs_prune_model(model, x, {"fc": 0.5})


def test_lora_layers_are_folded_and_trimmed_as_the_kernel_they_compute_with():
    # fold_batchnorm scaled the (4-D) LoRA factor as a kernel, remove_units sliced it as a
    # bias: "operands could not be broadcast", "index out of bounds".
    model = _lora_model()
    x = np.random.default_rng(1).integers(0, 20, (16, 6))
    bn = model.get_layer("bn")
    bn.set_weights([np.linspace(0.5, 1.5, 6), np.linspace(-0.3, 0.3, 6), np.linspace(0.1, 0.6, 6),
                    np.linspace(0.5, 2.0, 6)])  # fmt: skip
    folded = kc.fold_batchnorm(model)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    trimmed = kc.remove_units(model, {"conv": [0, 4]})
    assert trimmed.get_layer("conv").filters == 4
    zeroed = kc.core.merge_lora(model)
    kernel, bias = zeroed.get_layer("conv").get_weights()
    kernel[..., [0, 4]], bias[[0, 4]] = 0.0, 0.0
    zeroed.get_layer("conv").set_weights([kernel, bias])
    gamma, beta, mean, variance = zeroed.get_layer("bn").get_weights()
    beta[[0, 4]], mean[[0, 4]] = 0.0, 0.0  # the removed channels' outputs exactly zero
    zeroed.get_layer("bn").set_weights([gamma, beta, mean, variance])
    np.testing.assert_allclose(
        trimmed.predict(x, verbose=0), zeroed.predict(x, verbose=0), atol=1e-5
    )


def test_a_model_quantized_by_keras_is_refused_with_the_way_out():
    # make_prunable said only "has no layer with weights to prune".
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="fc"), L.Dense(2, name="out")])
    model.quantize("int8")
    way_out = "layers fc, out were quantized by Keras.*quantization='int8'"
    with pytest.raises(ValueError, match=f"no layer with weights to prune; {way_out}"):
        kc.make_prunable(model)
    with pytest.raises(ValueError, match=f"selected by bits=4; {way_out}"):
        kc.share_weights(model, bits=4)
