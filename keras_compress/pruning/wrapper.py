"""The layer wrapper that holds pruning state (masks, step counter) inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_compress.core.graph import readable, stateless_scope
from keras_compress.core.wrapper import CompressionWrapper


def constraint_masks() -> bool:
    """Whether the mask constraint keeps pruned weights at +0.0 in this backend's train step.

    True on TensorFlow and PyTorch. JAX's optimizer step sees only trainable and optimizer
    variables, so there the constraint cannot read the mask: the wrapper masks its forward
    pass and the callback zeroes the optimizer's slots instead (see ``PruningWrapper``).

    Example:
        >>> constraint_masks() == (keras.backend.backend() != "jax")
        True
    """
    return keras.backend.backend() != "jax"


class _MaskConstraint(keras.constraints.Constraint):
    """Keeps pruned weights at exactly +0.0 after every optimizer step.

    Keras optimizers apply ``variable.constraint`` after each update inside the compiled train
    step, so this is where the mask acts on TensorFlow and PyTorch. An existing constraint of
    the weight runs first. It holds a variable, so it is attached by ``PruningWrapper.build``
    and never serialized. JAX's optimizer step sees only trainable and optimizer variables, so
    there the mask cannot be read: the constraint leaves the weight to the wrapper's masked
    forward pass and the callback's zeroed optimizer slots (see ``PruningWrapper``).

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
        self._float_mask, self._float_mask_key = None, None

    def __call__(self, w):
        """Apply the inner constraint, then zero the pruned entries (as +0.0, never -0.0)."""
        given = w
        if self.inner is not None:
            w = self.inner(w)
        w = ops.convert_to_tensor(w)
        if not readable(self.mask):
            return w
        if keras.backend.backend() == "torch":
            # The optimizer calls ``variable.constraint(variable)`` and assigns the result
            # back, so only then may the product overwrite the weight in place (see
            # _torch_masked); not inside a StatelessScope, whose value is the caller's tensor.
            own = self.inner is None and isinstance(given, keras.Variable)
            own = own and stateless_scope() is None
            return self._torch_masked(w, in_place=own)
        return ops.where(self.mask.value, w, ops.zeros((), w.dtype))  # a scalar: no allocation

    def _torch_masked(self, w, in_place: bool = False):
        """``where(mask, w, +0.0)`` for eager PyTorch, where ``torch.where`` is slow on CPU.

        Selecting with a boolean tensor costs PyTorch's CPU kernels about 20x a multiplication
        by a float tensor (LeNet-300-100's first kernel: 1.0 ms against 45 us on one thread,
        12% of its training step), so the mask is kept as a float copy, rebuilt only when the
        mask changes (an assign advances its tensor's version counter), and multiplied in;
        adding +0.0 turns the ``-0.0`` of negative pruned weights into +0.0. Pruned entries
        that are not finite (a diverged step) stay NaN instead of 0.

        ``in_place``: overwrite ``w`` (the variable's own tensor) and return it, so that the
        optimizer's assign copies nothing. A new weight-sized tensor per step cost more than
        the product: freeing and reallocating LeNet-300-100's 0.9 MB kernel each step made
        the backward pass and the optimizer's own updates slower (page faults on fresh memory).
        """
        mask = self.mask.value
        key = (id(mask), mask._version, w.dtype, w.device)
        if key != self._float_mask_key:
            self._float_mask, self._float_mask_key = mask.to(w.dtype), key
        if not in_place:
            return (w * self._float_mask).add_(0.0)
        import torch  # only reached on the PyTorch backend

        with torch.no_grad():
            return w.mul_(self._float_mask).add_(0.0)


@keras.saving.register_keras_serializable(package="keras_compress")
class PruningWrapper(CompressionWrapper):
    """Wraps a layer whose weight matrices are pruned by a ``MagnitudePruning`` callback.

    It adds one boolean mask per pruned weight and a step counter, all non-trainable Keras
    variables of the model: they are saved by ``model.save``, restored by
    ``keras.models.load_model`` and ``BackupAndRestore``, and mirrored under ``tf.distribute``.
    The counter advances once per training call if ``counts_steps``. Usually created by
    ``make_prunable``, which lets only the model's first wrapper count (the callback reads
    that one, see ``step_counter``): an increment per wrapper costs a variable update in
    every step (on PyTorch about 40 us each, 8% of a LeNet-300-100 step for its three).

    The mask acts where the backend lets it act cheapest. On TensorFlow and PyTorch a weight
    constraint sets the pruned entries to +0.0 after each optimizer step and the callback
    zeroes them when it prunes, so the layer computes with ``W`` itself (a masked copy of ``W``
    in the forward pass and its gradient cost PyTorch a third more time per LeNet-300-100
    step, measured on one thread). Under JAX the optimizer step cannot read the mask, so the
    layer computes with ``where(mask, W, 0)`` (a zero gradient for pruned weights) and the
    callback also zeroes the pruned entries of the optimizer's slots (momenta) when it prunes,
    which keeps them at +0.0 in any element-wise optimizer. A training loop that updates the
    weights without a Keras optimizer (``torch.optim`` on the model's parameters) skips the
    constraint: there, zero the pruned weights after each step (``kc.strip`` and the export
    apply the masks in any case).

    Args:
        layer: the layer to wrap (Dense, Conv, Embedding, RNN, Bidirectional, ...).
        weights: names of the variables to prune (``None``: the layer's weight matrices, see
            ``keras_compress.core.weights``); name a custom layer's weights here.
        counts_steps: whether this wrapper advances its step counter in training.
        **kwargs: passed to ``keras.layers.Wrapper`` (``name``, ...).

    Raises:
        ValueError: at build time, if the layer has no variable of those names.

    Example:
        >>> wrapped = PruningWrapper(keras.layers.Dense(4), name="pruned_fc")
        >>> wrapped.build((None, 3))
        >>> [tuple(m.shape) for m in wrapped.masks]
        [(3, 4)]
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        weights: Sequence[str] | None = None,
        counts_steps: bool = True,
        **kwargs,
    ):
        super().__init__(layer, weights, **kwargs)
        self.counts_steps = bool(counts_steps)

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
            dtype="int32",  # JAX has no int64 by default; 2**31 steps is plenty
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.built = True

    def call(self, inputs, *args, training=None, **kwargs):
        """Run the wrapped layer; in training, count the step (a ``mask`` comes in ``kwargs``)."""
        if training and self.counts_steps:
            self._count_step()
        if constraint_masks():
            return self._call_layer(inputs, args, training, kwargs)
        masked = [
            (v, ops.where(m.value, v.value, ops.zeros((), v.dtype)))
            for v, m in zip(self.compressed_variables, self.masks)
        ]
        return self._call_layer(inputs, args, training, kwargs, masked)

    def _count_step(self) -> None:
        """Advance the step counter by one.

        In place on eager PyTorch: ``assign_add`` builds a new tensor and copies it back, 13 us
        against 3 us per step. Inside a ``StatelessScope`` the update is recorded instead.
        """
        if keras.backend.backend() == "torch" and stateless_scope() is None:
            self.step.value.add_(1)
        else:
            self.step.assign_add(1)

    def compressed_weights(self) -> list[tuple[str, np.ndarray]]:
        """``(path, value)`` of each pruned weight as the model uses it (zeros where masked)."""
        out = []
        for path, variable, mask in zip(self.weight_paths, self.compressed_variables, self.masks):
            w = ops.convert_to_numpy(variable)
            out.append((path, np.where(ops.convert_to_numpy(mask), w, 0).astype(w.dtype)))
        return out

    def get_config(self) -> dict:
        """Serializable config: the wrapped layer, the pruned weight names, ``counts_steps``."""
        return {**super().get_config(), "counts_steps": self.counts_steps}


def step_counter(wrappers: Sequence[PruningWrapper]) -> PruningWrapper:
    """The wrapper whose step counter is the model's: the first with ``counts_steps``.

    Raises:
        ValueError: no wrapper counts steps (a schedule read from it would never advance).

    Example:
        >>> import keras_compress as kc
        >>> model = kc.make_prunable(kc.examples.lenet_300_100())
        >>> step_counter(kc.pruning_wrappers(model)).name
        'pruned_fc1'
    """
    counter = next((w for w in wrappers if w.counts_steps), None)
    if counter is None:
        raise ValueError(
            f"none of the PruningWrappers {[w.name for w in wrappers]} counts training steps, so "
            "a pruning schedule would never advance: build one with counts_steps=True "
            "(make_prunable sets it on the first wrapper it makes)"
        )
    return counter
