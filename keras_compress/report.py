"""A per-layer table of what compression did to a model's weight matrices."""

from __future__ import annotations

import keras
import numpy as np

from keras_compress.layer_weights import compressible_variables, relative_path
from keras_compress.model_rewrite import iter_layers


def compressed_weights(model: keras.Model) -> list[tuple[str, np.ndarray]]:
    """``("layer/weight", value)`` for every weight matrix, as the model computes with it.

    Wrapped layers report what their wrapper compresses (custom weights included, shared
    values for weight sharing); other layers report their default weight matrices.

    Example:
        >>> import keras_compress as kc
        >>> [name for name, _ in compressed_weights(kc.zoo.lenet5())][:2]
        ['conv1/kernel', 'conv2/kernel']
    """
    out = []
    for layer in iter_layers(model):
        if hasattr(layer, "compressed_weights"):
            out += [
                (f"{layer.layer.name}/{p}", np.asarray(w)) for p, w in layer.compressed_weights()
            ]
        else:
            for variable in compressible_variables(layer):
                name = f"{layer.name}/{relative_path(layer, variable)}"
                out.append((name, np.asarray(variable.numpy())))
    return out


def weight_rows(model: keras.Model) -> list[dict]:
    """One row per weight matrix: name, shape, parameters, non-zeros, sparsity, distinct values.

    Example:
        >>> import keras_compress as kc
        >>> [r["weight"] for r in weight_rows(kc.zoo.lenet_300_100())]
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
        >>> print(summary(kc.zoo.lenet_300_100()).splitlines()[0].split())
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
