r"""Continuous normalizing flows: noise carried to data by an ODE, with the exact log-density.

The state follows :math:`\dot x = v(t, x, c)` from :math:`t = 0` (the base) to :math:`t = 1`
(the data), and the log-density along it follows the instantaneous change of variables
:math:`\frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v(t, x_t, c)`, so

.. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \nabla\cdot v(t, x_t, c)\, dt.

Both are integrated together, as one ODE, by :func:`~flowforge.dynamics.integrate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_number, is_real
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


#: The keyword options of classifier-free guidance, taken beside the solver's.
GUIDANCE_KEYS = ("guidance", "guidance_interval")


@dataclass(frozen=True)
class Guidance:
    r"""Classifier-free guidance of a conditional field: :math:`v_w = v(t, x, \varnothing) + w
    \,(v(t, x, c) - v(t, x, \varnothing))` for :math:`t` in ``interval``, the conditional
    field :math:`v(t, x, c)` elsewhere.

    Attributes:
        scale: :math:`w`; 1 is the conditional model, 0 the unconditional one, above 1 pushes
            samples towards what sets the condition apart.
        interval: ``(lo, hi)`` in :math:`[0, 1]`, the times guided (:math:`t = 0` noise,
            :math:`t = 1` data); ``(0, 1)`` guides the whole path.
    """

    scale: float
    interval: tuple[float, float] = (0.0, 1.0)

    def at(self, t: float) -> float:
        """The scale at time ``t``: ``scale`` inside the interval, 1 outside it."""
        lo, hi = self.interval
        return self.scale if lo <= t <= hi else 1.0


class _Guided(nn.Module):
    # The guided field: the conditional and the null rows stacked into one batch, so each step
    # costs one evaluation of the network (of twice the rows), not two. Outside the guided
    # interval only the conditional rows are evaluated. A Module, so the adjoint method finds
    # the field's parameters through it.
    def __init__(self, field: NFECounter, guidance: Guidance, null: Tensor):
        super().__init__()
        self.field = field
        self.guidance = guidance
        self.null = null

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        w = self.guidance.at(float(t.detach()) if isinstance(t, Tensor) else float(t))
        if w == 1.0 or context is None:  # (a guided model is conditional: context is given)
            return self.field(t, x, context)
        n = x.shape[0]
        both = self.field(t, torch.cat([x, x]), torch.cat([context, self.null[:n]]))
        conditional, unconditional = both[:n], both[n:]
        return unconditional + w * (conditional - unconditional)


class _Dynamics(nn.Module):
    # The augmented ODE of a CNF: the state, the accumulated divergence and (for RNODE) the
    # accumulated kinetic energy and squared Jacobian Frobenius norm. A Module, so the adjoint
    # method finds the field's parameters through it.
    def __init__(
        self,
        field: NFECounter | _Guided,
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
        label_dropout: the probability that a training sample's condition is replaced by the
            null one (the null label ``K``, or a learned null row of features), so one network
            learns both the conditional and the unconditional field: what classifier-free
            guidance needs (:meth:`guidance`). 0 for none.
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
    #: The times the flow runs between: the base at ``span[0]``, the data at ``span[1]``
    #: (a diffusion model stops short of the data end, where its velocity is singular).
    span: tuple[float, float] = (0.0, 1.0)

    @property
    def solver_keys(self) -> tuple[str, ...]:
        """The keyword options of :data:`SOLVER_KEYS`, read from the solver registry now, and
        the guidance options of a conditional model (:data:`GUIDANCE_KEYS`)."""
        return (*solver_keywords(), "divergence", *GUIDANCE_KEYS)

    def __init__(
        self,
        field: nn.Module,
        base: BaseDistribution,
        context_dim: int = 0,
        *,
        num_classes: int = 0,
        label_dropout: float = 0.0,
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
        self._setup_conditioning(context_dim, num_classes, label_dropout)
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
        solver = {k: v for k, v in solver.items() if k not in GUIDANCE_KEYS}
        divergence = DIVERGENCES.check(solver.pop("divergence", "exact"))
        if "steps" in solver and "method" not in solver:
            solver["method"] = "euler"
        return self.solver.merged(**solver), divergence

    def guidance(self, **solver: object) -> Guidance | None:
        """The :class:`Guidance` that ``guidance``/``guidance_interval`` keywords ask for, or
        ``None`` for the plain conditional field (no guidance, or ``guidance=1`` everywhere).

        Raises ``ValueError`` for guidance of an unconditional model, of one trained without
        label dropout (it never learned the unconditional field), or a bad value.
        """
        if "guidance" not in solver:
            if "guidance_interval" in solver:
                raise ValueError("guidance_interval needs guidance=w as well")
            return None
        w = check_number(solver["guidance"], "guidance")
        interval = solver.get("guidance_interval", (0.0, 1.0))
        if (
            not isinstance(interval, (tuple, list))
            or len(interval) != 2
            or not all(is_real(v) for v in interval)
            or not 0 <= interval[0] < interval[1] <= 1
        ):
            raise ValueError(
                f"guidance_interval must be (lo, hi) with 0 <= lo < hi <= 1 (t = 0 is the noise, "
                f"t = 1 the data), got {interval!r}"
            )
        if not self.conditional:
            raise ValueError(
                f"guidance applies to a conditional model (built with num_classes=K or "
                f"context_dim=C); {self._described()} is unconditional"
            )
        if w == 1.0:
            return None
        if not self.label_dropout:
            raise ValueError(
                f"guidance={w:g} needs the unconditional field, which a model learns only with "
                "label dropout: this one was built with label_dropout=0; build it with "
                "label_dropout=0.1 (the recipes' default) and train it again"
            )
        return Guidance(w, (float(interval[0]), float(interval[1])))

    def _refuse_guided_density(self, solver: dict[str, object]) -> None:
        guided = self.guidance(**solver)
        if guided is not None:
            raise ValueError(
                f"log_prob with guidance={guided.scale:g}: a guided field is not the velocity of "
                "any normalised density's flow, so it defines no log-likelihood; log_prob "
                "takes guidance=1 (the conditional density log p(x | y)) or the null label "
                "(the unconditional p(x)). Guided samples are for sampling and decoding."
            )

    def _solve(
        self,
        x: Tensor,
        t0: float,
        t1: float,
        context: Tensor | None,
        options: SolverOptions,
        divergence: str | None = None,
        regularize: bool = False,
        guidance: Guidance | None = None,
    ):
        field: NFECounter | _Guided = self.field
        if guidance is not None:
            null = self._condition(self._null(x.shape[0]))
            if null is not None:
                field = _Guided(self.field, guidance, null.to(x.dtype))
        context = self._condition(context)
        noise = probe(x, self.probe) if divergence == "hutchinson" else None
        dynamics = _Dynamics(field, divergence, noise, regularize)
        state: Tensor | tuple[Tensor, ...]
        if divergence is None:
            state = x
        else:
            zeros = x.new_zeros(x.shape[0])
            state = (x, zeros) + ((zeros, zeros) if regularize else ())
        path = None
        if options.solver.stochastic:
            path = self.gaussian_path()  # raises, saying why, for a model on none
        solution = integrate(dynamics, state, t0, t1, options, context, path)
        self.last_nfe = solution.nfe
        return solution.state

    def gaussian_path(self) -> Any:
        r"""The affine Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon` whose
        marginals this model's flow follows, with :math:`\varepsilon` standard normal and
        independent of the data: what the stochastic samplers (``method="ddpm"``, ``"ddim"``,
        ``"euler-maruyama"``) step along, the score following from the velocity.

        Raises ``ValueError`` saying why for a model without one: a CNF trained by maximum
        likelihood (its marginals at intermediate times are whatever the ODE makes them).
        Flow-matching models on an affine path with independent noise and diffusion models
        return theirs.
        """
        raise ValueError(
            f"the stochastic samplers step along an affine Gaussian path x_t = alpha_t x1 + "
            f"sigma_t eps, and {self._described()} is not trained on one (a CNF trained by "
            "maximum likelihood has no known marginals between noise and data); sample it "
            "with an ODE method (method='dopri5', or 'euler'/'heun'/'rk4' with steps)"
        )

    def _refuse_stochastic(self, options: SolverOptions, where: str) -> None:
        if options.solver.stochastic:
            raise ValueError(
                f"method {options.method!r} draws noise on its way from the noise to the data: "
                f"it has no inverse and no density along it, so {where} needs an ODE method "
                "(the probability-flow ODE: method='dopri5', the default, or "
                "'euler'/'heun'/'rk4' with steps); use it in sample and decode"
            )

    # -- the model protocol ------------------------------------------------------------------
    def _log_prob(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        self._refuse_guided_density(solver)
        options, divergence = self.solver_options(**solver)
        self._refuse_stochastic(options, "log_prob")
        # Integrating d(acc)/dt = div v from t = 1 down to 0 leaves acc = -int_0^1 div v dt.
        start, end = self.span
        z, acc = self._solve(x, end, start, context, options, divergence)
        return self.base.log_prob(z) + acc

    def _encode(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        options, _ = self.solver_options(**solver)
        self._refuse_stochastic(options, "encode")
        start, end = self.span
        return self._solve(x, end, start, context, options, guidance=self.guidance(**solver))

    def _decode(self, z: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        options, _ = self.solver_options(**solver)
        start, end = self.span
        return self._solve(z, start, end, context, options, guidance=self.guidance(**solver))

    def _base_sample(self, n: int) -> Tensor:
        return self.base.sample(n)

    def _loss(self, batch: Batch) -> LossResult:
        regularize = self.kinetic > 0 or self.jacobian > 0
        start, end = self.span
        z, acc, *penalties = self._solve(
            batch.x1,
            end,
            start,
            batch.context,
            self.train_solver,
            self.train_divergence,
            regularize,
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
        self._refuse_guided_density(solver)
        options, divergence = self.solver_options(**solver)
        self._refuse_stochastic(options, "sample_and_log_prob")
        start, end = self.span
        x, acc = self._solve(z, start, end, context, options, divergence)
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
