"""Iterative network trimming (Hu et al. 2016): trim by APoZ, retrain, repeat while it holds up.

A structural change cannot happen inside a running ``fit`` (the model being trained is
replaced by a smaller one), so the loop runs around ``fit``: the user's ``retrain`` function
compiles and fits each trimmed model, with whatever callbacks it likes (``APoZMonitor`` logs
APoZ during those fits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_compress.trimming.apoz import measure_apoz, select_units
from keras_compress.trimming.surgery import remove_units


@dataclass
class TrimRound:
    """One round: its retrained model, parameters, validation score and the units removed."""

    round: int
    model: keras.Model
    params: int
    score: float
    removed: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class TrimResult:
    """The smallest model whose score stayed within tolerance, and every round's record."""

    model: keras.Model
    rounds: list[TrimRound]


def trim_iteratively(
    model: keras.Model,
    data,
    retrain: Callable[[keras.Model], object],
    score: Callable[[keras.Model], float],
    tolerance: float,
    max_rounds: int = 10,
    rule: str = "std",
    value: float | None = None,
    min_units: int = 1,
    layers: Iterable[str] | None = None,
) -> TrimResult:
    """Trim high-APoZ units, retrain, and repeat until the score drops more than ``tolerance``.

    Each round computes APoZ on ``data`` (``apoz``), selects units (``select_units`` with
    ``rule``, ``value``, ``min_units``), removes them (``remove_units``), calls
    ``retrain(trimmed)`` (which must compile and fit it) and ``score(trimmed)`` (higher is
    better, e.g. validation accuracy). It stops when a round's score falls more than
    ``tolerance`` below the untrimmed model's, when nothing is selected, or after
    ``max_rounds``; the model of the last round within tolerance is kept.

    Args:
        model: trained Sequential or functional model (not changed).
        data: validation inputs for APoZ (as ``apoz`` takes them).
        retrain: compiles and fits a trimmed model in place.
        score: validation metric of a model, higher is better.
        tolerance: the largest score drop accepted, >= 0.
        max_rounds: upper bound on trim/retrain rounds.
        rule: selection rule (see ``select_units``), the paper's ``"std"`` by default.
        value: the rule's parameter (see ``select_units``).
        min_units: units every layer keeps at least.
        layers: trim only these layers (default: every layer followed by a ReLU).

    Returns:
        A ``TrimResult``; ``rounds[0]`` is the untrimmed model.

    Raises:
        ValueError: negative ``tolerance`` or ``max_rounds < 1``.

    Example:
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, "relu"),
        ...                           keras.layers.Dense(1)])
        >>> result = trim_iteratively(model, np.ones((4, 2)), lambda m: None,
        ...                           lambda m: 1.0, tolerance=0.0, max_rounds=1)
        >>> result.rounds[0].params
        17
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    baseline = float(score(model))
    rounds = [TrimRound(0, model, model.count_params(), baseline)]
    best = current = model
    for number in range(1, max_rounds + 1):
        chosen = select_units(measure_apoz(current, data, layers=layers), rule, value, min_units)
        if not chosen:
            break
        current = remove_units(current, chosen)
        retrain(current)
        result = float(score(current))
        removed = {name: np.asarray(units).tolist() for name, units in chosen.items()}
        rounds.append(TrimRound(number, current, current.count_params(), result, removed))
        if result < baseline - tolerance:
            break
        best = current
    return TrimResult(best, rounds)
