"""Everything that needs TensorFlow's TFLite tooling: conversion, the sidecar, export, the CLI.

* ``converter``: ``convert`` a (wrapped or plain) Keras model to ``.tflite`` bytes through
  Keras's own LiteRT export.
* ``litert``: run a ``.tflite`` in LiteRT's interpreter (``ai_edge_litert``).
* ``tflite_buffers``: where the constant tensors sit in a ``.tflite`` (TFLite's schema).
* ``sidecar``: the ``.kcz`` format (``tflite_export/FORMAT.md``): ``split`` and ``join``.
* ``exporter``: ``export`` writes ``.tflite`` + skeleton + sidecar + report atomically.
* ``cli``: ``python -m keras_compress {export,decode,inspect}``.
"""

from keras_compress.deploy import cli, converter, exporter, litert, sidecar, tflite_buffers
from keras_compress.deploy.converter import convert
from keras_compress.deploy.exporter import SUFFIXES, ExportReport, export
from keras_compress.deploy.sidecar import SidecarError

__all__ = [
    "SUFFIXES",
    "ExportReport",
    "SidecarError",
    "cli",
    "convert",
    "converter",
    "export",
    "exporter",
    "litert",
    "sidecar",
    "tflite_buffers",
]
