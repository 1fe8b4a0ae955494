"""Continuous time: divergence estimators, ODE integration (torchdiffeq), NFE counting and the
continuous normalizing flow (:class:`CNF`).

Shared by continuous normalizing flows, flow matching and residual flows.
"""

from .cnf import CNF, SOLVER_KEYS
from .divergence import (
    DIVERGENCES,
    PROBES,
    divergence_and_frobenius,
    divergence_exact,
    divergence_hutchinson,
    field_and_divergence,
    probe,
)
from .nfe import NFEBlock, NFECounter, total_nfe
from .ode import METHODS, ODESolution, SolverOptions, integrate

__all__ = [
    "CNF",
    "DIVERGENCES",
    "METHODS",
    "PROBES",
    "SOLVER_KEYS",
    "NFEBlock",
    "NFECounter",
    "ODESolution",
    "SolverOptions",
    "divergence_and_frobenius",
    "divergence_exact",
    "divergence_hutchinson",
    "field_and_divergence",
    "integrate",
    "probe",
    "total_nfe",
]
