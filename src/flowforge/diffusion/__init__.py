"""Diffusion: the variance-preserving diffusion model under flowforge's protocol, and the
stochastic samplers (DDPM ancestral steps, DDIM, the Euler–Maruyama reverse SDE) that every
model on an affine Gaussian path can use.

Importing it registers the samplers in :data:`flowforge.dynamics.SOLVERS` (``method="ddpm"``,
``"ddim"``, ``"euler-maruyama"``); ``import flowforge`` does.
"""

from .model import PREDICTIONS, SCHEDULES, Diffusion, PredictionField, min_snr_weight
from .samplers import DDIM, DDPM, DIFFUSIONS, EulerMaruyama, PathSampler, ddpm_posterior

__all__ = [
    "DDIM",
    "DDPM",
    "DIFFUSIONS",
    "PREDICTIONS",
    "SCHEDULES",
    "Diffusion",
    "EulerMaruyama",
    "PathSampler",
    "PredictionField",
    "ddpm_posterior",
    "min_snr_weight",
]
