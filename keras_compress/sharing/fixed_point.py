"""Linear fixed-point quantization of a model's weight matrices (ESE's 12-bit LSTM weights).

ESE (Han et al. 2017, arXiv:1612.00694, section 3.3) stores the pruned LSTM weights as 12-bit
fixed point: each tensor gets one power-of-two step large enough for its largest weight, and
every weight is rounded to the nearest multiple of it. Pruned weights (zeros) stay zero.

Example:
    >>> import keras
    >>> model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(8, name="lstm")])
    >>> report = quantize_weights(model, bits=12)
    >>> sorted(report)
    ['lstm/lstm_cell/kernel', 'lstm/lstm_cell/recurrent_kernel']
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from keras_compress.core.rewrite import iter_layers
from keras_compress.core.selectors import LayerSelector, check_selectors, selects_any
from keras_compress.core.weights import compressible_variables
from keras_compress.core.wrapper import weight_key
from keras_compress.sharing.quantizers import linear_quantize


def quantize_weights(
    model: keras.Model,
    bits: int = 12,
    layers: Iterable[LayerSelector] | None = None,
    power_of_two: bool = True,
) -> dict[str, dict]:
    """Round the weight matrices of ``model`` in place to ``bits``-bit linear fixed point.

    Args:
        model: a plain (stripped) model; its variables are assigned the dequantized values.
        bits: bits per weight (12 in ESE), from 2 to 16.
        layers: which layers (names, regexes or classes); ``None``: every layer with weight
            matrices (kernels, recurrent kernels, embeddings).
        power_of_two: a power-of-two step per tensor (fixed point, as ESE), else
            ``max|w| / (2^(bits-1) - 1)``.

    Returns:
        ``{"layer/weight": {"step", "levels", "max_error"}}``: the step, the number of distinct
        values after rounding, and the largest rounding error (at most half a step).

    Raises:
        ValueError: ``bits`` out of range, or selectors that pick no weight.

    Example:
        >>> dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> quantize_weights(dense, bits=4)["fc/kernel"]["levels"] <= 16
        True
    """
    selectors = None if layers is None else check_selectors(layers)
    report = {}
    for layer in iter_layers(model):
        if selectors is not None and not selects_any(selectors, layer):
            continue
        for variable in compressible_variables(layer):
            w = np.asarray(keras.ops.convert_to_numpy(variable), np.float64)
            q, step = linear_quantize(w, bits, power_of_two=power_of_two)
            rounded = (q * step).astype(variable.dtype)
            variable.assign(rounded)
            report[weight_key(layer, variable)] = {
                "step": float(step),
                "levels": int(np.unique(q).size),
                "max_error": float(np.max(np.abs(rounded - w))) if w.size else 0.0,
            }
    if not report:
        raise ValueError(f"no weight matrices to quantize in model {model.name!r} for {layers}")
    return report
