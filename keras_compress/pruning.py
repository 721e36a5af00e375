"""Preparing a model for pruning, and reading back how sparse it is."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_compress.layer_weights import (
    LayerSelector,
    check_selectors,
    compressible_variables,
    layer_matches,
)
from keras_compress.model_rewrite import fresh_copy, iter_layers, rewrite_model
from keras_compress.pruning_wrapper import PruningWrapper
from keras_compress.report import compressed_weights


def make_prunable(
    model: keras.Model,
    layers: Sequence[LayerSelector] | LayerSelector | None = None,
    weights: Sequence[str] | None = None,
) -> keras.Model:
    """Return a copy of ``model`` whose selected layers are wrapped in ``PruningWrapper``.

    Compile the result (if ``model`` was compiled, the copy is compiled the same way, with a
    fresh optimizer) and train it with a ``MagnitudePruning`` callback.

    Args:
        model: a built Sequential or functional model (nested models are searched).
        layers: which layers to prune: exact names, regexes matched against the whole name, or
            layer classes (subclasses match). ``None``: every layer with weight matrices.
        weights: which variables of those layers to prune, by name (``None``: the weight
            matrices ``kernel``, ``recurrent_kernel``, ``depthwise_kernel``,
            ``pointwise_kernel``, ``embeddings``; biases only if named here).

    Returns:
        The new model; ``model`` itself is not changed.

    Raises:
        ValueError: a selector matches no layer, a selected layer has no such weights, or
            nothing in the model can be pruned.
        TypeError: ``model`` is subclassed, or a selector is of the wrong type.

    Example:
        >>> import keras_compress as kc
        >>> model = make_prunable(kc.zoo.lenet5(), layers=["conv.*", keras.layers.Dense])
        >>> [layer.name for layer in model.layers if isinstance(layer, kc.PruningWrapper)]
        ['pruned_conv1', 'pruned_conv2', 'pruned_fc1', 'pruned_fc2']
    """
    selectors = check_selectors(layers) if layers is not None else None
    all_layers = list(iter_layers(model))
    if selectors is not None:
        for selector in selectors:
            if not any(layer_matches(layer, [selector]) for layer in all_layers):
                names = ", ".join(layer.name for layer in all_layers)
                raise ValueError(f"no layer matches {selector!r}; the model has: {names}")

    def chosen(layer: keras.layers.Layer) -> bool:
        if isinstance(layer, PruningWrapper) or isinstance(layer, keras.Model):
            return False
        if selectors is None:
            return bool(compressible_variables(layer, weights))
        if not layer_matches(layer, selectors):
            return False
        if not compressible_variables(layer, weights):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) was selected for pruning but has "
                f"no trainable weights named {weights or 'kernel/recurrent_kernel/embeddings'}"
            )
        return True

    picked = [layer for layer in all_layers if chosen(layer)]
    if not picked:
        raise ValueError(f"model {model.name!r} has no layer with weights to prune")

    def transform(layer: keras.layers.Layer):
        if layer not in picked:
            return None
        wrapper = PruningWrapper(fresh_copy(layer), weights=weights, name=f"pruned_{layer.name}")
        return wrapper, lambda: wrapper.layer.set_weights(layer.get_weights())

    new_model = rewrite_model(model, transform)
    if model.compiled:
        new_model.compile_from_config(model.get_compile_config())
    return new_model


def pruning_wrappers(model: keras.Model) -> list[PruningWrapper]:
    """All ``PruningWrapper`` layers of ``model``, nested models included.

    Example:
        >>> import keras_compress as kc
        >>> len(pruning_wrappers(make_prunable(kc.zoo.lenet_300_100())))
        3
    """
    return [layer for layer in iter_layers(model) if isinstance(layer, PruningWrapper)]


def sparsity(model: keras.Model) -> dict[str, float]:
    """Fraction of zeros per weight matrix (by ``layer/weight`` name), and ``"total"``.

    Works on wrapped, shared and plain models (see ``report.compressed_weights``).

    Example:
        >>> import keras_compress as kc
        >>> round(sparsity(make_prunable(kc.zoo.lenet_300_100()))["total"], 4)  # random init
        0.0
    """
    weights = compressed_weights(model)
    report = {name: float(1.0 - np.count_nonzero(w) / w.size) for name, w in weights}
    total = sum(w.size for _, w in weights)
    zeros = sum(w.size - np.count_nonzero(w) for _, w in weights)
    report["total"] = float(zeros / total) if total else 0.0
    return report
