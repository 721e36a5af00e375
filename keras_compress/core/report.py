"""What compression did to a model's weight matrices: per-weight values, tables, sparsity."""

from __future__ import annotations

import keras
import numpy as np

from keras_compress.core.rewrite import iter_layers
from keras_compress.core.weights import compressible_variables
from keras_compress.core.wrapper import is_wrapper, weight_key


def weight_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """The compressible variables of ``model`` by weight key, through nested models.

    A keras_compress wrapper contributes the variables it compresses (custom weights
    included); other layers their default weight matrices (see ``core.weights``).

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> list(weight_variables(model))
        ['fc/kernel']
    """
    named = {}
    for layer in iter_layers(model):
        found = layer.compressed_variables if is_wrapper(layer) else compressible_variables(layer)
        named.update({weight_key(layer, v): v for v in found})
    return named


def compressed_weights(model: keras.Model) -> list[tuple[str, np.ndarray]]:
    """``(weight key, value)`` for every weight matrix, as the model computes with it.

    Wrapped layers report what their wrapper compresses (custom weights included, shared
    values for weight sharing); other layers report their default weight matrices.

    Example:
        >>> import keras_compress as kc
        >>> [name for name, _ in compressed_weights(kc.examples.lenet5())][:2]
        ['conv1/kernel', 'conv2/kernel']
    """
    out = []
    for layer in iter_layers(model):
        if is_wrapper(layer):
            values = [value for _, value in layer.compressed_weights()]
            variables = layer.compressed_variables
        else:
            variables = compressible_variables(layer)
            values = [keras.ops.convert_to_numpy(v) for v in variables]
        out += [(weight_key(layer, v), np.asarray(w)) for v, w in zip(variables, values)]
    return out


def weight_rows(model: keras.Model) -> list[dict]:
    """One row per weight matrix: name, shape, parameters, non-zeros, sparsity, distinct values.

    Example:
        >>> import keras_compress as kc
        >>> [r["weight"] for r in weight_rows(kc.examples.lenet_300_100())]
        ['fc1/kernel', 'fc2/kernel', 'fc3/kernel']
    """
    rows = []
    for name, w in compressed_weights(model):
        nonzero = int(np.count_nonzero(w))
        rows.append(
            {
                "weight": name,
                "shape": tuple(w.shape),
                "params": int(w.size),
                "nonzero": nonzero,
                "sparsity": 1.0 - nonzero / w.size,
                "distinct": int(np.unique(w).size),
            }
        )
    return rows


def summary(model: keras.Model) -> str:
    """The ``weight_rows`` table as text, with a total line.

    Example:
        >>> import keras_compress as kc
        >>> print(summary(kc.examples.lenet_300_100()).splitlines()[0].split())
        ['weight', 'shape', 'params', 'nonzero', 'sparsity', 'distinct']
    """
    rows = weight_rows(model)
    params = sum(r["params"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    lines = [
        f"{'weight':<36}{'shape':>16}{'params':>10}{'nonzero':>10}{'sparsity':>10}{'distinct':>10}"
    ]
    for r in rows:
        lines.append(
            f"{r['weight']:<36}{str(r['shape']):>16}{r['params']:>10}{r['nonzero']:>10}"
            f"{r['sparsity']:>10.2%}{r['distinct']:>10}"
        )
    total = 1.0 - nonzero / params if params else 0.0
    lines.append(f"{'total':<36}{'':>16}{params:>10}{nonzero:>10}{total:>10.2%}{'':>10}")
    return "\n".join(lines)


def sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of zeros per weight matrix (by weight key), and ``"total"``.

    Works on wrapped, shared and plain models (see ``compressed_weights``).

    Example:
        >>> import keras_compress as kc
        >>> round(sparsity(kc.make_prunable(kc.examples.lenet_300_100()))["total"], 4)
        0.0
    """
    weights = compressed_weights(model)
    report = {name: float(1.0 - np.count_nonzero(w) / w.size) for name, w in weights}
    total = sum(w.size for _, w in weights)
    zeros = sum(w.size - np.count_nonzero(w) for _, w in weights)
    report["total"] = float(zeros / total) if total else 0.0
    return report
