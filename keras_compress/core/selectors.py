"""The one way users pick layers (and weights) everywhere in keras_compress.

A selector is any of:

* a layer class: the layer is an instance (subclasses match too);
* a family word, ``"conv"``, ``"dense"``, ``"embedding"`` or ``"rnn"``: the layer belongs to
  the family (see ``FAMILIES``);
* any other string: the layer's exact name, or a regular expression matched against the
  whole name; where a weight is being selected, also its key (``"fc1/kernel"``, see
  ``keras_compress.core.weight_key``) exactly or by a whole-key regular expression.

``make_prunable(layers=...)``, ``MagnitudePruning(layer_targets=..., groups=...)``,
``share_weights(bits={...})`` and ``quantize_weights(layers=...)`` all take these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import keras

LayerSelector = str | type
V = TypeVar("V")

#: Family words and the layer classes they stand for.
FAMILIES: dict[str, tuple[type, ...]] = {
    "conv": (
        keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
        keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
        keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
        keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
    ),
    "dense": (keras.layers.Dense, keras.layers.EinsumDense),
    "embedding": (keras.layers.Embedding,),
    "rnn": (keras.layers.RNN, keras.layers.Bidirectional),
}  # fmt: skip


def check_selectors(selectors: LayerSelector | Iterable[LayerSelector]) -> list[LayerSelector]:
    """Validate selectors (one or several): strings must compile as regexes, classes be Layers.

    Returns:
        The selectors as a list.

    Raises:
        TypeError: a selector that is neither a string nor a Layer class.
        ValueError: a string that is not a valid regular expression.

    Example:
        >>> check_selectors("fc1")
        ['fc1']
        >>> check_selectors(["conv", keras.layers.Dense])
        ['conv', <class 'keras.src.layers.core.dense.Dense'>]
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
                f"layer selectors are names, regexes, family words or Layer classes; "
                f"got {selector!r}"
            )
    return selectors


def selects(selector: LayerSelector, layer: keras.layers.Layer, key: str | None = None) -> bool:
    """Whether ``selector`` picks ``layer`` (or, given its ``key``, that weight of it).

    Example:
        >>> fc = keras.layers.Dense(2, name="fc1")
        >>> selects("fc[0-9]", fc), selects("dense", fc), selects(keras.layers.Conv2D, fc)
        (True, True, False)
        >>> selects("fc1/kernel", fc, key="fc1/kernel"), selects("fc1/bias", fc, "fc1/kernel")
        (True, False)
    """
    if isinstance(selector, type):
        return isinstance(layer, selector)
    if selector in FAMILIES and isinstance(layer, FAMILIES[selector]):
        return True
    names = (layer.name,) if key is None else (layer.name, key)
    return any(selector == name or re.fullmatch(selector, name) for name in names)


def selects_any(
    selectors: Iterable[LayerSelector], layer: keras.layers.Layer, key: str | None = None
) -> bool:
    """Whether any of ``selectors`` picks ``layer`` (or its weight ``key``).

    Example:
        >>> selects_any(["conv", "fc.*"], keras.layers.Dense(2, name="fc1"))
        True
    """
    return any(selects(selector, layer, key) for selector in selectors)


def per_layer(
    setting: V | Mapping[LayerSelector, V],
    layers: Sequence[keras.layers.Layer],
    what: str,
    view: Callable[[keras.layers.Layer], keras.layers.Layer] = lambda layer: layer,
) -> list[V | None]:
    """Each layer's value of a per-layer ``setting`` (``bits=4`` or ``bits={"conv": 8}``).

    A plain value applies to every layer; from ``{selector: value}`` a layer takes the value
    of the first key that picks it, ``None`` where no key does. Selectors see ``view(layer)``
    (the layer inside a wrapper, say).

    Raises:
        ValueError: a key that picks none of ``layers`` (``what`` names the setting).

    Example:
        >>> layers = [keras.layers.Dense(2, name="fc1"), keras.layers.Conv2D(2, 3, name="c1")]
        >>> per_layer({"conv": 8, "dense": 5}, layers, "bits"), per_layer(4, layers, "bits")
        ([5, 8], [4, 4])
        >>> per_layer({"fc2": 5}, layers, "bits")
        Traceback (most recent call last):
        ...
        ValueError: bits key 'fc2' selects no layer; the model has: fc1, c1
    """
    if not isinstance(setting, Mapping):
        return [setting] * len(layers)
    for key in check_selectors(list(setting)):
        if not any(selects(key, view(layer)) for layer in layers):
            names = ", ".join(
                layer.name for layer in layers if not isinstance(layer, keras.layers.InputLayer)
            )
            raise ValueError(f"{what} key {key!r} selects no layer; the model has: {names}")
    return [
        next((value for key, value in setting.items() if selects(key, view(layer))), None)
        for layer in layers
    ]
