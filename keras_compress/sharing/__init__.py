"""Weight sharing: few trainable values per tensor, fine-tuned inside ``fit``.

* ``share``: ``share_weights`` clusters a model's weights and wraps its layers.
* ``wrapper``: ``WeightSharingWrapper``, codebook and assignments as Keras variables.
* ``kmeans1d``: exact 1-D k-means (forgy, density, linear, k-means++ inits; Han et al. 2016).
* ``quantizers``: uniform and entropy-constrained scalar quantization (Choi et al. 2016),
  linear fixed point.
* ``fixed_point``: ``quantize_weights``, ESE's 12-bit fixed-point weights for a whole model.
* ``rate``: rate-aware training: ``EntropyRate`` (a differentiable estimate of the coded
  size as a regularizer), ``rate_regularize`` and ``prune_to_grid``.
"""

from keras_compress.sharing import fixed_point, kmeans1d, quantizers, rate
from keras_compress.sharing.fixed_point import quantize_weights
from keras_compress.sharing.rate import EntropyRate, prune_to_grid, rate_regularize
from keras_compress.sharing.share import QUANTIZERS, quantize, share_weights
from keras_compress.sharing.wrapper import WeightSharingWrapper

__all__ = [
    "QUANTIZERS",
    "EntropyRate",
    "WeightSharingWrapper",
    "fixed_point",
    "kmeans1d",
    "prune_to_grid",
    "quantize",
    "quantize_weights",
    "quantizers",
    "rate",
    "rate_regularize",
    "share_weights",
]
