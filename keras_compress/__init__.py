"""keras-compress: Deep Compression for Keras 3 models, from ``model.fit`` to TFLite.

The names here are the whole user-facing API; each feature's package (``pruning``,
``sharing``, ``trimming``, ``distillation``, ``deploy``, ``tflm``) holds the rest, over
``core`` (weights, wrappers, selectors, rewriting) and ``coding`` (pure-numpy coding).
``deploy`` and ``tflm`` need TensorFlow's TFLite tooling and load on first use, so pruning
and sharing import without them.

Example:
    >>> import keras_compress as kc
    >>> model = kc.make_prunable(kc.examples.lenet_300_100())
    >>> callback = kc.MagnitudePruning(target=0.92, schedule="polynomial")
    >>> [type(layer).__name__ for layer in kc.strip(model).layers]
    ['Flatten', 'Dense', 'Dense', 'Dense']
"""

import importlib
import importlib.metadata

from keras_compress import (
    coding,
    core,
    distillation,
    examples,
    pruning,
    sharing,
    trimming,
)
from keras_compress.core import (
    fold_batchnorm,
    sparsity,
    strip,
    summary,
    weight_key,
    weight_rows,
)
from keras_compress.pruning import (
    ConstantSparsity,
    IterativeRounds,
    MagnitudePruning,
    PolynomialDecay,
    PruningWrapper,
    make_prunable,
    pruning_wrappers,
)
from keras_compress.sharing import (
    EntropyRate,
    WeightSharingWrapper,
    prune_to_grid,
    rate_regularize,
    share_weights,
)
from keras_compress.trimming import (
    APoZMonitor,
    measure_apoz,
    remove_pruned_channels,
    remove_units,
    select_units,
    trim_iteratively,
)

try:  # one version source: the package metadata (setup.cfg)
    __version__ = importlib.metadata.version("keras-compress")
except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

# Loaded on first use (PEP 562): these import TensorFlow.
_LAZY = {
    "deploy": ("keras_compress.deploy", None),
    "tflm": ("keras_compress.tflm", None),
    "export": ("keras_compress.deploy", "export"),
    "ExportReport": ("keras_compress.deploy", "ExportReport"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_compress' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name not in ("tensorflow", "ai_edge_litert"):
            raise
        raise ImportError(
            f"keras_compress.{name} needs TensorFlow and LiteRT ({error.name} is not "
            "installed): pip install tensorflow ai-edge-litert. Training on JAX or PyTorch "
            "needs neither: save the model there and export it under TensorFlow in another "
            "process (docs/backends.md)"
        ) from error
    return loaded if attribute is None else getattr(loaded, attribute)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "APoZMonitor",
    "ConstantSparsity",
    "EntropyRate",
    "ExportReport",
    "IterativeRounds",
    "MagnitudePruning",
    "PolynomialDecay",
    "PruningWrapper",
    "WeightSharingWrapper",
    "coding",
    "core",
    "deploy",
    "distillation",
    "examples",
    "export",
    "fold_batchnorm",
    "make_prunable",
    "measure_apoz",
    "prune_to_grid",
    "pruning",
    "pruning_wrappers",
    "rate_regularize",
    "remove_pruned_channels",
    "remove_units",
    "select_units",
    "share_weights",
    "sharing",
    "sparsity",
    "strip",
    "summary",
    "tflm",
    "trim_iteratively",
    "trimming",
    "weight_key",
    "weight_rows",
]
