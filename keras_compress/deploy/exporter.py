"""One call from a compressed Keras model to what a device ships: .tflite, skeleton, sidecar."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from keras_compress.coding.entropy import entropy_bytes
from keras_compress.core.files import write_atomically
from keras_compress.deploy import sidecar
from keras_compress.deploy.converter import convert
from keras_compress.deploy.tflite_buffers import scale_links, sidecar_cuts, weight_buffers

SUFFIXES = (".tflite", ".skeleton", ".kcz", ".report.json", ".report.md")


@dataclass(frozen=True)
class ExportReport:
    """What ``export`` wrote, with the fields of ``PATH.report.json``.

    Attributes:
        model: the model's name.
        tensors: one row per constant tensor of the ``.tflite`` (see ``tensor_rows``).
        totals: ``tflite_bytes``, ``skeleton_bytes`` (as stored: DEFLATE-coded where that is
            smaller), ``skeleton_raw_bytes`` (decoded), ``sidecar_bytes``,
            ``deployable_bytes``, ``ratio`` (``tflite_bytes / deployable_bytes``) and
            ``quantization``.

    Example:
        >>> report = ExportReport("m", [], {"tflite_bytes": 100, "skeleton_bytes": 10,
        ...     "sidecar_bytes": 10, "deployable_bytes": 20, "ratio": 5.0,
        ...     "quantization": "float32"})
        >>> report.markdown().splitlines()[0]
        '# m: 100 -> 20 bytes (5.00x, float32)'
    """

    model: str
    tensors: list[dict]
    totals: dict

    def as_dict(self) -> dict:
        """The report as ``PATH.report.json`` holds it."""
        return asdict(self)

    def markdown(self) -> str:
        """The report as a Markdown table with a totals line (``PATH.report.md``)."""
        t = self.totals
        lines = [
            f"# {self.model}: {t['tflite_bytes']} -> {t['deployable_bytes']} bytes "
            f"({t['ratio']:.2f}x, {t['quantization']})",
            "",
            "| tensor | shape | nonzero | distinct | stored | bytes before | bytes after "
            "| bits/elem | entropy bound |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.tensors:
            bound = "-" if r["entropy_bytes"] is None else round(r["entropy_bytes"])
            lines.append(
                f"| {r['tensor']} | {tuple(r['shape'])} | {r['nonzero']}/{r['elements']} | "
                f"{r['distinct']} | {r.get('coding') or r['stored']} | {r['bytes_before']} | "
                f"{r['bytes_after']} | "
                f"{r['bits_per_element']:.2f} | {bound} |"
            )
        lines.append(
            f"\nskeleton {t['skeleton_bytes']} B ({t.get('skeleton_raw_bytes', '?')} B decoded) + "
            f"sidecar {t['sidecar_bytes']} B = "
            f"{t['deployable_bytes']} B; float .tflite {t['tflite_bytes']} B"
        )
        if t.get("scaled_copies"):
            lines.append(
                f"\n{t['scaled_copies']} scale vectors stored as scaled copies of others "
                "(bias scale = input scale x kernel scale)"
            )
        return "\n".join(lines) + "\n"


CODING_NAMES = {sidecar.CODED: "huffman", sidecar.CHANNEL_CODED: "huffman per channel",
                sidecar.ARITHMETIC_CODED: "arithmetic"}  # fmt: skip


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
                "coding": CODING_NAMES[entry.encoding] if entry else None,
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
    batch_size: int | None = None,
    window_bits: int | None = 15,
    sparse: bool = False,
    coding: str = "auto",
    per_channel: bool = True,
    scaled_copies: bool = True,
    tf_ops: bool = False,
) -> ExportReport:
    """Write ``PATH.tflite``, ``PATH.skeleton``, ``PATH.kcz`` and ``PATH.report.{json,md}``.

    The ``.tflite`` is the ordinary model; the skeleton is that file with the coded weight
    bytes cut out; the sidecar holds them as Deep Compression stores them (codebook,
    Huffman-coded values and relative positions). ``keras_compress.deploy.sidecar.join`` (or the C
    and Java decoders) rebuilds the ``.tflite`` byte for byte; this is checked before anything
    is written. All files are written to temporary names and renamed only once every one of
    them is complete, so a failed export leaves earlier outputs untouched; ``model`` is not
    modified.

    Args:
        model: the compressed model (wrapped or stripped).
        path: output prefix, e.g. ``"out/lenet5"``; its folder is created.
        quantization: ``"float32"`` or ``"int8"`` (see ``convert``).
        representative_data: calibration inputs for ``"int8"``.
        batch_size: a fixed input batch size (``None``: the model's; see ``convert``).
        window_bits: the skeleton's DEFLATE window, ``2**window_bits`` bytes (9 to 15), or
            ``None`` to leave the skeleton raw. A C decoder for a microcontroller built with
            a smaller ``KCZ_WINDOW_BITS`` (10 with ``-Os``) needs an export with at most that.
        sparse: sparse-encode pruned weights in the ``.tflite`` (see ``convert``): faster
            Dense layers with block sparsity; the sidecar then codes the kept values only.
        coding: how the sidecar codes each tensor: ``"huffman"`` (Deep Compression's codes;
            sidecar format version 3 at most, read by every released decoder),
            ``"arithmetic"`` (context-adaptive binary arithmetic coding tried on every tensor,
            the smaller kept; version 4) or ``"auto"`` (arithmetic on the first 3 million
            elements, Huffman after: the Python coder takes seconds per million elements).
        per_channel: int8 scales per output channel (``True``, TFLite's default) or per
            tensor (``False``): after weight sharing per-tensor scales keep each kernel at
            ``2**bits`` values, which codes smaller (see ``convert`` and docs/export.md).
        scaled_copies: store each per-channel bias scale vector that is exactly the input
            scale times the kernel's scales as that product (sidecar format version 5,
            ``tflite_buffers.scale_links``). ``False`` for a C decoder built with
            ``KCZ_SCALED_COPY=0`` (about 240 bytes less Cortex-M4 code).
        tf_ops: allow TensorFlow operators for the Flex delegate, as Keras's export does
            (see ``convert``; builtins only by default).

    Returns:
        The ``ExportReport``: per-tensor rows and totals, including
        ``ratio = tflite_bytes / (skeleton_bytes + sidecar_bytes)``.

    Example:
        >>> import keras_compress as kc
        >>> report = kc.export(model, "out/lenet5")  # doctest: +SKIP
        >>> report.totals["ratio"]  # doctest: +SKIP
        41.3
    """
    target = Path(path)
    model_bytes = convert(
        model, quantization, representative_data, batch_size, sparse, per_channel, tf_ops
    )
    cuts = sidecar_cuts(model_bytes)
    links = scale_links(model_bytes) if scaled_copies else []
    skeleton, side, entries = sidecar.split(
        model_bytes, cuts, window_bits=window_bits, coding=coding, links=links
    )
    if sidecar.join(skeleton, side) != model_bytes:  # never ship what we cannot decode
        raise RuntimeError("internal error: the sidecar does not rebuild the model")
    rows = tensor_rows(model_bytes, entries)
    totals = {
        "tflite_bytes": len(model_bytes),
        "skeleton_bytes": len(skeleton),
        "skeleton_raw_bytes": len(model_bytes) - sum(e.length for e in entries),
        "scaled_copies": sum(e.encoding == sidecar.SCALED_COPY for e in entries),
        "sidecar_bytes": len(side),
        "deployable_bytes": len(skeleton) + len(side),
        "ratio": len(model_bytes) / (len(skeleton) + len(side)),
        "quantization": quantization,
        "per_channel": per_channel if quantization == "int8" else None,
        "tf_ops": tf_ops,
    }
    report = ExportReport(model.name, rows, totals)
    contents = {
        ".tflite": model_bytes,
        ".skeleton": skeleton,
        ".kcz": side,
        ".report.json": (json.dumps(report.as_dict(), indent=1) + "\n").encode(),
        ".report.md": report.markdown().encode(),
    }
    write_atomically({target.with_name(target.name + s): data for s, data in contents.items()})
    return report
