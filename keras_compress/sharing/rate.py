"""Rate-aware training: a differentiable estimate of the coded size, added to the loss.

ECSQ (``quantizers.ecsq``) trades distortion for index entropy after training. Here training
itself pays for bytes, in the spirit of entropy-penalised training (Oktay et al., "Scalable
Model Compression by Entropy Penalized Reparameterization", ICLR 2020) and soft weight-sharing
(Ullrich et al. 2017): each weight is softly assigned to the points ``j * step`` of a
uniform grid that includes zero (``step = max|w| / 2**(bits - 1)``, held constant within a
step), the grid points' probabilities are the mean soft assignments, and the estimate is the
cross-entropy of the assignments under them: ``-sum_i sum_j q_ij log2 p_j`` bits, about the
element-wise entropy of the tensor after uniform quantization, which the sidecar codes at or
below. Its gradient moves weights towards grid points that many weights share, zero first
(pruned weights sit there), so fewer distinct values and more near-zeros survive.

``EntropyRate`` is a Keras regularizer: pass it as a layer's ``kernel_regularizer`` or let
``rate_regularize`` attach it to a built model's compressible weights (pruning wrappers
included). ``lam`` is the loss that one kilobyte of coded weights is worth, so one value has
the same meaning for any model: with ``lam = 0.01`` a model that saves 10 KB may lose 0.1 of
cross-entropy. Sweep it to pick a point on the accuracy-bytes curve (``docs/sharing.md``).
The estimate needs ``elements x (2**bits + 1)`` floats per tensor in each step: meant for
models of up to a few million weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

from keras_compress.core.rewrite import iter_layers, refuse_lora
from keras_compress.core.selectors import LayerSelector, per_layer
from keras_compress.core.weights import compressible_variables, variable_name
from keras_compress.core.wrapper import unwrap

BITS_PER_KB = 8192.0


@keras.saving.register_keras_serializable("keras_compress")
class EntropyRate(keras.regularizers.Regularizer):
    """``lam`` times the estimated coded kilobytes of a weight tensor (see the module).

    Args:
        lam: loss per kilobyte of coded weights (>= 0).
        bits: grid resolution: ``2**bits + 1`` points from ``-max|w|`` to ``max|w|``, zero
            included; about the sharing bits that will follow.
        temperature: softness of the assignment, in grid steps (the Gaussian's standard
            deviation); smaller is closer to hard rounding, with less gradient.

    Example:
        >>> rate = EntropyRate(lam=0.01, bits=3)
        >>> w = np.float32([[0.0, 0.0, 0.5, -0.5]] * 64)
        >>> abs(float(rate.bits(w)) / w.size - 1.5) < 0.1  # H(1/2, 1/4, 1/4) = 1.5 bits
        True
    """

    def __init__(self, lam: float = 0.01, bits: int = 4, temperature: float = 0.3):
        if lam < 0:
            raise ValueError(f"EntropyRate: lam must be >= 0, got {lam!r}")
        if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
            raise ValueError(f"EntropyRate: bits must be an integer in 1..8, got {bits!r}")
        if temperature <= 0:
            raise ValueError(f"EntropyRate: temperature must be > 0, got {temperature!r}")
        self.lam, self.bits_, self.temperature = float(lam), int(bits), float(temperature)

    def bits(self, w):
        """The estimated bits of ``w`` (a tensor): cross-entropy of soft grid assignments."""
        flat = ops.reshape(ops.convert_to_tensor(w, "float32"), (-1, 1))
        half = 2 ** (self.bits_ - 1)
        step = ops.stop_gradient(ops.max(ops.abs(flat))) / half + 1e-12
        grid = ops.arange(-half, half + 1, dtype="float32") * step
        distance = (flat - grid[None, :]) / (self.temperature * step)
        q = ops.softmax(-0.5 * ops.square(distance), axis=-1)
        p = ops.mean(q, axis=0)
        return -ops.sum(q * ops.log(p + 1e-12)[None, :]) / np.log(2.0)

    def __call__(self, w):
        """The penalty: ``lam`` x estimated kilobytes."""
        return self.lam * self.bits(w) / BITS_PER_KB

    def get_config(self) -> dict:
        """Constructor arguments, so that saved models keep the regularizer."""
        return {"lam": self.lam, "bits": self.bits_, "temperature": self.temperature}


def rate_regularize(
    model: keras.Model,
    lam: float,
    bits: int | Mapping[LayerSelector, int] = 4,
    temperature: float = 0.3,
    weights: Sequence[str] | None = None,
) -> keras.Model:
    """Attach ``EntropyRate`` to the compressible weights of a built ``model``, in place.

    Works on plain models and on ``make_prunable`` ones (pruned weights sit at zero, the
    cheapest grid point). Where the owning layer has a ``<weight>_regularizer`` attribute
    (Dense, convolutions, RNN cells, Embedding) it is set too, so ``model.save`` keeps it.
    Train as usual; then prune (more of the weights are near zero), ``share_weights`` and
    export. ``lam=0`` removes the regularizers again.

    Args:
        model: a built model.
        lam: loss per kilobyte of coded weights.
        bits: the grid's bits for every weight layer, or ``{selector: bits}`` as in
            ``share_weights`` (layers no key picks are left alone).
        temperature: see ``EntropyRate``.
        weights: variable names (``None``: the weight matrices).

    Returns:
        ``model``, whose ``fit`` now adds ``lam`` x estimated kilobytes to the loss.

    Raises:
        ValueError: a key of ``bits`` selects no layer, nothing is selected, or a selected
            layer has LoRA enabled (``keras_compress.core.merge_lora`` it first).

    Example:
        >>> import keras_compress as kc
        >>> model = rate_regularize(kc.examples.lenet_300_100(), lam=0.01, bits=3)
        >>> len(model.losses)
        3
    """
    layers = [layer for layer in iter_layers(model) if not isinstance(layer, keras.Model)]
    layer_bits = per_layer(bits, layers, "bits", unwrap)  # selectors see a wrapper's layer
    refuse_lora([unwrap(layer) for layer, b in zip(layers, layer_bits) if b is not None],
                "a rate penalty")  # fmt: skip
    chosen = 0
    for layer, b in zip(layers, layer_bits):
        variables = compressible_variables(layer, weights) if b is not None else []
        rate = EntropyRate(lam, b, temperature) if lam > 0 and variables else None
        for variable in variables:
            variable.regularizer = rate
            _set_layer_attribute(layer, variable, rate)
            chosen += 1
    if not chosen:
        raise ValueError(f"no weight of model {model.name!r} is selected by bits={bits!r}")
    return model


def _set_layer_attribute(layer: keras.layers.Layer, variable, rate) -> None:
    """``kernel_regularizer`` and the like on the layer that owns ``variable``, for saving.

    The owner is ``layer`` or a layer it wraps (``.layer``, ``.cell``, a ``Bidirectional``'s
    two directions), the one whose attribute of the weight's name is ``variable``.
    """
    name = variable_name(variable)
    todo = [layer]
    while todo:
        owner = todo.pop()
        if getattr(owner, name, None) is variable and hasattr(owner, f"{name}_regularizer"):
            try:
                setattr(owner, f"{name}_regularizer", rate)
            except AttributeError:  # a read-only property (an RNN forwarding its cell's)
                pass
        for attribute in ("layer", "cell", "forward_layer", "backward_layer"):
            inner = getattr(owner, attribute, None)
            if isinstance(inner, keras.layers.Layer):
                todo.append(inner)


def estimated_kilobytes(model: keras.Model) -> float:
    """The regularized weights' estimated coded size in kilobytes (``EntropyRate.bits``).

    Example:
        >>> import keras_compress as kc
        >>> model = rate_regularize(kc.examples.lenet_300_100(), lam=0.01)
        >>> estimated_kilobytes(model) > 0
        True
    """
    total = 0.0
    for variable in model.trainable_variables:
        if isinstance(variable.regularizer, EntropyRate):
            total += float(variable.regularizer.bits(variable.value))
    return total / BITS_PER_KB


def prune_to_grid(model: keras.Model) -> dict[str, float]:
    """Zero, in place, every regularized weight whose nearest ``EntropyRate`` grid point is 0.

    Rate-aware training pulls weights onto its grid, zero first; this turns the ones that
    arrived there into real zeros, which ``share_weights`` then keeps pruned. Call it on a
    stripped model (``kc.strip``), before ``share_weights``.

    Returns:
        ``{"layer/weight": fraction of zeros}`` of each regularized weight.

    Example:
        >>> import keras_compress as kc
        >>> model = rate_regularize(kc.examples.lenet_300_100(), lam=0.01, bits=2)
        >>> all(0 < f < 1 for f in prune_to_grid(model).values())
        True
    """
    zeros = {}
    for variable in model.trainable_variables:
        rate = variable.regularizer
        if not isinstance(rate, EntropyRate):
            continue
        w = keras.ops.convert_to_numpy(variable)
        step = np.abs(w).max() / 2 ** (rate.bits_ - 1)
        w = np.where(np.abs(w) < step / 2, np.zeros_like(w), w)
        variable.assign(w)
        zeros[variable.path] = float(np.mean(w == 0))
    return zeros
