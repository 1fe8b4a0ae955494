"""Continuous time: divergence estimators shared by CNFs, flow matching and residual flows.

The ODE integration and the CNF model are the continuous-normalizing-flow issue's work.
"""

from .divergence import (
    PROBES,
    divergence_exact,
    divergence_hutchinson,
    field_and_divergence,
    probe,
)

__all__ = [
    "PROBES",
    "divergence_exact",
    "divergence_hutchinson",
    "field_and_divergence",
    "probe",
]
