"""Which weights of a layer are compressible, and how layers are selected by the user.

Compressible by default are the weight *matrices* (never biases, norms or scales): ``kernel``
(Dense, Conv1D/2D/3D, EinsumDense, the cells of SimpleRNN/LSTM/GRU), ``recurrent_kernel``,
``depthwise_kernel`` and ``pointwise_kernel`` (DepthwiseConv2D, SeparableConv2D) and
``embeddings`` (Embedding). Wrappers such as ``Bidirectional`` and ``TimeDistributed`` are
searched through. A custom layer opts in by naming its weights (``weights=["w"]``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import keras

DEFAULT_WEIGHT_NAMES = (
    "kernel",
    "recurrent_kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "embeddings",
)

#: What selects a layer: its exact name, a regular expression matched against the whole
#: name, or a layer class (subclasses match too).
LayerSelector = str | type


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


def layer_matches(layer: keras.layers.Layer, selectors: Iterable[LayerSelector]) -> bool:
    """Whether ``layer`` is picked by any selector (exact name, full-match regex, or class).

    Example:
        >>> layer_matches(keras.layers.Dense(2, name="fc1"), ["fc[0-9]"])
        True
        >>> layer_matches(keras.layers.Dense(2, name="fc1"), [keras.layers.Conv2D])
        False
    """
    for selector in selectors:
        if isinstance(selector, type):
            if isinstance(layer, selector):
                return True
        elif selector == layer.name or re.fullmatch(selector, layer.name):
            return True
    return False


def check_selectors(selectors: Iterable[LayerSelector]) -> list[LayerSelector]:
    """Validate user selectors: strings must be valid regexes, classes must be Layer classes.

    Example:
        >>> check_selectors(["fc1", keras.layers.Dense])
        ['fc1', <class 'keras.src.layers.core.dense.Dense'>]
    """
    selectors = [selectors] if isinstance(selectors, (str, type)) else list(selectors)
    for selector in selectors:
        if isinstance(selector, type):
            if not issubclass(selector, keras.layers.Layer):
                raise TypeError(f"layer selector {selector!r} is a class but not a Keras Layer")
        elif isinstance(selector, str):
            try:
                re.compile(selector)
            except re.error as err:
                raise ValueError(
                    f"layer selector {selector!r} is not a valid regex: {err}"
                ) from err
        else:
            raise TypeError(
                f"layer selectors are names, regexes or Layer classes; got {selector!r}"
            )
    return selectors
