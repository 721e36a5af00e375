"""The layer wrapper that holds pruning state (masks, step counter) inside the model."""

from __future__ import annotations

import keras
from keras import ops

from keras_compress.core.wrapper import CompressionWrapper


class _MaskConstraint(keras.constraints.Constraint):
    """Keeps pruned weights at exactly +0.0 after every optimizer step.

    Keras optimizers apply ``variable.constraint`` after each update inside the compiled train
    step, so this is where the mask acts. An existing constraint of the weight runs first.
    It holds a variable, so it is attached by ``PruningWrapper.build`` and never serialized.

    Args:
        mask: boolean variable, ``True`` where the weight is kept.
        inner: the weight's own constraint, or ``None``.

    Example:
        >>> mask = keras.Variable([True, False], dtype="bool", trainable=False)
        >>> _MaskConstraint(mask)(keras.ops.array([-1.5, -2.0])).numpy().tolist()
        [-1.5, 0.0]
    """

    def __init__(self, mask: keras.Variable, inner: keras.constraints.Constraint | None = None):
        self.mask, self.inner = mask, inner

    def __call__(self, w):
        """Apply the inner constraint, then zero the pruned entries (``where``, so never -0.0)."""
        if self.inner is not None:
            w = self.inner(w)
        return ops.where(self.mask, w, ops.zeros_like(w))


@keras.saving.register_keras_serializable(package="keras_compress")
class PruningWrapper(CompressionWrapper):
    """Wraps a layer whose weight matrices are pruned by a ``MagnitudePruning`` callback.

    It adds one boolean mask per pruned weight and a step counter, all non-trainable Keras
    variables of the model: they are saved by ``model.save``, restored by
    ``keras.models.load_model`` and ``BackupAndRestore``, and mirrored under ``tf.distribute``.
    The counter advances once per training call. Usually created by ``make_prunable``.

    Args:
        layer: the layer to wrap (Dense, Conv, Embedding, RNN, Bidirectional, ...).
        weights: names of the variables to prune (``None``: the layer's weight matrices, see
            ``keras_compress.core.weights``); name a custom layer's weights here.
        **kwargs: passed to ``keras.layers.Wrapper`` (``name``, ...).

    Raises:
        ValueError: at build time, if the layer has no variable of those names.

    Example:
        >>> wrapped = PruningWrapper(keras.layers.Dense(4), name="pruned_fc")
        >>> wrapped.build((None, 3))
        >>> [tuple(m.shape) for m in wrapped.masks]
        [(3, 4)]
    """

    def build(self, input_shape=None):
        """Build the wrapped layer, add a mask per pruned weight and attach the constraints."""
        self._build_layer(input_shape)
        self.masks = []
        for path, variable in zip(self.weight_paths, self.compressed_variables):
            mask = self.add_weight(
                name=path.replace("/", "__") + "_mask",
                shape=variable.shape,
                dtype="bool",
                initializer="ones",
                trainable=False,
            )
            variable.constraint = _MaskConstraint(mask, variable.constraint)
            self.masks.append(mask)
        self.step = self.add_weight(
            name="pruning_step",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.built = True

    def call(self, inputs, *args, training=None, mask=None, **kwargs):
        """Run the wrapped layer; in training, count the step."""
        if training:
            self.step.assign_add(1)
        return self._call_layer(inputs, args, training, mask, kwargs)

    def compressed_weights(self) -> list[tuple[str, object]]:
        """``(path, value)`` of each pruned weight as the model uses it (zeros where masked)."""
        return [(p, v.numpy()) for p, v in zip(self.weight_paths, self.compressed_variables)]
