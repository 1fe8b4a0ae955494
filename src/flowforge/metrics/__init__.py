"""Metrics: likelihoods in nats and bits per dimension, sample distances, and solver cost (NFE).

Likelihood: :func:`nll` (mean negative log-likelihood with its standard error) and
:func:`bits_per_dim` (with the dequantisation correction for discrete data), and
:func:`marginal_log_prob` (the label-free density of a class-conditional model). Sample quality:
:func:`mmd`, :func:`energy_distance`, :func:`sliced_wasserstein`, :func:`wasserstein2` and
:func:`sample_distances`, which computes them all. Conditional samples:
:func:`fit_classifier` (a :class:`Classifier` fit on real labelled data) and
:func:`label_accuracy`, the fraction of samples it recognises as their label. Cost of
continuous models: :class:`NFECounter`. Flows' paths: :func:`straightness` and the
:func:`transport_cost` of a pairing. All return Python floats (or small frozen dataclasses)
and compute on the inputs' device and dtype.
"""

from ..dynamics.nfe import NFEBlock, NFECounter
from .classifier import Classifier, fit_classifier, label_accuracy
from .discrepancy import BANDWIDTH_MULTIPLIERS, energy_distance, median_distance, mmd
from .distances import sample_distances
from .likelihood import NLLResult, bits_per_dim, marginal_log_prob, nll
from .straightness import straightness, transport_cost
from .transport import sliced_wasserstein, wasserstein2

__all__ = [
    "BANDWIDTH_MULTIPLIERS",
    "Classifier",
    "NFEBlock",
    "NFECounter",
    "NLLResult",
    "bits_per_dim",
    "energy_distance",
    "fit_classifier",
    "label_accuracy",
    "marginal_log_prob",
    "median_distance",
    "mmd",
    "nll",
    "sample_distances",
    "sliced_wasserstein",
    "straightness",
    "transport_cost",
    "wasserstein2",
]
