"""Models that stay compressed on TensorFlow Lite Micro: weights decoded by ``TFLM_DECODE``.

``compress`` takes a full-integer int8 ``.tflite`` (``keras_compress.export(...,
quantization="int8")`` writes one) and codes each constant tensor the smallest way that TFLM's
DECODE operator supports for it: LUT (a value table per tensor or per channel plus bit-packed
indices; what weight sharing's codebooks give), Huffman, or pruning (a bit mask plus the kept
values), or leaves it as it is. The model then needs no decoder code of ours on the device and
keeps its weights compressed in flash; DECODE writes each tensor into the arena before its
operator runs.

The graph edit (DECODE operators inserted before the consumers, flatbuffer alignment) and the
LUT encoder are tflite-micro's own (``tflite_micro.tensorflow.lite.micro.compression``); the
Huffman and pruning encoders, stubs upstream, are ``keras_compress.tflm.encoders``.
Needs the ``tflm`` extra: ``pip install "keras-compress[tflm]"``.

Example:
    >>> import keras_compress as kc
    >>> result = kc.tflm.compress(open("lenet5_int8.tflite", "rb").read())  # doctest: +SKIP
    >>> [(c.tensor, c.chosen) for c in result.choices][:1]  # doctest: +SKIP
    [('sequential/conv1/convolution', 'lut')]
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_compress.core.files import write_atomically
from keras_compress.tflm.encoders import Encoding, encode_huffman, encode_pruning

METHODS = ("lut", "huffman", "pruning")
# A DECODE operator, its ancillary and output tensors and their buffers cost flatbuffer bytes
# (measured on a small MLP: about 250 B per coded tensor, about 900 B more for the first, which
# adds the custom operator code and alignment; on an unrolled GRU, whose long tensor names are
# copied into each decoded tensor, about 490 B); a smaller saving is not worth the operator.
# Upstream inserts one DECODE before each operator that reads the tensor (a decoded tensor
# lives until the next operator only), so a tensor read by n operators must save n times this.
DEFAULT_MIN_SAVING = 256
INSTALL_HINT = 'TensorFlow Lite Micro is missing: pip install "keras-compress[tflm]"'


def upstream(name: str):
    """A module of tflite-micro's Python package (``compression.model_editor``, ...).

    Raises:
        ImportError: tflite-micro is not installed (the ``tflm`` extra), saying how to get it.

    Example:
        >>> upstream("compression.model_editor").__name__.rsplit(".", 1)[-1]  # doctest: +SKIP
        'model_editor'
    """
    try:
        return importlib.import_module(f"tflite_micro.tensorflow.lite.micro.{name}")
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err


@dataclass(frozen=True)
class TensorChoice:
    """How one constant tensor was coded, and the sizes of every option.

    Attributes:
        tensor: the tensor's name.
        index: its index in its subgraph.
        operators: the operators that read it.
        dtype: its element type.
        raw_bytes: its data size uncompressed.
        options: bytes (encoded + ancillary) per method, or why the method does not apply.
        chosen: ``"lut"``, ``"huffman"``, ``"pruning"`` or ``"none"``.
        reason: one line saying why.
        subgraph: the subgraph holding it (a loop body's weights are in their own).

    Example:
        >>> c = TensorChoice("w", 1, ("FULLY_CONNECTED",), "int8", 4000,
        ...                  {"lut": 1520, "huffman": 900, "pruning": 1100}, "huffman", "smallest")
        >>> c.bytes_after
        900
    """

    tensor: str
    index: int
    operators: tuple[str, ...]
    dtype: str
    raw_bytes: int
    options: dict[str, int | str] = field(default_factory=dict)
    chosen: str = "none"
    reason: str = ""
    subgraph: int = 0

    @property
    def bytes_after(self) -> int:
        """Bytes of the tensor's data (encoded + ancillary) in the compressed model."""
        return self.raw_bytes if self.chosen == "none" else int(self.options[self.chosen])


@dataclass(frozen=True)
class TflmModel:
    """A ``.tflite`` with DECODE operators, and the per-tensor report.

    Attributes:
        data: the compressed model's bytes.
        choices: one ``TensorChoice`` per constant tensor considered.

    Example:
        >>> result = compress(model_bytes)  # doctest: +SKIP
        >>> print(result.markdown())  # doctest: +SKIP
    """

    data: bytes
    choices: list[TensorChoice]

    def markdown(self) -> str:
        """A table: tensor, operators, raw bytes, each method's bytes, the choice and why."""
        lines = [
            "| tensor | operators | dtype | raw | lut | huffman | pruning | chosen | why |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in self.choices:
            cells = [c.options.get(m, "-") for m in METHODS]
            cells = [f"{v:,}" if isinstance(v, int) else v for v in cells]
            lines.append(f"| {c.tensor} | {', '.join(c.operators)} | {c.dtype} | {c.raw_bytes:,} | "
                         f"{' | '.join(cells)} | {c.chosen} | {c.reason} |")  # fmt: skip
        return "\n".join(lines)


def compress(
    model: bytes,
    methods: Iterable[str] = METHODS,
    min_saving: int = DEFAULT_MIN_SAVING,
    min_elements: int = 64,
    max_decoded_bytes: int | None = None,
) -> TflmModel:
    """Code every constant tensor of a ``.tflite`` the smallest way TFLM's DECODE supports.

    Per tensor, each allowed method is tried (LUT: a value table per channel when the tensor
    is quantized per channel, else one; Huffman: int8/int16; pruning: any type; LUT and
    pruning need the channel axis to be 0 or the last); the smallest wins if it saves at
    least ``min_saving`` bytes over the raw data.
    Tensors that an operator must read while preparing (shapes, paddings, ...) and tensors
    sharing a buffer with another are left as they are, with the reason in the report.

    The trade: a coded tensor takes less flash, but DECODE writes it out in full into the
    tensor arena (RAM) before its operator runs, on every invoke. ``max_decoded_bytes`` keeps
    larger tensors plain in flash when RAM is the tighter budget.

    Args:
        model: the bytes of a ``.tflite`` (full-integer int8 for microcontrollers).
        methods: the methods allowed, a subset of ``("lut", "huffman", "pruning")``.
        min_saving: the fewest bytes a method must save to be used, per DECODE operator it
            needs (one before each operator that reads the tensor). If the coded model still
            comes out no smaller than ``model``, ``model`` is returned as it is.
        min_elements: smaller tensors are left as they are.
        max_decoded_bytes: larger tensors are left as they are (``None``: no limit).

    Returns:
        The compressed model and one ``TensorChoice`` per constant tensor.

    Raises:
        ValueError: an unknown method, or bytes that are not a TFLite model.
        ImportError: ``tflite-micro`` is not installed.

    Example:
        >>> result = compress(model_bytes, methods=("lut", "huffman"))  # doctest: +SKIP
        >>> len(result.data) < len(model_bytes)  # doctest: +SKIP
        True
    """
    methods = tuple(methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown TFLM decode method(s) {unknown}; choose from {METHODS}")
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ValueError("not a TFLite model: no 'TFL3' file identifier at byte offset 4")
    editor = upstream("compression.model_editor")
    constant_inputs = upstream("compression.constant_inputs")
    decode_insert = upstream("compression.decode_insert")
    compressor = upstream("compression.compressor")
    graph_model = editor.read(model)
    owners: dict[int, int] = {}
    for t in editor.iter_tensors(graph_model):
        if t.buffer is not None and t.buffer.data:
            owners[id(t.buffer)] = owners.get(id(t.buffer), 0) + 1
    limits = (methods, min_saving, min_elements, max_decoded_bytes)
    choices, results = [], {}
    for g, graph in enumerate(graph_model.subgraphs):
        for index, tensor in enumerate(graph.tensors):
            if tensor.buffer is None or not tensor.buffer.data:
                continue
            choice, encoding = _choose(graph, g, index, tensor, owners, constant_inputs, limits)
            choices.append(choice)
            if encoding is not None:
                results[(g, index)] = compressor.CompressionResult(
                    encoding.encoded, encoding.ancillary
                )
    if not results:
        return TflmModel(bytes(model), choices)
    decode_insert.insert_decode_operators(graph_model, results)
    data = _aligned(bytes(graph_model.build()))
    if len(data) >= len(model):  # rebuilding costs bytes of its own (alignment, metadata)
        why = f"the rebuilt model would be {len(data):,} B, not below the input's {len(model):,} B"
        kept = [_replace(c, chosen="none", reason=why) if c.chosen != "none" else c
                for c in choices]  # fmt: skip
        return TflmModel(bytes(model), kept)
    return TflmModel(data, choices)


def _choose(graph, g, index, tensor, owners, constant_inputs, limits):
    """One tensor's ``TensorChoice`` and the chosen encoding (``None``: left as it is)."""
    methods, min_saving, min_elements, max_decoded_bytes = limits
    consumers = graph.consumers_of(tensor)
    base = TensorChoice(
        tensor.name or f"tensor {index}",
        index,
        tuple(dict.fromkeys(op.opcode_name for op in consumers)),
        np.dtype(tensor.numpy_dtype).name,
        len(tensor.buffer.data),
        subgraph=g,
    )
    skip = _why_not(tensor, consumers, owners, constant_inputs, graph, min_elements)
    if not skip and max_decoded_bytes is not None and base.raw_bytes > max_decoded_bytes:
        skip = f"{base.raw_bytes:,} B decoded > max_decoded_bytes {max_decoded_bytes:,}"
    if skip:
        return _replace(base, reason=skip), None
    options, encodings = _options(tensor, methods)
    sized = {m: e.size for m, e in encodings.items()}
    choice = _replace(base, options={**options, **sized})
    if not sized:
        return _replace(choice, reason="no method applies"), None
    method = min(sized, key=lambda m: (sized[m], METHODS.index(m)))
    saving = base.raw_bytes - sized[method]
    decodes = len(consumers) + (tensor in graph.outputs)  # one DECODE per reader (upstream)
    if saving < min_saving * decodes:
        needed = f"{min_saving:,} B" + (f" x {decodes} DECODE operators" if decodes > 1 else "")
        return _replace(choice, reason=f"{method} would save {saving:,} B < {needed}"), None
    others = ", ".join(f"{m} {sized[m]:,} B" for m in sorted(sized, key=sized.get) if m != method)
    why = f"smallest: {sized[method]:,} B of {base.raw_bytes:,} B"
    why += f" (vs {others})" if others else ""
    return _replace(choice, chosen=method, reason=why), encodings[method]


def _replace(choice: TensorChoice, **changes) -> TensorChoice:
    return TensorChoice(**{**choice.__dict__, **changes})


def _why_not(tensor, consumers, owners, constant_inputs, graph, min_elements) -> str:
    if not consumers:
        return "no operator reads it"
    uses = constant_inputs.find_uses(graph, tensor)
    if uses:
        return "must stay constant: " + "; ".join(u.describe() for u in uses)
    if owners[id(tensor.buffer)] > 1:
        return "its buffer is shared with another tensor"
    if tensor.array.size < min_elements:
        return f"{tensor.array.size} elements < {min_elements}"
    return ""


def _quantization(tensor) -> tuple[np.ndarray, int | None]:
    """Zero points and the channel axis (None when per tensor), as TFLM's decoders read them."""
    q = tensor.quantization
    if q is None:
        return np.zeros(1, np.int64), None
    zero_points = np.atleast_1d(np.asarray(q.zero_points, np.int64))
    scales = np.atleast_1d(np.asarray(q.scales))
    return zero_points, (q.axis or 0) if scales.size > 1 else None


def _options(tensor, methods: tuple[str, ...]) -> tuple[dict[str, str], dict[str, Encoding]]:
    """Each method's encoding, or why it does not apply to this tensor."""
    values = tensor.array
    zero_points, axis = _quantization(tensor)
    notes, encodings = {}, {}
    if axis is not None and axis not in (0, values.ndim - 1):
        # LUT and pruning read the channel axis from the quantization; Huffman does not.
        notes = {m: f"channel axis {axis}: TFLM decodes axis 0 or the last" for m in methods}
        methods = tuple(m for m in methods if m == "huffman")
    if "lut" in methods:
        notes["lut"], lut = _lut(tensor, axis)
        if lut is not None:
            encodings["lut"] = lut
    if "huffman" in methods:
        if values.dtype in (np.int8, np.int16):
            encodings["huffman"] = encode_huffman(values)
        else:
            notes["huffman"] = f"{values.dtype} (TFLM's Huffman decodes int8/int16)"
    if "pruning" in methods:
        if values.dtype != np.int8 and np.any(zero_points != 0):
            notes["pruning"] = "non-zero zero points on a non-int8 tensor"
        else:
            encodings["pruning"] = encode_pruning(values, zero_points, axis or 0)
    return {m: n for m, n in notes.items() if n}, encodings


def _lut(tensor, axis: int | None) -> tuple[str, Encoding | None]:
    """Upstream's LUT encoder: one value table per channel when quantized per channel, else one."""
    lut = upstream("compression.lut")
    spec = upstream("compression.spec")
    tables = lut.compress_array(tensor.array, axis)
    bits = max(int(np.max(tables.indices)).bit_length(), 1)
    if bits > lut.LutAncillaryData.MAX_BITWIDTH:
        return f"{max(t.size for t in tables.lookup_tables)} distinct values > 128 per table", None
    mode = spec.PerTensor() if axis is None else spec.PerChannel(axis)
    result = lut.LutCompressor().compress(tensor, spec.LookUpTableCompression(bits, mode))
    return "", Encoding(bytes(result.encoded_data), bytes(result.ancillary_data))


def _aligned(model: bytes) -> bytes:
    """Re-pack with the schema's buffer alignment, by upstream's C++ tool.

    Python's flatbuffers ignores the schema's ``force_align``; TFLM's decoders need it.
    """
    align = upstream("tools.tflite_flatbuffer_align_wrapper")
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.tflite"), Path(folder, "out.tflite")
        source.write_bytes(model)
        align.align_tflite_model(str(source), str(target))
        return target.read_bytes()


def compress_file(source: str | os.PathLike, target: str | os.PathLike, **options) -> TflmModel:
    """``compress`` a ``.tflite`` file into another, written atomically; never over its input.

    Args:
        source: the full-integer ``.tflite``.
        target: where to write the compressed model (a different file).
        **options: passed to ``compress``.

    Returns:
        The ``TflmModel``.

    Raises:
        ValueError: ``target`` is ``source``.

    Example:
        >>> compress_file("out/lenet5.tflite", "out/lenet5.tflm.tflite")  # doctest: +SKIP
    """
    source, target = Path(source), Path(target)
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(f"refusing to overwrite the input model {source}")
    result = compress(source.read_bytes(), **options)
    write_atomically({target: result.data})
    return result
