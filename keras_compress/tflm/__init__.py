"""Models that stay compressed on TensorFlow Lite Micro: weights decoded by ``TFLM_DECODE``.

* ``compression``: ``compress`` / ``compress_file`` code each constant tensor of an int8
  ``.tflite`` the smallest way TFLM's DECODE operator supports (LUT, Huffman, pruning).
* ``encoders``: the Huffman and pruning encoders (stubs upstream).
* ``runtime``: ``interpreter``, ``run`` and ``arena_bytes`` in TFLM's own Python runtime.

Needs the ``tflm`` extra: ``pip install "keras-compress[tflm]"``.
"""

from keras_compress.tflm import compression, encoders, runtime
from keras_compress.tflm.compression import (
    DEFAULT_MIN_SAVING,
    METHODS,
    TensorChoice,
    TflmModel,
    compress,
    compress_file,
)
from keras_compress.tflm.runtime import arena_bytes, interpreter, run

__all__ = [
    "DEFAULT_MIN_SAVING",
    "METHODS",
    "TensorChoice",
    "TflmModel",
    "arena_bytes",
    "compress",
    "compress_file",
    "compression",
    "encoders",
    "interpreter",
    "run",
    "runtime",
]
