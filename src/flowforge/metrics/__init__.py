"""Metrics: likelihoods in nats and bits per dimension, sample distances, and solver cost (NFE).

Likelihood: :func:`nll` (mean negative log-likelihood with its standard error) and
:func:`bits_per_dim` (with the dequantisation correction for discrete data), and
:func:`marginal_log_prob` (the label-free density of a class-conditional model). Sample quality:
:func:`mmd`, :func:`energy_distance`, :func:`sliced_wasserstein`, :func:`wasserstein2` and
:func:`sample_distances`, which computes them all. Cost of continuous models: :class:`NFECounter`.
All return Python floats (or small frozen dataclasses) and compute on the inputs' device and dtype.
"""

from ..dynamics.nfe import NFEBlock, NFECounter
from .discrepancy import BANDWIDTH_MULTIPLIERS, energy_distance, median_distance, mmd
from .distances import sample_distances
from .likelihood import NLLResult, bits_per_dim, marginal_log_prob, nll
from .transport import sliced_wasserstein, wasserstein2

__all__ = [
    "BANDWIDTH_MULTIPLIERS",
    "NFEBlock",
    "NFECounter",
    "NLLResult",
    "bits_per_dim",
    "energy_distance",
    "marginal_log_prob",
    "median_distance",
    "mmd",
    "nll",
    "sample_distances",
    "sliced_wasserstein",
    "wasserstein2",
]
