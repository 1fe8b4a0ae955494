"""flowforge: flow-based generative models under one interface.

Coupling, autoregressive, residual and continuous normalizing flows and flow matching, each
with exact log-likelihoods (``log_prob``), sampling (``sample``/``decode``) and compression
(``encode``).
"""

__version__ = "0.1.0"

from . import data, distributions, dynamics, metrics, models, nets, train, transforms, viz
from .distributions import Flow, Model

__all__ = [
    "Flow",
    "Model",
    "__version__",
    "data",
    "distributions",
    "dynamics",
    "metrics",
    "models",
    "nets",
    "train",
    "transforms",
    "viz",
]
