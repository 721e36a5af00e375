"""A full-integer int8 export, decoded by the C decoder, runs in TensorFlow Lite Micro.

TFLM rejects dynamic-range models, so the microcontroller path is full-integer int8.
"""

import subprocess

import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc

runtime = pytest.importorskip(
    "tflite_micro.python.tflite_micro.runtime",
    reason="TFLM's Python runtime is missing: pip install -e '.[dev]' installs tflite-micro",
)


@pytest.mark.parametrize(
    "cli",
    ["-O2", *(pytest.param(f, marks=pytest.mark.slow)
              for f in ("-Os -DKCZ_WINDOW_BITS=15", "-O2 -DKCZ_LUT_BITS=0"))],
    indirect=True,
)  # fmt: skip
def test_int8_model_decoded_by_c_runs_in_tflm(cli, toy_data, tmp_path):
    x, y = toy_data
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = kc.make_prunable(mlp())
    model.compile("adam", loss)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[kc.MagnitudePruning(0.7, end_step=10)])

    def calibration():
        for row in x[:100]:
            yield [row[None]]

    kc.export(kc.share_weights(model, bits={"fc.*": 4}), tmp_path / "q", quantization="int8",
              representative_data=calibration)  # fmt: skip
    decoded = tmp_path / "decoded.tflite"
    run = subprocess.run([str(cli), str(tmp_path / "q.skeleton"), str(tmp_path / "q.kcz"),
                          str(decoded)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = decoded.read_bytes()
    assert data == (tmp_path / "q.tflite").read_bytes()

    lite = kc.deploy.litert.interpreter(data)
    inp, out = lite.get_input_details()[0], lite.get_output_details()[0]
    scale, zero = inp["quantization"]
    micro = runtime.Interpreter.from_bytes(data)
    original = runtime.Interpreter.from_bytes((tmp_path / "q.tflite").read_bytes())
    for row in x[:50]:
        q = np.clip(np.round(row / scale + zero), -128, 127).astype(np.int8)[None]
        lite.set_tensor(inp["index"], q)
        lite.invoke()
        for interpreter in (micro, original):
            interpreter.set_input(q, 0)
            interpreter.invoke()
        got = micro.get_output(0)
        np.testing.assert_array_equal(got, original.get_output(0))
        # TFLM rounds its requantization once, TFLite's kernels twice: one step apart at most.
        assert np.abs(got.astype(int) - lite.get_tensor(out["index"]).astype(int)).max() <= 1


@pytest.mark.slow  # two int8 conversions: 5 s
def test_an_lstm_runs_in_tflm_at_a_fixed_batch_and_a_dynamic_one_says_why_not():
    # TFLM's reason (a FILL of a runtime shape) went to /dev/null with the arena retries; the
    # error said only "failed to allocate tensors", after trying arenas up to 1 GiB.
    inputs = keras.Input((6, 4))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.LSTM(8)(inputs)))
    x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype("float32")

    def calibration():
        return ([x[i : i + 1]] for i in range(16))

    fixed = kc.deploy.convert(model, "int8", calibration, batch_size=1)
    quantized = np.clip(np.round(x[:3] / 0.02), -128, 127).astype(np.int8)
    litert = kc.deploy.litert.run(fixed, quantized, dequantize=False)[0]
    np.testing.assert_array_equal(kc.tflm.run(fixed, quantized), litert)
    dynamic = kc.deploy.convert(model, "int8", calibration)
    with pytest.raises(RuntimeError, match=r"TFLM cannot run the model: .*FILL.*batch_size=1"):
        kc.tflm.run(dynamic, quantized)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_nearest_upsampling_runs_in_tflm_as_one_resize(data_format, tmp_path):
    # Keras 3's UpSampling2D repeats (RESHAPE + TILE): TFLM has no TILE kernel, so a U-Net's
    # decoder failed there ("Didn't find op for builtin opcode 'TILE'").
    shape = (5, 3, 2) if data_format == "channels_last" else (2, 5, 3)
    layers = keras.layers
    inputs = keras.Input(shape)
    up = layers.UpSampling2D((2, 3), data_format=data_format, name="up")(inputs)
    outputs = layers.Conv2D(2, 1, data_format=data_format)(up)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(8, *shape)).astype("float32")
    floats = kc.deploy.convert(model)
    np.testing.assert_allclose(kc.deploy.litert.run(floats, x)[0], model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    int8 = kc.deploy.convert(model, "int8", lambda: (x[i : i + 1] for i in range(8)), batch_size=1)
    ops = {op["op_name"] for op in kc.deploy.litert.interpreter(int8)._get_ops_details()}
    assert "TILE" not in ops and "RESIZE_NEAREST_NEIGHBOR" in ops
    q = np.random.default_rng(1).integers(-128, 128, size=(4, *shape)).astype(np.int8)
    micro = kc.tflm.run(int8, q).astype(np.int32)
    lite = kc.deploy.litert.run(int8, q, dequantize=False)[0].astype(np.int32)
    assert np.abs(micro - lite).max() <= 1  # the two runtimes' convolutions round apart


def test_a_model_with_several_inputs_runs_in_tflm_by_input_name():
    # run() set one input and TFLM failed with "Dimension mismatch" on the second.
    right, left = keras.Input((4,), name="right_side"), keras.Input((4,), name="left_side")
    joined = keras.layers.Concatenate()([right, left])
    model = keras.Model([right, left], keras.layers.Dense(2)(joined))
    rng = np.random.default_rng(0)
    x = {"right_side": rng.normal(size=(8, 4)), "left_side": 3.0 * rng.normal(size=(8, 4))}
    x = {k: v.astype("float32") for k, v in x.items()}
    data = kc.deploy.convert(model, "int8", lambda: ({k: v[i : i + 1] for k, v in x.items()}
                                                    for i in range(8)), batch_size=1)  # fmt: skip
    q = {k: rng.integers(-128, 128, size=v.shape).astype(np.int8) for k, v in x.items()}
    micro = kc.tflm.run(data, q).astype(np.int32)
    lite = kc.deploy.litert.run(data, q, dequantize=False)[0].astype(np.int32)
    assert np.abs(micro - lite).max() <= 1
    with pytest.raises(ValueError, match=r"2 inputs \(.*\); pass them by name"):
        kc.tflm.run(data, list(q.values()))
