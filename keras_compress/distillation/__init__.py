"""Knowledge distillation on top of Keras's own ``keras.distillation``: noisy and several teachers.

Hinton et al. 2015 (arXiv:1503.02531) is ``keras.distillation.Distiller`` with
``LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())`` (``hinton(T)``): the
student matches the teacher's ``softmax(z / T)`` with a KL divergence that Keras multiplies by
``T**2`` (so its gradients keep their size as ``T`` grows), and ``student_loss_weight`` mixes
in the ordinary loss on the labels. The loss must be a ``KLDivergence`` *instance*: Keras
3.15's default, the string ``"kl_divergence"``, resolves to the plain function, which its
``LogitsDistillation`` then applies to the scaled logits without the softmax. This package adds
what Keras lacks, as the extension points Keras offers:

* ``NoisyTeacher``: a ``DistillationLoss`` that perturbs the teacher's logits (Sau &
  Balasubramanian 2016, arXiv:1610.09650): with probability ``probability`` per batch,
  ``z <- z * (1 + xi)`` with ``xi ~ N(0, noise_std**2)`` per logit, simulating several
  teachers and regularising the student.
* ``ensemble_teacher``: several teachers as one teacher model for the ``Distiller``: the
  weighted average of their softened distributions, or one teacher drawn per batch.
* ``Distiller``: Keras's, plus the student's regularization losses, which Keras 3.15's
  ``Distiller.compute_loss`` leaves out (a ``kernel_regularizer`` or ``kc.rate_regularize``
  on the student would otherwise do nothing while distilling).

Pruning while distilling: the student may be a ``make_prunable`` model; ``MagnitudePruning``
finds its wrappers inside the ``Distiller``. With a frozen copy of the unpruned model as the
teacher, the retraining that recovers from pruning also matches the unpruned model's
distribution (``benchmarks/nmt.py`` retrains an 80% pruned translation model this way)::

    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    student = kc.make_prunable(model)
    distiller = kc.distillation.Distiller(teacher, student, hinton(1.0))
    distiller.compile("adam", loss)
    distiller.fit(x, y, callbacks=[kc.MagnitudePruning(0.8, "polynomial")])
    pruned = kc.strip(student)
"""

from keras_compress.distillation.distiller import Distiller
from keras_compress.distillation.losses import NoisyTeacher, hinton
from keras_compress.distillation.teachers import MODES, TeacherCombination, ensemble_teacher

__all__ = ["MODES", "Distiller", "NoisyTeacher", "TeacherCombination", "ensemble_teacher", "hinton"]
