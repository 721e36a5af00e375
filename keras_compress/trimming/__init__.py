"""Network trimming (Hu et al. 2016, arXiv:1607.03250): measure, select, really remove units.

* ``apoz``: ``measure_apoz`` (Average Percentage of Zeros per unit), ``select_units``,
  ``APoZMonitor`` for ``fit``.
* ``surgery``: ``remove_units`` rebuilds a model without units/filters, downstream included;
  ``remove_pruned_channels`` removes the channels that channel pruning zeroed.
* ``iterative``: ``trim_iteratively``, the paper's trim-retrain loop around your own ``fit``.
"""

from keras_compress.trimming import apoz, iterative, surgery
from keras_compress.trimming.apoz import APoZMonitor, measure_apoz, select_units
from keras_compress.trimming.iterative import TrimResult, TrimRound, trim_iteratively
from keras_compress.trimming.surgery import (
    SurgeryError,
    channel_plan,
    remove_pruned_channels,
    remove_units,
)

__all__ = [
    "APoZMonitor",
    "SurgeryError",
    "TrimResult",
    "TrimRound",
    "apoz",
    "channel_plan",
    "iterative",
    "measure_apoz",
    "remove_pruned_channels",
    "remove_units",
    "select_units",
    "surgery",
    "trim_iteratively",
]
