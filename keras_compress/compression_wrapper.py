"""What every keras_compress wrapper layer shares: the wrapped layer's compressed weights."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import keras

from keras_compress.layer_weights import compressible_variables, relative_path
from keras_compress.model_rewrite import fresh_copy


class CompressionWrapper(keras.layers.Wrapper):
    """Base of ``PruningWrapper`` and ``WeightSharingWrapper``; not used directly.

    It builds the wrapped layer, finds the weights to compress (``self.variables_``, with
    their paths below the layer in ``self.weight_paths``), passes Keras masks through, and
    strips back to a plain layer. Subclasses add their state in ``build`` and report the
    weights as the model computes with them in ``compressed_weights``.

    Args:
        layer: the layer to wrap.
        weights: names of the variables to compress (``None``: the weight matrices, see
            ``keras_compress.layer_weights``).
        **kwargs: passed to ``keras.layers.Wrapper``.

    Example:
        >>> import keras_compress as kc
        >>> issubclass(kc.PruningWrapper, CompressionWrapper)
        True
    """

    def __init__(self, layer: keras.layers.Layer, weights: Sequence[str] | None = None, **kwargs):
        super().__init__(layer, **kwargs)
        self.weight_names = list(weights) if weights is not None else None
        self.supports_masking = layer.supports_masking

    def _build_layer(self, input_shape) -> list[keras.Variable]:
        """Build the wrapped layer; return the variables to compress (error if none)."""
        if not self.layer.built:
            self.layer.build(input_shape)
        variables = compressible_variables(self.layer, self.weight_names)
        if not variables:
            wanted = self.weight_names or "the default weight matrices"
            raise ValueError(
                f"layer {self.layer.name!r} ({type(self.layer).__name__}) has no trainable "
                f"weights named {wanted}; name its weights with weights=[...]"
            )
        self.weight_paths = [relative_path(self.layer, v) for v in variables]
        return variables

    def _call_layer(self, inputs, args, training, mask, kwargs):
        # Only layers whose call takes a mask get one (LSTM does, Dense does not; Keras's own
        # __call__ would reject it for Dense behind a masking Embedding).
        if mask is not None and "mask" in inspect.signature(self.layer.call).parameters:
            kwargs["mask"] = mask
        return self.layer(inputs, *args, training=training, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        """Keras masking passes through to the wrapped layer (Embedding(mask_zero=True))."""
        return self.layer.compute_mask(inputs, previous_mask)

    def compressed_weights(self) -> list[tuple[str, object]]:
        """``(path, value)`` of each compressed weight as the model computes with it."""
        raise NotImplementedError

    def strip_layer(self):
        """A plain copy of the wrapped layer and a function loading the compressed values.

        Used by ``keras_compress.strip``; returns ``(layer, load)``.
        """
        plain = fresh_copy(self.layer)
        values = dict(self.compressed_weights())

        def load():
            paths = [relative_path(self.layer, v) for v in self.layer.weights]
            plain.set_weights([values.get(p, v.numpy()) for p, v in zip(paths, self.layer.weights)])

        return plain, load

    def get_config(self) -> dict:
        """Serializable config: the wrapped layer and the compressed weight names."""
        return {**super().get_config(), "weights": self.weight_names}
