"""Knowledge distillation on top of Keras's own ``keras.distillation``: noisy and several teachers.

Hinton et al. 2015 (arXiv:1503.02531) is ``keras.distillation.Distiller`` with
``LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())`` (``hinton(T)``): the
student matches the teacher's ``softmax(z / T)`` with a KL divergence that Keras multiplies by
``T**2`` (so its gradients keep their size as ``T`` grows), and ``student_loss_weight`` mixes
in the ordinary loss on the labels. The loss must be a ``KLDivergence`` *instance*: Keras
3.15's default, the string ``"kl_divergence"``, resolves to the plain function, which its
``LogitsDistillation`` then applies to the scaled logits without the softmax. This module adds
what Keras lacks, as the extension points Keras offers:

* ``NoisyTeacher``: a ``DistillationLoss`` that perturbs the teacher's logits (Sau &
  Balasubramanian 2016, arXiv:1610.09650): with probability ``probability`` per batch,
  ``z <- z * (1 + xi)`` with ``xi ~ N(0, noise_std**2)`` per logit, simulating several
  teachers and regularising the student.
* ``ensemble_teacher``: several teachers as one teacher model for the ``Distiller``: the
  weighted average of their softened distributions, or one teacher drawn per batch.

Pruning while distilling: the student may be a ``make_prunable`` model; ``MagnitudePruning``
finds its wrappers inside the ``Distiller``. With a frozen copy of the unpruned model as the
teacher, the retraining that recovers from pruning also matches the unpruned model's
distribution (``benchmarks/nmt.py`` retrains an 80% pruned translation model this way)::

    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    student = kc.make_prunable(model)
    distiller = keras.distillation.Distiller(teacher, student, hinton(1.0))
    distiller.compile("adam", loss)
    distiller.fit(x, y, callbacks=[kc.MagnitudePruning(0.8, "polynomial")])
    pruned = kc.strip(student)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

MODES = ("average", "draw")


def hinton(temperature: float = 4.0) -> keras.distillation.LogitsDistillation:
    """Hinton et al.'s soft-target loss: ``T**2 * KL(softmax(t / T) || softmax(s / T))``.

    Example:
        >>> teacher, student = ops.convert_to_tensor([[2.0, 0.0]]), ops.zeros((1, 2))
        >>> round(float(hinton(2.0).compute_loss(teacher, student)), 4)
        0.4438
    """
    return keras.distillation.LogitsDistillation(temperature, loss=keras.losses.KLDivergence())


@keras.saving.register_keras_serializable(package="keras_compress")
class NoisyTeacher(keras.distillation.LogitsDistillation):
    """Hinton's logits distillation with Sau et al.'s noise on the teacher's logits.

    Args:
        temperature: softmax temperature ``T`` > 0 (Keras scales the KL loss by ``T**2``).
        noise_std: standard deviation of the multiplicative noise ``xi``, >= 0.
        probability: chance per batch that the noise is applied, from 0 to 1 (0: exactly
            ``LogitsDistillation``).
        loss: as for ``LogitsDistillation``; ``None``: a ``keras.losses.KLDivergence()``.
        seed: seed of the noise.

    Raises:
        ValueError: ``temperature <= 0``, ``noise_std < 0`` or ``probability`` outside [0, 1].

    Example:
        >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> distiller = keras.distillation.Distiller(
        ...     teacher, student, NoisyTeacher(temperature=4.0, noise_std=0.1, probability=0.5))
    """

    def __init__(
        self,
        temperature: float = 3.0,
        noise_std: float = 0.1,
        probability: float = 0.5,
        loss=None,
        seed: int | None = None,
    ):
        loss = keras.losses.KLDivergence() if loss is None else loss
        super().__init__(temperature=temperature, loss=loss)
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if not 0 <= probability <= 1:
            raise ValueError(f"noise probability must be in [0, 1], got {probability}")
        self.noise_std, self.probability, self.seed = float(noise_std), float(probability), seed
        self.generator = keras.random.SeedGenerator(seed)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Logits distillation loss against the (sometimes) perturbed teacher logits."""
        if self.probability > 0 and self.noise_std > 0:
            teacher_outputs = keras.tree.map_structure(self._perturb, teacher_outputs)
        return super().compute_loss(teacher_outputs, student_outputs, **kwargs)

    def _perturb(self, logits):
        xi = keras.random.normal(ops.shape(logits), stddev=self.noise_std, seed=self.generator)
        noisy = keras.random.uniform((), seed=self.generator) < self.probability
        return ops.where(noisy, logits * (1.0 + ops.cast(xi, logits.dtype)), logits)

    def get_config(self) -> dict:
        """Serializable config."""
        return {**super().get_config(), "noise_std": self.noise_std,
                "probability": self.probability, "seed": self.seed}  # fmt: skip


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
