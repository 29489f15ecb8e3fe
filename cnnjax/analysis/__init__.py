"""Looking at a model without training it: a layer table (shapes, parameters, FLOPs,
receptive fields), pictures of its filters and feature maps, and a float64 gradient check
of its whole loss, reported per layer.

Imports go one way: layers and models -> analysis -> training and ``launch.py`` (the
trainer prints :func:`format_table` of :func:`layer_rows` when a run starts).
"""

from cnnjax.analysis.gradcheck_model import by_layer, check_model, format_by_layer
from cnnjax.analysis.summary import LayerRow, format_table, layer_rows
from cnnjax.analysis.tools import run_tools
from cnnjax.analysis.visualize import write_pictures

__all__ = [
    "LayerRow",
    "by_layer",
    "check_model",
    "format_by_layer",
    "format_table",
    "layer_rows",
    "run_tools",
    "write_pictures",
]
