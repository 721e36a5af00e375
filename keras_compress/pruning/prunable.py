"""Preparing a model for pruning, and finding its pruning wrappers."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_compress.core.rewrite import (
    check_rebuildable,
    fresh_copy,
    iter_layers,
    merge_lora,
    quantized_note,
    rewrite_model,
)
from keras_compress.core.selectors import LayerSelector, check_selectors, selects, selects_any
from keras_compress.core.weights import compressible_variables
from keras_compress.core.wrapper import is_wrapper
from keras_compress.pruning.wrapper import PruningWrapper


def make_prunable(
    model: keras.Model,
    layers: Sequence[LayerSelector] | LayerSelector | None = None,
    weights: Sequence[str] | None = None,
) -> keras.Model:
    """Return a copy of ``model`` whose selected layers are wrapped in ``PruningWrapper``.

    Compile the result (if ``model`` was compiled, the copy is compiled the same way, with a
    fresh optimizer) and train it with a ``MagnitudePruning`` callback. Layers with LoRA
    enabled are merged first (``keras_compress.core.merge_lora``): their merged kernel is
    pruned and trained. Frozen weights (``trainable=False``) are left alone.

    Args:
        model: a built Sequential or functional model (nested models are searched).
        layers: which layers to prune (see ``keras_compress.core.selectors``: names, regexes,
            family words such as ``"conv"``, classes). ``None``: every layer with weight
            matrices.
        weights: which variables of those layers to prune, by name (``None``: the weight
            matrices ``kernel``, ``recurrent_kernel``, ``depthwise_kernel``,
            ``pointwise_kernel``, ``embeddings``; biases only if named here).

    Returns:
        The new model; ``model`` itself is not changed.

    Raises:
        ValueError: the model is not built, a selector matches no layer, a selected layer has
            no such weights, or nothing in the model can be pruned.
        TypeError: ``model`` is subclassed, or a selector is of the wrong type.

    Example:
        >>> import keras_compress as kc
        >>> model = make_prunable(kc.examples.lenet5(), layers=["conv.*", keras.layers.Dense])
        >>> [layer.name for layer in model.layers if isinstance(layer, kc.PruningWrapper)]
        ['pruned_conv1', 'pruned_conv2', 'pruned_fc1', 'pruned_fc2']
    """
    check_rebuildable(model)
    selectors = check_selectors(layers) if layers is not None else None
    source = merge_lora(model)  # LoRA layers compute with kernel + lora_a @ lora_b: prune that
    all_layers = list(iter_layers(source))
    if selectors is not None:
        for selector in selectors:
            if not any(selects(selector, layer) for layer in all_layers):
                names = ", ".join(layer.name for layer in all_layers)
                raise ValueError(f"no layer matches {selector!r}; the model has: {names}")

    def chosen(layer: keras.layers.Layer) -> bool:
        if is_wrapper(layer) or isinstance(layer, keras.Model):
            return False
        if selectors is None:
            return bool(compressible_variables(layer, weights))
        if not selects_any(selectors, layer):
            return False
        if not compressible_variables(layer, weights):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) was selected for pruning but has "
                f"no trainable weights named {weights or 'kernel/recurrent_kernel/embeddings'}"
            )
        return True

    picked = [layer for layer in all_layers if chosen(layer)]
    if not picked:
        note = quantized_note(model)
        raise ValueError(
            f"model {model.name!r} has no layer with weights to prune" + (note and f"; {note}")
        )

    def transform(layer: keras.layers.Layer):
        if layer not in picked:
            return None
        wrapper = PruningWrapper(
            fresh_copy(layer),
            weights=weights,
            counts_steps=layer is picked[0],  # one counter per model (see PruningWrapper)
            name=f"pruned_{layer.name}",
        )
        return wrapper, lambda: wrapper.layer.set_weights(layer.get_weights())

    new_model = rewrite_model(source, transform)
    if model.compiled:
        new_model.compile_from_config(model.get_compile_config())
    return new_model


def pruning_wrappers(model: keras.Model) -> list[PruningWrapper]:
    """All ``PruningWrapper`` layers of ``model``, nested models included.

    Example:
        >>> import keras_compress as kc
        >>> len(pruning_wrappers(make_prunable(kc.examples.lenet_300_100())))
        3
    """
    return [layer for layer in iter_layers(model) if isinstance(layer, PruningWrapper)]
