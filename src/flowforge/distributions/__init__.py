"""Base distributions, the model protocol (with its batches and loss results), and
``Flow`` = base + transform."""

from .batch import Batch, LossResult
from .flow import Flow
from .model import Model, conditioning_features, label_features
from .normal import DiagNormal, StandardNormal

__all__ = [
    "Batch",
    "DiagNormal",
    "Flow",
    "LossResult",
    "Model",
    "StandardNormal",
    "conditioning_features",
    "label_features",
]
