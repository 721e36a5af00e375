"""Accuracy of a ``.tflite`` in LiteRT's interpreter, for the benchmarks.

Imports only numpy and ``ai_edge_litert``, so that ``tfmot_baseline.py`` (legacy Keras, its own
process) and ``table1.py`` (Keras 3) measure their models the same way.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def tflite_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy; int8 inputs are quantized with the model's own scale and zero point."""
    interpreter = Interpreter(model_content=model_bytes)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    correct, shape = 0, None
    for i in range(0, len(x), batch):
        value = x[i : i + batch]
        if value.shape != shape:
            shape = value.shape
            interpreter.resize_tensor_input(inp["index"], shape)
            interpreter.allocate_tensors()
        if inp["dtype"] == np.int8:
            value = np.clip(np.round(value / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], value)
        interpreter.invoke()
        predicted = np.argmax(interpreter.get_tensor(out["index"]), axis=1)
        correct += int(np.sum(predicted == y[i : i + batch]))
    return correct / len(y)
