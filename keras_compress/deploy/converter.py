"""Keras model -> ``.tflite`` bytes with TensorFlow's converter, and errors that say what to do."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import tensorflow as tf

from keras_compress.core.rewrite import fresh_copy, iter_layers
from keras_compress.core.wrapper import strip


def convert(
    model: keras.Model,
    quantization: str = "float32",
    representative_data: Callable[[], Iterable] | None = None,
) -> bytes:
    """Convert a (wrapped or plain) Keras model with TensorFlow's own TFLite converter.

    Args:
        model: the model; keras_compress wrappers are stripped first.
        quantization: ``"float32"``, or ``"int8"`` for full-integer quantization (inputs,
            outputs and weights int8; what TensorFlow Lite Micro runs).
        representative_data: for ``"int8"``: a callable returning an iterable of input
            batches (lists of arrays), as ``TFLiteConverter.representative_dataset`` wants.

    Raises:
        ValueError: unknown ``quantization`` or missing representative data; a conversion
            failure is re-raised with the model's name.
    """
    if quantization not in ("float32", "int8"):
        raise ValueError(f"quantization must be 'float32' or 'int8', got {quantization!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(strip(model))
    if quantization == "int8":
        if representative_data is None:
            raise ValueError("int8 export needs representative_data (a callable yielding inputs)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as err:  # the converter raises many types; keep the cause attached
        culprit = _first_unconvertible_layer(strip(model))
        where = f" at layer {culprit.name!r} ({type(culprit).__name__})" if culprit else ""
        raise ValueError(
            f"TFLite conversion of model {model.name!r} failed{where}: {err}{_rnn_hint(model)}"
        ) from err


def _rnn_hint(model: keras.Model) -> str:
    """TFLite's builtins run a Keras RNN only as a loop of fixed length (measured: TF 2.21)."""
    rnn = any(isinstance(layer, keras.layers.RNN) for layer in iter_layers(model))
    dynamic = any(None in tuple(t.shape)[1:] for t in model.inputs)
    if not (rnn and dynamic):
        return ""
    return (
        "\nHint: the model has RNN layers (LSTM/GRU) and inputs of unknown length; TFLite "
        "converts them with a fixed shape: wrap it as keras.Model(inp, model(inp)) with "
        "inp = keras.Input((length, ...), batch_size=1)."
    )


def _first_unconvertible_layer(model: keras.Model) -> keras.layers.Layer | None:
    """Convert each single-input layer alone, in order, to name the one the converter rejects."""
    for layer in iter_layers(model):
        try:
            shape = layer.input.shape[1:]
        except (AttributeError, ValueError):  # several inputs, or no symbolic input
            continue
        probe = keras.Sequential([keras.Input(shape), fresh_copy(layer)])
        try:
            tf.lite.TFLiteConverter.from_keras_model(probe).convert()
        except Exception:  # noqa: BLE001 - any failure marks the culprit
            return layer
    return None
