"""Turning a (possibly pruned) model into a shared-weight model: Deep Compression stage two."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_compress.core.rewrite import (
    fresh_copy,
    iter_layers,
    merge_lora,
    quantized_note,
    rewrite_model,
)
from keras_compress.core.selectors import LayerSelector, per_layer
from keras_compress.core.weights import compressible_variables
from keras_compress.core.wrapper import strip, weight_key
from keras_compress.sharing.kmeans1d import INITS, Clustering, kmeans1d
from keras_compress.sharing.quantizers import ecsq, uniform_quantize
from keras_compress.sharing.wrapper import WeightSharingWrapper

QUANTIZERS = ("kmeans", "hessian_kmeans", "uniform", "ecsq")


def quantize(
    values: np.ndarray,
    k: int,
    quantizer: str = "kmeans",
    init: str = "linear",
    importance: np.ndarray | None = None,
    lam: float = 0.0,
    seed: int = 0,
) -> Clustering:
    """Cluster ``values`` into at most ``k`` shared values with the named quantizer.

    Args:
        values: 1-D array of the weights to share (non-zero ones for a pruned tensor).
        k: the number of clusters.
        quantizer: ``"kmeans"``, ``"hessian_kmeans"`` (needs ``importance``), ``"uniform"``
            (weighted by ``importance`` if given) or ``"ecsq"`` (with ``lam``).
        init: k-means initialisation, one of ``kmeans1d.INITS``.
        importance: per-value Hessian diagonal.
        lam: ECSQ's Lagrange multiplier in units of the values' variance (importance-weighted:
            ``mean(h * (x - mean(x))**2)``) per bit of index entropy, so one value suits
            tensors of any scale.
        seed: seed for random initialisations.

    Raises:
        ValueError: unknown quantizer, or more clusters than distinct values.

    Example:
        >>> quantize(np.array([0.1, 0.2, 0.9, 1.0]), 2).centroids.round(2).tolist()
        [0.15, 0.95]
    """
    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; choose one of {QUANTIZERS}")
    distinct = np.unique(values).size
    if k > distinct:
        raise ValueError(
            f"{k} clusters requested but the weights have only {distinct} distinct values"
        )
    if quantizer == "hessian_kmeans":
        if importance is None:
            raise ValueError(
                "hessian_kmeans needs a Hessian diagonal (see keras_compress.core.hessian)"
            )
        return kmeans1d(values, k, init, sample_weight=importance, seed=seed)
    if quantizer == "kmeans":
        return kmeans1d(values, k, init, seed=seed)
    if quantizer == "uniform":
        return uniform_quantize(values, k, importance)
    # lam is relative: in units of the tensor's mean importance-weighted squared deviation
    # (its variance when unweighted) per bit, the same units as ECSQ's distortion term.
    h = np.ones_like(values) if importance is None else importance
    spread = float(np.mean(h * (values - values.mean()) ** 2))
    return ecsq(values, k, lam * spread, importance)


def share_weights(
    model: keras.Model,
    bits: int | Mapping[LayerSelector, int] = 5,
    quantizer: str = "kmeans",
    init: str = "linear",
    hessian: Mapping[str, np.ndarray] | None = None,
    lam: float = 0.0,
    weights: Sequence[str] | None = None,
    gradient: str = "sum",
    seed: int = 0,
) -> keras.Model:
    """Return a copy of ``model`` whose weight matrices share ``2**bits`` trainable values.

    Each selected weight is clustered (its non-zero entries, if it was pruned: zeros stay
    zero) and its layer wrapped in ``WeightSharingWrapper``; fine-tune the centroids with an
    ordinary ``compile`` + ``fit``. Pruning wrappers are stripped first, so this composes with
    ``MagnitudePruning``. Then ``strip`` gives a plain model with the shared values.

    Args:
        model: a Sequential or functional model (pruned or not, wrapped or not).
        bits: bits per weight for every weight layer (int), or ``{selector: bits}`` where a
            selector (``keras_compress.core.selectors``) is a family word (``"conv"``,
            ``"dense"``, ``"embedding"``, ``"rnn"``), a layer name, a regex or a layer class;
            the first key that picks a layer wins; layers no key picks are left alone. Deep
            Compression uses ``{"conv": 8, "dense": 5}``.
        quantizer: ``"kmeans"``, ``"hessian_kmeans"``, ``"uniform"`` or ``"ecsq"``.
        init: k-means initialisation: ``"linear"`` (Han et al.'s choice), ``"density"``,
            ``"forgy"`` or ``"kmeans++"``.
        hessian: ``{"layer/weight": diagonal}`` (see ``keras_compress.core.hessian``), required by
            ``"hessian_kmeans"`` and used to weight ``"uniform"`` and ``"ecsq"`` when given.
        lam: ECSQ's Lagrange multiplier, relative to each tensor's weight variance (see
            ``quantize``); larger values give fewer, more unequal clusters.
        weights: variable names to share (``None``: the weight matrices).
        gradient: centroid update, ``"sum"`` of the members' gradients or their ``"mean"``.
        seed: seed for random initialisations.

    Returns:
        The new, uncompiled model; ``model`` is not changed.

    A tensor with fewer distinct non-zero values than the clusters its bits allow (pruning
    can leave a small depthwise kernel with a handful) keeps each of its values as its own
    centroid: ``min(2**bits - 1 if pruned else 2**bits, distinct)`` clusters; a warning names
    such tensors.

    Raises:
        ValueError: bits outside 1..16, unknown quantizer or init, a missing Hessian, a key of
            ``bits`` that selects no layer, nothing selected, or a NaN or infinite weight.

    Example:
        >>> import keras_compress as kc
        >>> shared = share_weights(kc.examples.lenet_300_100(), bits=4)
        >>> [len(np.unique(w)) <= 16 for w in kc.strip(shared).get_weights()[0::2]]
        [True, True, True]
    """
    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; choose one of {QUANTIZERS}")
    if init not in INITS:
        raise ValueError(f"unknown k-means init {init!r}; choose one of {INITS}")
    if quantizer == "hessian_kmeans" and hessian is None:
        raise ValueError(
            "quantizer='hessian_kmeans' needs hessian= (see keras_compress.core.hessian)"
        )
    plain = merge_lora(strip(model))  # share what LoRA layers compute with
    layers = [layer for layer in iter_layers(plain) if not isinstance(layer, keras.Model)]
    picked = {}
    for layer, layer_bits in zip(layers, per_layer(bits, layers, "bits")):
        if layer_bits is None:
            continue
        if not isinstance(bits, Mapping) and not compressible_variables(layer, weights):
            continue  # one bits= for all: only the layers that have weight matrices
        WeightSharingWrapper(layer, layer_bits, weights, gradient)  # validates bits early
        picked[id(layer)] = layer_bits
    if not picked:
        note = quantized_note(plain)
        raise ValueError(
            f"no layer of model {model.name!r} is selected by bits={bits!r}"
            + (note and f"; {note}")
        )
    constrained = [
        weight_key(layer, v)
        for layer in layers
        if id(layer) in picked
        for v in compressible_variables(layer, weights)
        if v.constraint is not None
    ]
    if constrained:
        warnings.warn(
            f"share_weights: the constraints of {', '.join(constrained)} do not act while the "
            "shared centroids train (each centroid is shared across the kernel); they stay in "
            "the stripped model's config",
            stacklevel=2,
        )
    exact = []  # tensors with fewer distinct values than clusters: each value kept as it is

    def transform(layer):
        if id(layer) not in picked:
            return None
        # The weights as numpy, once: their non-zeros size the wrapper's state and are
        # clustered in load(). Where at least half the entries are zeros, the wrapper keeps the
        # non-zeros' positions and touches only those (WeightSharingWrapper's nonzero_counts).
        values = [keras.ops.convert_to_numpy(v) for v in compressible_variables(layer, weights)]
        counts = [int(np.count_nonzero(w)) for w in values]
        counts = [c if 2 * c <= w.size else None for c, w in zip(counts, values)]
        wrapper = WeightSharingWrapper(
            fresh_copy(layer), picked[id(layer)], weights, gradient, counts,
            name=f"shared_{layer.name}",
        )  # fmt: skip

        def load():
            wrapper.layer.set_weights(layer.get_weights())
            for i, (variable, w) in enumerate(zip(wrapper.compressed_variables, values)):
                name = weight_key(wrapper, variable)
                bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
                if bad:
                    raise ValueError(f"{name} holds {bad} NaN or infinite value(s): they cannot "
                                     "be clustered (did training diverge?)")  # fmt: skip
                nonzero = w != 0
                allowed = 2**wrapper.bits - (1 if not nonzero.all() else 0)
                distinct = np.unique(w[nonzero]).size
                if hessian is not None and name not in hessian:
                    raise ValueError(f"hessian has no entry for {name!r}")
                labels = np.zeros(w.shape, np.int32)
                if distinct <= allowed:  # nothing to cluster: the values are the codebook
                    if distinct < allowed:
                        exact.append(f"{name} ({distinct} values)")
                    centroids, labels[nonzero] = np.unique(w[nonzero], return_inverse=True)
                    wrapper.assign_clusters(i, centroids, labels, nonzero)
                    continue
                importance = None if hessian is None else np.asarray(hessian[name])[nonzero]
                result = quantize(w[nonzero], allowed, quantizer, init, importance, lam, seed)
                labels[nonzero] = result.labels
                wrapper.assign_clusters(i, result.centroids, labels, nonzero)

        return wrapper, load

    shared = rewrite_model(plain, transform)
    if exact:
        warnings.warn(
            f"share_weights: {len(exact)} tensor(s) have fewer distinct non-zero values than "
            f"their bits allow and keep each value as its own centroid: {', '.join(exact)}",
            stacklevel=2,
        )
    return shared
