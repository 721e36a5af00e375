"""keras-compress: Deep Compression for Keras 3 models, from ``model.fit`` to TFLite.

Example:
    >>> import keras_compress as kc
    >>> model = kc.make_prunable(kc.zoo.lenet_300_100())
    >>> callback = kc.MagnitudePruning(target=0.92, schedule="polynomial")
"""

from keras_compress import (
    datasets,
    hessian,
    huffman,
    kmeans1d,
    pruning_masks,
    quantizers,
    schedules,
    sidecar,
    sparse_index,
    zoo,
)
from keras_compress.export import export
from keras_compress.pruning import make_prunable, pruning_wrappers, sparsity
from keras_compress.pruning_callback import MagnitudePruning
from keras_compress.pruning_wrapper import MaskConstraint, PruningWrapper
from keras_compress.report import summary, weight_rows
from keras_compress.schedules import ConstantSparsity, IterativeRounds, PolynomialDecay
from keras_compress.sharing import share_weights
from keras_compress.sharing_wrapper import WeightSharingWrapper
from keras_compress.strip import strip

__version__ = "0.1.0"

__all__ = [
    "ConstantSparsity",
    "IterativeRounds",
    "MagnitudePruning",
    "MaskConstraint",
    "PolynomialDecay",
    "PruningWrapper",
    "WeightSharingWrapper",
    "datasets",
    "export",
    "hessian",
    "huffman",
    "kmeans1d",
    "make_prunable",
    "pruning_masks",
    "pruning_wrappers",
    "quantizers",
    "schedules",
    "share_weights",
    "sidecar",
    "sparse_index",
    "sparsity",
    "strip",
    "summary",
    "weight_rows",
    "zoo",
]
