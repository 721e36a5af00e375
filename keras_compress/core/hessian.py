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
    import tensorflow as tf  # gradient tapes; imported here so the package imports without it

    loss_fn = keras.losses.get(loss)
    named = weight_variables(model)
    variables = list(named.values())
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    count = 0
    for x, y in batches:
        with tf.GradientTape() as tape:
            prediction = model(x, training=False)
            # Per-example values: a Loss object's unreduced call, or a loss function's result.
            losses = (loss_fn.call if isinstance(loss_fn, keras.losses.Loss) else loss_fn)(
                y, prediction
            )
            value = tf.reduce_mean(losses)
        targets = [v.value for v in variables]
        if per_example:
            for total, grads in zip(sums, tape.jacobian(losses, targets)):
                total += np.sum(np.square(np.asarray(grads, np.float64)), axis=0)
            count += int(losses.shape[0])
            continue
        for total, grad in zip(sums, tape.gradient(value, targets)):
            if grad is not None:
                total += np.square(np.asarray(grad, np.float64))
        count += 1
    if count == 0:
        raise ValueError("fisher_diagonal needs at least one calibration batch")
    return {name: total / count for name, total in zip(named, sums)}


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
    # Keras names an optimizer slot "<variable path with _ for />_<slot>".
    slots = {v.name: v for v in getattr(optimizer, "variables", [])}
    out = {}
    for name, variable in weight_variables(model).items():
        slot = slots.get(variable.path.replace("/", "_") + "_velocity")
        if slot is None:
            raise ValueError(
                f"model {model.name!r} has no Adam second moment for {name!r}; train it with "
                "keras.optimizers.Adam first, or use fisher_diagonal"
            )
        out[name] = np.asarray(slot.numpy())
    return out
