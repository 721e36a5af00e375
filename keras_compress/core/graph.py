"""Reading a functional model's graph: the only module that touches private Keras attributes.

Keras 3 keeps a layer's call sites in ``layer._inbound_nodes``, a symbolic tensor's
producer in ``tensor._keras_history`` and the active ``keras.StatelessScope`` in its global
state; there is no public API for any of them (Keras 3.15), so every read of them is here,
in one place to adapt when Keras changes.
"""

from __future__ import annotations

import keras
import numpy as np


def is_functional(model: keras.Model) -> bool:
    """Whether ``model`` is built from a graph of layers (functional or Sequential).

    Example:
        >>> is_functional(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        True
    """
    if isinstance(model, keras.Sequential):
        return True
    return hasattr(model, "_operations") and hasattr(model, "_nodes_by_depth")


def model_input(model: keras.Model):
    """The structure of a functional or Sequential model's symbolic inputs (``model.input``).

    Keras 3.15's ``Sequential`` has ``inputs`` (a list) but no ``input``: reading it raises
    "has never been called" even on a built model, so a Sequential gives its one input here.

    Example:
        >>> model_input(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])).shape
        (None, 3)
    """
    if isinstance(model, keras.Sequential):
        return model.inputs[0]
    return model.input


def producer_name(tensor) -> str:
    """The name of the layer (or operation) whose output ``tensor`` is.

    Example:
        >>> x = keras.Input((3,), name="x")
        >>> producer_name(keras.layers.Dense(2, name="fc")(x))
        'fc'
    """
    return tensor._keras_history.operation.name


def inbound_tensors(layer: keras.layers.Layer) -> list:
    """The symbolic tensors ``layer`` was called on (empty for an input layer).

    Raises:
        ValueError: ``layer`` is called more than once (a shared layer).

    Example:
        >>> x, fc = keras.Input((4,), name="x"), keras.layers.Dense(3, name="fc")
        >>> y = fc(x)
        >>> [tuple(t.shape) for t in inbound_tensors(fc)]
        [(None, 4)]
    """
    nodes = layer._inbound_nodes
    if len(nodes) > 1:
        raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times (shared layer)")
    return list(nodes[0].input_tensors) if nodes else []


def call_arguments(layer: keras.layers.Layer) -> tuple[tuple, dict]:
    """The positional and keyword arguments of ``layer``'s one call in its graph.

    Symbolic tensors and everything else it was given (``training=False``, a mask), so the
    call can be replayed: ``other(*args, **kwargs)``.

    Raises:
        ValueError: ``layer`` is called more than once (a shared layer), or never.

    Example:
        >>> x, fc = keras.Input((4,), name="x"), keras.layers.Dense(3, name="fc")
        >>> y = fc(x, training=False)
        >>> args, kwargs = call_arguments(fc)
        >>> [tuple(t.shape) for t in args], kwargs
        ([(None, 4)], {'training': False})
    """
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times, not once")
    return tuple(nodes[0].arguments.args), dict(nodes[0].arguments.kwargs)


def inbound_names(layer: keras.layers.Layer) -> list[str]:
    """Names of the layers whose outputs ``layer`` takes (it must be called once).

    Example:
        >>> inputs, fc = keras.Input((4,), name="x"), keras.layers.Dense(3, name="fc")
        >>> model = keras.Model(inputs, fc(inputs))
        >>> inbound_names(fc)
        ['x']
    """
    return [producer_name(t) for t in inbound_tensors(layer)]


def consumer_names(layer: keras.layers.Layer) -> list[str]:
    """Names of the layers (or operations) that take ``layer``'s output.

    Example:
        >>> x, fc = keras.Input((4,)), keras.layers.Dense(3, name="fc")
        >>> y = keras.layers.ReLU(name="relu")(fc(x))
        >>> consumer_names(fc)
        ['relu']
    """
    return [node.operation.name for node in layer._outbound_nodes]


def output_names(model: keras.Model) -> set[str]:
    """Names of the layers that produce ``model``'s outputs.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
        >>> output_names(model)
        {'out'}
    """
    return {producer_name(t) for t in model.outputs}


def output_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers that produce ``model``'s outputs, looking into nested models' outputs.

    Empty for a model without a graph (subclassed).

    Example:
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
        >>> x = keras.Input((3,))
        >>> [layer.name for layer in output_layers(keras.Model(x, inner(x)))]
        ['out']
    """
    found = []
    for tensor in getattr(model, "outputs", None) or []:
        layer = tensor._keras_history.operation
        found += output_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return found


def output_owners(model: keras.Model) -> list:
    """The layers whose units ``model`` outputs: the first layers with weights behind them.

    Walks back from the output layers (``output_layers``) through weightless layers and
    ``keras.ops`` calls (Softmax, Flatten, Activation, Reshape, pooling) and normalization
    layers: a classifier's Dense behind its Softmax layer, MobileNetV3's 1x1 "logits"
    convolution behind Flatten and the activation. Their units are the model's classes.

    Example:
        >>> x = keras.Input((3,))
        >>> y = keras.layers.Softmax()(keras.layers.Dense(2, name="fc")(x))
        >>> [layer.name for layer in output_owners(keras.Model(x, y))]
        ['fc']
    """
    found, seen, stack = [], set(), list(reversed(output_layers(model)))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        normalizes = isinstance(step_layer(layer), NORMALIZATIONS)
        if getattr(layer, "weights", None) and not normalizes:
            found.append(layer)
            continue
        producers = [t._keras_history.operation for n in layer._inbound_nodes
                     for t in n.input_tensors]  # fmt: skip
        for producer in reversed(producers):
            nested = isinstance(producer, keras.Model)
            stack += list(reversed(output_layers(producer))) if nested else [producer]
    return found


NORMALIZATIONS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization)  # fmt: skip
#: Layers whose output units can be removed, with the config key of their width.
WIDTH_KEYS = {
    keras.layers.Dense: "units",
    keras.layers.Conv1D: "filters",
    keras.layers.Conv2D: "filters",
    keras.layers.Conv3D: "filters",
    keras.layers.SeparableConv1D: "filters",
    keras.layers.SeparableConv2D: "filters",
    keras.layers.Conv1DTranspose: "filters",
    keras.layers.Conv2DTranspose: "filters",
    keras.layers.Conv3DTranspose: "filters",
}
#: Layers whose kernel is stored ``(..., outputs, inputs)``, the other way round from Dense's.
TRANSPOSED_CONVS = (
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose
)  # fmt: skip


def width_key(layer: keras.layers.Layer) -> str | None:
    """The config key of ``layer``'s width if its units can be removed (subclasses too).

    Example:
        >>> width_key(keras.layers.Dense(3)), width_key(keras.layers.ReLU())
        ('units', None)
    """
    for cls, key in WIDTH_KEYS.items():
        if isinstance(layer, cls):
            return key
    return None


def channels_first(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` (or the layer a ``TimeDistributed`` applies) keeps channels on axis 1.

    Surgery and APoZ find a layer's channels on the last axis of its tensors; a layer built
    with ``data_format="channels_first"`` keeps them on axis 1 instead.

    Example:
        >>> channels_first(keras.layers.Conv2D(4, 3, data_format="channels_first"))
        True
        >>> channels_first(keras.layers.MaxPooling2D()), channels_first(keras.layers.Dense(3))
        (False, False)
    """
    return getattr(step_layer(layer), "data_format", None) == "channels_first"


def step_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer ``layer`` applies at each time step if it is a ``TimeDistributed``, else itself.

    A ``TimeDistributed(Dense(8))`` has the Dense's weights, width and activation; graph code
    asks this for them (its own inputs and outputs carry one more axis, time).

    Example:
        >>> step_layer(keras.layers.TimeDistributed(keras.layers.Dense(8))).units
        8
    """
    return layer.layer if isinstance(layer, keras.layers.TimeDistributed) else layer


def in_out_view(layer: keras.layers.Layer, kernel: np.ndarray) -> np.ndarray:
    """``layer``'s kernel (or a mask of it) with inputs on axis -2 and outputs on axis -1.

    Dense and convolution kernels are stored so; a transposed convolution's kernel is
    ``(..., filters, input channels)``, so its last two axes are swapped (a view). The swap is
    its own inverse: the same call maps a result computed on the view back.

    Example:
        >>> layer = keras.layers.Conv2DTranspose(8, 3)
        >>> in_out_view(layer, np.zeros((3, 3, 8, 4))).shape
        (3, 3, 4, 8)
    """
    transposed = isinstance(step_layer(layer), TRANSPOSED_CONVS)  # TimeDistributed's too
    return np.swapaxes(kernel, -1, -2) if transposed else kernel


def stateless_scope() -> keras.StatelessScope | None:
    """The ``keras.StatelessScope`` active now, or ``None``.

    The JAX trainer runs every train step inside one (it maps each model variable to its
    traced value); a wrapper that opens its own scope inside must see those values.

    Example:
        >>> stateless_scope() is None
        True
        >>> with keras.StatelessScope() as scope:
        ...     stateless_scope() is scope
        True
    """
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    return get_stateless_scope()


def readable(variable: keras.Variable) -> bool:
    """Whether ``variable`` has a value to read now.

    Inside a ``keras.StatelessScope`` that does not map it, a variable whose value the JAX
    trainer has moved into its traced state reads as its initializer instead: not readable.

    Example:
        >>> v = keras.Variable(1.0)
        >>> readable(v)
        True
        >>> v._value = None  # what the JAX trainer does during an epoch
        >>> readable(v)
        False
    """
    scope = stateless_scope()
    if scope is not None and scope.get_current_value(variable) is not None:
        return True
    return getattr(variable, "_value", True) is not None


def keras_mask(tensor) -> object | None:
    """The Keras mask attached to ``tensor`` (by Embedding(mask_zero=True), Masking, ...) or None.

    Example:
        >>> x = keras.layers.Embedding(5, 2, mask_zero=True)(keras.ops.array([[1, 0]]))
        >>> keras.ops.convert_to_numpy(keras_mask(x)).tolist()
        [[True, False]]
    """
    from keras.src.backend import get_keras_mask

    return get_keras_mask(tensor)
