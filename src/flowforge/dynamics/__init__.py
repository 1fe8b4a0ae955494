"""Continuous time: divergence estimators, ODE integration (torchdiffeq) and NFE counting.

Shared by continuous normalizing flows, flow matching and residual flows. The CNF model itself
is the continuous-normalizing-flow issue's work.
"""

from .divergence import (
    PROBES,
    divergence_exact,
    divergence_hutchinson,
    field_and_divergence,
    probe,
)
from .nfe import NFEBlock, NFECounter
from .ode import METHODS, ODESolution, SolverOptions, integrate

__all__ = [
    "METHODS",
    "PROBES",
    "NFEBlock",
    "NFECounter",
    "ODESolution",
    "SolverOptions",
    "divergence_exact",
    "divergence_hutchinson",
    "field_and_divergence",
    "integrate",
    "probe",
]
