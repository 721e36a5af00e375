"""Several teachers as one: averaged softened distributions, or one teacher drawn per batch."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

MODES = ("average", "draw")


@keras.saving.register_keras_serializable(package="keras_compress")
class TeacherCombination(keras.layers.Layer):
    """Combines several teachers' logits into the logits of one teacher.

    ``"average"``: ``T * log(sum_k w_k softmax(z_k / T))``, whose ``softmax(. / T)`` is exactly
    the weighted average of the teachers' softened distributions, so a ``LogitsDistillation``
    at the same temperature distils from that average. ``"draw"``: the logits of one teacher
    drawn per call (with probabilities ``w``).

    Args:
        temperature: the temperature of the distillation loss, > 0.
        weights: one non-negative weight per teacher (normalised); ``None``: equal.
        mode: ``"average"`` or ``"draw"``.
        seed: seed of the draws.

    Example:
        >>> layer = TeacherCombination(temperature=2.0, weights=[1.0, 1.0])
        >>> logits = ops.convert_to_tensor([[1.0, 2.0]])
        >>> combined = layer([logits, logits])
        >>> [round(float(v), 4) for v in ops.softmax(combined / 2.0)[0]]
        [0.3775, 0.6225]
    """

    def __init__(
        self,
        temperature: float,
        weights: Sequence[float] | None = None,
        mode: str = "average",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if mode not in MODES:
            raise ValueError(f"unknown teacher combination {mode!r}; choose one of {MODES}")
        if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"teacher weights must be >= 0 with a positive sum, got {weights}")
        self.temperature, self.mode, self.seed = float(temperature), mode, seed
        self.teacher_weights = None if weights is None else [float(w) for w in weights]
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, logits):
        """Combined logits of ``logits`` (a list, one tensor per teacher)."""
        count = len(logits)
        weights = self.teacher_weights or [1.0] * count
        if len(weights) != count:
            raise ValueError(f"{len(weights)} teacher weights for {count} teachers")
        share = ops.convert_to_tensor([w / sum(weights) for w in weights], logits[0].dtype)
        stacked = ops.stack(logits, axis=0)  # (teachers, batch, classes)
        if self.mode == "draw":
            cumulative = ops.cumsum(share)
            u = keras.random.uniform((), seed=self.generator, dtype=logits[0].dtype)
            index = ops.minimum(ops.sum(ops.cast(cumulative <= u, "int32")), count - 1)
            return ops.take(stacked, index, axis=0)
        scaled = stacked / self.temperature
        log_probs = scaled - ops.logsumexp(scaled, axis=-1, keepdims=True)
        log_share = ops.log(ops.maximum(share, 1e-30))
        mixed = ops.logsumexp(log_probs + ops.reshape(log_share, (-1, 1, 1)), axis=0)
        return self.temperature * mixed

    def compute_output_shape(self, input_shape):
        """The shape of one teacher's logits."""
        return input_shape[0]

    def get_config(self) -> dict:
        """Serializable config."""
        return {**super().get_config(), "temperature": self.temperature,
                "weights": self.teacher_weights, "mode": self.mode, "seed": self.seed}  # fmt: skip


def ensemble_teacher(
    teachers: Sequence[keras.Model],
    temperature: float,
    weights: Sequence[float] | None = None,
    mode: str = "average",
    seed: int | None = None,
) -> keras.Model:
    """Several trained teachers as one teacher model for ``keras.distillation.Distiller``.

    Each teacher runs in inference mode (the Distiller calls its teacher with
    ``training=False`` and freezes it). With ``mode="average"`` use a ``LogitsDistillation``
    (or ``NoisyTeacher``) at the same ``temperature``: the student then matches the weighted
    average of the teachers' softened distributions.

    Args:
        teachers: models with one input and one logits output, all of the same shapes.
        temperature: the distillation loss's temperature, > 0.
        weights: per-teacher weights (``None``: equal).
        mode: ``"average"`` or ``"draw"`` (one teacher per batch, drawn with the weights).
        seed: seed of the draws.

    Returns:
        A functional model: the teachers' shared input to the combined logits.

    Raises:
        ValueError: no teachers, teachers with different input or output shapes or the same
            name, a bad temperature, mode or weights.

    Example:
        >>> make = lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> teacher = ensemble_teacher([make(), make()], temperature=4.0)
        >>> teacher.output.shape
        (None, 3)
    """
    if not teachers:
        raise ValueError("ensemble_teacher needs at least one teacher")
    first = teachers[0]
    for index, teacher in enumerate(teachers):
        if not isinstance(teacher, keras.Model) or len(teacher.outputs) != 1:
            raise ValueError(f"teacher {index} must be a keras.Model with one output")
        for what in ("inputs", "outputs"):
            mine, theirs = getattr(teacher, what)[0].shape, getattr(first, what)[0].shape
            if tuple(mine) != tuple(theirs):
                raise ValueError(
                    f"teacher {index} ({teacher.name!r}) has {what[:-1]} shape {mine}, "
                    f"teacher 0 ({first.name!r}) has {theirs}"
                )
    names = [teacher.name for teacher in teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teachers need distinct names (got {names}); give each model a name")
    if weights is not None and len(weights) != len(teachers):
        raise ValueError(f"{len(weights)} weights for {len(teachers)} teachers")
    inputs = keras.Input(first.inputs[0].shape[1:], dtype=first.inputs[0].dtype)
    logits = [teacher(inputs, training=False) for teacher in teachers]
    combined = TeacherCombination(temperature, weights, mode, seed, name="combination")(logits)
    return keras.Model(inputs, combined, name="ensemble_teacher")
