"""Export: .tflite + skeleton + sidecar, decoded byte for byte, run in the TFLite interpreter."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import mlp

import keras_compress as kc
from keras_compress.coding.entropy import entropy_bytes
from keras_compress.deploy import SUFFIXES

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture
def compressed(toy_data):
    x, y = toy_data
    model = kc.make_prunable(mlp())
    model.compile("adam", LOSS)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[kc.MagnitudePruning(0.8, end_step=10)])
    shared = kc.share_weights(model, bits={"fc.*": 3})
    shared.compile(keras.optimizers.Adam(1e-3), LOSS)
    shared.fit(x, y, epochs=1, verbose=0)
    return shared


def _run(tflite_bytes, x):
    return kc.deploy.litert.run(tflite_bytes, x)[0]


def test_export_decodes_byte_for_byte_and_runs(compressed, toy_data, tmp_path):
    x, _ = toy_data
    report = kc.export(compressed, tmp_path / "out" / "mlp")
    files = {s: (tmp_path / "out" / f"mlp{s}") for s in SUFFIXES}
    assert all(p.exists() for p in files.values())
    tflite = files[".tflite"].read_bytes()
    decoded = kc.deploy.sidecar.join(files[".skeleton"].read_bytes(), files[".kcz"].read_bytes())
    assert decoded == tflite
    t = report.totals
    assert t["deployable_bytes"] == files[".skeleton"].stat().st_size + files[".kcz"].stat().st_size
    kernels = [r for r in report.tensors if r["stored"] == "sidecar"]
    assert kernels and all(r["distinct"] <= 8 for r in kernels)
    before = sum(r["bytes_before"] for r in kernels)
    after = sum(r["bytes_after"] for r in kernels)
    assert after * 5 < before, (before, after)  # 80% pruned, 3-bit shared kernels
    assert t["skeleton_raw_bytes"] + before == t["tflite_bytes"]
    assert t["skeleton_bytes"] < t["skeleton_raw_bytes"]  # DEFLATE-coded
    assert after < t["sidecar_bytes"] < after + 200  # header and entry table
    expected = compressed.predict(x[:20], verbose=0)
    np.testing.assert_allclose(_run(decoded, x[:20]), expected, rtol=1e-4, atol=1e-5)
    assert json.loads(files[".report.json"].read_text())["totals"] == t
    assert "skeleton" in files[".report.md"].read_text()


@pytest.mark.slow
def test_cli_decode_and_inspect(compressed, tmp_path):
    kc.export(compressed, tmp_path / "m")
    out = tmp_path / "decoded.tflite"
    cmd = [sys.executable, "-m", "keras_compress"]
    skeleton, side = str(tmp_path / "m.skeleton"), str(tmp_path / "m.kcz")
    run = subprocess.run(cmd + ["decode", skeleton, side, str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == (tmp_path / "m.tflite").read_bytes()
    inspect = subprocess.run(
        cmd + ["inspect", str(tmp_path / "m.kcz")], capture_output=True, text=True
    )
    assert inspect.returncode == 0 and '"version": 4' in inspect.stdout  # arithmetic-coded
    assert '"skeleton_window_bits": 15' in inspect.stdout
    bad = tmp_path / "bad.kcz"
    data = bytearray((tmp_path / "m.kcz").read_bytes())
    data[-3] ^= 1
    bad.write_bytes(bytes(data))
    args = ["decode", skeleton, str(bad), str(tmp_path / "x")]
    run = subprocess.run(cmd + args, capture_output=True, text=True)
    assert run.returncode == 2 and "CRC-32 mismatch" in run.stderr
    assert not (tmp_path / "x").exists()


def test_failed_export_leaves_earlier_outputs_untouched(compressed, tmp_path):
    kc.export(compressed, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="representative_data"):
        kc.export(compressed, tmp_path / "m", quantization="int8")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before == after


def test_int8_export_round_trips(compressed, toy_data, tmp_path):
    x, _ = toy_data

    def calibration():
        for row in x[:64]:
            yield [row[None]]

    # A raw skeleton: this MLP is so small that DEFLATE of the whole file would beat cutting
    # its int8 kernels (a table row and CRC per tensor), and this test is about them.
    report = kc.export(
        compressed, tmp_path / "q", quantization="int8", representative_data=calibration,
        window_bits=None,
    )  # fmt: skip
    tflite = (tmp_path / "q.tflite").read_bytes()
    assert (
        kc.deploy.sidecar.join(
            (tmp_path / "q.skeleton").read_bytes(), (tmp_path / "q.kcz").read_bytes()
        )
        == tflite
    )
    assert any(r["dtype"] == "int8" and r["stored"] == "sidecar" for r in report.tensors)
    # run() quantizes float inputs with the input's scale and dequantizes the outputs: the
    # int8 model then agrees with Keras to within its quantization error.
    want = compressed.predict(x[:64], verbose=0)
    got = kc.deploy.litert.run(tflite, x[:64])[0]
    assert got.dtype == np.float32
    assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9
    raw = kc.deploy.litert.run(tflite, x[:64], dequantize=False)[0]
    assert raw.dtype == np.int8 and len(np.unique(raw)) > 2


@keras.saving.register_keras_serializable(package="tests")
class Stringy(keras.layers.Layer):
    """A layer TFLite's builtin ops cannot express (string ops)."""

    def call(self, x):
        return tf.cast(tf.strings.length(tf.strings.as_string(x)), tf.float32)


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_conversion_error_names_the_layer(tmp_path):
    layers = [keras.layers.Dense(4, name="fc"), Stringy(name="stringy"), keras.layers.Dense(2)]
    model = keras.Sequential([keras.Input((4,)), *layers])
    with pytest.raises(ValueError, match="failed at layer 'stringy' \\(Stringy\\)"):
        kc.export(model, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two failed conversions and the per-layer search: 4 s
def test_a_model_quantized_by_keras_is_refused_with_the_way_out(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="fc"),
                              keras.layers.Dense(2, name="out")])  # fmt: skip
    model.quantize("int8")  # int8 kernels and activations: Keras's LiteRT export fails too
    with pytest.raises(ValueError, match="layers fc, out were quantized by Keras.*"
                       "quantization='int8'"):  # fmt: skip
        kc.export(model, tmp_path / "q")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_masked_lstm_of_unknown_length_exports_at_a_batch_of_1_for_any_length(tmp_path):
    tokens = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(40, 8, mask_zero=True, name="embed")(tokens)
    h = keras.layers.LSTM(16, return_sequences=True, name="lstm")(h)
    model = keras.Model(tokens, keras.layers.Dense(3, name="fc")(h))
    pruned = kc.make_prunable(model)
    pruned.compile("adam", LOSS)
    x = np.random.default_rng(0).integers(0, 40, (32, 6)).astype("int32")
    pruned.fit(x, x % 3, epochs=1, verbose=0, callbacks=[kc.MagnitudePruning(0.7, "constant")])
    shared = kc.strip(kc.share_weights(pruned, bits=3))
    with pytest.warns(UserWarning, match="a batch of 1 \\(its sequences keep any length\\)"):
        report = kc.export(shared, tmp_path / "dynamic")
    stored = [r["tensor"] for r in report.tensors if r["stored"] == "sidecar"]
    assert report.totals["ratio"] > 1.2 and any("lstm" in name for name in stored), stored
    data = kc.deploy.sidecar.join((tmp_path / "dynamic.skeleton").read_bytes(),
                           (tmp_path / "dynamic.kcz").read_bytes())  # fmt: skip
    for length in (6, 3, 11):  # padding (token 0) masked at the end of the first sentence
        tokens = np.random.default_rng(length).integers(1, 40, (1, length)).astype("int32")
        tokens[0, -2:] = 0
        (got,) = kc.deploy.litert.run(data, tokens)
        np.testing.assert_allclose(got, shared.predict(tokens, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_cli_export_of_a_saved_model(compressed, tmp_path):
    compressed.save(tmp_path / "m.keras")
    cmd = [sys.executable, "-m", "keras_compress", "export", str(tmp_path / "m.keras"),
           str(tmp_path / "out" / "m"), "--coding", "huffman"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skeleton" in run.stdout
    out = tmp_path / "out"
    side = (out / "m.kcz").read_bytes()
    decoded = kc.deploy.sidecar.join((out / "m.skeleton").read_bytes(), side)
    assert decoded == (out / "m.tflite").read_bytes()
    assert kc.deploy.sidecar.read_header(side)[0]["version"] == 3  # readable by older decoders
    np.save(tmp_path / "calibration.npy", np.random.default_rng(0).normal(size=(16, 12)))
    cmd[-2:] = ["--int8", str(tmp_path / "calibration.npy"), "--per-tensor", "--tf-ops"]
    cmd[-5] = str(out / "q")
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    totals = json.loads((out / "q.report.json").read_text())["totals"]
    assert (totals["quantization"], totals["per_channel"], totals["tf_ops"]) == (
        "int8",
        False,
        True,
    )


def test_cli_per_tensor_needs_int8(tmp_path, capsys):
    from keras_compress.deploy.cli import main

    assert (
        main(["export", str(tmp_path / "absent.keras"), str(tmp_path / "m"), "--per-tensor"]) == 2
    )
    assert "--per-tensor" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_entropy_bound_counts_mask_and_values():
    # 64 elements, half of them non-zero (1 bit each for the mask), 4 equally frequent
    # non-zero values (2 bits each): 64 + 64 bits.
    values = np.zeros(64, np.float32)
    values[::2] = np.tile([-2.0, -1.0, 1.0, 2.0], 8)
    assert entropy_bytes(values) == pytest.approx(16.0)
    assert entropy_bytes(np.zeros(10)) == 0.0
    assert entropy_bytes(np.full(8, 3.0)) == 0.0  # dense, one value


def test_report_codes_come_close_to_the_entropy_bound(tmp_path):
    # A 90%-pruned kernel with independent positions and 4 skewed values: gap and value
    # Huffman codes should be within 10% of the element-wise bound (plus code tables).
    rng = np.random.default_rng(0)
    mask = rng.random((256, 256)) < 0.1
    values = rng.choice([-0.5, -0.1, 0.1, 0.5], p=[0.1, 0.4, 0.4, 0.1], size=mask.shape)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, use_bias=False)])
    model.set_weights([np.where(mask, values, 0.0).astype("float32")])
    report = kc.export(model, tmp_path / "m")
    (row,) = report.tensors
    bound = entropy_bytes(model.get_weights()[0])
    assert row["stored"] == "sidecar" and row["entropy_bytes"] == pytest.approx(bound, abs=0.1)
    assert bound < row["bytes_after"] < 1.1 * bound + 300, (row, bound)
    assert f"| {round(bound)} |" in (tmp_path / "m.report.md").read_text()


@pytest.mark.slow  # two int8 conversions: 6 s
def test_int8_calibration_lists_follow_the_models_input_order():
    # The converter orders a signature's inputs by name ("extra" before "image"), not as the
    # model does: a list in the model's order must still reach the right inputs.
    image, extra = keras.Input((12, 12, 3), name="image"), keras.Input((4,), name="extra")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(image))
    model = keras.Model(
        [image, extra], keras.layers.Dense(3)(keras.layers.Concatenate()([pooled, extra]))
    )
    rng = np.random.default_rng(0)
    x = [rng.random((8, 12, 12, 3), dtype=np.float32), rng.random((8, 4), dtype=np.float32)]
    model_bytes = kc.deploy.convert(
        model, "int8", lambda: ([x[0][i : i + 1], x[1][i : i + 1]] for i in range(8))
    )
    details = kc.deploy.litert.interpreter(model_bytes).get_signature_runner().get_input_details()
    assert {k: tuple(v["shape"][1:]) for k, v in details.items()} == {
        "image": (12, 12, 3),
        "extra": (4,),
    }
    with pytest.raises(ValueError, match=r"1 arrays for the model's 2 inputs \(image, extra\)"):
        kc.deploy.convert(model, "int8", lambda: ([x[0][i : i + 1]] for i in range(8)))


def test_litert_takes_several_inputs_by_name_only():
    # run() fed a list to the signature's inputs in name order, not the model's: these two
    # inputs of one shape were swapped without a word. The .tflite keeps no model order.
    right, left = keras.Input((4,), name="right_side"), keras.Input((4,), name="left_side")
    model = keras.Model(
        [right, left], keras.layers.Dense(2)(keras.layers.Concatenate()([right, left]))
    )
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(8, 4)).astype("float32") for _ in range(2)]
    model_bytes = kc.deploy.convert(model)
    with pytest.raises(ValueError, match=r"2 inputs \(left_side, right_side\); pass them by name"):
        kc.deploy.litert.run(model_bytes, x)
    (got,) = kc.deploy.litert.run(model_bytes, {"right_side": x[0], "left_side": x[1]})
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="representative_data is a callable.*got list"):
        kc.deploy.convert(model, "int8", [x])  # said "'list' object is not callable"


def test_litert_runs_an_int8_model_that_xnnpack_refuses_on_its_builtin_kernels():
    # A squeeze-and-excitation block whose squeeze ReLU is zero on all calibration data (as
    # pruning can leave it): its output scale is near zero, XNNPACK refuses the requantization
    # and run() failed with "failed to create XNNPACK runtime".
    x = keras.Input((4, 4, 8))
    squeeze = keras.layers.Dense(
        2, activation="relu", kernel_initializer=keras.initializers.Constant(-0.5)
    )
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(keras.layers.ReLU()(x))
    gate = keras.layers.Dense(8, activation="sigmoid")(squeeze(pooled))
    gated = keras.layers.GlobalAveragePooling2D()(keras.layers.Multiply()([x, gate]))
    model = keras.Model(x, keras.layers.Dense(3)(gated))
    data = np.random.default_rng(0).normal(size=(16, 4, 4, 8)).astype("float32")
    model_bytes = kc.deploy.convert(model, "int8", lambda: (data[i : i + 1] for i in range(16)))
    with pytest.warns(UserWarning, match="XNNPACK delegate cannot run this model.*builtin kernels"):
        (got,) = kc.deploy.litert.run(model_bytes, data)
    expected = model.predict(data, verbose=0)
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


@pytest.mark.slow  # a failed conversion and the per-layer search: 3 s
def test_a_text_model_is_told_to_keep_its_preprocessing_outside(tmp_path):
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=6)
    vectorize.adapt(["a cat sat", "the dog ran far"])
    text = keras.Input((1,), dtype="string")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(vectorize(text)))
    model = keras.Model(text, keras.layers.Dense(2)(pooled))
    with pytest.raises(ValueError, match="(?s)text_vectorization.*Hint: the model takes strings"):
        kc.export(model, tmp_path / "text")
    assert list(tmp_path.iterdir()) == []
    # With TensorFlow ops allowed, as Keras's own export does, it exports for the Flex
    # delegate, and the sidecar still rebuilds it byte for byte.
    report = kc.export(model, tmp_path / "text", tf_ops=True)
    data = (tmp_path / "text.tflite").read_bytes()
    assert b"FlexStringLower" in data and report.totals["tf_ops"]
    skeleton, side = (tmp_path / "text.skeleton").read_bytes(), (tmp_path / "text.kcz").read_bytes()
    assert kc.deploy.sidecar.join(skeleton, side) == data


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_a_mixed_precision_model_exports_computing_in_float32(toy_data, tmp_path):
    """Keras's LiteRT export fails on bfloat16 MatMuls; ours converts the float32 computation."""
    x, y = toy_data
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = kc.make_prunable(mlp())
        model.compile("adam", LOSS)
        model.fit(x, y, epochs=2, verbose=0, callbacks=[kc.MagnitudePruning(0.8, end_step=8)])
        shared = kc.share_weights(model, bits={"fc.*": 3})
        assert kc.strip(shared).layers[-1].compute_dtype == "bfloat16"
        report = kc.export(shared, tmp_path / "mixed")
    finally:
        keras.config.set_dtype_policy("float32")
    reference = mlp()  # the same model in float32, with the trained weights
    reference.set_weights(kc.strip(shared).get_weights())
    tflite = (tmp_path / "mixed.tflite").read_bytes()
    np.testing.assert_allclose(
        _run(tflite, x[:20]), reference.predict(x[:20], verbose=0), rtol=1e-4, atol=1e-5
    )
    kernels = [r for r in report.tensors if r["stored"] == "sidecar"]
    assert len(kernels) == 3 and all(r["distinct"] <= 8 for r in kernels)


def test_a_mixed_precision_model_keeps_its_adapted_normalization(tmp_path):
    # Rebuilding the model in float32 for the converter gave the adapted Normalization its
    # statistics as weights only: the .tflite divided by the fresh layer's ones (off by ~6).
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(16, 4)).astype("float32")
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        norm = keras.layers.Normalization()
        norm.adapt(x)
        model = keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(2, name="fc")])
        kc.export(model, tmp_path / "mixed")
    finally:
        keras.config.set_dtype_policy("float32")
    reference = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Normalization(mean=norm.adapt_mean, variance=norm.adapt_variance),
            keras.layers.Dense(2),
        ]  # fmt: skip
    )
    reference.layers[-1].set_weights(model.layers[-1].get_weights())
    got = _run((tmp_path / "mixed.tflite").read_bytes(), x)
    np.testing.assert_allclose(got, reference.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # two int8 conversions and a short fit: 8 s
def test_int8_export_of_recurrent_layers_unrolls_them_instead_of_crashing(tmp_path):
    # TensorFlow's calibrator killed the process (segmentation fault) on an RNN's WHILE loop
    # (tensorflow/tensorflow#75140): every int8 export of an LSTM or GRU model.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6, 4)).astype("float32")
    y = (x[:, :, 0].sum(axis=1) > 0).astype("int32")  # the sign of a running sum
    inputs = keras.Input((6, 4))
    h = keras.layers.LSTM(8, return_sequences=True, name="lstm")(inputs)
    h = keras.layers.Bidirectional(keras.layers.GRU(6), name="bigru")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    model.compile("adam", LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    calibration = lambda: ([x[i : i + 1]] for i in range(32))  # noqa: E731
    kc.export(model, tmp_path / "rnn", quantization="int8", representative_data=calibration)
    got = _run((tmp_path / "rnn.tflite").read_bytes(), x[:64])
    want = model.predict(x[:64], verbose=0)
    assert np.mean(np.argmax(got, -1) == np.argmax(want, -1)) >= 0.9
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert not model.get_layer("lstm").unroll  # the user's model is not changed

    free = keras.Input((None, 4))
    unknown = keras.Model(free, keras.layers.Dense(2)(keras.layers.GRU(4, name="gru")(free)))
    with pytest.raises(ValueError, match=r"calibrator.*75140.*\['gru'\] take sequences of unkn"):
        kc.deploy.convert(unknown, "int8", calibration)
