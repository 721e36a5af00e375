"""Running models in TensorFlow Lite Micro's own Python runtime (DECODE operators included)."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import tempfile
from collections.abc import Mapping

import numpy as np

from keras_compress.tflm.compression import INSTALL_HINT, upstream


def _runtime():
    try:
        return importlib.import_module("tflite_micro.python.tflite_micro.runtime")
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err


def interpreter(model: bytes, arena_size: int | None = None):
    """TFLM's own Python interpreter for a model (DECODE included).

    Without ``arena_size`` the arena starts at 256 KiB and doubles until the model's tensors
    fit (DECODE's outputs live there too); ``arena_bytes`` says what it really uses.

    Example:
        >>> interpreter(result.data).get_input_details(0)["dtype"]  # doctest: +SKIP
        <class 'numpy.int8'>
    """
    runtime = _runtime()
    if arena_size is not None:
        return runtime.Interpreter.from_bytes(bytes(model), arena_size=arena_size)
    size = 256 * 1024
    while True:
        with tempfile.TemporaryFile("w+") as log:
            try:
                with _stderr_to(log):  # a try with too small an arena reports it there
                    return runtime.Interpreter.from_bytes(bytes(model), arena_size=size)
            except RuntimeError as error:
                log.seek(0)
                report = [line.strip() for line in log.read().splitlines()
                          if line.strip() and not _ARENA_TOO_SMALL.search(line)]  # fmt: skip
                if report:  # not the arena: TFLM says why, and no larger arena will help
                    raise RuntimeError(
                        f"TFLM cannot run the model: {' / '.join(report[-3:])}{_hint(report)}"
                    ) from error
                if size >= 1 << 30:
                    raise
            size *= 2


#: TFLM's reports of an arena too small for the model's tensors.
_ARENA_TOO_SMALL = re.compile(r"Failed to (resize buffer|allocate (tail|head) memory)")


def _hint(report: list[str]) -> str:
    if any("Non-constant" in line or "dynamic" in line.lower() for line in report):
        return (
            " (TFLM plans every tensor's size ahead: export with a fixed batch, "
            "kc.export(..., batch_size=1))"
        )
    return ""


@contextlib.contextmanager
def _stderr_to(sink):
    """Send file descriptor 2 to ``sink``: TFLM reports from C++ there, not to ``sys.stderr``."""
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run(model: bytes, inputs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Outputs of the first output tensor, one invoke per row of ``inputs`` (already quantized).

    Args:
        model: the ``.tflite`` bytes.
        inputs: one array for a model with one input; ``{input name: array}`` (the Keras
            ``Input`` names, as ``kc.deploy.litert.run`` takes them) for several.

    Raises:
        ValueError: inputs that do not match the model's (names, count).

    Example:
        >>> run(result.data, x_int8[:2]).shape  # doctest: +SKIP
        (2, 10)
    """
    names = input_names(model)
    if isinstance(inputs, Mapping):
        if sorted(inputs) != sorted(names):
            raise ValueError(f"the model takes inputs {names}; got {sorted(inputs)}")
        columns = [np.asarray(inputs[name]) for name in names]
    elif len(names) > 1:
        raise ValueError(
            f"the model takes {len(names)} inputs ({', '.join(names)}); pass them by name, "
            "{input name: array}"
        )
    else:
        columns = [np.asarray(inputs)]
    it = interpreter(model)
    outputs = []
    for rows in zip(*columns, strict=True):
        for index, row in enumerate(rows):
            it.set_input(row[None], index)
        it.invoke()
        outputs.append(np.array(it.get_output(0))[0])
    return np.stack(outputs)


def input_names(model: bytes) -> list[str]:
    """The model's inputs in the order TFLM indexes them, named as the Keras ``Input`` layers.

    Keras's LiteRT export names each input tensor ``serving_default_<name>:0``; TFLM's
    interpreter keeps no names, so they are read from the flatbuffer (with upstream's model
    reader, which takes DECODE-coded models too, unlike LiteRT).

    Example:
        >>> input_names(open("lenet5_int8.tflite", "rb").read())  # doctest: +SKIP
        ['input_layer']
    """
    graph = upstream("compression.model_editor").read(bytes(model)).subgraphs[0]
    return [re.sub(r"^serving_default_|:0$", "", tensor.name or "") for tensor in graph.inputs]


def arena_bytes(model: bytes) -> int:
    """The tensor arena the model needs in TFLM (its recording allocator's total), in bytes.

    Example:
        >>> arena_bytes(result.data)  # doctest: +SKIP
        12016
    """
    it = interpreter(model)
    details = it.get_input_details(0)
    it.set_input(np.zeros(details["shape"], details["dtype"]), 0)
    it.invoke()
    with tempfile.TemporaryFile("w+") as log:
        with _stderr_to(log):
            it.print_allocations()
        log.seek(0)
        found = re.search(r"Arena allocation total (\d+) bytes", log.read())
    if not found:
        raise RuntimeError("TFLM did not report its arena allocation")
    return int(found.group(1))
