"""What every feature stands on: weights and their keys, wrappers, selectors, model rewriting.

* ``weights``: which variables of a layer are compressible and their paths below it.
* ``wrapper``: the base of every keras_compress wrapper, the one wrapper test (``is_wrapper``),
  the one name of a weight (``weight_key``) and ``strip``.
* ``selectors``: the one way to pick layers and weights (names, regexes, family words, classes).
* ``graph``: reading a functional model's graph (the only place touching private Keras).
* ``rewrite``: cloning a model with some layers replaced, weights carried over.
* ``report``: per-weight values, tables and sparsity; ``hessian``: Hessian diagonals.
* ``batchnorm``: ``fold_batchnorm``, BatchNorm folded into the layer before it.
* ``files``: ``write_atomically``, every output file of a call or none.
"""

from keras_compress.core import (
    batchnorm,
    files,
    graph,
    hessian,
    report,
    rewrite,
    selectors,
    weights,
    wrapper,
)
from keras_compress.core.batchnorm import fold_batchnorm
from keras_compress.core.report import compressed_weights, sparsity, summary, weight_rows
from keras_compress.core.rewrite import iter_layers, merge_lora
from keras_compress.core.selectors import (
    LayerSelector,
    check_selectors,
    per_layer,
    selects,
    selects_any,
)
from keras_compress.core.wrapper import CompressionWrapper, is_wrapper, strip, unwrap, weight_key

__all__ = [
    "CompressionWrapper",
    "batchnorm",
    "files",
    "fold_batchnorm",
    "LayerSelector",
    "check_selectors",
    "compressed_weights",
    "graph",
    "hessian",
    "is_wrapper",
    "merge_lora",
    "iter_layers",
    "report",
    "rewrite",
    "selectors",
    "per_layer",
    "selects",
    "selects_any",
    "sparsity",
    "strip",
    "summary",
    "unwrap",
    "weight_key",
    "weight_rows",
    "weights",
    "wrapper",
]
