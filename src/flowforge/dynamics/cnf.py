r"""Continuous normalizing flows: noise carried to data by an ODE, with the exact log-density.

The state follows :math:`\dot x = v(t, x, c)` from :math:`t = 0` (the base) to :math:`t = 1`
(the data), and the log-density along it follows the instantaneous change of variables
:math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v(t, x_t, c)`, so

.. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v(t, x_t, c)\, dt.

Both are integrated together, as one ODE, by :func:`~flowforge.dynamics.integrate`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_number
from ..distributions.batch import Batch, LossResult
from ..distributions.model import Model
from ..distributions.normal import BaseDistribution
from ..estimators import (
    DIVERGENCES,
    PROBES,
    divergence_and_frobenius,
    divergence_exact,
    divergence_hutchinson,
    probe,
)
from ..estimators.reduce import sum_except_batch
from .nfe import NFECounter
from .ode import SolverOptions, integrate
from .solvers import solver_keywords

#: The keyword options ``log_prob``, ``encode``, ``decode``, ``sample`` and
#: ``sample_and_log_prob`` of a continuous model accept: those of the registered solvers
#: (:func:`~flowforge.dynamics.solvers.solver_keywords`) and ``divergence``. (This is the table
#: at import; :attr:`CNF.solver_keys` reads the registry, so solvers registered later count.)
SOLVER_KEYS = (*solver_keywords(), "divergence")


class _Dynamics(nn.Module):
    # The augmented ODE of a CNF: the state, the accumulated divergence and (for RNODE) the
    # accumulated kinetic energy and squared Jacobian Frobenius norm. A Module, so the adjoint
    # method finds the field's parameters through it.
    def __init__(
        self,
        field: NFECounter,
        divergence: str | None,
        noise: Tensor | None,
        regularize: bool,
    ):
        super().__init__()
        self.field = field
        self.divergence = divergence
        self.noise = noise
        self.regularize = regularize

    def forward(self, t: Tensor, state, context: Tensor | None = None):
        if self.divergence is None:
            return self.field(t, state, context)
        x = state[0]
        # Keep the divergence's graph only when someone will differentiate it: training by
        # backpropagation, or the backward solve of the adjoint method.
        keep = torch.is_grad_enabled()
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = self.field(t, x, context)
            if self.regularize:
                div, frob = divergence_and_frobenius(v, x, self.divergence, self.noise, keep)
            elif self.noise is None:  # _solve draws a probe exactly for "hutchinson"
                div = divergence_exact(v, x, keep)
            else:
                div = divergence_hutchinson(v, x, self.noise, keep)
        if not keep:
            v, div = v.detach(), div.detach()
        if not self.regularize:
            return v, div
        kinetic = sum_except_batch(v.square())
        if not keep:
            kinetic, frob = kinetic.detach(), frob.detach()
        return v, div, kinetic, frob


class CNF(Model):
    r"""A continuous normalizing flow: base noise pushed through the flow of a vector field.

    ``decode`` integrates :math:`\dot x = v(t, x, c)` from :math:`t = 0` to :math:`t = 1`,
    ``encode`` from 1 back to 0, and ``log_prob`` integrates the state and
    :math:`\int \nabla\cdot v\, dt` together from the data to the base (module docstring).

    Every public method takes solver options as keywords (:data:`SOLVER_KEYS`):
    ``method`` (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``, ``"dopri5"``), ``steps``
    (fixed-step methods; ``steps`` alone means Euler), ``rtol``/``atol`` (dopri5), ``adjoint``, and
    ``divergence`` (``"exact"``, the default, or ``"hutchinson"``: an unbiased estimate with one
    probe per solve, for dimensions where ``D`` backward passes per evaluation cost too much;
    ``D`` is the number of entries of one event, ``C H W`` for images).
    Unset options take :attr:`solver`, which is accurate (adaptive) rather than fast.

    :meth:`loss` is the negative log-likelihood computed the way it trains
    (:attr:`train_solver`, :attr:`train_divergence`), plus the RNODE regularisers when their
    weights are positive: :math:`\lambda_K \int_0^1 \|v\|^2 dt` (kinetic energy) and
    :math:`\lambda_J \int_0^1 \|\nabla v\|_F^2 dt` (Jacobian Frobenius norm, estimated with the
    same probe as the divergence), each averaged over the batch. They keep the learned dynamics
    simple, and so the number of function evaluations (NFE) low. :meth:`objective` returns the
    loss with its terms (``nll``, and ``kinetic``/``jacobian`` when regularised); the NFE of the
    last solve is in :attr:`last_nfe`, and ``field.nfe`` counts every evaluation, including the
    adjoint's backward solves.

    Args:
        field: the vector field ``v(t, x, context=None)``, ``(B, *event) -> (B, *event)``,
            e.g. a :class:`~flowforge.nets.TimeMLP` (wrapped in an :class:`NFECounter` here).
        base: the base distribution at :math:`t = 0`, with ``log_prob``, ``sample`` and an
            ``event_shape`` of any rank: ``(D,)`` for vectors, ``(C, H, W)`` for images (the
            divergence is then the trace over all ``C H W`` entries).
        context_dim: ``C``, the conditioning size the field takes (0 for none).
        num_classes: ``K`` for a CNF conditioned on class labels (the field then takes the
            label embedding's :func:`~flowforge.distributions.conditioning_features`
            features); 0 for none.
        solver: default solver of ``log_prob``/``encode``/``decode``/``sample``
            (default: dopri5, rtol = atol = 1e-5).
        train_solver: solver of :meth:`loss` (default: the same).
        train_divergence: ``"hutchinson"`` (FFJORD) or ``"exact"`` in :meth:`loss`.
        probe: ``"rademacher"`` or ``"gaussian"`` probes for Hutchinson's estimator.
        kinetic: :math:`\lambda_K \ge 0`.
        jacobian: :math:`\lambda_J \ge 0`.

    References:
        Neural Ordinary Differential Equations (Chen et al., 2018) https://arxiv.org/abs/1806.07366;
        FFJORD (Grathwohl et al., 2018) https://arxiv.org/abs/1810.01367;
        How to train your neural ODE (Finlay et al., 2020) https://arxiv.org/abs/2002.02798
    """

    field: NFECounter
    base: BaseDistribution

    @property
    def solver_keys(self) -> tuple[str, ...]:
        """The keyword options of :data:`SOLVER_KEYS`, read from the solver registry now."""
        return (*solver_keywords(), "divergence")

    def __init__(
        self,
        field: nn.Module,
        base: BaseDistribution,
        context_dim: int = 0,
        *,
        num_classes: int = 0,
        solver: SolverOptions | None = None,
        train_solver: SolverOptions | None = None,
        train_divergence: str = "hutchinson",
        probe: str = "rademacher",
        kinetic: float = 0.0,
        jacobian: float = 0.0,
    ):
        super().__init__()
        if not callable(field):
            raise TypeError(f"field must be a vector field module, got {type(field).__name__}")
        self.field = field if isinstance(field, NFECounter) else NFECounter(field)
        self.base = base
        self.event_shape = tuple(base.event_shape)
        if not self.event_shape:
            raise ValueError(
                "the base must have a non-empty event_shape, (D,) for vectors or (C, H, W) for "
                "images, got ()"
            )
        self._setup_conditioning(context_dim, num_classes)
        for name, value in (("solver", solver), ("train_solver", train_solver)):
            if value is not None and not isinstance(value, SolverOptions):
                raise TypeError(f"{name} must be a SolverOptions, got {type(value).__name__}")
        self.solver = solver or SolverOptions()
        self.train_solver = train_solver or self.solver
        self.train_divergence = DIVERGENCES.check(train_divergence, "train_divergence")
        self.probe = check_choice(probe, "probe", PROBES)
        self.kinetic = check_number(kinetic, "kinetic", 0)
        self.jacobian = check_number(jacobian, "jacobian", 0)
        self.last_nfe = 0

    # -- solving -----------------------------------------------------------------------------
    def solver_options(self, **solver: object) -> tuple[SolverOptions, str]:
        """The solver and divergence method that ``solver`` keywords select, over the defaults.

        ``steps`` without ``method`` selects Euler. The options given are validated by the
        solver they belong to (:meth:`SolverOptions.merged`): ``method="euler", rtol=1e-3``
        raises ``ValueError`` saying Euler takes ``steps`` and ``adjoint``, while the defaults'
        options another method does not take (dopri5's tolerances, a fixed-step default's
        ``steps``) fall back silently when only the method changes. Raises ``ValueError`` for a
        bad value.
        """
        self._check_solver(solver)
        solver = dict(solver)
        divergence = DIVERGENCES.check(solver.pop("divergence", "exact"))
        if "steps" in solver and "method" not in solver:
            solver["method"] = "euler"
        return self.solver.merged(**solver), divergence

    def _solve(
        self,
        x: Tensor,
        t0: float,
        t1: float,
        context: Tensor | None,
        options: SolverOptions,
        divergence: str | None = None,
        regularize: bool = False,
    ):
        context = self._condition(context)
        noise = probe(x, self.probe) if divergence == "hutchinson" else None
        dynamics = _Dynamics(self.field, divergence, noise, regularize)
        state: Tensor | tuple[Tensor, ...]
        if divergence is None:
            state = x
        else:
            zeros = x.new_zeros(x.shape[0])
            state = (x, zeros) + ((zeros, zeros) if regularize else ())
        solution = integrate(dynamics, state, t0, t1, options, context)
        self.last_nfe = solution.nfe
        return solution.state

    # -- the model protocol ------------------------------------------------------------------
    def _log_prob(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        options, divergence = self.solver_options(**solver)
        # Integrating d(acc)/dt = div v from t = 1 down to 0 leaves acc = -int_0^1 div v dt.
        z, acc = self._solve(x, 1.0, 0.0, context, options, divergence)
        return self.base.log_prob(z) + acc

    def _encode(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        options, _ = self.solver_options(**solver)
        return self._solve(x, 1.0, 0.0, context, options)

    def _decode(self, z: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        options, _ = self.solver_options(**solver)
        return self._solve(z, 0.0, 1.0, context, options)

    def _base_sample(self, n: int) -> Tensor:
        return self.base.sample(n)

    def _loss(self, batch: Batch) -> LossResult:
        regularize = self.kinetic > 0 or self.jacobian > 0
        z, acc, *penalties = self._solve(
            batch.x1, 1.0, 0.0, batch.context, self.train_solver, self.train_divergence, regularize
        )
        nll = -(self.base.log_prob(z) + acc).mean()
        if not regularize:
            return LossResult(nll, {"nll": nll.detach()})
        # Integrated from 1 down to 0, the accumulators hold minus the integrals.
        kinetic, frobenius = (-p.mean() for p in penalties)
        loss = nll + self.kinetic * kinetic + self.jacobian * frobenius
        terms = {"nll": nll.detach(), "kinetic": kinetic.detach(), "jacobian": frobenius.detach()}
        return LossResult(loss, terms)

    def _sample_and_log_prob(
        self, z: Tensor, context: Tensor | None, **solver: object
    ) -> tuple[Tensor, Tensor]:
        # One solve of the state and the divergence from the base point z:
        # log p_1(x_1) = log p_0(z) - int_0^1 div v dt.
        options, divergence = self.solver_options(**solver)
        x, acc = self._solve(z, 0.0, 1.0, context, options, divergence)
        return x, self.base.log_prob(z) - acc

    def extra_repr(self) -> str:
        s = self.solver
        extra = (
            f", kinetic={self.kinetic:g}, jacobian={self.jacobian:g}"
            if self.kinetic or (self.jacobian)
            else ""
        )
        return (
            f"event_shape={self.event_shape}, solver={s.method}, "
            f"train_divergence={self.train_divergence}{extra}"
        )
