"""Second-order saliency pruning: Optimal Brain Damage and Optimal Brain Surgeon.

* Hessian diagonals: the empirical Fisher (``hessian.fisher_diagonal``) or Hutchinson's
  estimator ``E[z * (H z)]`` with Rademacher ``z`` (``hutchinson_diagonal``, Hessian-vector
  products by double backpropagation).
* OBD (LeCun et al. 1989): a weight's saliency is ``1/2 * H_kk * w_k^2``, the loss increase
  its removal causes if the Hessian were diagonal. ``obd_scores`` plugs it into
  ``MagnitudePruning(saliency=...)`` in place of the magnitude.
* OBS (Hassibi & Stork 1993), layer-wise (Dong et al. 2017): for a Dense layer ``y = x W``
  the squared reconstruction error of each output is a quadratic in that output's column of
  ``W`` with the Hessian ``H = X^T X / n``, the same for every column. ``obs_prune`` removes
  weights by the OBS saliency ``w_q^2 / (2 [H^-1]_qq)`` and moves the remaining ones by the OBS
  correction, eliminating inputs in a fixed order so that one Cholesky factor of ``H^-1``
  serves all columns (the "shared inverse" of SparseGPT, Frantar & Alistarh 2023). Conv2D
  kernels go through the same code on image patches (im2col).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial

import keras
import numpy as np

from keras_compress.core.graph import model_input
from keras_compress.core.hessian import fisher_diagonal, hessian_vector_products
from keras_compress.core.report import weight_variables
from keras_compress.core.rewrite import find_layer, lift, refuse_lora

#: Largest input dimension ``obs_prune`` accepts: ``H`` and its inverse are dense
#: ``d x d`` float64 matrices (4096: 128 MiB each) and factorising them costs ``O(d^3)``.
MAX_OBS_INPUTS = 4096


def hutchinson_diagonal(
    model: keras.Model,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    loss: Callable | str,
    samples: int = 1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Hutchinson's estimate of the Hessian diagonal of ``loss``, per weight matrix.

    For Rademacher vectors ``z`` (entries +-1), ``E[z * (H z)] = diag(H)``; ``H z`` comes from
    differentiating ``grad . z`` again. Averaged over ``samples`` vectors per batch and over
    the batches.

    Args:
        model: a plain or pruning-wrapped model.
        batches: ``(x, y)`` pairs (memory: one batch).
        loss: a Keras loss (object or name).
        samples: Rademacher vectors per batch.
        seed: seed of the vectors.

    Returns:
        ``{"layer/weight": diagonal}`` shaped like each weight matrix.

    Raises:
        ValueError: no batches, or ``samples < 1``.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
        >>> hutchinson_diagonal(model, [(x, y)], "mse")["fc/kernel"].shape
        (3, 2)
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    loss_fn = keras.losses.get(loss)
    named = weight_variables(model)
    variables = list(named.values())
    hessian_times = hessian_vector_products(model, variables, loss_fn)
    rng = np.random.default_rng(seed)
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    count = 0
    for x, y in batches:
        for _ in range(samples):
            z = [rng.choice([-1.0, 1.0], size=v.shape).astype(v.dtype) for v in variables]
            for total, hz, v in zip(sums, hessian_times(x, y, z), z):
                total += np.asarray(v, np.float64) * np.asarray(hz, np.float64)
            count += 1
    if count == 0:
        raise ValueError("hutchinson_diagonal needs at least one calibration batch")
    return {name: total / count for name, total in zip(named, sums)}


def obd_scores(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    loss: Callable | str,
    estimator: str = "fisher",
) -> Callable[[keras.Model], dict[str, np.ndarray]]:
    """OBD saliency ``1/2 * H_kk * w_k^2`` for ``MagnitudePruning(saliency=...)``.

    The returned function recomputes the Hessian diagonal on the model as it is when the
    masks are updated (the batches are kept, so pass a list or a re-iterable dataset).

    Args:
        batches: calibration ``(x, y)`` pairs.
        loss: the training loss.
        estimator: ``"fisher"`` (empirical Fisher, per-example squared gradients) or
            ``"hutchinson"``.

    Raises:
        ValueError: unknown estimator.

    Example:
        >>> score = obd_scores([(np.ones((2, 3)), np.zeros((2, 2)))], "mse")
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> score(model)["fc/kernel"].shape
        (3, 2)
    """
    estimators = {"fisher": partial(fisher_diagonal, per_example=True),
                  "hutchinson": hutchinson_diagonal}  # fmt: skip
    if estimator not in estimators:
        raise ValueError(
            f"unknown Hessian estimator {estimator!r}; choose one of {sorted(estimators)}"
        )
    batches = list(batches)

    def scores(model: keras.Model) -> dict[str, np.ndarray]:
        diagonal = estimators[estimator](model, batches, loss)
        named = weight_variables(model)
        return {name: 0.5 * h * np.asarray(named[name].numpy(), np.float64) ** 2
                for name, h in diagonal.items()}  # fmt: skip

    return scores


def obs_prune(
    kernel: np.ndarray,
    inputs: np.ndarray,
    sparsity: float,
    damping: float = 0.01,
    block: int = 128,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Layer-wise OBS for a Dense kernel ``(d_in, d_out)`` given the layer's ``inputs``.

    Minimises, column by column, ``||X w - X w_hat||^2 / (2 n)`` subject to ``sparsity`` of
    each column's weights being zero: inputs are eliminated in order; in each block of
    ``block`` inputs the weights with the lowest OBS saliency ``w_q^2 / (2 [H^-1]_qq)`` (on
    the weights as already corrected) are chosen, each removal's error is pushed onto the
    inputs not yet eliminated through the Cholesky factor of ``H^-1``. Then the OBS
    correction for the whole removed set moves every kept weight (a least-squares re-fit of
    each column on its kept inputs).

    Args:
        kernel: ``(d_in, d_out)`` weights (Keras Dense layout).
        inputs: ``(n, d_in)`` activations the layer sees on calibration data.
        sparsity: fraction of each column's weights to remove, in [0, 1).
        damping: added to ``H``'s diagonal, times its mean (keeps ``H`` invertible).
        block: inputs per mask-selection block.

    Returns:
        ``(new_kernel, mask, error)``: the corrected kernel (zeros where pruned), the boolean
        mask of kept weights and the increase of the (damped) reconstruction error,
        ``1/2 * sum over columns of dw^T H dw``.

    Raises:
        ValueError: shapes that disagree, ``d_in > MAX_OBS_INPUTS``, or a bad sparsity.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(64, 4))
        >>> w, mask, _ = obs_prune(np.ones((4, 2)), x, 0.5)
        >>> mask.sum(axis=0).tolist()
        [2, 2]
    """
    kernel = np.asarray(kernel, np.float64)
    x = np.asarray(inputs, np.float64).reshape(-1, kernel.shape[0])
    d_in = kernel.shape[0]
    if d_in > MAX_OBS_INPUTS:
        raise ValueError(
            f"OBS needs a {d_in}x{d_in} Hessian; the limit is MAX_OBS_INPUTS = {MAX_OBS_INPUTS} "
            "inputs (use OBD or magnitude pruning for this layer)"
        )
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    hessian = x.T @ x / len(x)
    hessian[np.diag_indices(d_in)] += damping * max(float(np.mean(np.diag(hessian))), 1e-12)
    # Upper Cholesky factor U of H^-1 (H^-1 = U^T U): row i holds the OBS update of eliminating
    # input i after inputs 0..i-1, and U[i, i]^2 is [H^-1]_ii at that point.
    upper = np.linalg.cholesky(np.linalg.inv(hessian)).T
    w = kernel.T.copy()  # one row per output column
    mask = np.ones_like(w, dtype=bool)
    for start in range(0, d_in, block):
        stop = min(start + block, d_in)
        saliency = w[:, start:stop] ** 2 / np.diag(upper)[start:stop] ** 2
        drop = int(round(sparsity * stop)) - int(round(sparsity * start))  # totals add up
        if drop:
            lowest = np.argsort(saliency, axis=1, kind="stable")[:, :drop]
            np.put_along_axis(mask[:, start:stop], lowest, False, axis=1)
        for i in range(start, stop):
            removed = np.where(mask[:, i], 0.0, w[:, i])
            w[:, i] -= removed
            w[:, i + 1 :] -= np.outer(removed / upper[i, i], upper[i, i + 1 :])
    # The sequential pass froze each kept weight once its input was eliminated; the OBS
    # correction for removing a whole set at once re-fits every kept weight: per column, the
    # kept weights K solve H_KK w_K = (H w)_K, the least-squares optimum for that mask.
    original = kernel.T
    for row, keep in zip(range(len(w)), mask):
        w[row] = 0.0
        if keep.any():
            w[row, keep] = np.linalg.solve(
                hessian[np.ix_(keep, keep)], hessian[keep] @ original[row]
            )
    delta = original - w
    error = 0.5 * float(np.einsum("ri,ij,rj->", delta, hessian, delta))
    return w.T, mask.T, error


def conv_patches(layer: keras.layers.Conv2D, inputs: np.ndarray) -> np.ndarray:
    """im2col: the ``(positions, kh * kw * c_in)`` patches a Conv2D multiplies by its kernel.

    Example:
        >>> conv = keras.layers.Conv2D(2, 3)
        >>> conv.build((None, 5, 5, 1))
        >>> conv_patches(conv, np.zeros((1, 5, 5, 1))).shape
        (9, 9)
    """
    if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1):
        raise ValueError(f"layer {layer.name!r}: OBS handles channels_last, undilated Conv2D")
    kh, kw = layer.kernel_size
    patches = keras.ops.image.extract_patches(
        np.asarray(inputs, np.float32), (kh, kw), strides=layer.strides, padding=layer.padding
    )
    return keras.ops.convert_to_numpy(patches).reshape(-1, kh * kw * inputs.shape[-1])


def obs_prune_layer(
    layer: keras.layers.Layer, inputs: np.ndarray, sparsity: float, **kwargs
) -> tuple[np.ndarray, np.ndarray, float]:
    """``obs_prune`` for a Dense or Conv2D layer's kernel, given the layer's inputs.

    Returns the new kernel in the layer's own shape, its mask and the predicted error.

    Raises:
        ValueError: another layer type, or what ``obs_prune`` rejects.

    Example:
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 4))
        >>> obs_prune_layer(dense, np.ones((8, 4)), 0.5)[1].shape
        (4, 2)
    """
    _check_obs_layer(layer)
    kernel = np.asarray(layer.kernel.numpy())
    if isinstance(layer, keras.layers.Conv2D):
        flat = kernel.reshape(-1, kernel.shape[-1])
        new, mask, error = obs_prune(flat, conv_patches(layer, inputs), sparsity, **kwargs)
        return new.reshape(kernel.shape), mask.reshape(kernel.shape), error
    return obs_prune(kernel, inputs, sparsity, **kwargs)


def _check_obs_layer(layer: keras.layers.Layer) -> None:
    """Raise unless ``layer`` is a Dense or a channels-last, ungrouped, undilated Conv2D."""
    kind = f"layer {layer.name!r} ({type(layer).__name__})"
    if isinstance(layer, keras.layers.Conv2D):
        if layer.groups != 1:
            raise ValueError(f"{kind}: OBS takes Dense or ungrouped Conv2D")
        if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1):
            raise ValueError(f"{kind}: OBS handles channels_last, undilated Conv2D")
    elif not isinstance(layer, keras.layers.Dense):
        raise ValueError(f"{kind}: OBS takes Dense or ungrouped Conv2D")


def layer_inputs(model: keras.Model, name: str, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """What layer ``name`` of a Sequential or functional ``model`` receives for inputs ``x``.

    The layer may be in a model nested in ``model`` (a backbone called in a classifier).

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> layer_inputs(model, "fc", np.ones((4, 3))).shape
        (4, 3)
    """
    graph, layer = find_layer(model, name)  # in a nested backbone too
    probe = keras.Model(model_input(model), lift(model, graph, layer.input))
    return np.asarray(probe.predict(x, batch_size=batch_size, verbose=0))


def obs_prune_model(
    model: keras.Model, x: np.ndarray, levels: Mapping[str, float], **kwargs
) -> dict[str, float]:
    """Prune the named Dense/Conv2D layers of a plain model in place by layer-wise OBS.

    Layers are pruned in the order given, each on the inputs it receives from the layers
    already pruned. Returns each layer's predicted reconstruction error.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
        >>> _ = obs_prune_model(model, np.random.rand(16, 4), {"fc": 0.5})
        >>> int((model.get_layer("fc").kernel.numpy() == 0).sum())
        6
    """
    errors = {}
    layers = [find_layer(model, name)[1] for name in levels]
    for layer in layers:  # every layer checked before any is pruned in place
        _check_obs_layer(layer)
    refuse_lora(layers, "pruning by OBS")
    for name, sparsity in levels.items():
        _, layer = find_layer(model, name)
        seen = layer_inputs(model, name, x)
        new, _, errors[name] = obs_prune_layer(layer, seen, sparsity, **kwargs)
        layer.kernel.assign(new.astype(layer.kernel.dtype))
    return errors
