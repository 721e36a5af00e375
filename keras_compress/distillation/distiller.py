"""``keras.distillation.Distiller`` with the student's own losses (regularizers, ``add_loss``)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_compress")
class Distiller(keras.distillation.Distiller):
    """``keras.distillation.Distiller`` whose loss also has the student's regularization losses.

    Keras 3.15's ``Distiller.compute_loss`` returns the label and distillation terms only: it
    replaces ``Model.compute_loss``, which is where ``model.losses`` (``kernel_regularizer``,
    ``add_loss``, and so ``kc.rate_regularize``) join the loss. A regularized student trained
    in it silently trains without its regularizers. This subclass adds them back, as
    ``Model.compute_loss`` does (each cast to the loss's dtype); everything else is Keras's.
    The teacher is frozen, so its regularizers (on no trainable weight) are not counted.

    It also saves how it was compiled: Keras's ``Distiller`` overrides ``compile`` without
    ``get_compile_config``, so a distiller reloaded from ``.keras`` came back uncompiled (with a
    warning) and lost its optimizer state. Ours comes back compiled, ready to resume ``fit``.

    Example:
        >>> import keras_compress as kc
        >>> teacher = kc.examples.lenet_300_100()
        >>> student = kc.rate_regularize(kc.examples.lenet_300_100(), lam=0.01, bits=3)
        >>> distiller = Distiller(teacher, student, kc.distillation.hinton(4.0))
        >>> len(distiller.losses)  # the student's three rate terms
        3
    """

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Keras's ``Distiller.compile``; the student's loss is kept for the compile config."""
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self._labels_loss = loss

    def get_compile_config(self) -> dict:
        """Keras's compile config (which holds ``loss=None``) with the student's loss in it."""
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(self._labels_loss)
        return config

    def compile_from_config(self, config: dict) -> None:
        """Compile as saved, with the optimizer's variables built so its state loads too."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras's distillation loss plus ``self.losses`` (the student's, the teacher is frozen)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        loss = ops.convert_to_tensor(loss)
        extra = [ops.cast(term, loss.dtype) for term in self.losses]
        return ops.add(loss, ops.sum(ops.stack(extra))) if extra else loss
