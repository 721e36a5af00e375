"""The layer wrapper that holds shared weights (codebook + assignments) inside the model."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_compress.core.wrapper import CompressionWrapper, weight_key

GRADIENTS = ("sum", "mean")


def _cluster_sums(codes, values, size: int):
    """``sums[k]`` = the sum of ``values`` where ``codes == k``, for ``k < size``.

    Codes run to ``size`` (pruned entries' extra slot, dropped). ``bincount`` is the fastest
    on TensorFlow and PyTorch (a gather's segment-sum gradient is several times slower on CPU,
    and Keras's PyTorch ``segment_sum`` is a general ``scatter_reduce``); JAX's needs a static
    length that ``keras.ops.bincount`` does not pass, so JAX uses ``segment_sum``.
    """
    codes, values = ops.reshape(codes, (-1,)), ops.reshape(values, (-1,))
    if keras.backend.backend() != "jax":
        return ops.bincount(codes, weights=values, minlength=size + 1)[:size]
    return ops.segment_sum(values, codes, num_segments=size + 1)[:size]


def _take_flat(x, positions):
    """``ops.take(x, positions)``: the entries of ``x`` (flattened) at 1-D ``positions``.

    On PyTorch ``torch.index_select``: Keras's ``take`` there goes through a general
    ``torch.take`` with index conversion, 65-75 us for the 18,816 non-zeros of a pruned
    784x300 kernel against 12-21 us (one CPU thread), about 6% of a fine-tuning step of
    LeNet-300-100.
    """
    if keras.backend.backend() != "torch":
        return ops.take(x, positions)
    import torch

    return torch.index_select(torch.reshape(x, (-1,)), 0, positions)


def _lookup(centroids, indices, nonzero, positions=None):
    """``where(nonzero, centroids[indices], 0)``, the centroids' gradient by one ``bincount``.

    With ``positions`` (the flat indices of the non-zero entries) only the non-zero entries
    are read and written: their centroids are scattered into zeros, and their gradients
    gathered and summed per centroid. Without, every entry is read: pruned entries take an
    extra zero centroid (index ``size``), and their gradients are summed into it and dropped.
    A gather's default gradient (a segment sum into a handful of slots) is several times
    slower on CPU, and touching only the non-zeros is faster again on every backend (JAX's CPU
    scatter-add: 0.82 ms for every entry of a 784x300 kernel, 0.07 ms for its 8% non-zeros;
    the fine-tuning epochs are in ``benchmarks/README.md``, "Backends").
    """
    size = ops.shape(centroids)[0]
    if positions is not None:
        live = _take_flat(indices, positions)  # the non-zeros' codes
        slots = ops.expand_dims(positions, 1)
        count = math.prod(ops.shape(indices))  # static: ops.size is a tensor op on PyTorch

        @ops.custom_gradient
        def sparse(c):
            def grad(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                return _cluster_sums(live, _take_flat(upstream, positions), size)

            # scatter_update into zeros, not scatter: Keras's PyTorch scatter is a Python loop.
            flat = ops.scatter_update(ops.zeros((count,), c.dtype), slots, _take_flat(c, live))
            return ops.reshape(flat, ops.shape(indices)), grad

        return sparse(ops.copy(centroids))
    codes = ops.where(nonzero, indices, size)

    @ops.custom_gradient
    def forward(c):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            return _cluster_sums(codes, upstream, size)

        return ops.take(ops.concatenate([c, ops.zeros((1,), c.dtype)]), codes), grad

    return forward(ops.copy(centroids))  # a tensor: the variable is read outside


@keras.saving.register_keras_serializable(package="keras_compress")
class WeightSharingWrapper(CompressionWrapper):
    """Wraps a layer whose weight matrices are drawn from a small trainable codebook.

    For each shared weight ``W`` the wrapper holds ``centroids`` (trainable, ``2**bits``
    values), ``indices`` (which centroid each entry uses) and ``nonzero`` (``False`` where the
    weight was pruned). Every forward pass runs the wrapped layer with
    ``W = where(nonzero, centroids[indices], 0)`` through ``keras.StatelessScope``, so the
    gradient that reaches a centroid is the sum of its members' gradients: Deep Compression's
    centroid fine-tuning (Han et al. 2016, arXiv:1510.00149, section 3.3) inside any Keras
    optimizer. ``gradient="mean"`` divides it by the cluster size. The wrapped layer's own
    copy of ``W`` is frozen and ignored. Usually created by ``share_weights``.

    A tensor with pruned zeros uses at most ``2**bits - 1`` clusters for its non-zero weights,
    so with the zero it has at most ``2**bits`` distinct values.

    Args:
        layer: the layer to wrap.
        bits: codebook size is ``2**bits``, 1 to 16.
        weights: names of the variables to share (``None``: the weight matrices).
        gradient: ``"sum"`` (Deep Compression) or ``"mean"`` of the members' gradients.
        nonzero_counts: the number of non-zero (unpruned) entries of each shared weight, or
            ``None`` for a weight, as ``share_weights`` passes them (for weights at least half
            zeros). For a counted weight the wrapper also keeps the non-zero entries'
            positions and reads and writes only those entries (faster on sparse weights, above
            all under JAX); ``assign_clusters`` then needs exactly that many non-zeros.
        **kwargs: passed to ``keras.layers.Wrapper``.

    Raises:
        ValueError: bad ``bits``, ``gradient`` or ``nonzero_counts``; at build time, no such
            weights, or a count per weight that does not match them.

    Example:
        >>> wrapped = WeightSharingWrapper(keras.layers.Dense(4), bits=2)
        >>> wrapped.build((None, 3))
        >>> [tuple(v.shape) for v in wrapped.centroids]
        [(4,)]
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        bits: int = 5,
        weights: Sequence[str] | None = None,
        gradient: str = "sum",
        nonzero_counts: Sequence[int | None] | None = None,
        **kwargs,
    ):
        super().__init__(layer, weights, **kwargs)
        if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an integer from 1 to 16, got {bits!r}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        if nonzero_counts is not None:
            nonzero_counts = [None if c is None else int(c) for c in nonzero_counts]
            if any(c is not None and c < 0 for c in nonzero_counts):
                raise ValueError(f"nonzero_counts must not be negative, got {nonzero_counts}")
        self.bits, self.gradient, self.nonzero_counts = int(bits), gradient, nonzero_counts

    def build(self, input_shape=None):
        """Build the wrapped layer, freeze its shared weights and add the codebook state."""
        self._build_layer(input_shape)
        counts = self.nonzero_counts or [None] * len(self.compressed_variables)
        if len(counts) != len(self.compressed_variables):
            raise ValueError(
                f"{self.name}: nonzero_counts has {len(counts)} entries for "
                f"{len(self.compressed_variables)} shared weights ({', '.join(self.weight_paths)})"
            )
        self.centroids, self.indices, self.nonzero, self.positions = [], [], [], []
        for i, (path, variable) in enumerate(zip(self.weight_paths, self.compressed_variables)):
            if counts[i] is not None and counts[i] > int(np.prod(variable.shape)):
                raise ValueError(
                    f"{weight_key(self, variable)}: {counts[i]} non-zeros do not fit in shape "
                    f"{tuple(variable.shape)}"
                )
            stem = path.replace("/", "__")
            self.centroids.append(
                self.add_weight(
                    name=f"{stem}_centroids", shape=(2**self.bits,), initializer="zeros"
                )
            )
            self.indices.append(
                self.add_weight(
                    name=f"{stem}_indices",
                    shape=variable.shape,
                    dtype="int32",
                    initializer="zeros",
                    trainable=False,
                )  # fmt: skip
            )
            self.nonzero.append(
                self.add_weight(
                    name=f"{stem}_nonzero",
                    shape=variable.shape,
                    dtype="bool",
                    initializer="ones",
                    trainable=False,
                )  # fmt: skip
            )
            position = None
            if counts[i] is not None:
                position = self.add_weight(
                    name=f"{stem}_positions",
                    shape=(counts[i],),
                    dtype="int32",
                    initializer="zeros",
                    trainable=False,
                )  # fmt: skip
            self.positions.append(position)
            variable.trainable = False
        self.built = True

    def _shared_value(self, i: int):
        centroids, indices, nonzero = (v.value for v in self._state(i))
        if self.gradient == "mean":
            counts = _cluster_sums(indices, ops.cast(nonzero, centroids.dtype), 2**self.bits)
            scale = 1.0 / ops.maximum(counts, 1.0)
            # Same value, gradient divided by the cluster size.
            centroids = (
                ops.stop_gradient(centroids) + (centroids - ops.stop_gradient(centroids)) * scale
            )
        positions = self.positions[i]
        positions = None if positions is None else positions.value
        return _lookup(centroids, indices, nonzero, positions)

    def _state(self, i: int) -> tuple[keras.Variable, keras.Variable, keras.Variable]:
        """``(centroids, indices, nonzero)`` of shared weight ``i``."""
        return self.centroids[i], self.indices[i], self.nonzero[i]

    def call(self, inputs, *args, training=None, **kwargs):
        """Run the wrapped layer with its shared weights substituted (``mask`` in ``kwargs``)."""
        mapping = [(v, self._shared_value(i)) for i, v in enumerate(self.compressed_variables)]
        return self._call_layer(inputs, args, training, kwargs, mapping)

    def shared_weights(self) -> list[np.ndarray]:
        """The current shared value of each shared weight, as numpy arrays."""
        out = []
        for i, variable in enumerate(self.compressed_variables):
            centroids, indices, nonzero = (ops.convert_to_numpy(v) for v in self._state(i))
            out.append(np.where(nonzero, centroids[indices], 0).astype(variable.dtype))
        return out

    def compressed_weights(self) -> list[tuple[str, np.ndarray]]:
        """``(path, value)`` of each shared weight as the model uses it."""
        return list(zip(self.weight_paths, self.shared_weights()))

    def assign_clusters(self, i: int, centroids: np.ndarray, labels: np.ndarray, nonzero) -> None:
        """Load a clustering of shared weight ``i`` (centroids padded to ``2**bits``)."""
        k = 2**self.bits
        if centroids.size > k:
            raise ValueError(f"{centroids.size} centroids do not fit in {self.bits} bits")
        padded = np.zeros(k, dtype=np.float32)
        padded[: centroids.size] = centroids
        nonzero = np.asarray(nonzero, dtype=bool)
        if self.positions[i] is not None:
            flat = np.flatnonzero(nonzero)
            if flat.size != self.nonzero_counts[i]:
                name = weight_key(self, self.compressed_variables[i])
                raise ValueError(
                    f"{name} has {flat.size} non-zeros, but the wrapper was built for "
                    f"{self.nonzero_counts[i]} (nonzero_counts)"
                )
            self.positions[i].assign(flat.astype(np.int32))
        self.centroids[i].assign(padded)
        self.indices[i].assign(np.asarray(labels, dtype=np.int32))
        self.nonzero[i].assign(nonzero)

    def get_config(self) -> dict:
        """Serializable config: the wrapped layer, bits, weight names, gradient rule, counts."""
        return {
            **super().get_config(),
            "bits": self.bits,
            "gradient": self.gradient,
            "nonzero_counts": self.nonzero_counts,
        }
