"""One call from a compressed Keras model to what a device ships: .tflite, skeleton, sidecar."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_compress import sidecar
from keras_compress.coding.entropy import entropy_bytes
from keras_compress.core.rewrite import fresh_copy, iter_layers
from keras_compress.core.wrapper import strip
from keras_compress.tflite_buffers import weight_buffers

SUFFIXES = (".tflite", ".skeleton", ".kcz", ".report.json", ".report.md")


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


def tensor_rows(model_bytes: bytes, entries: list[sidecar.Entry]) -> list[dict]:
    """Per constant tensor: shape, non-zeros, distinct values, bytes before and after.

    ``entropy_bytes`` is the element-wise entropy bound of a tensor coded in the sidecar
    (``entropy_bytes``), ``None`` for one left in the skeleton.
    """
    coded = {e.offset: e for e in entries}
    rows = []
    for b in weight_buffers(model_bytes):
        values = b.values(model_bytes)
        entry = coded.get(b.offset)
        rows.append(
            {
                "tensor": b.tensor,
                "shape": list(b.shape),
                "dtype": b.dtype.name,
                "elements": int(values.size),
                "nonzero": int(np.count_nonzero(values)),
                "distinct": int(np.unique(values).size),
                "stored": "sidecar" if entry else "skeleton",
                "bytes_before": b.length,
                "bytes_after": entry.payload_size + 4 if entry else b.length,
                "entropy_bytes": round(entropy_bytes(values), 1) if entry else None,
                "bits_per_element": 8
                * (entry.payload_size + 4 if entry else b.length)
                / max(values.size, 1),
            }
        )
    return rows


def export(
    model: keras.Model,
    path: str | os.PathLike,
    quantization: str = "float32",
    representative_data: Callable[[], Iterable] | None = None,
) -> dict:
    """Write ``PATH.tflite``, ``PATH.skeleton``, ``PATH.kcz`` and ``PATH.report.{json,md}``.

    The ``.tflite`` is the ordinary model; the skeleton is that file with the coded weight
    bytes cut out; the sidecar holds them as Deep Compression stores them (codebook,
    Huffman-coded values and relative positions). ``keras_compress.sidecar.join`` (or the C
    and Java decoders) rebuilds the ``.tflite`` byte for byte; this is checked before anything
    is written. All files are written to temporary names and renamed only once every one of
    them is complete, so a failed export leaves earlier outputs untouched; ``model`` is not
    modified.

    Args:
        model: the compressed model (wrapped or stripped).
        path: output prefix, e.g. ``"out/lenet5"``; its folder is created.
        quantization: ``"float32"`` or ``"int8"`` (see ``convert``).
        representative_data: calibration inputs for ``"int8"``.

    Returns:
        The report: per-tensor rows and totals, including
        ``ratio = tflite_bytes / (skeleton_bytes + sidecar_bytes)``.

    Example:
        >>> import keras_compress as kc
        >>> report = kc.export(model, "out/lenet5")  # doctest: +SKIP
        >>> report["totals"]["ratio"]  # doctest: +SKIP
        41.3
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    model_bytes = convert(model, quantization, representative_data)
    cuts = [(b.offset, b.length, b.dtype.itemsize) for b in weight_buffers(model_bytes)]
    skeleton, side, entries = sidecar.split(model_bytes, cuts)
    if sidecar.join(skeleton, side) != model_bytes:  # never ship what we cannot decode
        raise RuntimeError("internal error: the sidecar does not rebuild the model")
    rows = tensor_rows(model_bytes, entries)
    totals = {
        "tflite_bytes": len(model_bytes),
        "skeleton_bytes": len(skeleton),
        "sidecar_bytes": len(side),
        "deployable_bytes": len(skeleton) + len(side),
        "ratio": len(model_bytes) / (len(skeleton) + len(side)),
        "quantization": quantization,
    }
    report = {"model": model.name, "tensors": rows, "totals": totals}
    contents = {
        ".tflite": model_bytes,
        ".skeleton": skeleton,
        ".kcz": side,
        ".report.json": (json.dumps(report, indent=1) + "\n").encode(),
        ".report.md": report_markdown(report).encode(),
    }
    _write_all_or_nothing({target.with_name(target.name + s): data for s, data in contents.items()})
    return report


def report_markdown(report: dict) -> str:
    """The report as a Markdown table with a totals line."""
    t = report["totals"]
    lines = [
        f"# {report['model']}: {t['tflite_bytes']} -> {t['deployable_bytes']} bytes "
        f"({t['ratio']:.2f}x, {t['quantization']})",
        "",
        "| tensor | shape | nonzero | distinct | stored | bytes before | bytes after | bits/elem "
        "| entropy bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["tensors"]:
        lines.append(
            f"| {r['tensor']} | {tuple(r['shape'])} | {r['nonzero']}/{r['elements']} | "
            f"{r['distinct']} | {r['stored']} | {r['bytes_before']} | {r['bytes_after']} | "
            f"{r['bits_per_element']:.2f} | "
            f"{'-' if r['entropy_bytes'] is None else round(r['entropy_bytes'])} |"
        )
    lines.append(
        f"\nskeleton {t['skeleton_bytes']} B + sidecar {t['sidecar_bytes']} B = "
        f"{t['deployable_bytes']} B; float .tflite {t['tflite_bytes']} B"
    )
    return "\n".join(lines) + "\n"


def _write_all_or_nothing(files: dict[Path, bytes]) -> None:
    temporary = {}
    try:
        for final, data in files.items():
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            temporary[final] = name
        for final, name in temporary.items():
            os.replace(name, final)
    finally:
        for name in temporary.values():
            if os.path.exists(name):
                os.remove(name)
