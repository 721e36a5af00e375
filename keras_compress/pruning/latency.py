"""Prune for latency: which layers a runtime will run with a sparse kernel, and why not.

Pruning makes a layer faster only where the runtime has a kernel for the pattern. For LiteRT
(the ``ai_edge_litert`` interpreter; TensorFlow 2.21's converter with ``sparse=True``):

* ``FULLY_CONNECTED`` with weights stored in 1x4 or 1x16 blocks (1 output by 4 or 16
  consecutive inputs) runs LiteRT's sparse kernels: ``MagnitudePruning(structure="1x4")``.
* Unstructured (random) sparsity is stored compressed but densified before use: no gain.
* Convolutions have no sparse kernel in LiteRT's builtins. XNNPACK runs 1x1 convolutions of
  MobileNet-like graphs sparsely when at least 2/3 of their weights are zero (Elsen et al.,
  CVPR 2020), but only with its delegate's sparse-inference flag, which LiteRT's Python
  interpreter does not expose; what makes a convolution faster here is removing channels
  (``structure="channels"``, then ``remove_pruned_channels``).

``latency_plan`` applies these rules to a Keras model before training (which layers to prune,
with what structure); ``sparse_kernels`` checks a converted ``.tflite``: for each
fully-connected or convolution operator, how its weights are stored and whether the runtime
will take a sparse kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from keras_compress.core.graph import output_owners, width_key
from keras_compress.core.rewrite import iter_layers
from keras_compress.pruning.structure import parse_structure

#: Block sides (inputs per block, one output) of LiteRT's sparse fully-connected kernels.
LITERT_FC_BLOCKS = (4, 16)


@dataclass(frozen=True)
class LayerPlan:
    """Whether to prune one layer for speed, and why.

    Attributes:
        layer: the layer's name.
        prune: True where the runtime will run the pruned layer faster.
        structure: the structure to prune it with (``None`` when ``prune`` is False).
        reason: why, in words.
        max_level: the highest level worth giving it (``latency_targets`` caps at it).
    """

    layer: str
    prune: bool
    structure: str | None
    reason: str
    max_level: float = 1.0


def latency_targets(plan: list[LayerPlan], level: float) -> dict[str, float]:
    """``layer_targets`` for ``MagnitudePruning``: ``level`` for each layer the plan prunes.

    Example:
        >>> import keras_compress as kc
        >>> latency_targets(latency_plan(kc.examples.lenet_300_100(), "1x4"), 0.9)
        {'fc1': 0.9, 'fc2': 0.9, 'fc3': 0.5}
    """
    return {p.layer: min(level, p.max_level) for p in plan if p.prune}


def latency_plan(model: keras.Model, structure: str = "1x4") -> list[LayerPlan]:
    """Say, for each weight layer of ``model``, whether pruning it with ``structure`` pays.

    Args:
        model: a Keras model (nested models are searched).
        structure: the pattern you intend to prune with (see ``MagnitudePruning``).

    An output layer keeps its outputs: no channel pruning, and in blocks at most 50%
    (``max_level``), so that every output keeps weights; it is still pruned in blocks because
    a dense operator between sparse ones goes to the XNNPACK delegate, which costs a partition
    switch. ``latency_targets`` turns the plan into ``layer_targets``.

    Returns:
        One ``LayerPlan`` per layer with a kernel; prune the ones with ``prune=True``
        (``make_prunable(model, layers=[p.layer for p in plan if p.prune])``).

    Example:
        >>> import keras_compress as kc
        >>> [(p.layer, p.prune) for p in latency_plan(kc.examples.lenet5(), "1x16")]
        [('conv1', False), ('conv2', False), ('fc1', True), ('fc2', True)]
    """
    spec = parse_structure(structure)
    blocks = spec is not None and spec.kind == "block"
    outputs = {layer.name for layer in output_owners(model)}  # nested, behind a Softmax too
    plans = []
    for layer in iter_layers(model):
        if not hasattr(layer, "kernel") and not hasattr(layer, "depthwise_kernel"):
            continue
        name, kind = layer.name, type(layer).__name__
        fast_fc = blocks and _litert_fc(layer, spec)
        if name in outputs and fast_fc:
            why = (
                "an output layer: at most 50%, so that every output keeps weights; pruned at "
                "all so that no dense operator sits between sparse ones (LiteRT hands those to "
                "its XNNPACK delegate: a partition switch, 4 of LeNet-300-100's 15 us)"
            )
            plans.append(LayerPlan(name, True, structure, why, max_level=0.5))
        elif name in outputs:
            why = "an output layer: its outputs cannot be removed, and it holds few weights"
            plans.append(LayerPlan(name, False, None, why))
        elif spec is not None and spec.kind == "channels":
            if width_key(layer) is not None:
                why = "channel removal shrinks the layer and the inputs of the next"
                plans.append(LayerPlan(name, True, structure, why))
            else:
                plans.append(LayerPlan(name, False, None, f"{kind}: no channel surgery"))
        elif fast_fc:
            why = f"LiteRT's sparse FULLY_CONNECTED kernel for 1x{spec.inputs} blocks"
            plans.append(LayerPlan(name, True, structure, why))
        elif isinstance(layer, keras.layers.Dense):
            why = (
                "LiteRT's sparse FULLY_CONNECTED kernels take 1x4 or 1x16 blocks only; other "
                "sparsity is densified at run time"
            )
            plans.append(LayerPlan(name, False, None, why))
        else:
            why = (
                f"{kind}: LiteRT has no sparse kernel for it (XNNPACK's sparse 1x1 "
                "convolutions need a delegate flag Python cannot set); prune channels instead"
            )
            plans.append(LayerPlan(name, False, None, why))
    return plans


def _litert_fc(layer, spec) -> bool:
    """A Dense layer in blocks that LiteRT's sparse fully-connected kernels take."""
    return (
        isinstance(layer, keras.layers.Dense)
        and spec.outputs == 1
        and (spec.inputs in LITERT_FC_BLOCKS)
    )


@dataclass(frozen=True)
class SparseKernel:
    """One fully-connected or convolution operator of a ``.tflite`` and its weights' storage.

    Attributes:
        op: the builtin operator (``"FULLY_CONNECTED"``, ``"CONV_2D"``, ...).
        tensor: the weight tensor's name.
        storage: ``"dense"``, ``"random"`` (sparse-encoded, unstructured) or ``"block 1xB"``.
        sparse_kernel: whether LiteRT runs the operator with a sparse kernel.
        reason: why (not).
    """

    op: str
    tensor: str
    storage: str
    sparse_kernel: bool
    reason: str


def sparse_kernels(model: bytes) -> list[SparseKernel]:
    """How a ``.tflite``'s fully-connected and convolution weights are stored and run.

    Example:
        >>> import keras_compress as kc
        >>> tflite = kc.deploy.converter.convert(kc.examples.lenet_300_100(), sparse=True)
        >>> [(k.op, k.storage) for k in sparse_kernels(tflite)][:1]
        [('FULLY_CONNECTED', 'dense')]
    """
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    root = schema.Model.GetRootAs(model, 0)

    def op_name(op) -> str:
        code = root.OperatorCodes(op.OpcodeIndex())
        return names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")

    out = []
    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        ops = [graph.Operators(o) for o in range(graph.OperatorsLength())]
        builtins = [op_name(op) for op in ops]
        # Unstructured sparse weights reach their operator through a DENSIFY operator.
        densified = {int(op.Outputs(0)): int(op.Inputs(0))
                     for op, b in zip(ops, builtins) if b == "DENSIFY"}  # fmt: skip
        for op, builtin in zip(ops, builtins):
            if builtin not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            weights = int(op.Inputs(1))
            tensor = graph.Tensors(densified.get(weights, weights))
            sparsity = tensor.Sparsity()
            storage = "dense"
            if sparsity is not None:
                block = sparsity.BlockMapLength()
                last = sparsity.DimMetadata(sparsity.DimMetadataLength() - 1)
                storage = f"block 1x{last.DenseSize()}" if block else "random"
            if builtin != "FULLY_CONNECTED":
                fast, why = False, "LiteRT has no sparse convolution kernel"
            elif storage == "dense":
                fast, why = False, "weights stored dense"
            elif storage == "random":
                fast, why = False, "unstructured sparsity is densified at run time"
            else:
                fast, why = True, f"sparse FULLY_CONNECTED kernel ({storage})"
            name = tensor.Name().decode("utf-8", "replace")
            out.append(SparseKernel(builtin, name, storage, fast, why))
    return out
