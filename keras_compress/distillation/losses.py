"""Distillation losses: Hinton's soft targets and Sau et al.'s noisy teacher."""

from __future__ import annotations

import keras
from keras import ops


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
        logits = ops.convert_to_tensor(logits)  # numpy logits times a torch tensor fail
        xi = keras.random.normal(ops.shape(logits), stddev=self.noise_std, seed=self.generator)
        noisy = keras.random.uniform((), seed=self.generator) < self.probability
        return ops.where(noisy, logits * (1.0 + ops.cast(xi, logits.dtype)), logits)

    def get_config(self) -> dict:
        """Serializable config."""
        return {**super().get_config(), "noise_std": self.noise_std,
                "probability": self.probability, "seed": self.seed}  # fmt: skip
