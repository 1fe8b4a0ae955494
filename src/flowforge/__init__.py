"""flowforge: flow-based generative models under one interface.

Coupling, autoregressive, residual and continuous normalizing flows, flow matching and
diffusion, each with exact log-likelihoods (``log_prob``), sampling (``sample``/``decode``) and
compression (``encode``).
"""

from . import (
    data,
    diffusion,  # noqa: F401  (registers the stochastic samplers)
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
from .distributions import Batch, Flow, LossResult, Model


def __getattr__(name: str):
    # Plots load matplotlib, which costs a second at start-up: ``flowforge.viz`` and
    # ``flowforge.compare`` (which draws its figures with it) are imported on first use.
    if name in ("viz", "compare"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Batch",
    "Flow",
    "LossResult",
    "Model",
    "__version__",
    "compare",
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
