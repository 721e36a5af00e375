"""Average Percentage of Zeros (APoZ) of ReLU outputs, and the units it selects for trimming.

Hu et al. 2016 (arXiv:1607.03250, equation 1): for unit (or filter) ``c`` of a layer followed
by a ReLU, APoZ is the fraction of zeros in its output over ``N`` validation examples and the
``M`` positions of its feature map. A unit that is zero for most inputs contributes little
and can be removed (``surgery.remove_units``, ``iterative.trim_iteratively``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras
import numpy as np
from keras import ops

from keras_compress.core.graph import (
    channels_first,
    inbound_names,
    model_input,
    output_names,
    output_owners,
    step_layer,
    width_key,
)
from keras_compress.core.rewrite import iter_layers, iter_models, lift
from keras_compress.trimming.surgery import unit_owner

RULES = ("std", "fraction", "cutoff")


def relu_points(model: keras.Model) -> dict[str, keras.KerasTensor]:
    """Layers whose units reach a ReLU one to one: layer name -> the ReLU's output.

    The ReLU (any of the family: ``"relu"``, ``"relu6"``, ``ReLU(max_value=...)``, with or
    without a threshold) is the layer's own activation, or a ``ReLU``/``Activation`` layer after
    it, possibly behind BatchNormalization, Dropout or other channel-wise layers (MobileNet's
    Conv -> BatchNorm -> ReLU6). The model's output layers are left out (never trimmed), and
    so are the layers whose units flow unchanged into an output (``core.graph.output_owners``:
    a feature extractor's last convolution before its pooling).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "relu", name="fc"),
        ...                           keras.layers.Dense(2, name="out")])
        >>> list(relu_points(model))
        ['fc']
    """
    layers = {layer.name: layer for layer in model.layers}
    outputs = output_names(model) | {layer.name for layer in output_owners(model)}
    points = {}
    for layer in model.layers:
        op = step_layer(layer)  # TimeDistributed(Dense(..., "relu")) too
        if width_key(op) and _is_relu(getattr(op, "activation", None)):
            owner = layer.name
        elif _is_relu_layer(layer) and len(inbound_names(layer)) == 1:
            owner = unit_owner(layers, inbound_names(layer)[0])
        else:
            continue
        if owner is not None and owner not in outputs and layer.name not in outputs:
            points.setdefault(owner, layer.output)
    return points


def measure_apoz(
    model: keras.Model, data, batch_size: int = 256, layers: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """APoZ of every unit of the layers in ``relu_points(model)`` (or the named ``layers``).

    Models nested in ``model`` (a ``keras.applications`` backbone called in a functional
    model) are measured too, their layers by their own names, as ``remove_units`` takes them.

    Args:
        model: a built Sequential or functional model.
        data: validation inputs: an array, or for a model with several inputs a list or
            dict of arrays (batched by ``batch_size``), or a ``tf.data.Dataset``/iterable of
            batches ``x`` or ``(x, y[, w])``. Only one batch's activations are held at a time.
        batch_size: batch size for array inputs.
        layers: restrict to these layer names.

    Returns:
        Layer name -> APoZ per unit (float64 in [0, 1]), in the layer's unit order.

    Raises:
        ValueError: a named layer has no ReLU after it, one is ``channels_first``, or
            ``data`` is empty.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, "relu", name="fc"),
        ...                           keras.layers.Dense(1)])
        >>> model.get_layer("fc").set_weights([np.eye(2, dtype="float32"), np.zeros(2)])
        >>> measure_apoz(model, np.array([[1.0, -1.0], [2.0, -3.0]]))["fc"].tolist()
        [0.0, 1.0]
    """
    points = _zero_fractions(model)
    if layers is not None:
        missing = [name for name in layers if name not in points]
        if missing:
            raise ValueError(f"no ReLU follows layer(s) {missing}; these do: {sorted(points)}")
        points = {name: points[name] for name in layers}
    if not points:
        considered = [f"{layer.name} ({type(layer).__name__})" for layer in iter_layers(model)
                      if width_key(step_layer(layer))]  # fmt: skip
        raise ValueError(
            f"no unit of model {model.name!r} reaches a ReLU one to one, so APoZ has nothing to "
            f"measure; Dense/Conv layers considered: {', '.join(considered) or 'none'}. APoZ "
            "needs a ReLU (any max_value or threshold, e.g. ReLU6) after a layer, directly or "
            "behind BatchNormalization and channel-wise layers; leaky ReLUs have no zeros"
        )
    first = [name for name, (layer, _) in points.items() if channels_first(layer)]
    if first:
        raise ValueError(
            f"layer(s) {first} have data_format='channels_first': APoZ counts zeros per channel "
            "on the last axis only; build the model channels_last"
        )
    probe = keras.Model(model_input(model), [fraction for _, fraction in points.values()])
    zeros = [np.zeros(int(fraction.shape[-1])) for _, fraction in points.values()]
    examples = 0
    for x in _batches(data, batch_size, len(model.inputs)):
        out = probe.predict_on_batch(x)
        out = out if isinstance(out, (list, tuple)) else [out]
        for total, batch in zip(zeros, out):
            total += np.asarray(batch, dtype=np.float64).sum(axis=0)
        examples += int(np.shape(out[0])[0])
    if examples == 0:
        raise ValueError("no validation examples to compute APoZ on")
    return {name: total / examples for name, total in zip(points, zeros)}


def _zero_fractions(model: keras.Model) -> dict[str, tuple[keras.layers.Layer, object]]:
    """Layer name -> (layer, its ReLU's fraction of zeros per example and channel).

    The fractions are symbolic tensors of ``model``: those of its own ``relu_points`` and of
    every model nested in it (a ``keras.applications`` backbone called in a functional model),
    lifted into its graph (``core.rewrite.lift``). Names are unique across the graphs, as
    ``remove_units`` needs them.
    """
    found: dict[str, tuple[keras.layers.Layer, object]] = {}
    for graph in (model, *iter_models(model)):
        points = relu_points(graph)
        clash = sorted(found.keys() & points.keys())
        if clash:
            raise ValueError(
                f"layer name(s) {clash} are in model {graph.name!r} and around it: APoZ and "
                "remove_units name layers; measure the nested model itself"
            )
        if points:
            fractions = lift(model, graph, [_zeros_per_channel(t) for t in points.values()])
            for name, fraction in zip(points, fractions):
                found[name] = (graph.get_layer(name), fraction)
    return found


def select_units(
    scores: Mapping[str, np.ndarray],
    rule: str = "std",
    value: float | None = None,
    min_units: int = 1,
) -> dict[str, np.ndarray]:
    """Units to remove per layer, by APoZ.

    * ``"std"`` (the paper's rule): APoZ more than ``value`` (default 1) standard deviations
      above the layer's mean.
    * ``"fraction"``: the ``value`` fraction (0 to 1) of each layer's units with the highest APoZ.
    * ``"cutoff"``: APoZ above ``value`` (0 to 1).

    At least ``min_units`` units stay in every layer (those with the lowest APoZ).

    Returns:
        Layer name -> sorted unit indices to remove (layers with none are left out).

    Raises:
        ValueError: unknown rule, ``value`` out of range, or ``min_units < 1``.

    Example:
        >>> select_units({"fc": np.array([0.1, 0.9, 0.2, 0.15])}, "cutoff", 0.5)["fc"].tolist()
        [1]
    """
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {RULES}")
    if rule == "std":
        value = 1.0 if value is None else value
    elif value is None or not 0 <= value <= 1:
        raise ValueError(f"rule {rule!r} needs a value from 0 to 1, got {value!r}")
    if not isinstance(min_units, (int, np.integer)) or min_units < 1:
        raise ValueError(f"min_units must be an integer >= 1, got {min_units!r}")
    chosen = {}
    for name, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        if rule == "std":
            drop = np.flatnonzero(score > score.mean() + value * score.std())
        elif rule == "fraction":
            drop = np.argsort(-score, kind="stable")[: int(round(value * score.size))]
        else:
            drop = np.flatnonzero(score > value)
        room = max(score.size - min_units, 0)
        if drop.size > room:  # keep the min_units lowest-APoZ units
            drop = drop[np.argsort(-score[drop], kind="stable")[:room]]
        if drop.size:
            chosen[name] = np.sort(drop)
    return chosen


class APoZMonitor(keras.callbacks.Callback):
    """Computes APoZ on validation data during ``fit`` and logs each layer's mean.

    After every ``every`` epochs, ``history`` gets ``{layer: APoZ per unit}`` and the logs
    (so ``History`` and ``CSVLogger``) get ``apoz/<layer>``: the layer's mean APoZ.

    Args:
        data: validation inputs, as ``apoz`` takes them.
        every: epochs between computations.
        batch_size: batch size for array inputs.

    Example:
        >>> monitor = APoZMonitor(np.zeros((8, 4)))
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "relu"),
        ...                           keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.ones((8, 4)), np.ones(8), epochs=1, verbose=0, callbacks=[monitor])
        >>> len(monitor.history)
        1
    """

    def __init__(self, data, every: int = 1, batch_size: int = 256):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.data, self.every, self.batch_size = data, every, batch_size
        self.history: list[dict[str, np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        """Compute and log the APoZ of every trimmable layer."""
        if (epoch + 1) % self.every:
            return
        scores = measure_apoz(self.model, self.data, self.batch_size)
        self.history.append(scores)
        if logs is not None:
            logs.update({f"apoz/{name}": float(s.mean()) for name, s in scores.items()})


def _zeros_per_channel(tensor):
    """Per example, the fraction of zeros of each channel over the feature map's positions.

    A fraction, not a count, so that inputs of any spatial size (``input_shape=(None, None,
    3)``, unknown until called) are measured, each example weighing the same.
    """
    zeros = ops.cast(ops.equal(tensor, 0), "float32")
    return ops.mean(zeros, axis=tuple(range(1, len(tensor.shape) - 1))) if zeros.ndim > 2 else zeros


#: Activations whose output is exactly zero for an inactive unit (the ReLU family).
RELU_FAMILY = ("relu", "relu6")


def _is_relu(activation) -> bool:
    return getattr(activation, "__name__", None) in RELU_FAMILY


def _is_relu_layer(layer) -> bool:
    # A ReLU layer with a cap (ReLU6: max_value=6) or a threshold still outputs exact zeros;
    # a leaky one (negative_slope > 0) does not, so APoZ does not apply to it.
    layer = step_layer(layer)
    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope
    return isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation)


def _batches(data, batch_size: int, inputs: int):
    # Arrays as predict takes them (one array; a list or dict of arrays for a model with
    # several inputs) are batched here; anything else is an iterable of batches.
    arrays = isinstance(data, np.ndarray) or (
        isinstance(data, (dict, list, tuple))
        and inputs > 1
        and len(data) == inputs
        and all(isinstance(a, np.ndarray) for a in keras.tree.flatten(data))
    )
    if arrays:
        count = len(keras.tree.flatten(data)[0])
        for start in range(0, count, batch_size):
            window = slice(start, start + batch_size)
            yield keras.tree.map_structure(lambda a, window=window: a[window], data)
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch
