"""Where the weights are in a ``.tflite`` file, read with the flatbuffer schema TensorFlow ships.

TensorFlow bundles the generated reader of the TFLite schema
(``tensorflow/lite/python/schema_py_generated.py``); offsets come from it, not from guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

# TensorType enum of tensorflow/lite/schema/schema.fbs -> numpy dtype.
_DTYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.INT8: np.int8,
}


@dataclass(frozen=True)
class WeightBuffer:
    """A constant tensor's data inside a ``.tflite`` file.

    Attributes:
        tensor: the tensor's name.
        buffer: index into the model's buffers.
        offset: byte offset of the data in the file.
        length: data size in bytes.
        dtype: element type (numpy).
        shape: the tensor's shape (a sparse-encoded tensor: the number of values stored).
    """

    tensor: str
    buffer: int
    offset: int
    length: int
    dtype: np.dtype
    shape: tuple[int, ...]

    def values(self, model: bytes) -> np.ndarray:
        """The tensor's values, read from the file bytes."""
        return np.frombuffer(model, self.dtype, self.length // self.dtype.itemsize, self.offset)


def weight_buffers(model: bytes) -> list[WeightBuffer]:
    """Every constant tensor with data, one entry per buffer, in file order.

    Metadata buffers and tensors of types without a fixed-size numpy equivalent (strings,
    resources) are left out.

    Args:
        model: the bytes of a ``.tflite`` file.

    Raises:
        ValueError: the bytes are not a TFLite flatbuffer.

    Example:
        >>> with open("lenet5.tflite", "rb") as f:  # doctest: +SKIP
        ...     [(b.tensor, b.shape) for b in weight_buffers(f.read())][:1]
        [('sequential/conv1/convolution', (20, 5, 5, 1))]
    """
    if len(model) < 8 or not schema.Model.ModelBufferHasIdentifier(model, 0):
        raise ValueError("not a TFLite model: no 'TFL3' file identifier at byte offset 4")
    root = schema.Model.GetRootAs(model, 0)
    base = np.frombuffer(model, np.uint8).ctypes.data
    metadata = {root.Metadata(i).Buffer() for i in range(root.MetadataLength())}
    found: dict[int, WeightBuffer] = {}
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            index = tensor.Buffer()
            if index == 0 or index in metadata or index in found:
                continue
            dtype = _DTYPES.get(tensor.Type())
            if dtype is None:
                continue
            buffer = root.Buffers(index)
            if buffer.Offset() > 1:  # data stored after the flatbuffer (models over 2 GB)
                offset, length = int(buffer.Offset()), int(buffer.Size())
            elif buffer.DataLength() > 0:
                data = buffer.DataAsNumpy()  # a view into `model`: its address gives the offset
                offset, length = int(data.ctypes.data - base), int(data.size)
            else:
                continue
            name = tensor.Name().decode("utf-8", "replace")
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            if tensor.Sparsity() is not None:  # sparse-encoded: the kept values, flat
                shape = (length // np.dtype(dtype).itemsize,)
            found[index] = WeightBuffer(name, index, offset, length, np.dtype(dtype), shape)
    return sorted(found.values(), key=lambda b: b.offset)


def sidecar_cuts(model: bytes) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """Every weight buffer as ``sidecar.split`` takes it: ``(offset, length, elem_size, shape)``.

    Example:
        >>> with open("lenet5.tflite", "rb") as f:  # doctest: +SKIP
        ...     sidecar_cuts(f.read())[0][2:]
        (4, (20, 5, 5, 1))
    """
    return [(b.offset, b.length, b.dtype.itemsize, b.shape) for b in weight_buffers(model)]


def scale_links(model: bytes) -> list[tuple[int, int, int, int]]:
    """Per-channel scale vectors that are a scalar scale times another, for ``sidecar.split``.

    TFLite quantizes a bias with scale ``input_scale * kernel_scale[c]`` per output channel
    (the quantization spec, tensorflow.org/lite/performance/quantization_spec), so a
    per-channel int8 model stores each layer's channel scales twice, once times the input's
    scale. For every operator, each pair of its inputs' scale vectors of equal length (two or
    more) and each single scale among its inputs give a candidate ``(target, source, length,
    factor)``: byte offsets of the two float32 vectors, their byte length and the scalar's bit
    pattern. ``sidecar.split`` keeps the candidates that hold exactly, so a guess costs
    nothing.

    Example:
        >>> with open("mobilenet_v2_int8.tflite", "rb") as f:  # doctest: +SKIP
        ...     len(scale_links(f.read()))
        52
    """
    root = schema.Model.GetRootAs(model, 0)
    links = set()
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            scales = []  # (offset, count) of each input's scale vector
            for t in graph.Operators(o).InputsAsNumpy():
                q = graph.Tensors(int(t)).Quantization() if t >= 0 else None
                field = q._tab.Offset(8) if q is not None else 0  # QuantizationParameters.scale
                if field:
                    scales.append((q._tab.Vector(field), q._tab.VectorLen(field)))
            factors = [int.from_bytes(model[at : at + 4], "little") for at, n in scales if n == 1]
            vectors = [(at, n) for at, n in scales if n > 1]
            for source, n in vectors:
                for target, m in vectors:
                    if target != source and m == n:
                        links.update((target, source, 4 * n, f) for f in factors)
    return sorted(links)
