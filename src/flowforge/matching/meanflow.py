r"""MeanFlow: a field of two times, the average velocity, for one- and few-step sampling.

In flowforge's time (:math:`t = 0` noise, :math:`t = 1` data) the **average velocity** between
the point :math:`z = x_t` of the flow at time :math:`t` and the flow's point at time :math:`r`
is

.. math:: u(z, r, t) = \frac{x_r - x_t}{r - t} = \frac{1}{r - t}\int_t^r v(x_s, s)\, ds,

so :math:`x_r = x_t + (r - t)\, u(x_t, r, t)` exactly, in one evaluation, and
:math:`u(z, t, t) = v(t, z)`, the instantaneous (marginal) velocity. Differentiating
:math:`(t - r)\, u(x_t, r, t) = x_t - x_r` in :math:`t` along the flow, at fixed :math:`r`,
gives the **MeanFlow identity**

.. math:: u(z_t, r, t) = v(z_t, t) - (t - r)\, \frac{d}{dt} u(z_t, r, t), \qquad
   \frac{d}{dt} u = v\cdot\partial_z u + \partial_t u,

the total derivative being one Jacobian-vector product of :math:`u` along
:math:`(\dot z, \dot r, \dot t) = (v, 0, 1)`. Training regresses :math:`u_\theta` onto the
right-hand side with the conditional velocity of the path for :math:`v` and a stop-gradient on
the whole target; the target is linear in :math:`v`, so as in flow matching its conditional
expectation is the marginal one.

**The paper's time runs the other way** (Geng et al.: :math:`\tau = 0` data, :math:`\tau = 1`
noise, :math:`z_\tau = (1 - \tau) x + \tau \epsilon`, :math:`r < t`). With
:math:`\tau = 1 - t` their pair :math:`(r_{\text{paper}}, t_{\text{paper}})` is
:math:`(1 - r, 1 - t)` here, their :math:`u` and :math:`v = \epsilon - x` are minus ours, and
their :math:`r < t` (the end nearer the data first) is :math:`t \le r` here: :math:`z` lives at
the noisier time :math:`t`, and :math:`r` is the cleaner end it jumps to. The identity keeps its
form, because both sides change sign.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number, check_probability
from ..distributions.batch import Batch, LossResult
from ..distributions.normal import BaseDistribution
from ..dynamics import SolverOptions
from ..dynamics.cnf import GUIDANCE_KEYS, Guidance
from .couplings import Coupling
from .loss import check_same_shape
from .model import FlowMatching
from .paths import AffinePath, SchrodingerBridgePath
from .time import TimeSampler

#: The name of the mean-velocity sampler in ``decode``/``sample``: ``method="meanflow"``.
METHOD = "meanflow"

#: What ``method="meanflow"`` accepts besides ``method``.
MEAN_KEYS = ("steps", *GUIDANCE_KEYS)

AverageField = Callable[..., Tensor]


def meanflow_target(
    u: AverageField, z: Tensor, r: Tensor, t: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    r"""The field and its MeanFlow target :math:`\mathrm{sg}[v - (t - r)\,\frac{d}{dt}u(z, r, t)]`.

    The total derivative :math:`\frac{d}{dt}u = v\cdot\partial_z u + \partial_t u` is one
    forward-mode Jacobian-vector product (:func:`torch.func.jvp`) along :math:`(v, 0, 1)` in
    :math:`(z, r, t)`, taken with the prediction itself: one pass of the network gives both.
    The prediction keeps its graph; the target is detached.

    Args:
        u: the average velocity ``u(z, r, t) -> (B, *event)``.
        z: ``(B, *event)`` points :math:`x_t` of the path.
        r: ``(B,)`` the other end of each interval (:math:`r \ge t` in training).
        t: ``(B,)`` the times of ``z``.
        v: ``(B, *event)`` the path's (conditional) velocity at ``z``.

    Returns:
        ``(u(z, r, t), target)``, both ``(B, *event)``.
    """
    # (z, r, t) move along (v, 0, 1): the jvp is the total derivative in t at fixed r.
    out = torch.func.jvp(u, (z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    prediction, dudt = out[0], out[1]
    gap = (t - r).reshape(-1, *(1,) * (z.ndim - 1))
    return prediction, (v - gap * dudt).detach()


def meanflow_loss(prediction: Tensor, target: Tensor, p: float = 0.0, c: float = 1e-3) -> Tensor:
    r"""The adaptively weighted regression
    :math:`\frac1B\sum_i \mathrm{sg}[w_i]\,\|\Delta_i\|^2`, :math:`\|\Delta_i\|^2 = \frac1D
    \|u_i - \mathrm{target}_i\|^2`, :math:`w_i = 1 / (\|\Delta_i\|^2 + c)^p` (Geng et al.,
    2025, §4.3).

    :math:`p = 0` is the plain mean squared error (then, with :math:`r = t`, the flow-matching
    loss :func:`~flowforge.matching.cfm_loss`); :math:`p = 1/2` is close to the pseudo-Huber
    loss; :math:`p = 1` (the paper's choice) makes every sample's gradient about unit size, so
    the large errors of long intervals do not drown the rest. The error is the mean over the
    ``D`` entries of an event, as in :func:`~flowforge.matching.cfm_loss`; the paper sums them,
    which is this loss with :math:`c / D` for its :math:`c` (and a factor :math:`D^{1 - p}`).

    Args:
        prediction: ``(B, *)`` the field's values.
        target: ``(B, *)`` their targets (detached).
        p: the power :math:`p \ge 0` of the weight.
        c: :math:`c > 0`, which keeps the weight finite at zero error.

    Returns:
        A scalar.
    """
    check_same_shape(prediction, target)
    error = (prediction - target).square().flatten(1).mean(dim=1)
    if p == 0:
        return error.mean()
    return (error / (error.detach() + c) ** p).mean()


class MeanFlow(FlowMatching):
    r"""A CNF whose network is MeanFlow's average velocity :math:`u_\theta(z, r, t)`, sampled in
    one or a few steps.

    Its ordinary field is the network at :math:`r = t`, :math:`v(t, x) = u_\theta(x, t, t)`, so
    everything a :class:`~flowforge.dynamics.CNF` does works unchanged: ``log_prob``,
    ``encode``, and ``decode``/``sample`` with an ODE solver (dopri5 by default, or
    ``method="euler"``, ...). The mean-velocity sampler is ``method="meanflow"`` in ``decode``
    and ``sample``, chosen also by ``steps`` given without a method (``model.sample(n,
    steps=1)``, or ``flowforge sample RUN --solver steps=1``): from :math:`x_{t_0}` noise on
    the uniform grid :math:`t_i = i / k`,

    .. math:: x_{t_{i+1}} = x_{t_i} + (t_{i+1} - t_i)\, u_\theta(x_{t_i}, t_{i+1}, t_i),

    ``k = steps`` (default 1) evaluations in all, with classifier-free ``guidance`` as for the
    ODE solvers. The update runs from noise to data only (the network learns :math:`r \ge t`),
    so ``encode``, ``log_prob`` and ``sample_and_log_prob`` refuse it, and ``steps`` alone
    means Euler there, as for every CNF.

    **What** ``log_prob`` **is.** The exact density of the flow of the instantaneous field
    :math:`u_\theta(x, t, t)` (the CNF above), integrated with its divergence. The rows of
    training with :math:`r = t` are flow matching, and the identity ties the rest to the same
    field, so at convergence :math:`u_\theta(x, t, t)` is the marginal velocity of the path and
    this is the density a flow-matching model of the same path would give. It is not the
    density of the one-step sampler's output, :math:`z + u_\theta(z, 1, 0)`, a different map
    that equals the flow's only where the network is exact.

    Training (:meth:`objective`) draws pairs as :class:`FlowMatching` does (``coupling``, or a
    batch's own ``x0``) and times by :meth:`times` (a fraction ``ratio`` of the rows with
    :math:`t < r`, the rest with :math:`r = t`), then regresses :math:`u_\theta(x_t, r, t)`
    onto the MeanFlow target (:func:`meanflow_target`) with the adaptive weight of
    :func:`meanflow_loss`. Its terms are ``meanflow`` (the weighted loss) and ``mse`` (the
    unweighted error, comparable across runs and with flow matching's ``cfm``).

    Args:
        field: the average velocity, a module ``u(t, x, context=None, r=None)`` that is the
            instantaneous field when ``r`` is not given, e.g. a
            :class:`~flowforge.nets.TimeMLP` with ``times=2``.
        base: the noise at :math:`t = 0`, of any ``event_shape``.
        path: an :class:`AffinePath` (default: the straight line
            :math:`x_t = (1 - t) x_0 + t x_1`, the paper's) or a :class:`SchrodingerBridgePath`.
        coupling: how noise is paired with data (default: independently).
        time_sampler: the law of each of the two times (default: uniform).
        ratio: the fraction of samples with :math:`r \ne t`; 0 is flow matching of the
            instantaneous field. The paper's best on ImageNet was 0.25; 0.5 did better on the
            checkerboard (docs/matching.md).
        p: the power of the adaptive weight (:func:`meanflow_loss`). The paper's best on
            ImageNet was 1; on 2-D data it biases the fit (a weight that falls with the error
            is a robust loss, whose minimiser is not the conditional mean the identity needs:
            one-step energy distance 0.022 at p = 1, 0.005 at 1/2, 0.008 at 0 on the
            checkerboard, and the instantaneous field's NLL 4.67 / 3.96 / 3.90), so the
            default is 0, the plain mean squared error.
        c: its constant (the paper's: 1e-3).
        context_dim, num_classes, label_dropout, solver: as for :class:`FlowMatching`.

    References:
        Mean Flows for One-step Generative Modeling (Geng et al., 2025)
        https://arxiv.org/abs/2505.13447
    """

    def __init__(
        self,
        field: nn.Module,
        base: BaseDistribution,
        path: AffinePath | SchrodingerBridgePath | None = None,
        coupling: Coupling | None = None,
        time_sampler: TimeSampler | None = None,
        ratio: float = 0.5,
        p: float = 0.0,
        c: float = 1e-3,
        context_dim: int = 0,
        solver: SolverOptions | None = None,
        num_classes: int = 0,
        label_dropout: float = 0.0,
    ):
        if not _two_times(field):
            raise TypeError(
                "field must be a field of two times, a module u(t, x, context=None, r=None) "
                f"such as TimeMLP(..., times=2), got {type(field).__name__}"
            )
        super().__init__(
            field,
            base,
            path,
            coupling,
            time_sampler,
            context_dim=context_dim,
            solver=solver,
            num_classes=num_classes,
            label_dropout=label_dropout,
        )
        self.ratio = check_probability(ratio, "ratio")
        self.p = check_number(p, "p", 0)
        self.c = check_number(c, "c", above=0)

    @property
    def average(self) -> AverageField:
        r"""The network :math:`u_\theta` itself, ``u(t, x, context=None, r=None)`` (not counted
        in the NFE; the CNF's :attr:`field` is the same network, counted)."""
        return self.field.field

    def times(self, n: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        r"""``(r, t)``, each ``(n,)``: for a fraction :attr:`ratio` of the rows two draws of
        the time sampler, sorted so that :math:`t < r` (the paper's sampler); for the others
        :math:`r = t`, one draw.

        The paper takes the smaller of two draws for the rows with :math:`r = t` as well,
        which gives them the density :math:`2(1 - t)` under uniform draws, thin near the data;
        here they keep the sampler's own law, so ``ratio=0`` is flow matching with that
        sampler exactly. (On a 2-D Gaussian after 300 steps the instantaneous field's samples
        had a standard deviation of 0.36 with the paper's rule against 0.48 with this one, for
        the true 0.5.)
        """
        a = self.time_sampler(n, device=device, dtype=dtype)
        b = self.time_sampler(n, device=device, dtype=dtype)
        apart = torch.rand(n, device=device, dtype=dtype) < self.ratio
        # Rows with r = t keep one draw: the sampler's own law, as in flow matching.
        r = torch.where(apart, torch.maximum(a, b), a)
        return r, torch.where(apart, torch.minimum(a, b), a)

    def _loss(self, batch: Batch) -> LossResult:
        x0, x1 = self._pairs(batch)
        r, t = self.times(x1.shape[0], device=x1.device, dtype=x1.dtype)
        sample = self.path.sample(x0, x1, t)
        context = self._condition(batch.context)

        def u(z: Tensor, r: Tensor, t: Tensor) -> Tensor:
            return self.average(t, z, context, r=r)

        prediction, target = meanflow_target(u, sample.x_t, r, t, sample.dx_t)
        loss = meanflow_loss(prediction, target, self.p, self.c)
        mse = (prediction - target).detach().square().mean()
        return LossResult(loss, {"meanflow": loss.detach(), "mse": mse})

    # -- sampling ----------------------------------------------------------------------------
    def _mean_steps(self, solver: dict[str, object], where: str) -> int | None:
        """The number of mean-velocity steps ``solver`` asks for in ``decode``/``sample``, or
        ``None`` for an ODE solve; ``ValueError`` for it elsewhere or with options it lacks."""
        method = solver.get("method")
        if method != METHOD and not (where == "decode" and method is None and "steps" in solver):
            return None
        if where != "decode":
            raise ValueError(
                f"method={METHOD!r} is the few-step sampler from noise to data (decode and "
                f"sample); {where} integrates the instantaneous field: give an ODE method "
                "(method='dopri5', the default, or method='euler'/'rk4' with steps)"
            )
        unknown = [k for k in solver if k not in ("method", *MEAN_KEYS)]
        if unknown:
            raise ValueError(
                f"method={METHOD!r} takes {', '.join(MEAN_KEYS)}, not {', '.join(unknown)}; "
                "leave them out, or choose an ODE method (e.g. method='dopri5')"
            )
        steps = solver.get("steps", 1)
        return check_int(steps, "steps", 1, f"an int >= 1 for method={METHOD!r}")

    def _decode(self, z: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        steps = self._mean_steps(solver, "decode")
        if steps is None:
            return super()._decode(z, context, **solver)
        return self._mean_decode(z, context, steps, self.guidance(**solver))

    def _mean_decode(
        self, z: Tensor, context: Tensor | None, steps: int, guidance: Guidance | None
    ) -> Tensor:
        cond = self._condition(context)
        null = None
        if guidance is not None:
            null = self._condition(self._null(z.shape[0]))
            null = null.to(z.dtype) if null is not None else None
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=z.dtype, device=z.device)
        x = z
        for t, r in itertools.pairwise(grid):
            w = 1.0 if guidance is None else guidance.at(float(t))
            if w == 1.0 or cond is None or null is None:
                u = self.average(t, x, cond, r=r)
            else:  # conditional and null rows in one evaluation, as the ODE solvers do
                n = x.shape[0]
                both = self.average(t, torch.cat([x, x]), torch.cat([cond, null]), r=r)
                u = both[n:] + w * (both[:n] - both[n:])
            x = x + (r - t) * u
        self.field.nfe += steps
        self.last_nfe = steps
        return x

    def _encode(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        self._mean_steps(solver, "encode")
        return super()._encode(x, context, **solver)

    def _log_prob(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        self._mean_steps(solver, "log_prob")
        return super()._log_prob(x, context, **solver)

    def _sample_and_log_prob(
        self, z: Tensor, context: Tensor | None, **solver: object
    ) -> tuple[Tensor, Tensor]:
        self._mean_steps(solver, "sample_and_log_prob")
        return super()._sample_and_log_prob(z, context, **solver)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio={self.ratio:g}, p={self.p:g}, c={self.c:g}"


def _two_times(field: object) -> bool:
    """Whether ``field`` is a field of two times: a :class:`~flowforge.nets.TimeMLP` built
    with ``times=2``, or a callable whose call (a module's ``forward``) takes ``r``."""
    times = getattr(field, "times", None)
    if times is not None:
        return times == 2
    call = field.forward if isinstance(field, nn.Module) else field
    try:
        return callable(call) and "r" in inspect.signature(call).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
