"""Continuous time: the solver registry (:data:`SOLVERS`; torchdiffeq behind the ODE solvers),
the fixed-step solvers' time grids (:data:`GRIDS`), ODE integration, NFE counting and the
continuous normalizing flow (:class:`CNF`).

Shared by continuous normalizing flows and flow matching. The divergence and residual log-det
estimators live in :mod:`flowforge.estimators`; their names are re-exported here, where they
were before, so that code written against flowforge 0.1 keeps working.
"""

from ..estimators import (
    DIVERGENCES,
    LOGDET_ESTIMATORS,
    PROBES,
    ROULETTE_DISTRIBUTIONS,
    LogDetOptions,
    as_logdet_options,
    divergence_and_frobenius,
    divergence_exact,
    divergence_hutchinson,
    field_and_divergence,
    logdet_exact,
    logdet_roulette,
    logdet_series,
    probe,
    residual_logdet,
)
from .cnf import CNF, SOLVER_KEYS
from .grids import GRIDS, Grid
from .nfe import NFEBlock, NFECounter, total_nfe
from .ode import METHODS, ODESolution, SolverOptions, integrate
from .solvers import SOLVERS, GridSolver, Solver, StochasticSolver, solver_keywords

__all__ = [
    "CNF",
    "DIVERGENCES",
    "GRIDS",
    "LOGDET_ESTIMATORS",
    "METHODS",
    "PROBES",
    "ROULETTE_DISTRIBUTIONS",
    "SOLVERS",
    "SOLVER_KEYS",
    "Grid",
    "GridSolver",
    "LogDetOptions",
    "NFEBlock",
    "NFECounter",
    "ODESolution",
    "Solver",
    "SolverOptions",
    "StochasticSolver",
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
    "solver_keywords",
    "total_nfe",
]
