"""Pruning during ``fit``: wrappers hold masks, a callback updates them on a schedule.

* ``prunable``: ``make_prunable`` wraps a model's weight layers; ``pruning_wrappers`` finds them.
* ``wrapper``: ``PruningWrapper``, masks and step counter as Keras variables.
* ``callback``: ``MagnitudePruning``, the criteria over weight classes (See et al. 2016).
* ``masks``: the numpy mask rules (class-uniform/-blind/-distribution, Han's std, ESE balance).
* ``schedules``: constant, polynomial (Zhu & Gupta) and iterative rounds (Han et al.).
* ``structure``: block (1x4, 1x16), N:M and channel groups for ``MagnitudePruning(structure=)``.
* ``latency``: ``latency_plan`` (which layers a sparse kernel will speed up) and
  ``sparse_kernels`` (how a converted ``.tflite`` stores and runs each weight).
* ``saliency``: OBD scores and layer-wise OBS (LeCun 1989, Hassibi & Stork 1993).
"""

from keras_compress.pruning import latency, masks, saliency, schedules, structure
from keras_compress.pruning.callback import MagnitudePruning
from keras_compress.pruning.latency import (
    LayerPlan,
    SparseKernel,
    latency_plan,
    latency_targets,
    sparse_kernels,
)
from keras_compress.pruning.prunable import make_prunable, pruning_wrappers
from keras_compress.pruning.schedules import (
    ConstantSparsity,
    IterativeRounds,
    PolynomialDecay,
    PruningSchedule,
)
from keras_compress.pruning.wrapper import PruningWrapper

__all__ = [
    "ConstantSparsity",
    "IterativeRounds",
    "LayerPlan",
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "PruningWrapper",
    "SparseKernel",
    "latency",
    "latency_plan",
    "latency_targets",
    "make_prunable",
    "masks",
    "pruning_wrappers",
    "saliency",
    "schedules",
    "sparse_kernels",
    "structure",
]
