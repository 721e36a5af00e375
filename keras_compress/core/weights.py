"""Which weights of a layer are compressible, where they sit below it, and their optimizer slots.

Compressible by default are the weight *matrices* (never biases, norms or scales): ``kernel``
(Dense, Conv1D/2D/3D, EinsumDense, the cells of SimpleRNN/LSTM/GRU), ``recurrent_kernel``,
``depthwise_kernel`` and ``pointwise_kernel`` (DepthwiseConv2D, SeparableConv2D) and
``embeddings`` (Embedding). Wrappers such as ``Bidirectional`` and ``TimeDistributed`` are
searched through. A custom layer opts in by naming its weights (``weights=["w"]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

DEFAULT_WEIGHT_NAMES = (
    "kernel",
    "recurrent_kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "embeddings",
)


def variable_name(variable: keras.Variable) -> str:
    """The last component of a variable's path: ``"kernel"`` for ``"model/dense/kernel"``.

    Example:
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 3))
        >>> variable_name(dense.kernel)
        'kernel'
    """
    return variable.path.rsplit("/", 1)[-1]


def relative_path(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    """The variable's path below ``layer``: ``"forward_lstm/lstm_cell/kernel"`` in a Bidirectional.

    Example:
        >>> dense = keras.layers.Dense(2, name="fc")
        >>> dense.build((None, 3))
        >>> relative_path(dense, dense.kernel)
        'kernel'
    """
    # Keras builds nested layers under name scopes that differ with how the layer was built
    # (directly, in a model, inside a wrapper), so cut after the *last* scope named like the
    # layer; a path without it is already relative (sublayers built outside any scope).
    parts = variable.path.split("/")
    scopes = [i for i, part in enumerate(parts[:-1]) if part == layer.name]
    return "/".join(parts[scopes[-1] + 1 :]) if scopes else variable.path


def compressible_variables(
    layer: keras.layers.Layer, weight_names: Sequence[str] | None = None
) -> list[keras.Variable]:
    """The trainable variables of a built ``layer`` that are compressed.

    Args:
        layer: a built layer (nested layers such as LSTM cells are searched).
        weight_names: variable names to take (``None``: ``DEFAULT_WEIGHT_NAMES``).

    Returns:
        The matching trainable variables, in the layer's order (possibly empty).

    Example:
        >>> lstm = keras.layers.LSTM(4)
        >>> lstm.build((None, 5, 3))
        >>> [variable_name(v) for v in compressible_variables(lstm)]
        ['kernel', 'recurrent_kernel']
    """
    names = tuple(weight_names) if weight_names is not None else DEFAULT_WEIGHT_NAMES
    return [v for v in layer.trainable_variables if variable_name(v) in names]


def optimizer_slots(optimizer, variable: keras.Variable) -> dict[str, keras.Variable]:
    """The optimizer's element-wise state of ``variable``: ``{slot: variable}``.

    Keras names a slot ``<variable path, / as _>_<slot>`` (``add_variable_from_reference``):
    Adam's ``momentum`` and ``velocity``, SGD's ``momentum``; slots of another shape (a
    factored second moment) are not element-wise and are left out.

    Example:
        >>> dense = keras.layers.Dense(2, name="fc")
        >>> dense.build((None, 3))
        >>> adam = keras.optimizers.Adam()
        >>> adam.build([dense.kernel])
        >>> sorted(optimizer_slots(adam, dense.kernel))
        ['momentum', 'velocity']
    """
    if optimizer is None or not getattr(optimizer, "built", False):
        return {}
    stem = variable.path.replace("/", "_") + "_"
    return {
        slot.name[len(stem) :]: slot
        for slot in optimizer.variables
        if slot.name.startswith(stem) and tuple(slot.shape) == tuple(variable.shape)
    }
