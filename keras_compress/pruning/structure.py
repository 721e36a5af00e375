"""Structured sparsity: which weights are pruned together, so that a runtime can skip them.

Unstructured pruning (one decision per weight) shrinks the coded model but runs no faster:
LiteRT and XNNPACK have sparse kernels only for regular patterns. A *structure* partitions
each weight tensor into groups pruned as one; ``MagnitudePruning(structure=...)`` ranks the
groups instead of the weights, with the same criteria, schedules and ``layer_targets``.

Each spec names its pattern on the last two axes of a kernel, ``(..., inputs, outputs)``
(Dense ``(in, out)``, Conv2D ``(h, w, in, out)``, an RNN's ``(in, 4 * units)``):

* ``"RxC"`` blocks, named as LiteRT names them for ``FULLY_CONNECTED`` weights, whose layout is
  ``(outputs, inputs)``: ``"1x4"`` is 1 output by 4 consecutive inputs. LiteRT's sparse
  fully-connected kernels use 1x4 and 1x16 blocks (its converter's sparsity optimization stores
  them block-sparse). Convolution kernels get the same blocks at each spatial position.
* ``"N:M"``: in every run of ``M`` consecutive inputs of one output at most ``N`` weights are
  kept (``"2:4"``, the pattern of sparse tensor cores); the level is ``1 - N/M`` by definition.
* ``"channels"`` / ``"channels_l2"``: whole output channels (filters, units), ranked by the L1
  (L2) norm of their weights (Li et al. 2017, arXiv:1608.08710); ``remove_pruned_channels``
  then removes them by surgery, which is what makes the model faster.
* ``"kernels"``: each 2-D kernel of a convolution (all spatial positions of one input and one
  output channel), the "kernel-level" granularity of Mao et al. 2017 (arXiv:1705.08922). It
  runs no faster, but a kept or pruned kernel's 9 weights (3x3) cost one decision, not nine,
  to code: the sidecar's arithmetic coder predicts each from its neighbour at the previous
  spatial position. On a Dense (or 1x1) kernel every weight is its own group; a depthwise
  kernel's groups are its whole channels.

A group's score is the mean magnitude of its members (root mean square for ``channels_l2``),
so groups of different sizes (edge blocks, layers of different fan-in under
``"class_blind"``) compare fairly. Pure numpy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

STRUCTURE_HELP = (
    "'RxC' blocks such as '1x4' or '1x16', 'N:M' such as '2:4', 'channels', 'channels_l2', "
    "'kernels'"
)


@dataclass(frozen=True)
class Structure:
    """A partition of kernels into groups pruned together (see the module docstring).

    Attributes:
        kind: ``"block"``, ``"n_of_m"``, ``"channels"`` or ``"kernels"``.
        outputs, inputs: block extent along the output and input axes (``"block"``).
        n, m: keep at most ``n`` of each ``m`` consecutive inputs (``"n_of_m"``).
        norm: ``"l1"`` or ``"l2"`` (``"channels"``).
    """

    kind: str
    outputs: int = 1
    inputs: int = 1
    n: int = 0
    m: int = 0
    norm: str = "l1"

    @property
    def level(self) -> float | None:
        """The fixed sparsity of an N:M pattern, ``None`` for the others."""
        return 1.0 - self.n / self.m if self.kind == "n_of_m" else None

    def group_ids(self, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
        """Each element's group (an int array of ``shape``) and the number of groups.

        Example:
            >>> parse_structure("1x2").group_ids((4, 2))[0].tolist()
            [[0, 1], [0, 1], [2, 3], [2, 3]]
        """
        if len(shape) < 2:
            raise ValueError(f"structured pruning needs a kernel of rank >= 2, got shape {shape}")
        lead, n_in, n_out = int(np.prod(shape[:-2], dtype=np.int64)), shape[-2], shape[-1]
        p = np.arange(lead).reshape(-1, 1, 1)
        i = np.arange(n_in).reshape(1, -1, 1)
        o = np.arange(n_out).reshape(1, 1, -1)
        if self.kind == "channels":
            ids = np.broadcast_to(o, (lead, n_in, n_out))
            return ids.reshape(shape).copy(), n_out
        if self.kind == "kernels":
            ids = np.broadcast_to(i * n_out + o, (lead, n_in, n_out))
            return ids.reshape(shape).copy(), n_in * n_out
        rows = -(-n_in // self.inputs)  # ceil: a last, shorter block at the edge
        cols = -(-n_out // self.outputs)
        ids = (p * rows + i // self.inputs) * cols + o // self.outputs
        return ids.reshape(shape), lead * rows * cols


def parse_structure(spec: str | None) -> Structure | None:
    """The ``Structure`` a spec names (``None`` stays ``None``: unstructured).

    Raises:
        ValueError: an unknown spec, block sides below 1, or not ``0 < N < M``.

    Example:
        >>> parse_structure("2:4").level
        0.5
        >>> parse_structure("1x16")
        Structure(kind='block', outputs=1, inputs=16, n=0, m=0, norm='l1')
    """
    if spec is None:
        return None
    text = str(spec).strip().lower()
    if text in ("channels", "channels_l1", "channels_l2"):
        return Structure("channels", norm="l2" if text.endswith("l2") else "l1")
    if text == "kernels":
        return Structure("kernels")
    block = re.fullmatch(r"(\d+)x(\d+)", text)
    if block:
        outputs, inputs = int(block.group(1)), int(block.group(2))
        if outputs < 1 or inputs < 1:
            raise ValueError(f"block sides must be >= 1, got {spec!r}")
        return Structure("block", outputs=outputs, inputs=inputs)
    pattern = re.fullmatch(r"(\d+):(\d+)", text)
    if pattern:
        n, m = int(pattern.group(1)), int(pattern.group(2))
        if not 0 < n < m:
            raise ValueError(f"an N:M pattern needs 0 < N < M, got {spec!r}")
        return Structure("n_of_m", n=n, m=m)
    raise ValueError(f"unknown pruning structure {spec!r}; use {STRUCTURE_HELP}")


def group_scores(
    weights: np.ndarray, mask: np.ndarray, structure: Structure
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: its score, whether it is kept, and each element's group id.

    A group is kept while any member is (so a model pruned without structure before can
    switch to one); its score is the mean magnitude of its members, pruned ones counting as
    zero (root mean square for ``channels_l2``).

    Example:
        >>> w = np.array([[1.0, -4.0], [3.0, 0.0]])
        >>> scores, kept, _ = group_scores(w, w != 0, parse_structure("channels"))
        >>> scores.tolist(), kept.tolist()
        ([2.0, 2.0], [True, True])
    """
    ids, count = structure.group_ids(weights.shape)
    flat = ids.ravel()
    size = np.bincount(flat, minlength=count)
    w = np.where(mask, np.asarray(weights, np.float64), 0.0).ravel()
    if structure.norm == "l2":
        scores = np.sqrt(np.bincount(flat, weights=w * w, minlength=count) / size)
    else:
        scores = np.bincount(flat, weights=np.abs(w), minlength=count) / size
    kept = np.bincount(flat, weights=mask.ravel().astype(np.float64), minlength=count) > 0
    return scores, kept, ids


def n_of_m_mask(weights: np.ndarray, mask: np.ndarray, n: int, m: int, level: float) -> np.ndarray:
    """Prune, in each run of ``m`` consecutive inputs, the ``round(level * m)`` smallest weights.

    ``level`` grows with the schedule up to ``1 - n/m``, where at most ``n`` of every ``m`` are
    kept. Pruned weights go first and stay pruned. A last, shorter run at the edge of the
    input axis keeps at least ``n`` weights as well (when it has them).

    Example:
        >>> w = np.array([[0.1], [-0.9], [0.5], [0.2]])
        >>> n_of_m_mask(w, np.ones((4, 1), bool), 2, 4, 0.5).ravel().tolist()
        [False, True, True, False]
    """
    shape = weights.shape
    if len(shape) < 2:
        raise ValueError(f"N:M pruning needs a kernel of rank >= 2, got shape {shape}")
    n_in = shape[-2]
    runs = -(-n_in // m)
    pad = runs * m - n_in
    score = np.where(mask, np.abs(np.asarray(weights, np.float64)), -1.0)
    score = score.reshape(-1, n_in, shape[-1])
    # Padding scores +inf: never pruned, so it only makes the edge run look longer.
    score = np.pad(score, ((0, 0), (0, pad), (0, 0)), constant_values=np.inf)
    score = score.reshape(score.shape[0], runs, m, shape[-1])
    k = min(int(round(level * m + 1e-9)), m - n)
    order = np.argsort(score, axis=2, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(m).reshape(1, 1, m, 1), axis=2)
    keep = rank >= k
    if pad:  # the edge run: at most (its real members - n) pruned
        real = m - pad
        edge = np.argsort(np.argsort(score[:, -1, :real], axis=1, kind="stable"), axis=1)
        keep[:, -1, :real] = edge >= min(k, max(real - n, 0))
    keep = keep.reshape(-1, runs * m, shape[-1])[:, :n_in].reshape(shape)
    return keep & mask
