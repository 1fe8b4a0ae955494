"""Continuous time: divergence estimators, ODE integration (torchdiffeq), NFE counting and the
continuous normalizing flow (:class:`CNF`); the residual-flow log-det estimators beside them.

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
from .logdet import (
    LOGDET_ESTIMATORS,
    ROULETTE_DISTRIBUTIONS,
    LogDetOptions,
    as_logdet_options,
    logdet_exact,
    logdet_roulette,
    logdet_series,
    residual_logdet,
)
from .nfe import NFEBlock, NFECounter, total_nfe
from .ode import METHODS, ODESolution, SolverOptions, integrate

__all__ = [
    "CNF",
    "DIVERGENCES",
    "LOGDET_ESTIMATORS",
    "METHODS",
    "PROBES",
    "ROULETTE_DISTRIBUTIONS",
    "SOLVER_KEYS",
    "LogDetOptions",
    "NFEBlock",
    "NFECounter",
    "ODESolution",
    "SolverOptions",
    "as_logdet_options",
    "divergence_and_frobenius",
    "divergence_exact",
    "divergence_hutchinson",
    "field_and_divergence",
    "integrate",
    "logdet_exact",
    "logdet_roulette",
    "logdet_series",
    "probe",
    "residual_logdet",
    "total_nfe",
]
