"""Shared by the benchmarks: the wall and CPU time of training epochs, and fair comparisons."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import keras


class EpochTimer(keras.callbacks.Callback):
    """Wall and CPU seconds of each epoch, from ``on_epoch_begin`` to ``on_epoch_end``.

    Timed inside ``fit``, so what ``fit`` does before its first epoch and after its last (data
    adapters, tearing down the pipeline) is not counted; validation at the epoch's end is.

    Example:
        >>> import numpy as np
        >>> timer = EpochTimer()
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=2, verbose=0, callbacks=[timer])
        >>> len(timer.wall), len(timer.cpu)
        (2, 2)
    """

    def __init__(self):
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        """Start the clocks."""
        self._start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        """Record the epoch's seconds."""
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def times_in_turns(epochs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each ``{name: epoch}`` in turns, ``rounds`` times; every round's seconds per name.

    ``epoch()`` runs one timed epoch and returns its seconds. Taking turns lets a shared
    machine's slow spells hit every variant alike (a phase's own epochs, minutes apart, do
    not).

    Example:
        >>> times_in_turns({"a": lambda: 1.0, "b": lambda: 2.0}, rounds=2)
        {'a': [1.0, 1.0], 'b': [2.0, 2.0]}
    """
    times: dict[str, list[float]] = {name: [] for name in epochs}
    for _ in range(rounds):
        for name, epoch in epochs.items():
            times[name].append(epoch())
    return times


def fastest_in_turns(epochs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each name's fastest seconds of ``times_in_turns`` (drops the first round's tracing).

    Example:
        >>> fastest_in_turns({"a": lambda: 1.0, "b": lambda: 2.0}, rounds=2)
        {'a': 1.0, 'b': 2.0}
    """
    return {name: min(t) for name, t in times_in_turns(epochs, rounds).items()}


def paired_median_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of ``name``'s seconds over ``base``'s in the same round.

    A second estimate beside the ratio of the fastest epochs: a slow spell that spans a
    round slows both variants of that round, so each round's ratio keeps less of it.

    Example:
        >>> paired_median_ratio({"a": [2.0, 3.0, 2.2], "b": [1.0, 2.0, 2.0]}, "a", "b")
        1.5
    """
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def interleaved_times(
    runs: dict, x, y, batch: int, steps: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds of each round's epoch of ``steps`` batches for each ``{name: (model, callbacks)}``.

    ``x`` is an array or a list of arrays (a multi-input model); ``callbacks`` returns the
    callbacks of one ``fit``. The variants take turns (``times_in_turns``), timed inside
    ``fit`` by ``EpochTimer``; take ``min`` of a list for the fastest epoch.
    """
    n = steps * batch
    xs = [a[:n] for a in x] if isinstance(x, (list, tuple)) else x[:n]

    def epoch(model, callbacks) -> float:
        clock = EpochTimer()
        model.fit(xs, y[:n], batch_size=batch, epochs=1, shuffle=False, verbose=0,
                  callbacks=[*callbacks(), clock])  # fmt: skip
        return clock.wall[0]

    return times_in_turns({name: partial(epoch, *run) for name, run in runs.items()}, rounds)
