"""Models compressed for TFLM's DECODE operator run bit for bit like the uncompressed int8 model.

The oracle is TensorFlow Lite Micro's own Python runtime (its DECODE kernel and decoders).
"""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress import tflm

pytestmark = pytest.mark.slow

pytest.importorskip(
    "tflite_micro.python.tflite_micro.runtime",
    reason="TFLM's Python runtime is missing: pip install -e '.[dev]' installs tflite-micro",
)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """A pruned, weight-shared conv net (Conv2D, DepthwiseConv2D, Dense) exported full-integer."""
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(256, 12, 12, 1)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > 0).astype("int32")
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", name="fc1"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model = kc.make_prunable(model)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(
        x, y, epochs=2, batch_size=64, verbose=0, callbacks=[kc.MagnitudePruning(0.85, end_step=6)]
    )
    shared = kc.share_weights(model, bits={"conv1": 4, "fc1": 3, "out": 3})

    def calibration():
        for row in x[:64]:
            yield [row[None]]

    prefix = tmp_path_factory.mktemp("tflm") / "net"
    kc.export(shared, prefix, quantization="int8", representative_data=calibration)
    data = prefix.with_suffix(".tflite").read_bytes()
    # Any int8 pattern is a valid quantized input: no need to quantize real images here.
    inputs = rng.integers(-128, 128, size=(40, 12, 12, 1)).astype(np.int8)
    return prefix.with_suffix(".tflite"), data, inputs, tflm.run(data, inputs)


@pytest.mark.parametrize("methods", [("lut",), ("huffman",), ("pruning",), tflm.METHODS])
def test_decoded_model_is_bit_identical_in_tflm(int8_model, methods):
    _, data, inputs, expected = int8_model
    result = tflm.compress(data, methods=methods, min_saving=0)
    chosen = {c.chosen for c in result.choices} - {"none"}
    assert chosen and chosen <= set(methods)
    np.testing.assert_array_equal(tflm.run(result.data, inputs), expected)


def test_each_tensor_gets_its_smallest_supported_method(int8_model):
    _, data, _, _ = int8_model
    result = tflm.compress(data)
    by_name = {c.tensor: c for c in result.choices}
    fc1 = next(c for name, c in by_name.items() if "fc1" in name and c.dtype == "int8")
    # 85% zeros and 8 shared values: every method applies; Huffman beats a 3-bit LUT here.
    assert set(fc1.options) == set(tflm.METHODS)
    assert fc1.chosen == min(fc1.options, key=fc1.options.get) == "huffman"
    for c in result.choices:
        sizes = {m: v for m, v in c.options.items() if isinstance(v, int)}
        if c.chosen != "none":
            assert (
                c.bytes_after == min(sizes.values())
                and c.raw_bytes - c.bytes_after >= tflm.DEFAULT_MIN_SAVING
            )
        elif c.dtype == "int32":  # biases: no Huffman for int32, and the reason says so
            assert "int8/int16" in c.options.get("huffman", "int8/int16")
    assert len(result.data) < 0.6 * len(data)
    assert "| huffman |" in result.markdown()


def test_arena_grows_by_what_decode_writes(int8_model):
    _, data, _, _ = int8_model
    result = tflm.compress(data)
    plain, compressed = tflm.arena_bytes(data), tflm.arena_bytes(result.data)
    decoded = sum(c.raw_bytes for c in result.choices if c.chosen != "none")
    # DECODE's outputs live in the arena (no alternate decompression memory here).
    assert plain < compressed <= plain + decoded + 4096
    # Keeping the big fc1 kernel plain in flash keeps the arena small again.
    small = tflm.compress(data, max_decoded_bytes=10_000)
    fc1 = next(c for c in small.choices if "fc1" in c.tensor and c.dtype == "int8")
    assert fc1.chosen == "none" and "max_decoded_bytes" in fc1.reason
    assert tflm.arena_bytes(small.data) < plain + 10_000 * 3


def test_compress_file_is_atomic_and_never_overwrites_its_input(int8_model, tmp_path):
    path, data, _, _ = int8_model
    with pytest.raises(ValueError, match="refusing to overwrite"):
        tflm.compress_file(path, path)
    assert path.read_bytes() == data
    out = tmp_path / "sub" / "net.tflm.tflite"
    result = tflm.compress_file(path, out)
    assert out.read_bytes() == result.data
    assert [p.name for p in out.parent.iterdir()] == ["net.tflm.tflite"]


def test_bad_input_is_rejected_with_a_clear_error(int8_model):
    _, data, _, _ = int8_model
    with pytest.raises(ValueError, match="unknown TFLM decode method"):
        tflm.compress(data, methods=("lut", "zip"))
    with pytest.raises(ValueError, match="not a TFLite model"):
        tflm.compress(b"\x00" * 64)


def test_lstm_loop_body_weights_are_coded_and_run_bit_identically(tmp_path):
    # A fixed-length float LSTM converts to a WHILE loop: its kernels live in the body subgraph.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 4), batch_size=1)
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.LSTM(32, name="lstm")(inputs))
    model = kc.make_prunable(keras.Model(inputs, outputs))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(64, 8, 4)).astype("float32")
    model.fit(x, np.arange(64) % 3, batch_size=8, epochs=1, verbose=0,
              callbacks=[kc.MagnitudePruning(0.8, "constant")])  # fmt: skip
    kc.export(kc.strip(kc.share_weights(model, bits=3)), tmp_path / "lstm")
    data = (tmp_path / "lstm.tflite").read_bytes()
    result = tflm.compress(data)
    body = [c for c in result.choices if c.subgraph > 0 and c.chosen != "none"]
    assert {c.chosen for c in body} == {"lut"} and len(body) == 2  # kernel, recurrent kernel
    assert all(isinstance(c.options["huffman"], str) for c in body)  # float32: no Huffman
    np.testing.assert_array_equal(tflm.run(result.data, x[:10]), tflm.run(data, x[:10]))


def _int8(model, x, tmp_path):
    def calibration():  # one example at a time, a list of the model's inputs
        return ([row[None] for row in rows] for rows in zip(*x))

    kc.export(model, tmp_path / "m", quantization="int8", representative_data=calibration)
    return (tmp_path / "m.tflite").read_bytes()


def test_a_tensor_read_by_several_operators_pays_for_each_decode(tmp_path):
    # Upstream puts a DECODE (with its own tensors) before each operator reading a coded
    # tensor: an unrolled GRU's kernels, read once per time step, grew a keyword-spotting
    # model from 262 to 313 KB. A shared layer's kernel is read twice here.
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    inputs = keras.Input((128,))
    shared = keras.layers.Dense(128, activation="relu", name="shared")
    model = keras.Model(inputs, keras.layers.Dense(2)(shared(shared(inputs))))
    kernel = rng.normal(size=(128, 128)) * (rng.random((128, 128)) < 0.1)  # 90% zeros
    shared.set_weights([kernel.astype("float32"), np.zeros(128, "float32")])
    data = _int8(model, [rng.normal(size=(16, 128)).astype("float32")], tmp_path)

    def coded(min_saving):
        result = tflm.compress(data, min_saving=min_saving)
        return result, next(c for c in result.choices if c.raw_bytes == 128 * 128)

    _, choice = coded(0)
    saving = choice.raw_bytes - choice.bytes_after
    result, choice = coded(saving // 2 + 1)  # enough for one DECODE, not for two
    assert choice.chosen == "none" and "x 2 DECODE operators" in choice.reason
    result, choice = coded(saving // 2 - 1)
    assert choice.chosen != "none" and len(result.data) < len(data)
    rows = rng.integers(-128, 128, size=(4, 128)).astype(np.int8)
    np.testing.assert_array_equal(tflm.run(result.data, rows), tflm.run(data, rows))


def test_a_model_that_coding_would_grow_is_returned_as_it_is(tmp_path):
    # The first DECODE adds its operator code and alignment (about 900 B): coding one small
    # tensor to save a few bytes made a larger model.
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="fc")])
    kernel = np.zeros((8, 8), "float32")
    kernel[np.arange(8), np.arange(8)] = 1.0  # 87.5% zeros: pruning's coding saves a few bytes
    model.layers[0].set_weights([kernel, np.zeros(8, "float32")])
    x = [np.random.default_rng(4).normal(size=(16, 8)).astype("float32")]
    data = _int8(model, x, tmp_path)
    result = tflm.compress(data, min_saving=1, min_elements=1)
    assert result.data == data
    assert all(c.chosen == "none" for c in result.choices)
    assert any("the rebuilt model would be" in c.reason for c in result.choices)
