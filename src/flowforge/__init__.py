"""flowforge: flow-based generative models under one interface.

Coupling, autoregressive, residual and continuous normalizing flows and flow matching, each
with exact log-likelihoods (``log_prob``), sampling (``sample``/``decode``) and compression
(``encode``).
"""

from . import (
    data,
    distributions,
    dynamics,
    estimators,
    matching,
    metrics,
    models,
    nets,
    train,
    transforms,
)
from ._version import __version__
from .distributions import Flow, Model


def __getattr__(name: str):
    # Plots load matplotlib, which costs a second at start-up: ``flowforge.viz`` is imported
    # on first use.
    if name == "viz":
        import importlib

        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Flow",
    "Model",
    "__version__",
    "data",
    "distributions",
    "dynamics",
    "estimators",
    "matching",
    "metrics",
    "models",
    "nets",
    "train",
    "transforms",
    "viz",
]
