"""Diagonal Hessian estimates for Hessian-weighted quantization (Choi et al. 2016, section 4).

Two estimates the paper uses:

* ``fisher_diagonal``: the empirical Fisher / Gauss-Newton diagonal, the mean over a
  calibration set of the squared per-batch gradients of the loss.
* ``adam_second_moments``: the second-moment estimate ``v`` an Adam optimizer kept while
  training the model (section 4.5: "Alternative of Hessian"), available for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np

from keras_compress.core.report import weight_variables
from keras_compress.core.weights import optimizer_slots


def fisher_diagonal(
    model: keras.Model,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    loss: Callable | str,
    per_example: bool = False,
) -> dict[str, np.ndarray]:
    """Mean squared gradient of ``loss`` per weight, over the given (x, y) batches.

    Args:
        model: a plain (unwrapped) model.
        batches: an iterable of ``(x, y)`` pairs (a ``tf.data.Dataset`` works); memory is
            bounded by one batch (times the parameters, with ``per_example``).
        loss: a Keras loss (object or name).
        per_example: square each example's gradient (the empirical Fisher proper, for OBD)
            instead of each batch's mean gradient (cheaper; enough as relative weights).

    Returns:
        ``{"layer/weight": diagonal}`` for each weight matrix, shaped like the weight.

    Raises:
        ValueError: ``batches`` is empty.

    Example:
        >>> import keras_compress as kc
        >>> model = kc.examples.lenet_300_100()
        >>> x, y = np.random.rand(8, 28, 28, 1), np.zeros(8, "int32")
        >>> h = fisher_diagonal(model, [(x, y)], "sparse_categorical_crossentropy")
        >>> h["fc1/kernel"].shape
        (784, 300)
    """
    loss_fn = keras.losses.get(loss)
    # Per-example values: a Loss object's unreduced call, or a loss function's result.
    per_example_loss = loss_fn.call if isinstance(loss_fn, keras.losses.Loss) else loss_fn
    named = weight_variables(model)
    variables = list(named.values())
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    count = 0
    for x, y in batches:
        grads = loss_gradients(model, variables, x, y, per_example_loss, per_example)
        for total, grad in zip(sums, grads):
            squared = np.square(np.asarray(grad, np.float64))
            total += squared.sum(axis=0) if per_example else squared
        count += grads[0].shape[0] if per_example else 1
    if count == 0:
        raise ValueError("fisher_diagonal needs at least one calibration batch")
    return {name: total / count for name, total in zip(named, sums)}


def loss_gradients(
    model: keras.Model,
    variables: list[keras.Variable],
    x,
    y,
    per_example_loss: Callable,
    per_example: bool = False,
) -> list[np.ndarray]:
    """Gradients of the mean loss on ``(x, y)`` with respect to ``variables``, on any backend.

    With ``per_example``, each example's gradient (shape ``(batch, *variable.shape)``).
    Keras has no backend-independent gradient, so each backend's own autodiff is used
    (TensorFlow's tape, ``jax.grad`` over the values in a ``keras.StatelessScope``,
    ``torch.autograd``).

    Example:
        >>> dense = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        >>> dense.set_weights([np.array([[1.0], [2.0]])])
        >>> mse = lambda y, p: keras.ops.mean((y - p) ** 2, axis=-1)
        >>> x, y = np.array([[1.0, 0.0]], "float32"), np.array([[0.0]], "float32")
        >>> loss_gradients(dense, dense.trainable_variables, x, y, mse)[0].ravel().tolist()
        [2.0, 0.0]
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def losses(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return per_example_loss(y, model(x, training=False))

        values = [v.value for v in variables]
        if per_example:
            return [np.asarray(g) for g in jax.jacrev(losses)(values)]
        return [np.asarray(g) for g in jax.grad(lambda v: losses(v).mean())(values)]
    if backend == "torch":
        import torch

        values = [v.value for v in variables]
        losses = per_example_loss(keras.ops.convert_to_tensor(y), model(x, training=False))
        if per_example:
            rows = [torch.autograd.grad(losses[i], values, retain_graph=True)
                    for i in range(losses.shape[0])]  # fmt: skip
            return [np.stack([r[j].cpu().numpy() for r in rows]) for j in range(len(values))]
        grads = torch.autograd.grad(losses.mean(), values, allow_unused=True)
        return [
            np.zeros(v.shape) if g is None else g.cpu().numpy() for v, g in zip(variables, grads)
        ]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        losses = per_example_loss(y, model(x, training=False))
        value = tf.reduce_mean(losses)
    targets = [v.value for v in variables]
    if per_example:
        return [np.asarray(g) for g in tape.jacobian(losses, targets)]
    grads = tape.gradient(value, targets)
    return [np.zeros(v.shape) if g is None else np.asarray(g) for v, g in zip(variables, grads)]


def hessian_vector_products(
    model: keras.Model, variables: list[keras.Variable], loss_fn: Callable
) -> Callable:
    """``f(x, y, z)``: the Hessian of the mean loss times ``z`` (one array per variable).

    Double backpropagation through each backend's own autodiff (a compiled TensorFlow
    function, ``jax.jvp`` of ``jax.grad``, ``torch.autograd`` with ``create_graph``).

    Example:
        >>> fc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
        >>> mse = lambda y, p: keras.ops.mean((y - p) ** 2, axis=-1)
        >>> hz = hessian_vector_products(fc, fc.trainable_variables, mse)
        >>> x, y = np.array([[1.0, 0.0]], "float32"), np.array([[0.0]], "float32")
        >>> hz(x, y, [np.array([[1.0], [1.0]], "float32")])[0].ravel().tolist()  # H = 2 x x^T
        [2.0, 0.0]
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def mean_loss(values, x, y):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return keras.ops.mean(loss_fn(y, model(x, training=False)))

        @jax.jit
        def jax_product(values, x, y, z):
            return jax.jvp(lambda v: jax.grad(mean_loss)(v, x, y), (values,), (z,))[1]

        return lambda x, y, z: [
            np.asarray(h) for h in jax_product([v.value for v in variables], x, y, z)
        ]
    if backend == "torch":
        import torch

        def torch_product(x, y, z):
            values = [v.value for v in variables]
            value = loss_fn(keras.ops.convert_to_tensor(y), model(x, training=False)).mean()
            grads = torch.autograd.grad(value, values, create_graph=True)
            dot = sum((g * torch.as_tensor(t)).sum() for g, t in zip(grads, z))
            return [h.detach().cpu().numpy() for h in torch.autograd.grad(dot, values)]

        return torch_product
    import tensorflow as tf

    targets = [v.value for v in variables]

    @tf.function
    def tf_product(x, y, z):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = tf.reduce_mean(loss_fn(y, model(x, training=False)))
            grads = inner.gradient(value, targets)
            dot = tf.add_n([tf.reduce_sum(g * t) for g, t in zip(grads, z)])
        return outer.gradient(dot, targets)

    def product(x, y, z):
        z = [tf.convert_to_tensor(t) for t in z]  # tensors: one trace for every call
        hz = tf_product(tf.convert_to_tensor(x), tf.convert_to_tensor(y), z)
        return [np.zeros(v.shape) if h is None else np.asarray(h) for v, h in zip(variables, hz)]

    return product


def adam_second_moments(model: keras.Model) -> dict[str, np.ndarray]:
    """Adam's second-moment estimates ``v`` of the weight matrices of a trained model.

    Args:
        model: a model trained with ``keras.optimizers.Adam`` (or AdamW, ...).

    Returns:
        ``{"layer/weight": v}`` for each weight matrix the optimizer tracked.

    Raises:
        ValueError: the model has no Adam-style optimizer with state.

    Example:
        >>> import keras_compress as kc
        >>> model = kc.examples.lenet_300_100()
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> _ = model.fit(np.random.rand(8, 28, 28, 1), np.zeros(8), verbose=0)
        >>> adam_second_moments(model)["fc3/kernel"].shape
        (100, 10)
    """
    optimizer = getattr(model, "optimizer", None)
    out = {}
    for name, variable in weight_variables(model).items():
        slot = optimizer_slots(optimizer, variable).get("velocity")
        if slot is None:
            raise ValueError(
                f"model {model.name!r} has no Adam second moment for {name!r}; train it with "
                "keras.optimizers.Adam first, or use fisher_diagonal"
            )
        out[name] = keras.ops.convert_to_numpy(slot)
    return out
