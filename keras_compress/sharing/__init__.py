"""Weight sharing: few trainable values per tensor, fine-tuned inside ``fit``.

* ``share``: ``share_weights`` clusters a model's weights and wraps its layers.
* ``wrapper``: ``WeightSharingWrapper``, codebook and assignments as Keras variables.
* ``kmeans1d``: exact 1-D k-means (forgy, density, linear, k-means++ inits; Han et al. 2016).
* ``quantizers``: uniform and entropy-constrained scalar quantization (Choi et al. 2016),
  linear fixed point.
* ``fixed_point``: ``quantize_weights``, ESE's 12-bit fixed-point weights for a whole model.
"""

from keras_compress.sharing import fixed_point, kmeans1d, quantizers
from keras_compress.sharing.fixed_point import quantize_weights
from keras_compress.sharing.share import QUANTIZERS, quantize, share_weights
from keras_compress.sharing.wrapper import WeightSharingWrapper

__all__ = [
    "QUANTIZERS",
    "WeightSharingWrapper",
    "fixed_point",
    "kmeans1d",
    "quantize",
    "quantize_weights",
    "quantizers",
    "share_weights",
]
