"""The whole pipeline on architectures users bring: prune in fit, strip, share, fine-tune, export,
decode (Python and C), run in LiteRT.

Each model starts at random initialisation on tiny random data; what is checked is structural:
LiteRT computes what Keras computes, the decoders rebuild the exact .tflite, pruned zeros
survive into the decoded tensors, and so do the shared values where no BatchNormalization is
folded into a kernel (folding scales each output channel; the BatchNorm work checks that case).
"""

import subprocess
import warnings

import keras
import numpy as np
import pytest
from helpers import build_c

import keras_compress as kc

L = keras.layers
BITS = 4


def _conv1d():
    return keras.Sequential([keras.Input((32, 3)), L.Conv1D(16, 5, activation="relu"),
                             L.MaxPooling1D(2), L.Conv1D(24, 3, activation="relu"),
                             L.GlobalAveragePooling1D(), L.Dense(4)], name="conv1d")  # fmt: skip


def _seq2seq():
    source, target = keras.Input((10, 8), name="source"), keras.Input((7, 6), name="target")
    _, h, c = L.LSTM(32, return_state=True, name="encoder")(source)
    decoded = L.LSTM(32, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    return keras.Model([source, target], L.Dense(5, name="logits")(decoded), name="seq2seq")


def _bidirectional_gru():
    tokens = keras.Input((20,), dtype="int32", name="tokens")
    x = L.Embedding(200, 32, name="embed")(tokens)
    x = L.Bidirectional(L.GRU(24), name="bigru")(x)
    return keras.Model(tokens, L.Dense(3, name="out")(x), name="bigru")


def _sequential_bilstm():
    # A Sequential model has no `model.input` in Keras 3.15 (only `inputs`): export read it.
    layers = [keras.Input((12,), dtype="int32"), L.Embedding(200, 16),
              L.Bidirectional(L.LSTM(16, return_sequences=True), name="bilstm"),
              L.TimeDistributed(L.Dense(24, "relu"), name="td"),
              L.GlobalAveragePooling1D(), L.Dense(3)]  # fmt: skip
    return keras.Sequential(layers, name="seq_bilstm")


def _transformer():
    tokens = keras.Input((16,), dtype="int32", name="tokens")
    x = L.Embedding(200, 32, name="embed")(tokens)
    x = L.LayerNormalization()(
        x + L.MultiHeadAttention(4, 8, name="mha")(x, x, use_causal_mask=True)
    )
    x = L.LayerNormalization()(x + L.Dense(32, name="ff2")(L.Dense(64, "gelu", name="ff1")(x)))
    return keras.Model(
        tokens, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(x)), name="transformer"
    )


def _time_distributed():
    td = L.TimeDistributed(L.Dense(48, "relu"), name="td")
    return keras.Sequential([keras.Input((6, 40)), td, L.Flatten(), L.Dense(3)], name="td_dense")


def _multi_input():
    image, meta = keras.Input((12, 12, 2), name="image"), keras.Input((9,), name="meta")
    x = L.Flatten()(L.Conv2D(8, 3, activation="relu", name="conv")(image))
    x = L.Concatenate()(
        [L.Dense(32, "relu", name="img_fc")(x), L.Dense(16, "relu", name="meta_fc")(meta)]
    )
    return keras.Model([image, meta], L.Dense(2, name="out")(x), name="multi_input")  # fmt: skip


def _nested():
    inner = keras.Sequential([keras.Input((20,)), L.Dense(64, "relu", name="in1"),
                              L.Dense(32, "relu", name="in2")], name="inner")  # fmt: skip
    inputs = keras.Input((20,))
    return keras.Model(inputs, L.Dense(3, name="head")(inner(inputs)), name="nested")


@keras.saving.register_keras_serializable(package="test_architectures")
class GatedDense(L.Layer):
    """A custom layer with its own weight names (``w``, ``gate``): sharing must be told them."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], self.units))
        self.gate = self.add_weight(name="gate", shape=(self.units,), initializer="ones")

    def call(self, x):
        return keras.ops.matmul(x, self.w) * keras.ops.sigmoid(self.gate)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _custom_layer():
    inputs = keras.Input((24,))
    x = GatedDense(40, name="gated")(inputs)
    return keras.Model(inputs, L.Dense(3, name="out")(L.ReLU()(x)), name="custom_layer")


def _unet():
    # Encoder-decoder: a transposed convolution upsamples, a skip connection concatenates,
    # one label per pixel.
    inputs = keras.Input((16, 16, 3))
    skip = L.Conv2D(8, 3, padding="same", activation="relu", name="enc")(inputs)
    x = L.Conv2D(16, 3, padding="same", activation="relu")(L.MaxPooling2D(2)(skip))
    x = L.Conv2DTranspose(8, 2, strides=2, activation="relu", name="up")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(L.Concatenate()([x, skip]))
    return keras.Model(inputs, L.Conv2D(4, 1, name="out")(x), name="unet")


def _mobilenet_v2():
    return keras.applications.MobileNetV2((32, 32, 3), alpha=0.35, weights=None, classes=4)


def _mobilenet_v3_small():
    # Residual Adds, BatchNorm, hard-swish, squeeze-and-excitation Multiply, Rescaling: ResNet50V2
    # (23 M weights) took 6 of the suite's 16 minutes for the same coverage minus those ops.
    return keras.applications.MobileNetV3Small(
        (32, 32, 3), alpha=0.75, weights=None, classes=4, classifier_activation=None
    )


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.hidden, self.out = L.Dense(32, activation="relu"), L.Dense(3)

    def call(self, x):
        return self.out(self.hidden(x))


# (builder, whether the converter folds a per-channel scale, BatchNorm's or another, into kernels)
ARCHITECTURES = {
    "conv1d": (_conv1d, False),
    "lstm_seq2seq": (_seq2seq, False),
    "bidirectional_gru": (_bidirectional_gru, False),
    "time_distributed_dense": (_time_distributed, False),
    "sequential_bilstm": (_sequential_bilstm, False),
    "transformer": (_transformer, False),
    "multi_input": (_multi_input, False),
    "nested": (_nested, False),
    # The converter folds the constant sigmoid(gate) column scale into w, as it folds BatchNorm.
    "custom_layer": (_custom_layer, True),
    "unet": (_unet, False),
    "mobilenet_v2": (_mobilenet_v2, True),
    "mobilenet_v3_small": (_mobilenet_v3_small, True),
}
QUICK = {"conv1d"}  # the rest are slow: 4-15 s each, the MobileNets a minute or more


def _data(model, n=32, seed=0):
    rng = np.random.default_rng(seed)
    xs = {}
    for tensor in model.inputs:
        shape = (n, *tensor.shape[1:])
        if "int" in str(tensor.dtype):
            xs[tensor.name] = rng.integers(0, 200, shape).astype("int32")
        else:
            xs[tensor.name] = rng.normal(size=shape).astype("float32")
    out = model.outputs[0].shape[-1]
    y = rng.integers(0, out, (n, *model.outputs[0].shape[1:-1]))
    x = list(xs.values()) if len(xs) > 1 else next(iter(xs.values()))
    return x, y, xs


@pytest.fixture(scope="module")
def c_decoder(tmp_path_factory):
    return build_c(tmp_path_factory, "kcz_cli", ["-O2"])


@pytest.mark.parametrize(
    "name",
    [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in ARCHITECTURES],
)
def test_prune_share_export_decode_run(name, c_decoder, tmp_path):
    build, folds_batchnorm = ARCHITECTURES[name]
    model = build()
    x, y, named = _data(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    weights = ["w", "kernel"] if name == "custom_layer" else None  # its weight is named "w"
    pruned = kc.make_prunable(model, weights=weights)
    pruned.compile(keras.optimizers.Adam(1e-3), loss)
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=[kc.MagnitudePruning(0.6, "constant")])  # fmt: skip
    for weight, level in kc.sparsity(pruned).items():
        assert level >= 0.59, weight

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small tensors keep their own values
        shared = kc.share_weights(kc.strip(pruned), bits=BITS, weights=weights)
    shared.compile(keras.optimizers.Adam(1e-4), loss)
    shared.fit(x, y, batch_size=8, epochs=1, verbose=0)
    plain = kc.strip(shared)
    for weight, value in kc.core.compressed_weights(plain):
        assert np.unique(value).size <= 2**BITS, weight

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # RNNs may convert at a batch of 1
        report = kc.export(shared, tmp_path / name)
    tflite = (tmp_path / f"{name}.tflite").read_bytes()
    skeleton, sidecar = (tmp_path / f"{name}.skeleton"), (tmp_path / f"{name}.kcz")
    assert kc.deploy.sidecar.join(skeleton.read_bytes(), sidecar.read_bytes()) == tflite
    decoded = tmp_path / "decoded.tflite"
    run = subprocess.run([str(c_decoder), str(skeleton), str(sidecar), str(decoded)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert decoded.read_bytes() == tflite
    assert report.totals["ratio"] > 1.0

    # LiteRT computes what Keras computes.
    got = kc.deploy.litert.run(tflite, named if len(named) > 1 else x)
    want = plain.predict(x, verbose=0)
    np.testing.assert_allclose(got[0], want, rtol=1e-3, atol=1e-4)

    # Pruned zeros reach the decoded tensors; shared values too where nothing is folded.
    buffers = [b.values(tflite) for b in kc.deploy.tflite_buffers.weight_buffers(tflite)]
    floats = [v for v in buffers if v.dtype == np.float32]
    keras_zeros = sum(int((w == 0).sum()) for _, w in kc.core.compressed_weights(plain))
    assert sum(int((v == 0).sum()) for v in floats) >= keras_zeros
    if not folds_batchnorm:
        shared_values = np.unique(np.concatenate(
            [w.ravel() for _, w in kc.core.compressed_weights(plain)]))  # fmt: skip
        matrices = [v for v in floats if v.size >= 256]  # weight matrices, not biases
        assert matrices
        for values in matrices:
            assert np.isin(values, shared_values).all()


def test_subclassed_model_exports_and_says_why_it_cannot_be_pruned(tmp_path):
    model = _Subclassed()
    x = np.random.default_rng(0).normal(size=(16, 10)).astype("float32")
    model(x)
    with pytest.raises(TypeError, match="subclassed keras.Model; only Sequential and functional"):
        kc.make_prunable(model)
    kc.export(model, tmp_path / "sub")
    (got,) = kc.deploy.litert.run((tmp_path / "sub.tflite").read_bytes(), x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
