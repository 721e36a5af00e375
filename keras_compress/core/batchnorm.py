"""Folding BatchNormalization into the layer before it, ahead of weight sharing.

TensorFlow's converter folds each inference-mode BatchNormalization into the kernel before it,
``kernel * gamma / sqrt(var + eps)`` per output channel, so a tensor's ``2**bits`` shared values
become up to ``channels * 2**bits`` distinct floats in the ``.tflite`` and its codebook is lost.
Folding first, then sharing the folded kernel, gives the converter nothing left to fold: the
shared values reach the ``.tflite`` as they are. Pruned zeros stay zeros (a scaled zero is zero).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_compress.core.graph import (
    TRANSPOSED_CONVS,
    channels_first,
    consumer_names,
    in_out_view,
    inbound_names,
    output_names,
    step_layer,
)
from keras_compress.core.rewrite import iter_models, merge_lora, rewrite_model
from keras_compress.core.wrapper import strip

#: Layers a following BatchNormalization folds into, with their output-channel layout.
FOLDABLE = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, *TRANSPOSED_CONVS,
)  # fmt: skip


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with each foldable BatchNormalization folded into the layer before it.

    A BatchNormalization folds when it normalizes the channel axis (the last, or axis 1 after
    a ``channels_first`` layer) of the output of a Conv,
    ConvTranspose, DepthwiseConv, SeparableConv or Dense layer without activation whose output
    nothing else reads (either of them may be in ``TimeDistributed``); that layer gains the
    folded kernel and bias (``use_bias=True``) and the BatchNormalization becomes an
    ``Identity`` of the same name. Others are left as they are.
    In inference the copy computes what ``model`` computes (up to float rounding); trained
    further, it no longer normalizes batches. keras_compress wrappers are stripped first.

    Args:
        model: a Sequential or functional model (nested models are searched).

    Returns:
        The folded, uncompiled model; ``model`` is not changed.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
        ...                           keras.layers.BatchNormalization(), keras.layers.ReLU()])
        >>> [type(layer).__name__ for layer in fold_batchnorm(model).layers]
        ['Conv2D', 'Identity', 'ReLU']
    """
    plain = merge_lora(strip(model))  # a LoRA layer's kernel is frozen: fold the merged one
    plan = _plan(plain)  # producer name -> its BatchNormalization

    def transform(layer):
        if any(layer is bn for bn in plan.values()):
            return keras.layers.Identity(name=layer.name), lambda: None
        bn = plan.get(layer.name)
        if bn is None:
            return None
        op, config = step_layer(layer), layer.get_config()
        (config["layer"]["config"] if op is not layer else config)["use_bias"] = True
        new = layer.__class__.from_config(config)
        return new, lambda: new.set_weights(_folded_weights(op, step_layer(bn)))

    return rewrite_model(plain, transform)


def _plan(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Producer name -> the BatchNormalization (or TimeDistributed of one) folded into it."""
    plan = {}
    for graph in [model, *iter_models(model)]:
        layers = {layer.name: layer for layer in graph.layers}
        outputs = output_names(graph)
        for bn in graph.layers:
            op = step_layer(bn)  # a TimeDistributed's axis counts without the time axis
            if not isinstance(op, keras.layers.BatchNormalization):
                continue
            producers = inbound_names(bn)
            producer = layers.get(producers[0]) if len(producers) == 1 else None
            rank = len(bn.input.shape) - (op is not bn)
            # channels_first: axis 1 of a step, 2 of a TimeDistributed output (time is axis 1)
            channels = rank - 1
            if producer is not None and channels_first(producer):
                channels = 1 + (isinstance(producer, keras.layers.TimeDistributed) and op is bn)
            if (
                isinstance(step_layer(producer), FOLDABLE)
                and op.axis % rank == channels
                and getattr(step_layer(producer), "activation", None)
                in (None, keras.activations.linear)
                and consumer_names(producer) == [bn.name]
                and producer.name not in outputs
            ):
                plan[producer.name] = bn
    return plan


def _folded_weights(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> list:
    """The layer's weights with ``bn`` folded in (Ioffe & Szegedy's inference transform)."""
    gamma, beta, mean, var = _bn_parameters(bn)
    scale = gamma / np.sqrt(var + bn.epsilon)
    weights = [np.asarray(w) for w in layer.get_weights()]
    kernel = weights[-1] if not layer.use_bias else weights[-2]
    bias = weights[-1] if layer.use_bias else np.zeros(scale.shape, kernel.dtype)
    if isinstance(layer, keras.layers.DepthwiseConv1D | keras.layers.DepthwiseConv2D):
        # output channel c * multiplier + m comes from kernel[..., c, m]
        folded = kernel * scale.reshape(kernel.shape[-2:])
    else:  # output channels last (a transposed convolution's once viewed in Dense's order)
        folded = in_out_view(layer, in_out_view(layer, kernel) * scale)
    new_bias = (bias - mean) * scale + beta
    head = weights[: len(weights) - (2 if layer.use_bias else 1)]  # a depthwise kernel, if any
    return [*head, folded.astype(kernel.dtype), new_bias.astype(kernel.dtype)]


def _bn_parameters(bn: keras.layers.BatchNormalization):
    channels = int(bn.moving_mean.shape[-1])
    gamma = np.asarray(bn.gamma) if bn.scale else np.ones(channels, "float32")
    beta = np.asarray(bn.beta) if bn.center else np.zeros(channels, "float32")
    return gamma, beta, np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
