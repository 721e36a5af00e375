"""Keras model -> ``.tflite`` bytes through Keras's own LiteRT export; errors say what to do.

Conversion is ``model.export(path, format="litert")`` (Keras's ``ExportArchive`` -> SavedModel ->
TensorFlow's converter), so whatever Keras exports, keras_compress exports: Sequential,
functional, nested and subclassed models, several inputs and outputs. Two differences: only
TFLite builtin operators are allowed (Keras also allows TensorFlow ops through the Flex delegate,
which neither LiteRT's default interpreter nor TensorFlow Lite Micro runs), and a model whose
RNN loops need static shapes (``Bidirectional(GRU)`` with an unknown batch size) is converted
with a batch of 1 (sequence lengths stay variable), with a warning, where Keras would emit Flex
ops.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import keras
import tensorflow as tf

from keras_compress.core.graph import call_arguments, channels_first, is_functional, model_input
from keras_compress.core.rewrite import (
    copy_state,
    fresh_copy,
    iter_layers,
    quantized_note,
    rewrite_model,
)
from keras_compress.core.wrapper import is_wrapper, strip

QUANTIZATIONS = ("float32", "int8")


def convert(
    model: keras.Model,
    quantization: str = "float32",
    representative_data: Callable[[], Iterable] | None = None,
    batch_size: int | None = None,
    sparse: bool = False,
    per_channel: bool = True,
    tf_ops: bool = False,
) -> bytes:
    """Convert a (wrapped or plain) Keras model to ``.tflite`` bytes with Keras's LiteRT export.

    Args:
        model: the model; keras_compress wrappers are stripped first (a subclassed model is
            exported as it is and must hold none).
        quantization: ``"float32"``, or ``"int8"`` for full-integer quantization (inputs,
            outputs and weights int8; what TensorFlow Lite Micro runs).
        representative_data: for ``"int8"``: a callable returning an iterable of input
            batches: lists of arrays in the model's input order (or ``{input name: array}``),
            or, for a one-input model, the arrays themselves.
        batch_size: a fixed batch size for the inputs (``None``: as the model says, usually
            unknown; RNN models that need a static shape fall back to 1 with a warning, their
            sequence lengths still variable).
        sparse: store pruned weights sparse-encoded (the converter's
            ``EXPERIMENTAL_SPARSITY``): 1x4 and 1x16 blocks of a Dense kernel run on LiteRT's
            sparse fully-connected kernels, faster and smaller without gzip; other sparsity
            is stored compressed but densified at run time. See docs/pruning.md.
        per_channel: for ``"int8"``: one scale per output channel of each kernel (TFLite's
            default). ``False``: one scale per tensor (the converter's
            ``_experimental_disable_per_channel`` options), for weight-shared models: a kernel's
            ``2**bits`` shared values then stay ``2**bits`` int8 values in the whole tensor
            instead of that many per channel, and its scales cost one float, not one per
            channel. Without sharing, per-tensor scales cost accuracy on BatchNorm networks.
        tf_ops: also allow TensorFlow operators where TFLite has no builtin one (string
            processing: ``TextVectorization``, ``StringLookup``), as Keras's own LiteRT export
            does. They run only where the Flex delegate is linked (Android:
            ``org.tensorflow:tensorflow-lite-select-tf-ops``): not in LiteRT's Python
            interpreter (so not in ``kc.deploy.litert.run``), not in TensorFlow Lite Micro.
            ``False`` (the default): builtins only, a model that every runtime runs.

    Returns:
        The ``.tflite`` bytes.

    Raises:
        TypeError: ``representative_data`` that is not callable.
        ValueError: unknown ``quantization``, missing representative data, a subclassed
            model with keras_compress wrappers; a conversion failure names the first layer
            the converter rejects and how to fix it.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> convert(model)[4:8]
        b'TFL3'
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 export needs representative_data (a callable yielding inputs)")
    if representative_data is not None and not callable(representative_data):
        raise TypeError(
            "representative_data is a callable returning an iterable of input batches, as "
            "TFLite's converter takes it (it may be called more than once), such as "
            "lambda: (x[i : i + 1] for i in range(100)); got "
            f"{type(representative_data).__name__}"
        )
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    if not per_channel and quantization != "int8":
        raise ValueError("per_channel=False chooses int8 scales: it needs quantization='int8'")
    plain = _nearest_resizes(_plain(model))
    if quantization == "int8":
        plain = _unrolled(plain, model.name)
    names = [t.name for t in plain.inputs] if is_functional(plain) else []
    options = _converter_options(quantization, representative_data, names)
    if tf_ops:
        options["target_spec"]["supported_ops"].append(tf.lite.OpsSet.SELECT_TF_OPS)
    if not per_channel:  # TensorFlow has no public switch; Dense kernels have their own
        options["_experimental_disable_per_channel"] = True
        options["_experimental_disable_per_channel_quantization_for_dense_layers"] = True
    if sparse:
        options["optimizations"] = [*options.get("optimizations", []),
                                    tf.lite.Optimize.EXPERIMENTAL_SPARSITY]  # fmt: skip
    try:
        return _export(plain, options, batch_size)
    except Exception as err:  # the converter raises many types; keep the cause attached
        failure = err
    if batch_size is None and _fixed_batch_helps(plain):
        try:
            data = _export(plain, options, 1)
        except Exception:  # noqa: BLE001 - report the first failure below
            pass
        else:
            lengths = " (its sequences keep any length)" if _unknown_lengths(plain) else ""
            warnings.warn(
                f"model {model.name!r}: its RNN layers convert to TFLite builtins only with a "
                f"static batch size, so the .tflite takes a batch of 1{lengths} (pass "
                "batch_size=... to choose)",
                stacklevel=2,
            )
            return data
    culprit = _first_unconvertible_layer(plain) if is_functional(plain) else None
    where = f" at layer {culprit.name!r} ({type(culprit).__name__})" if culprit else ""
    raise ValueError(
        f"TFLite conversion of model {model.name!r} failed{where}: {failure}{_hint(plain)}"
    ) from failure


def _plain(model: keras.Model) -> keras.Model:
    """The model without keras_compress wrappers (a subclassed model must have none)."""
    if is_functional(model):
        return _in_float32(strip(model))
    wrapped = [layer.name for layer in iter_layers(model) if is_wrapper(layer)]
    if wrapped:
        raise ValueError(
            f"model {model.name!r} is a subclassed keras.Model holding keras_compress wrappers "
            f"({', '.join(wrapped)}); strip cannot rebuild a subclassed model. Compress a "
            "Sequential or functional version, or assign kc.strip's plain layers yourself."
        )
    return model


def _in_float32(model: keras.Model) -> keras.Model:
    """``model`` computing in float32 where it has a mixed-precision dtype policy.

    TFLite's builtin kernels compute in float32: a model trained under
    ``keras.mixed_precision`` ("mixed_float16", "mixed_bfloat16") converts to TensorFlow ops
    (MatMul in bfloat16) that LiteRT's builtins cannot run, and Keras's own export fails on it.
    Its variables are float32 already, so its mixed layers are rebuilt from their configs with
    float32 policies and given their state: the same model, computed at full precision.
    """
    return _rebuilt(model, _float32_policies)


def _rebuilt(model: keras.Model, edit: Callable[[dict], bool]) -> keras.Model:
    """``model`` with each layer whose config ``edit`` changes rebuilt from the edited config.

    ``edit(config)`` edits in place and says whether it changed anything; the other layers are
    copied as they are (``rewrite_model``: nested models too, with every layer's state).
    """

    def transform(layer: keras.layers.Layer):
        if not edit(layer.get_config()):
            return None
        new = fresh_copy(layer, edit)
        return new, lambda: copy_state(layer, new)

    if not any(edit(layer.get_config()) for layer in iter_layers(model)):
        return model
    return rewrite_model(model, transform)


def _nearest_resizes(model: keras.Model) -> keras.Model:
    """``model`` with each nearest-neighbour ``UpSampling2D`` computed as a ``Resizing``.

    Keras 3 upsamples by repeating (``keras.ops.repeat``), which converts to ``RESHAPE`` and
    ``TILE``; TensorFlow Lite Micro has no ``TILE`` kernel, so a U-Net's decoder did not run
    there. ``Resizing(h * a, w * b, interpolation="nearest")`` computes the same pixels (output
    ``i`` reads input ``i // a``, which nearest-neighbour resizing with half-pixel centres
    gives for an integer factor) as one ``RESIZE_NEAREST_NEIGHBOR``, which both runtimes have.
    Layers of unknown height or width, or called more than once, stay as they are.
    """

    def size(layer) -> tuple[int, int] | None:
        if type(layer) is not keras.layers.UpSampling2D or layer.interpolation != "nearest":
            return None
        try:
            (image,), _ = call_arguments(layer)
        except ValueError:  # a shared layer, or one never called
            return None
        shape = tuple(image.shape)
        h, w = shape[2:4] if channels_first(layer) else shape[1:3]
        if h is None or w is None:
            return None
        return h * layer.size[0], w * layer.size[1]

    def transform(layer):
        target = size(layer)
        if target is None:
            return None
        new = keras.layers.Resizing(*target, interpolation="nearest",
                                    data_format=layer.data_format, name=layer.name,
                                    dtype=layer.dtype_policy)  # fmt: skip
        return new, lambda: None

    if not is_functional(model) or not any(size(layer) for layer in iter_layers(model)):
        return model
    return rewrite_model(model, transform)


def _unrolled(model: keras.Model, name: str) -> keras.Model:
    """``model`` with its recurrent layers unrolled, for int8 calibration.

    A Keras RNN converts to a TFLite ``WHILE`` loop, and TensorFlow's calibrator (2.14 and
    later) reads an output the loop has freed and kills the Python process with a
    segmentation fault (tensorflow/tensorflow#75140, open): every full-integer conversion of
    an LSTM, GRU or SimpleRNN, with any batch size. Unrolled, the same RNN is the same
    computation without a loop, so it is rebuilt that way (``unroll=True``) with its state;
    that needs each recurrent layer's sequence length, or a clear error is raised before the
    converter crashes.
    """
    loops = [layer for layer in iter_layers(model) if _rolled(layer)]
    if not loops:
        return model
    unknown = [layer.name for layer in loops if _time_steps(layer) is None]
    if unknown or not is_functional(model):
        why = f"layer(s) {unknown} take sequences of unknown length"
        if not unknown:
            why = "the model is subclassed, so it cannot be rebuilt unrolled"
        raise ValueError(
            f"int8 conversion of model {name!r} would crash TensorFlow's calibrator (a "
            "segmentation fault on the loop of a recurrent layer: tensorflow/tensorflow#75140), "
            f"so its recurrent layers are converted unrolled, but {why}. Give the Input a fixed "
            "sequence length (keras.Input((length, features))) or export quantization='float32'"
        )
    return _rebuilt(model, _unroll)


def _rolled(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` (an RNN, also in ``Bidirectional``/``TimeDistributed``) loops."""
    if isinstance(layer, keras.layers.Bidirectional):
        return _rolled(layer.forward_layer)
    if isinstance(layer, keras.layers.TimeDistributed):
        return _rolled(layer.layer)
    return isinstance(layer, keras.layers.RNN) and not layer.unroll


def _time_steps(layer: keras.layers.Layer) -> int | None:
    """The length of the sequences ``layer`` reads (``None``: unknown until run)."""
    axis = 2 if isinstance(layer, keras.layers.TimeDistributed) else 1
    return tuple(keras.tree.flatten(layer.input)[0].shape)[axis]


def _unroll(config) -> bool:
    """Set ``unroll`` wherever a (layer's, or a wrapped layer's) config has it; whether any."""
    changed = False
    if isinstance(config, dict) and config.get("unroll") is False:
        config["unroll"] = changed = True
    for value in config.values() if isinstance(config, dict) else config:
        if isinstance(value, dict | list):
            changed = _unroll(value) or changed
    return changed


def _float32_policies(config) -> bool:
    """Replace every mixed-precision ``DTypePolicy`` in a serialized config; whether any was."""
    changed = False
    for value in config.values() if isinstance(config, dict) else config:
        if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
            if value["config"]["name"].startswith("mixed_"):
                value["config"] = {**value["config"], "name": "float32"}
                changed = True
        elif isinstance(value, dict | list):
            changed = _float32_policies(value) or changed
    return changed


def _converter_options(quantization: str, representative_data, input_names=()) -> dict:
    """``TFLiteConverter`` settings, as Keras's LiteRT export takes them."""
    if quantization == "float32":
        return {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": _as_input_lists(representative_data, input_names),
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": tf.int8,
        "inference_output_type": tf.int8,
    }


def _as_input_lists(representative_data: Callable[[], Iterable], input_names=()):
    """Accept bare arrays too, and a list in the model's input order for several inputs.

    The converter wants each item as a list of the model's inputs, but matches a list to the
    signature's inputs in *their* order (by name, not the model's); several inputs are
    therefore passed by name (``input_names``: the model's inputs, in order).
    """

    def items():
        for item in representative_data():
            if not isinstance(item, (list, tuple, dict)):
                item = [item]
            if len(input_names) > 1 and isinstance(item, (list, tuple)):
                if len(item) != len(input_names):
                    raise ValueError(
                        f"representative_data gave {len(item)} arrays for the model's "
                        f"{len(input_names)} inputs ({', '.join(input_names)})"
                    )
                item = dict(zip(input_names, item))
            yield item

    return items


def _export(model: keras.Model, options: dict, batch_size: int | None) -> bytes:
    signature = None
    if batch_size is not None:
        if not is_functional(model):
            raise ValueError("a fixed batch_size needs a Sequential or functional model")
        # One positional argument holding the model's input structure, as Keras's own export
        # builds it; the names keep the signature's inputs named after the model's Inputs.
        signature = [keras.tree.map_structure(
            lambda t: tf.TensorSpec((batch_size, *t.shape[1:]), t.dtype, name=t.name),
            model_input(model),
        )]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        model.export(str(path), format="litert", verbose=False, input_signature=signature,
                     **options)  # fmt: skip
        return path.read_bytes()


def _fixed_batch_helps(model: keras.Model) -> bool:
    """TFLite's builtins run a Keras RNN as a loop whose shapes must be static (TF 2.21)."""
    rnn = any(isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)
              for layer in iter_layers(model))  # fmt: skip
    return rnn and is_functional(model)


def _unknown_lengths(model: keras.Model) -> bool:
    return any(None in tuple(t.shape)[1:] for t in keras.tree.flatten(model_input(model)))


def _hint(model: keras.Model) -> str:
    note = quantized_note(model)
    if note:
        return f"\nHint: {note}; Keras's own LiteRT export fails on them too."
    if any(t.dtype == "string" for t in keras.tree.flatten(model_input(model))):
        return (
            "\nHint: the model takes strings, and TFLite's builtin operators process no text "
            "(Keras's own LiteRT export emits TensorFlow ops for it, which need the Flex "
            "delegate: neither LiteRT's Python interpreter nor TensorFlow Lite Micro runs "
            "them). Keep TextVectorization/StringLookup outside the exported model (in "
            "tf.data, or in the app) and export the part that takes token ids, or export "
            "with tf_ops=True for an app that links the Flex delegate."
        )
    rnn = any(isinstance(layer, keras.layers.RNN) for layer in iter_layers(model))
    if not (rnn and is_functional(model) and _unknown_lengths(model)):
        return ""
    return (
        "\nHint: the model has RNN layers (LSTM/GRU) and inputs of unknown length; TFLite "
        "converts them with a fixed shape: wrap it as keras.Model(inp, model(inp)) with "
        "inp = keras.Input((length, ...), batch_size=1)."
    )


def _first_unconvertible_layer(model: keras.Model) -> keras.layers.Layer | None:
    """Convert each single-input layer alone, in order, to name the one the converter rejects.

    In float: the int8 calibration data fits the whole model's inputs, not a layer's.
    """
    options = _converter_options("float32", None)
    for layer in iter_layers(model):
        try:
            shape = layer.input.shape[1:]
        except (AttributeError, ValueError):  # several inputs, or no symbolic input
            continue
        probe = keras.Sequential([keras.Input(shape, batch_size=1), fresh_copy(layer)])
        try:
            _export(probe, options, None)
        except Exception:  # noqa: BLE001 - any failure marks the culprit
            return layer
    return None
