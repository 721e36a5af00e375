"""Structural surgery: remove whole units or filters from a model, really shrinking it.

``remove_units(model, {"fc1": [3, 7]})`` rebuilds a Sequential or functional model without
output units 3 and 7 of ``fc1``: its kernel loses those columns and its bias those entries,
and every layer downstream that the channels flow through loses them as well (the rows of the
next Dense, the input slices of the next convolution, the entries of a BatchNormalization, the
positions of a Flatten). Every surviving weight is carried over exactly. This is the surgery
of network trimming (Hu et al. 2016, arXiv:1607.03250); keras-surgeon did the same for
legacy Keras, which Keras 3 cannot run, hence this module.

Channel bookkeeping: each tensor in the graph carries the indices (in the original model) of
the last-axis channels it still has, or ``None`` when it has all of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import keras
import numpy as np

from keras_compress.core.graph import (
    TRANSPOSED_CONVS,
    WIDTH_KEYS,
    channels_first,
    consumer_names,
    in_out_view,
    inbound_names,
    inbound_tensors,
    model_input,
    output_owners,
    producer_name,
    step_layer,
    width_key,
)
from keras_compress.core.rewrite import (
    check_rebuildable,
    find_layer,
    iter_layers,
    iter_models,
    lift,
    merge_lora,
    rewrite_model,
)
from keras_compress.core.weights import variable_name
from keras_compress.core.wrapper import strip

#: Layers without weights that pass channels through unchanged (last axis).
PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Identity,
    keras.layers.ActivityRegularization,
    keras.layers.Dropout,
    keras.layers.AlphaDropout,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    # Image layers that move or rescale each channel's pixels alike and never mix channels
    # (resizing mid-network in a segmentation model; augmentation, an identity at inference).
    keras.layers.Resizing,
    keras.layers.CenterCrop,
    keras.layers.RandomCrop,
    keras.layers.RandomFlip,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
    keras.layers.RandomTranslation,
    keras.layers.RandomContrast,
    keras.layers.RandomBrightness,
)
MERGE_SAME = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
              keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum)  # fmt: skip
DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
#: ``keras.ops`` calls in a graph that act on each channel alone (MobileNetV3's hard sigmoid is
#: ``relu6(x + 3.0) * (1 / 6)``), by class name: their other operands must be numbers or
#: tensors of the same channels (or one channel, broadcast).
ELEMENTWISE_OPS = frozenset(
    {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum", "Power",
     "Negative", "Absolute", "Abs", "Square", "Sqrt", "Exp", "Clip", "Tanh", "Relu", "Relu6",
     "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Softplus", "LeakyRelu", "Elu", "Selu",
     "Gelu", "Celu"}
)  # fmt: skip


class SurgeryError(ValueError):
    """A layer cannot take part in the requested surgery; the message names it and why."""


class _OutputChange(SurgeryError):
    """The surgery would change the shape of a model's output."""


def remove_units(model: keras.Model, units: Mapping[str, Iterable[int]]) -> keras.Model:
    """A copy of ``model`` without the given output units/filters of the given layers.

    Args:
        model: a built Sequential or functional model (not changed).
        units: layer name -> indices of its output units (Dense) or filters (Conv1D/2D/3D,
            SeparableConv1D/2D, ConvTranspose, or any of these in ``TimeDistributed``) to
            remove; negative indices count from the end. A layer of a model nested in
            ``model`` is named as any other and trimmed inside it.

    Returns:
        The smaller model, uncompiled. On any input it computes what ``model`` computes when
        the removed units' outputs are ignored by the layers that read them.

    Channels tied by a residual merge (``Add`` and the like) are removed only where every
    branch removes them; the others are left alone in all branches, with a warning naming
    them. A product (``Multiply``: a squeeze-and-excitation gate) loses a channel where any
    factor loses it: the gate's layer loses that unit too (see ``channel_plan``).

    Raises:
        SurgeryError: a layer that is not Dense/Conv, an index out of range, all of a layer's
            units removed, a removal that would change the model's output shape, a shared
            layer, or a layer downstream that cannot drop input channels (named, with the
            reason).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc1"),
        ...                           keras.layers.Dense(2, name="fc2")])
        >>> remove_units(model, {"fc1": [0]}).count_params()  # (4*2 + 2) + (2*2 + 2)
        16
    """
    check_rebuildable(model)
    model = merge_lora(model)  # a LoRA layer's kernel is frozen: slice the merged one
    plan = _nested_plan(model, units, any_factor=True)
    _warn_unremoved(model, units, plan)
    return _apply_plan(model, plan)


def _warn_unremoved(model: keras.Model, units: Mapping[str, Iterable[int]], plan: dict) -> None:
    """Name the requested units that a merge left in place (``_settle``), and the way out."""
    kept = []
    for name, indices in units.items():
        layer = find_layer(model, name)[1]
        out_kept = plan.get(id(layer), (None, None))[1]
        width = int(layer.output.shape[-1])
        left = sorted({int(i) % width for i in indices} & set(
            range(width) if out_kept is None else out_kept.tolist()
        ))  # fmt: skip
        if left:
            kept.append(f"{name} {left}")
    if kept:
        warnings.warn(
            f"remove_units keeps units of {'; '.join(kept)}: they meet other channels in a "
            "merge that keeps them, a sum (Add, Subtract, Average, ...), which loses a channel "
            "only where every branch loses it, or a product with a model input; name the same "
            "units of the other branches' layers too",
            stacklevel=3,
        )


def _apply_plan(model: keras.Model, plan: dict) -> keras.Model:
    """``model`` rebuilt with each planned layer's channels (``_nested_plan``) sliced."""

    def transform(layer):
        if id(layer) not in plan:
            return None
        in_kept, out_kept = plan[id(layer)]
        op = step_layer(layer)
        config = _without_build_configs(layer.get_config())
        inner = config["layer"]["config"] if op is not layer else config
        key = width_key(op)
        if key is not None and out_kept is not None:
            inner[key] = int(out_kept.size)
        if isinstance(op, keras.layers.Reshape):  # its last axis holds the channels
            in_shape, out_shape = _step_shapes(layer)
            last = out_shape[-1] // in_shape[-1] * in_kept.size
            inner["target_shape"] = [*inner["target_shape"][:-1], last]  # -1 stays -1
        new = layer.__class__.from_config(config)

        def load():
            if layer.weights:
                new.set_weights(_sliced_weights(layer, in_kept, out_kept))

        return new, load

    return rewrite_model(model, transform)


def remove_pruned_channels(model: keras.Model, min_keep: int = 1) -> keras.Model:
    """Remove by surgery every output channel whose kernel slice is all zero.

    The end of channel pruning (``MagnitudePruning(structure="channels")``): the pruned
    filters or units are zero but still computed; this rebuilds the model without them
    (``remove_units``), so it runs faster. Pruning wrappers are stripped first.

    A removed channel's output was not zero but a constant: its bias, or the shift of the
    BatchNormalization after it, through the activation. What the next Dense or Conv layer
    made of it goes into that layer's bias (or, without one, the moving mean of the
    BatchNormalization after it): exact for Dense layers and unpadded convolutions, close at
    the borders of ``padding="same"`` ones (separable, transposed too); an LSTM, GRU or
    SimpleRNN reading them gets it in its input bias. Channels tied by a residual ``Add`` are
    removed only where every branch pruned them. Zero channels that are the model's outputs,
    or flow unchanged into one (a feature extractor's last convolution before its pooling),
    stay, with a warning; so do those of a layer whose channels no surgery can remove
    (``remove_units`` would raise: a grouped convolution, a LayerNormalization after it, a
    ``channels_first`` layer), the warning naming the layer and the reason.

    Args:
        model: a channel-pruned model (wrapped or stripped), not changed.
        min_keep: channels each layer keeps at least (its largest-norm ones).

    Returns:
        The smaller model, uncompiled (``model``'s copy if nothing was pruned).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc1"),
        ...                           keras.layers.Dense(2, name="fc2")])
        >>> kernel, bias = model.layers[0].get_weights()
        >>> kernel[:, 1] = 0.0
        >>> model.layers[0].set_weights([kernel, bias])
        >>> remove_pruned_channels(model).layers[0].units
        2
    """
    plain = merge_lora(strip(model))
    units = {}
    for layer in iter_layers(plain):  # nested models' layers too
        op = step_layer(layer)
        if width_key(op) is None or not layer.weights:
            continue
        kernel = op.pointwise_kernel if hasattr(op, "pointwise_kernel") else op.kernel
        kernel = in_out_view(op, np.asarray(keras.ops.convert_to_numpy(kernel)))
        norms = np.abs(kernel.reshape(-1, kernel.shape[-1])).sum(axis=0)
        dead = np.flatnonzero(norms == 0)
        if norms.size - dead.size < min_keep:  # keep the min_keep largest norms
            dead = np.sort(np.argsort(-norms, kind="stable")[min_keep:])
        if dead.size:
            units[layer.name] = dead.tolist()
    outputs, blocked = [], []
    try:  # usually fine: one walk, not one per layer
        plan = _nested_plan(plain, units, spare_outputs=outputs)
    except SurgeryError:
        outputs.clear()
        for name, dead in list(units.items()):
            try:
                _nested_plan(plain, {name: dead}, spare_outputs=[])
            except _OutputChange:  # its channels flow into a model output, untraceably
                outputs.append(f"{name} ({len(dead)})")
                del units[name]
            except SurgeryError as error:  # a layer downstream cannot lose them
                blocked.append(f"{name} ({len(dead)}): {error}")
                del units[name]
        plan = _nested_plan(plain, units, spare_outputs=outputs)
    if outputs:
        warnings.warn(
            f"remove_pruned_channels keeps the zero channels of {', '.join(outputs)}: they are "
            f"outputs of model {plain.name!r} (or of a model nested in it) or flow unchanged into "
            "one",
            stacklevel=2,
        )
    if blocked:
        warnings.warn(
            "remove_pruned_channels keeps zero channels that no surgery can remove; leave these "
            "layers out of channel pruning (make_prunable(model, layers=...) or layer_targets "
            "level 0): " + "; ".join(blocked),
            stacklevel=2,
        )
    if not units:
        return plain
    small = _apply_plan(plain, plan)
    _keep_constants(plain, small, plan)
    return small


def _keep_constants(model: keras.Model, small: keras.Model, plan: dict) -> None:
    """Give ``small`` what the removed channels fed its layers, a constant, as a bias.

    A channel whose kernel slice is zero outputs a constant (its bias, or the BatchNorm shift
    after it, through the activation), the same at every position: what the next Dense or
    Conv layer made of it is a constant per output unit, added here to that layer's bias, or,
    without one, subtracted from the moving mean of the BatchNormalization right after it.
    The removed channels' maps are read from ``model`` on one all-zero input (they do not
    depend on it) and put through the layer's kernel without its bias; the mean over positions
    is the shift. Exact behind Dense layers and unpadded convolutions; behind a
    ``padding="same"`` one the shift is smaller at the borders, and its mean is the closest
    constant (on a 1x1 map, exact).
    """
    linear = (keras.layers.Dense, *SEPARABLE, *TRANSPOSED_CONVS)
    consumers = []
    for layer in iter_layers(model):
        op = step_layer(layer)
        in_kept = plan.get(id(layer), (None, None))[0]
        dense_or_conv = isinstance(op, linear) or (
            type(op) in (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
            and op.groups == 1
        )
        if in_kept is not None and (dense_or_conv or _recurrent(layer)):
            consumers.append((layer, op, in_kept, plan[id(layer)][1]))
    if not consumers:
        return
    probe = keras.Model(
        model_input(model),
        [lift(model, find_layer(model, c[0].name)[0], c[0].input) for c in consumers],
    )
    zeros = keras.tree.map_structure(  # an axis of any size gets 64 (InceptionV3 needs 75)
        lambda t: np.zeros([1] + [64 if d is None else d for d in t.shape[1:]], t.dtype),
        model_input(model),
    )
    try:
        seen = probe.predict_on_batch(zeros)
    except Exception as error:  # noqa: BLE001 - an input of that size may not fit the model
        warnings.warn(
            f"remove_pruned_channels could not read the removed channels' constant outputs "
            f"({type(error).__name__}: {str(error)[:200]}); the smaller model drops them: "
            "fine-tune it briefly",
            stacklevel=3,
        )
        return
    seen = seen if isinstance(seen, (list, tuple)) else [seen]
    for (layer, op, in_kept, out_kept), inputs in zip(consumers, seen):
        removed = np.array(keras.ops.convert_to_numpy(inputs), dtype=np.float32)
        removed[..., in_kept] = 0.0  # only what the removed channels fed it
        smaller = find_layer(small, layer.name)[1]
        if _recurrent(layer):  # the input projection of each step, in each direction
            pairs = zip(_cells(layer), _cells(smaller))
            for cell, new_cell in pairs:
                shift = (removed @ keras.ops.convert_to_numpy(cell.kernel)).mean(axis=(0, 1))
                if cell.use_bias:  # a GRU with reset_after keeps input and recurrent rows
                    bias = keras.ops.convert_to_numpy(new_cell.bias).copy()
                    (bias if bias.ndim == 1 else bias[0])[...] += shift
                    new_cell.bias.assign(bias)
            continue
        if op is not layer:  # TimeDistributed: the frames are a batch
            removed = removed.reshape(-1, *removed.shape[2:])
        shift = _linear_part(op, removed)
        if shift.size == 0:  # a map shrunk to nothing at the probe's size: nothing to add
            continue
        shift = shift.reshape(-1, shift.shape[-1]).mean(axis=0).astype(np.float64)
        shift = shift if out_kept is None else shift[out_kept]
        new = step_layer(smaller)
        if op.use_bias:
            new.bias.assign((keras.ops.convert_to_numpy(new.bias) + shift).astype(new.bias.dtype))
            continue
        after = [find_layer(small, name)[1] for name in consumer_names(smaller)]
        if len(after) == 1 and isinstance(step_layer(after[0]), keras.layers.BatchNormalization):
            norm = step_layer(after[0])
            mean = keras.ops.convert_to_numpy(norm.moving_mean)
            norm.moving_mean.assign((mean - shift).astype(mean.dtype))


def _linear_part(op: keras.layers.Layer, inputs: np.ndarray) -> np.ndarray:
    """``op``'s kernels applied to ``inputs``: a Dense or Conv layer, no bias, no activation."""
    if isinstance(op, SEPARABLE):  # depthwise, then pointwise: Keras's own op, as its call
        separable = keras.ops.separable_conv(
            inputs, op.depthwise_kernel, op.pointwise_kernel, strides=op.strides,
            padding=op.padding, dilation_rate=op.dilation_rate, data_format=op.data_format,
        )  # fmt: skip
        return keras.ops.convert_to_numpy(separable)
    if isinstance(op, TRANSPOSED_CONVS):  # as its call, without the bias
        transposed = keras.ops.conv_transpose(
            inputs, op.kernel, strides=list(op.strides), padding=op.padding,
            output_padding=op.output_padding, dilation_rate=op.dilation_rate,
            data_format=op.data_format,
        )  # fmt: skip
        return keras.ops.convert_to_numpy(transposed)
    kernel = keras.ops.convert_to_numpy(op.kernel)
    if isinstance(op, keras.layers.Dense):
        return inputs @ kernel
    if op.padding == "causal":  # Conv1D: padded on the left, then unpadded
        left = op.dilation_rate[0] * (op.kernel_size[0] - 1)
        inputs = np.pad(inputs, [(0, 0), (left, 0), (0, 0)])
        return keras.ops.convert_to_numpy(
            keras.ops.conv(
                inputs, kernel, list(op.strides), "valid", dilation_rate=op.dilation_rate
            )
        )
    return keras.ops.convert_to_numpy(op.convolution_op(inputs, kernel))


def channel_plan(
    model: keras.Model,
    units: Mapping[str, Iterable[int]],
    any_factor: bool = True,
    spare_outputs: list[str] | None = None,
) -> dict:
    """Which channels each changed layer keeps: name -> (input kept, output kept).

    Only layers whose weights or width change are listed; ``None`` means all channels.
    Branches that meet in a merge must keep the same channels. A sum (``Add``, ``Subtract``,
    ``Average``, ...) loses a channel only where every branch loses it: the others keep
    theirs. With ``any_factor``, a product (``Multiply``: a squeeze-and-excitation gate) loses
    a channel where any factor loses it, and the layers making the other factors (the gate's
    Dense) lose that unit too: a removed channel counts as zero, and so is its product.
    ``any_factor=False`` treats products as sums (``remove_pruned_channels``: a pruned
    channel's output is a constant, which still scales the product).

    A removal that would change a model output raises ``SurgeryError``; given a list as
    ``spare_outputs``, the output is settled instead like a merge that keeps every channel:
    the layers whose channels reach an output (``output_owners``, through merges) keep theirs,
    each appended to the list as ``"name (count)"`` (``remove_pruned_channels``: a residual
    chain's branches may each pass alone yet change the output together).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc1"),
        ...                           keras.layers.Dense(2, name="fc2")])
        >>> {k: [None if a is None else a.tolist() for a in v]
        ...  for k, v in channel_plan(model, {"fc1": [1]}).items()}
        {'fc1': [None, [0, 2]], 'fc2': [[0, 2], None]}
    """
    check_rebuildable(model)
    layers = {op.name: op for op in getattr(model, "operations", model.layers)}  # ops too
    kept = {name: _kept_units(layers, name, indices) for name, indices in units.items()}
    kept = {name: k for name, k in kept.items() if k is not None}
    asked = {name: int(layers[name].output.shape[-1]) - k.size for name, k in kept.items()}
    for _ in range(len(layers) + len(kept) + 1):  # each round settles a merge or an output
        try:
            return _plan(model, kept)
        except _MergeConflict as conflict:
            _settle(layers, kept, conflict, any_factor)
        except _OutputChange:
            owners = [o.name for o in output_owners(model) if o.name in kept]
            if spare_outputs is None or not owners:
                raise
            for owner in owners:
                del kept[owner]
                spare_outputs.append(f"{owner} ({asked.get(owner, 0)})")
    raise SurgeryError("residual merges could not be settled")  # pragma: no cover


def _nested_plan(
    model: keras.Model,
    units: Mapping[str, Iterable[int]],
    any_factor: bool = False,
    spare_outputs: list[str] | None = None,
) -> dict:
    """``channel_plan`` of ``model`` and of each model nested in it, keyed by layer identity.

    Each name of ``units`` is looked up among the layers of every graph; a unit inside a
    nested model is planned within that model, whose outputs must not change (so the graphs
    around it keep their shapes).
    """
    graphs = [model, *iter_models(model)]
    homes: dict[str, list[keras.Model]] = {}
    for graph in graphs:
        for layer in graph.layers:
            if layer.name in units:
                homes.setdefault(layer.name, []).append(graph)
    for name, found in homes.items():
        if len(found) > 1:
            raise SurgeryError(
                f"layer name {name!r} is in several models ({', '.join(g.name for g in found)}): "
                "trim the nested model itself (remove_units(model.get_layer(...), ...))"
            )
    plan = {}
    for graph in graphs:
        mine = {n: i for n, i in units.items() if homes.get(n, [model])[0] is graph}
        if graph is model or mine:
            for name, kept in channel_plan(graph, mine, any_factor, spare_outputs).items():
                plan[id(graph.get_layer(name))] = kept
    return plan


class _MergeConflict(Exception):
    def __init__(self, layer, in_kept):
        super().__init__(layer.name)
        self.layer, self.in_kept = layer, in_kept


def _kept_units(layers: dict, name: str, indices: Iterable[int]) -> np.ndarray | None:
    if name not in layers:
        raise SurgeryError(f"the model has no layer {name!r}")
    layer = layers[name]
    if width_key(step_layer(layer)) is None:
        raise SurgeryError(
            f"layer {name!r} ({type(layer).__name__}) has no units or filters to remove; "
            f"supported: {', '.join(t.__name__ for t in WIDTH_KEYS)} (or TimeDistributed of one)"
        )
    _require_channels_last(layer)
    width = int(layer.output.shape[-1])
    drop = np.asarray(list(indices), dtype=np.int64).ravel()
    if np.any((drop >= width) | (drop < -width)):
        raise SurgeryError(f"layer {name!r} has {width} units; cannot remove {drop.tolist()}")
    kept = np.setdiff1d(np.arange(width), drop % width)
    if kept.size == 0:
        raise SurgeryError(f"removing all {width} units of layer {name!r} would cut the model")
    return kept if kept.size < width else None


def _plan(model: keras.Model, removed: dict) -> dict:
    kept_out: dict[str, np.ndarray | None] = {}
    plan = {}
    for layer in getattr(model, "operations", model.layers):  # keras.ops calls too
        in_kept = [kept_out.get(name) for name in inbound_names(layer)]
        if not isinstance(layer, keras.layers.Layer):
            kept_out[layer.name] = _propagate_op(layer, in_kept)
            continue
        kept_out[layer.name] = _propagate(layer, in_kept, removed.get(layer.name))
        first = in_kept[0] if in_kept else None
        resized = layer.weights or isinstance(step_layer(layer), keras.layers.Reshape)
        if resized and (first is not None or layer.name in removed):
            plan[layer.name] = (first, removed.get(layer.name))
    for tensor in model.outputs:
        name = producer_name(tensor)
        if kept_out.get(name) is not None:
            raise _OutputChange(
                f"removing units would change the output {name!r} of model {model.name!r}: "
                "never trim an output layer or what flows unchanged into it (nor, in a nested "
                "model, the outputs the outer model reads)"
            )
    return plan


def _propagate_op(op, in_kept: list) -> np.ndarray | None:
    """The channels kept at the output of a ``keras.ops`` call in the graph (``x + 3.0``)."""
    if all(k is None for k in in_kept):
        return None
    broadcasts = _op_broadcast_operands(op)
    if broadcasts is None:
        raise SurgeryError(
            f"operation {op.name!r} ({type(op).__name__}, a keras.ops call in the graph) "
            "would receive fewer channels; the surgery follows keras.ops calls that act on "
            "each channel alone with number operands (x + 3.0, relu6(x), x * y): write it as "
            "a layer or trim layers whose channels do not reach it"
        )
    full = [k for k, broadcast in zip(in_kept, broadcasts) if not broadcast]
    if any(k is None or not np.array_equal(k, full[0]) for k in full):
        raise _MergeConflict(op, in_kept)
    return full[0]


def _op_broadcast_operands(op) -> list[bool] | None:
    """Whether each tensor operand of an element-wise ``keras.ops`` call is broadcast.

    A broadcast operand has one channel. ``None`` for any other call, or for one with array
    constants (the surgery does not slice them).
    """
    if type(op).__name__ not in ELEMENTWISE_OPS or len(op._inbound_nodes) != 1:
        return None
    node = op._inbound_nodes[0]
    width = node.output_tensors[0].shape[-1]
    arguments = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    constants = [a for a in arguments if not isinstance(a, keras.KerasTensor)]
    tensors = node.input_tensors
    if len(node.output_tensors) != 1 or any(np.ndim(c) > 0 for c in constants):
        return None
    if any(t.shape[-1] not in (1, width) for t in tensors):
        return None
    return [t.shape[-1] == 1 != width for t in tensors]


def _settle(layers: dict, removed: dict, conflict: _MergeConflict, any_factor: bool) -> None:
    """Make the removals feeding a merge agree (see ``channel_plan``).

    A sum keeps the channels some branch keeps; with ``any_factor`` a product loses those
    any factor loses, where the other factors' channels can be traced to their layers (a
    product with a model input, a mask, is settled as a sum).
    """
    width = int(conflict.layer.output.shape[-1])
    dropped = [
        set() if k is None else set(range(width)) - set(k.tolist()) for k in conflict.in_kept
    ]
    # a broadcast operand (one channel, x * scale) has no channels to agree on
    full = [(t, d) for t, d in zip(inbound_tensors(conflict.layer), dropped)
            if t.shape[-1] == width]  # fmt: skip
    union = set.union(*(d for _, d in full))
    product = any_factor and type(conflict.layer).__name__ == "Multiply"  # layer or keras.ops
    if product and all(_channel_owners(layers, producer_name(t)) is not None
                       for t, d in full if d != union):  # fmt: skip
        common = union
    else:
        common = set.intersection(*(d for _, d in full))
    for tensor, drop in full:
        if drop == common:
            continue
        owners = _channel_owners(layers, producer_name(tensor))
        if owners is None:
            raise SurgeryError(
                f"layer {conflict.layer.name!r} ({type(conflict.layer).__name__}) merges "
                "branches that lose different channels, and the removal in one branch cannot "
                "be traced to the Dense/Conv layers whose channels it carries"
            )
        kept = np.setdiff1d(np.arange(width), sorted(common))
        for owner in owners:
            if kept.size < width:
                removed[owner] = kept
            else:
                removed.pop(owner, None)


def _channel_owners(
    layers: Mapping[str, keras.layers.Layer], name: str, through_merges: bool = True
) -> list[str] | None:
    """The Dense/Conv layers whose channels reach layer ``name``'s output one to one.

    Walks back through BatchNormalization and weightless channel-wise layers; with
    ``through_merges`` also through depthwise convolutions of depth multiplier 1 and merges
    (a residual chain's ``Add`` carries the channels of every branch). ``None`` if some
    channel comes from elsewhere.
    """
    layer = layers.get(name)
    if layer is None:
        return None
    op = step_layer(layer)
    if width_key(op) is not None:
        return [layer.name]
    inputs = inbound_names(layer)
    elementwise = not isinstance(layer, keras.layers.Layer) and _op_broadcast_operands(layer)
    if elementwise:  # a keras.ops call: follow its operands of all channels
        inputs = [n for n, broadcast in zip(inputs, elementwise) if not broadcast]
    if through_merges and (isinstance(layer, MERGE_SAME) or (elementwise and len(inputs) > 1)):
        found = [_channel_owners(layers, n) for n in inputs]
        return None if None in found else [o for f in found for o in f]
    one_to_one = (
        isinstance(op, (*PASS_THROUGH, keras.layers.BatchNormalization, keras.layers.PReLU))
        or _scalar_rescaling(op)
        or (through_merges and isinstance(op, DEPTHWISE) and op.depth_multiplier == 1)
    )
    one_to_one = one_to_one or bool(elementwise)
    if not one_to_one or len(inputs) != 1:
        return None
    return _channel_owners(layers, inputs[0], through_merges)


def unit_owner(layers: Mapping[str, keras.layers.Layer], name: str) -> str | None:
    """The Dense/Conv layer whose units reach layer ``name``'s output one to one, if any.

    Walks back from ``name`` through BatchNormalization and weightless channel-wise layers.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
        ...                           keras.layers.ReLU(name="relu")])
        >>> unit_owner({layer.name: layer for layer in model.layers}, "relu")
        'fc'
    """
    owners = _channel_owners(layers, name, through_merges=False)
    return owners[0] if owners else None


def _propagate(layer, in_kept: list, removed_out: np.ndarray | None) -> np.ndarray | None:
    """The channels kept at ``layer``'s output, given those kept at its inputs.

    A ``TimeDistributed`` layer propagates as the layer it wraps, on one time step.
    """
    name, kind = layer.name, type(layer).__name__
    op = step_layer(layer)
    changed = [k for k in in_kept if k is not None]
    touched = bool(changed) or removed_out is not None
    if touched:
        _require_channels_last(layer)
    if width_key(op) is not None:
        if touched and getattr(op, "groups", 1) != 1:
            raise SurgeryError(f"layer {name!r} ({kind}) is a grouped convolution")
        return removed_out
    if isinstance(layer, keras.layers.InputLayer) or not changed:
        return None
    if _recurrent(layer):
        if any(k is not None for k in in_kept[1:]):
            raise SurgeryError(f"layer {name!r} ({kind}): its initial states cannot lose units")
        return None  # the input kernel loses rows; the units and outputs stay
    if isinstance(op, PASS_THROUGH) or _scalar_rescaling(op):
        return in_kept[0]
    if isinstance(op, keras.layers.Permute):
        if op.dims[-1] != len(op.dims):
            raise SurgeryError(f"layer {name!r} ({kind}) moves the channel axis {op.dims}")
        return in_kept[0]
    if isinstance(op, keras.layers.BatchNormalization):
        if op.axis not in (-1, len(_step_shapes(layer)[0])):
            raise SurgeryError(f"layer {name!r} ({kind}) normalises axis {op.axis}, not the last")
        return in_kept[0]
    if isinstance(op, keras.layers.PReLU):  # a slope per channel (or one for all): sliced
        return in_kept[0]
    if isinstance(op, DEPTHWISE):
        return _expand(in_kept[0], op.depth_multiplier)
    if isinstance(op, (keras.layers.Flatten, keras.layers.Reshape)):
        # A Flatten, or a Reshape that only merges trailing axes into the last (a CRNN's
        # (H, W, C) -> (H, W * C) before its LSTM), puts channel c of merged position p at
        # p * C + c.
        in_shape, out_shape = _step_shapes(layer)
        if in_shape[-1] is not None and out_shape[-1] == in_shape[-1]:
            # The channel axis stays last at its size (a squeeze-and-excitation block's
            # (C,) -> (1, 1, C), tokens (H, W, C) -> (H * W, C)): a row-major reshape keeps
            # every element's channel.
            return in_kept[0]
        first = _first_merged_axis(op, in_shape, out_shape)
        if first is None:
            raise SurgeryError(
                f"layer {name!r} ({kind}) reshapes {in_shape} to {out_shape}: only keeping the "
                "channel axis last, or merging trailing axes into it, keeps channels traceable"
            )
        channels, positions = in_shape[-1], int(np.prod(in_shape[first:-1]))
        return (np.arange(positions)[:, None] * channels + in_kept[0][None, :]).ravel()
    if isinstance(layer, keras.layers.Concatenate):
        if layer.axis not in (-1, len(layer.output.shape) - 1):
            raise SurgeryError(f"layer {name!r} ({kind}) concatenates axis {layer.axis}")
        widths = [int(t.shape[-1]) for t in inbound_tensors(layer)]
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        parts = [np.arange(w) if k is None else k for k, w in zip(in_kept, widths)]
        return np.concatenate([p + o for p, o in zip(parts, offsets)])
    if isinstance(layer, MERGE_SAME):
        first = in_kept[0]
        if any(k is None or not np.array_equal(k, first) for k in in_kept):
            raise _MergeConflict(layer, in_kept)
        return first
    raise SurgeryError(
        f"layer {name!r} ({kind}) cannot drop input channels: remove_units supports "
        "Dense, Conv, ConvTranspose, SeparableConv, DepthwiseConv, BatchNormalization, PReLU, "
        "LSTM, GRU, SimpleRNN, Bidirectional, pooling, Flatten, Concatenate, Add-like merges, "
        "weightless pass-through layers and TimeDistributed of these"
    )


def _scalar_rescaling(layer) -> bool:
    """A ``Rescaling`` with one scale and offset for all channels (not one per channel)."""
    rescaling = isinstance(layer, keras.layers.Rescaling)
    return rescaling and np.ndim(layer.scale) == 0 and np.ndim(layer.offset) == 0


def _require_channels_last(layer) -> None:
    """Refuse a ``channels_first`` layer: surgery reads channels on the last axis."""
    if channels_first(layer):
        raise SurgeryError(
            f"layer {layer.name!r} ({type(layer).__name__}) has data_format='channels_first': "
            "surgery finds channels on the last axis only; build the model channels_last "
            "(TFLite's layout as well)"
        )


def _first_merged_axis(op, in_shape: tuple, out_shape: tuple) -> int | None:
    """The first input axis that a Flatten or Reshape merges into its output's last axis.

    ``None`` unless it merges only trailing axes, of known sizes, channels last.
    """
    if isinstance(op, keras.layers.Flatten):
        return 0
    for first in range(len(in_shape)):
        merged = in_shape[first:]
        if None not in merged and out_shape == (*in_shape[:first], int(np.prod(merged))):
            return first
    return None


def _step_shapes(layer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``layer``'s input and output shapes for one example (one time step in TimeDistributed)."""
    lead = 2 if step_layer(layer) is not layer else 1
    return tuple(layer.input.shape[lead:]), tuple(layer.output.shape[lead:])


def _without_build_configs(config):
    """``config`` without the input shapes nested layers were built for (Bidirectional's).

    A wrapper's config holds its inner layers serialized with their ``build_config``, and
    ``from_config`` builds them at those shapes; the new layer must build at its new width.
    """
    if isinstance(config, dict):
        return {k: _without_build_configs(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_without_build_configs(v) for v in config]
    return config


def _recurrent(layer) -> bool:
    """An LSTM, GRU or SimpleRNN (or a Bidirectional of them): its input kernel is 2-D."""
    if isinstance(layer, keras.layers.Bidirectional):
        layer = layer.forward_layer
    return isinstance(layer, (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN))


def _cells(layer) -> list:
    """The cells of a recurrent layer (both directions of a Bidirectional)."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer.cell, layer.backward_layer.cell]
    return [layer.cell]


def _expand(kept: np.ndarray | None, multiplier: int) -> np.ndarray | None:
    """Depthwise output channels of the kept input channels (channel ``c`` gives ``c*m + j``)."""
    if kept is None:
        return None
    return (kept[:, None] * multiplier + np.arange(multiplier)).ravel()


def _sliced_weights(layer, in_kept, out_kept) -> list[np.ndarray]:
    """``layer``'s weights without the removed input and output channels."""
    weights = [np.asarray(w) for w in layer.get_weights()]
    take = lambda w, kept, axis: w if kept is None else np.take(w, kept, axis=axis)  # noqa: E731
    op = step_layer(layer)  # a TimeDistributed's weights are those of the layer it wraps
    if isinstance(op, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        depthwise, pointwise, *bias = weights
        depthwise = take(depthwise, in_kept, -2)
        inner = _expand(in_kept, op.depth_multiplier)
        pointwise = take(take(pointwise, inner, -2), out_kept, -1)
        return [depthwise, pointwise, *(take(b, out_kept, 0) for b in bias)]
    if width_key(op) is not None:  # Dense and Conv: kernel (..., in, out), bias (out,)
        kernel, *bias = weights
        kernel = take(take(in_out_view(op, kernel), in_kept, -2), out_kept, -1)
        return [in_out_view(op, kernel), *(take(b, out_kept, 0) for b in bias)]
    if isinstance(op, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        kernel, *bias = weights
        out = _expand(in_kept, op.depth_multiplier)
        return [take(kernel, in_kept, -2), *(take(b, out, 0) for b in bias)]
    if isinstance(op, keras.layers.BatchNormalization):
        return [take(w, in_kept, 0) for w in weights]
    if isinstance(op, keras.layers.PReLU):  # alpha: the input's shape, shared axes of size 1
        return [w if w.shape[-1] == 1 else take(w, in_kept, -1) for w in weights]
    if _recurrent(layer):  # the input kernels (in, gates * units) lose rows (both directions)
        return [take(w, in_kept, 0) if variable_name(v) == "kernel" else w
                for w, v in zip(weights, layer.weights)]  # fmt: skip
    raise SurgeryError(f"layer {layer.name!r} ({type(layer).__name__}) has weights it cannot slice")
