"""Which weights of a layer are compressible, and where they sit below the layer.

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
