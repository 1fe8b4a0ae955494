r"""Estimators of traces and log-determinants of Jacobians, shared by every family that needs them.

Probes (:func:`probe`), the divergence of a vector field (exact, or Hutchinson's estimator) for
continuous normalizing flows and flow matching, and the log-determinant of a residual map
:math:`x \mapsto x + g(x)` (exact, power series, Russian roulette, with the Neumann-series
gradient) for residual flows, and the one reduction over an event
(:func:`~flowforge.estimators.reduce.sum_except_batch`): written once, at the bottom of the
package, for every family that estimates a trace or a log-determinant. This layer imports only
torch, :mod:`flowforge._checks` and :mod:`flowforge._registry`.
"""

from .divergence import (
    DIVERGENCES,
    divergence_and_frobenius,
    divergence_exact,
    divergence_hutchinson,
    field_and_divergence,
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
from .probes import PROBES, probe

__all__ = [
    "DIVERGENCES",
    "LOGDET_ESTIMATORS",
    "PROBES",
    "ROULETTE_DISTRIBUTIONS",
    "LogDetOptions",
    "as_logdet_options",
    "divergence_and_frobenius",
    "divergence_exact",
    "divergence_hutchinson",
    "field_and_divergence",
    "logdet_exact",
    "logdet_roulette",
    "logdet_series",
    "probe",
    "residual_logdet",
]
