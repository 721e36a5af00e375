"""Pruning schedules: which level (sparsity, or Han's quality parameter) applies at a step.

A schedule answers two questions for a training step ``t`` (counted by the model's pruning
wrappers): ``level(t)``, the level in force, and ``should_update(t)``, whether the masks are
recomputed before step ``t``. All schedules are serializable with ``get_config``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def _check_step(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


class PruningSchedule:
    """Base class: subclasses define ``level``, ``should_update`` and ``get_config``."""

    #: The largest level a schedule reaches (validated against the criterion's range).
    final_level: float

    def level(self, step: int) -> float:
        """Level in force at ``step``."""
        raise NotImplementedError

    def should_update(self, step: int) -> bool:
        """Whether masks are recomputed before ``step``."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """Constructor arguments, for ``from_config``."""
        raise NotImplementedError

    @property
    def last_change(self) -> int:
        """The step at which the level stops changing (``final_level`` from there on)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> PruningSchedule:
        """Rebuild a schedule from ``get_config()``."""
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_compress")
class ConstantSparsity(PruningSchedule):
    """Prune to a fixed level at ``begin_step``, then re-apply it every ``frequency`` steps.

    Args:
        target: the level (a sparsity in [0, 1) for the sparsity criteria).
        begin_step: first step at which masks are computed.
        end_step: last step at which masks may change (``None``: no end).
        frequency: steps between mask updates.

    Example:
        >>> s = ConstantSparsity(0.8, begin_step=10, frequency=5)
        >>> s.level(3), s.should_update(10), s.should_update(12), s.should_update(15)
        (0.0, True, False, True)
    """

    def __init__(
        self, target: float, begin_step: int = 0, end_step: int | None = None, frequency: int = 100
    ):
        _check_step("begin_step", begin_step)
        _check_step("end_step", end_step, allow_none=True)
        if frequency is None or frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency!r}")
        if end_step is not None and end_step < begin_step:
            raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step})")
        self.target, self.final_level = float(target), float(target)
        self.begin_step, self.end_step, self.frequency = begin_step, end_step, frequency

    def level(self, step: int) -> float:
        """Level in force at ``step``: 0 before ``begin_step``, ``target`` after."""
        return self.target if step >= self.begin_step else 0.0

    @property
    def last_change(self) -> int:
        """``begin_step``, or ``end_step`` for a ramp."""
        return self.begin_step if self.end_step is None else self.end_step

    def should_update(self, step: int) -> bool:
        """True every ``frequency`` steps from ``begin_step`` up to ``end_step``."""
        if step < self.begin_step or (self.end_step is not None and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            "target": self.target,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="keras_compress")
class PolynomialDecay(ConstantSparsity):
    """Zhu & Gupta's gradual pruning (arXiv:1710.01878), a cubic ramp by default.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** power`` for
    ``t_0 <= t <= t_end``, ``s_i`` before and ``s_f`` after; masks are recomputed every
    ``frequency`` steps and at ``end_step``.

    Args:
        initial: level at ``begin_step`` (``s_i``).
        target: level reached at ``end_step`` (``s_f``).
        begin_step: ``t_0``.
        end_step: ``t_end``, required.
        power: the exponent; 3 in Zhu & Gupta.
        frequency: steps between mask updates.

    Example:
        >>> s = PolynomialDecay(0.0, 0.9, begin_step=0, end_step=100)
        >>> round(s.level(50), 4), s.level(100), s.level(500)
        (0.7875, 0.9, 0.9)
    """

    def __init__(
        self,
        initial: float,
        target: float,
        begin_step: int = 0,
        end_step: int = 1000,
        power: float = 3.0,
        frequency: int = 100,
    ):
        _check_step("end_step", end_step)
        super().__init__(target, begin_step, end_step, frequency)
        if end_step == begin_step:
            raise ValueError(f"end_step ({end_step}) must be > begin_step ({begin_step})")
        if power <= 0:
            raise ValueError(f"power must be > 0, got {power}")
        self.initial, self.power = float(initial), float(power)

    def level(self, step: int) -> float:
        """Level in force at ``step`` (the formula in the class docstring)."""
        if step < self.begin_step:
            return self.initial
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.target + (self.initial - self.target) * (1.0 - progress) ** self.power

    def get_config(self) -> dict:
        """Constructor arguments."""
        config = super().get_config()
        return {"initial": self.initial, **config, "power": self.power}


@keras.saving.register_keras_serializable(package="keras_compress")
class IterativeRounds(PruningSchedule):
    """Han et al.'s iterative prune/retrain: one level per round, retraining in between.

    Round ``r`` starts at ``begin_step + r * steps_per_round``; its masks are computed once at
    that step and the rest of the round retrains the surviving weights.

    Args:
        levels: the level of each round (sparsities, or quality parameters with ``"std"``).
        steps_per_round: training steps per prune/retrain round.
        begin_step: start of the first round.

    Example:
        >>> s = IterativeRounds([0.5, 0.8, 0.9], steps_per_round=100)
        >>> s.level(0), s.level(150), s.level(10_000), s.should_update(200), s.should_update(300)
        (0.5, 0.8, 0.9, True, False)
    """

    def __init__(self, levels: Sequence[float], steps_per_round: int, begin_step: int = 0):
        if not levels:
            raise ValueError("levels must name at least one round")
        _check_step("begin_step", begin_step)
        if not isinstance(steps_per_round, int) or steps_per_round < 1:
            raise ValueError(f"steps_per_round must be an integer >= 1, got {steps_per_round!r}")
        self.levels = [float(v) for v in levels]
        self.final_level = max(self.levels)
        self.steps_per_round, self.begin_step = steps_per_round, begin_step

    def _round(self, step: int) -> int:
        return min(len(self.levels) - 1, (step - self.begin_step) // self.steps_per_round)

    def level(self, step: int) -> float:
        """Level of the round that ``step`` falls in (0 before the first round)."""
        return 0.0 if step < self.begin_step else self.levels[self._round(step)]

    @property
    def last_change(self) -> int:
        """The first step of the last round."""
        return self.begin_step + (len(self.levels) - 1) * self.steps_per_round

    def should_update(self, step: int) -> bool:
        """True at the first step of each round."""
        offset = step - self.begin_step
        return (
            offset >= 0
            and offset % self.steps_per_round == 0
            and offset // self.steps_per_round < len(self.levels)
        )

    def get_config(self) -> dict:
        """Constructor arguments."""
        return {
            "levels": self.levels,
            "steps_per_round": self.steps_per_round,
            "begin_step": self.begin_step,
        }
