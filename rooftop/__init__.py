"""Rooftop: make an exported ONNX model cheaper to run, and prove it.

Public API::

    import rooftop
    model, report = rooftop.optimize("model.onnx", "out.onnx")
"""

from __future__ import annotations

from rooftop.model_io import load_model, save_model
from rooftop.pipeline import Options, Report, optimize

__version__ = "0.1.0"

__all__ = ["optimize", "load_model", "save_model", "Options", "Report", "__version__"]
