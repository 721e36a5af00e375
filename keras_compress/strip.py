"""Remove keras_compress wrappers: a plain Keras model that loads without this library."""

from __future__ import annotations

import keras

from keras_compress.model_rewrite import rewrite_model


def strip(model: keras.Model) -> keras.Model:
    """Return a copy of ``model`` with every keras_compress wrapper replaced by its plain layer.

    The compressed weights (pruned zeros, shared values) are kept; masks, codebooks and step
    counters are dropped. The result is uncompiled and depends on Keras alone, so
    ``keras.models.load_model`` reads it without keras_compress installed.

    Args:
        model: a Sequential or functional model, wrapped or not.

    Returns:
        The plain model (a new object; ``model`` is not changed).

    Example:
        >>> import keras_compress as kc
        >>> model = kc.make_prunable(kc.zoo.lenet_300_100())
        >>> [type(layer).__name__ for layer in strip(model).layers]
        ['Flatten', 'Dense', 'Dense', 'Dense']
    """

    def transform(layer):
        return layer.strip_layer() if hasattr(layer, "strip_layer") else None

    return rewrite_model(model, transform)
