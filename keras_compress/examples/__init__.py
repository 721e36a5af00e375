"""Example data and reference models for the docs, tests, examples and benchmarks.

Not part of the compression API: offline loaders of Debian's data packages
(``fashion_mnist``: ``apt-get install dataset-fashion-mnist``; ``gettext_pairs``: installed
gettext catalogs) and the networks of the papers (``lenet_300_100``, ``lenet5``, and the LSTM
translation model of ``translation``, whose BLEU needs the ``nmt`` extra).

Example:
    >>> import keras_compress as kc
    >>> kc.examples.lenet5().count_params()
    431080
"""

from keras_compress.examples import translation
from keras_compress.examples.datasets import fashion_mnist, gettext_pairs, read_idx
from keras_compress.examples.zoo import lenet5, lenet_300_100, numpy_start

__all__ = [
    "fashion_mnist",
    "gettext_pairs",
    "lenet5",
    "lenet_300_100",
    "numpy_start",
    "read_idx",
    "translation",
]
