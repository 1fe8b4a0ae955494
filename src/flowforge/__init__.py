"""flowforge: flow-based generative models under one interface.

Coupling, autoregressive, residual and continuous normalizing flows and flow matching, each
with exact log-likelihoods (``log_prob``), sampling (``sample``/``decode``) and compression
(``encode``).
"""

from . import data, distributions, models, nets, transforms
from .distributions import Flow, Model

__version__ = "0.1.0"

__all__ = ["Flow", "Model", "__version__", "data", "distributions", "models", "nets", "transforms"]
