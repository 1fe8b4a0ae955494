"""Base distributions, the model protocol, and ``Flow`` = base + transform."""

from .flow import Flow
from .model import Model
from .normal import DiagNormal, StandardNormal

__all__ = ["DiagNormal", "Flow", "Model", "StandardNormal"]
