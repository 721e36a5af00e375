"""keras-compress: Deep Compression for Keras 3 models, from ``model.fit`` to TFLite.

Example:
    >>> import keras_compress as kc
    >>> model = kc.make_prunable(kc.examples.lenet_300_100())
    >>> callback = kc.MagnitudePruning(target=0.92, schedule="polynomial")
"""

from keras_compress import (
    coding,
    core,
    distillation,
    examples,
    pruning,
    sharing,
    sidecar,
    tflm,
    trimming,
)
from keras_compress.core.report import sparsity, summary, weight_rows
from keras_compress.core.wrapper import strip
from keras_compress.export import export
from keras_compress.pruning.callback import MagnitudePruning
from keras_compress.pruning.prunable import make_prunable, pruning_wrappers
from keras_compress.pruning.schedules import ConstantSparsity, IterativeRounds, PolynomialDecay
from keras_compress.pruning.wrapper import MaskConstraint, PruningWrapper
from keras_compress.sharing import share_weights
from keras_compress.sharing.wrapper import WeightSharingWrapper
from keras_compress.trimming import APoZMonitor, measure_apoz, select_units
from keras_compress.trimming.iterative import trim_iteratively
from keras_compress.trimming.surgery import remove_units

__version__ = "0.1.0"

__all__ = [
    "APoZMonitor",
    "ConstantSparsity",
    "IterativeRounds",
    "MagnitudePruning",
    "MaskConstraint",
    "PolynomialDecay",
    "PruningWrapper",
    "WeightSharingWrapper",
    "coding",
    "core",
    "examples",
    "distillation",
    "export",
    "make_prunable",
    "measure_apoz",
    "pruning",
    "pruning_wrappers",
    "remove_units",
    "select_units",
    "share_weights",
    "sharing",
    "sidecar",
    "sparsity",
    "strip",
    "summary",
    "tflm",
    "trim_iteratively",
    "trimming",
    "weight_rows",
]
