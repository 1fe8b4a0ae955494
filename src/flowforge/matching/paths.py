r"""Probability paths between noise :math:`x_0` and data :math:`x_1`: samples :math:`x_t` and
their conditional velocities :math:`\dot x_t`, the regression targets of flow matching.

Points are batches of events of any shape, ``(B, *event)``; the per-sample times and
coefficients broadcast over the event as ``(B, 1, ..., 1)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_choice, check_positive
from .._registry import Registry
from .schedulers import SCHEDULERS, CondOTScheduler, Scheduler

#: What a network can predict on an affine Gaussian path: the velocity, the data ``x1``, the noise
#: ``epsilon``, or ``v`` (Salimans & Ho, 2022: :math:`v = \alpha_t\varepsilon - \sigma_t x_1`,
#: diffusion's v-prediction, not the flow-matching velocity).
PARAMETERIZATIONS = ("velocity", "x1", "epsilon", "v")


@dataclass(frozen=True)
class PathSample:
    r"""A point on a conditional path and its velocity.

    Attributes:
        x_t: ``(B, *event)``, the point at time ``t``.
        dx_t: ``(B, *event)``, :math:`\frac{d}{dt} x_t` given the pair: the target of the
            regression.
        t: ``(B,)``, the times.
    """

    x_t: Tensor
    dx_t: Tensor
    t: Tensor


def _expand(c: Tensor, like: Tensor) -> Tensor:
    """A per-sample coefficient ``(B,)`` shaped ``(B, 1, ..., 1)`` to broadcast over
    ``(B, *event)`` (a view)."""
    return c.reshape(c.shape[0], *([1] * (like.ndim - 1)))


def _check_times(t: Tensor, x: Tensor) -> Tensor:
    if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != x.shape[0]:
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must have shape ({x.shape[0]},), one time per sample, got {got}")
    return t.to(x.dtype)


class AffinePath:
    r"""The affine path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` with velocity
    :math:`\dot x_t = \dot\alpha_t x_1 + \dot\sigma_t x_0`, for a :class:`Scheduler`.

    With Gaussian noise :math:`x_0 = \varepsilon`, a network can predict the velocity, the data
    :math:`x_1` or the noise :math:`\varepsilon`; :meth:`convert` turns any into any other,
    given :math:`x_t` and :math:`t`.

    Args:
        scheduler: the coefficients (default: the linear conditional-OT path).
    """

    def __init__(self, scheduler: Scheduler | None = None):
        scheduler = scheduler or CondOTScheduler()
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"scheduler must be a Scheduler, got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        r"""The path between the pairs ``(x0[i], x1[i])``, both ``(B, *event)``, at times
        ``t (B,)``."""
        if x0.shape != x1.shape:
            raise ValueError(
                f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        t = _check_times(t, x1)
        if type(self.scheduler) is CondOTScheduler:
            # The common linear path in three operations: dx = x1 - (1 - sigma_min) x0 and
            # x_t = x0 + t dx, the same values as the general formula below.
            shrink = 1.0 - self.scheduler.sigma_min
            dx = x1 - x0 if shrink == 1.0 else x1 - shrink * x0
            return PathSample(torch.addcmul(x0, _expand(t, x1), dx), dx, t)
        s = self.scheduler(t)
        a, sg = _expand(s.alpha_t, x1), _expand(s.sigma_t, x1)
        da, dsg = _expand(s.d_alpha_t, x1), _expand(s.d_sigma_t, x1)
        return PathSample(a * x1 + sg * x0, da * x1 + dsg * x0, t)

    def convert(self, value: Tensor, x_t: Tensor, t: Tensor, source: str, target: str) -> Tensor:
        r"""Convert a prediction between parameterisations at ``(x_t, t)``.

        From :math:`x_t = \alpha x_1 + \sigma\varepsilon` and
        :math:`v = \dot\alpha x_1 + \dot\sigma\varepsilon`:
        :math:`x_1 = (\dot\sigma x_t - \sigma v) / (\dot\sigma\alpha - \sigma\dot\alpha)`,
        :math:`\varepsilon = (\alpha v - \dot\alpha x_t) / (\alpha\dot\sigma - \dot\alpha\sigma)`,
        and back; diffusion's :math:`v = \alpha\varepsilon - \sigma x_1` (Salimans & Ho, 2022)
        gives :math:`x_1 = (\alpha x_t - \sigma v) / (\alpha^2 + \sigma^2)` and
        :math:`\varepsilon = (\sigma x_t + \alpha v) / (\alpha^2 + \sigma^2)`. Singular where
        the determinant vanishes (never for the registered schedulers on ``0 < t < 1``);
        :math:`x_1` from :math:`\varepsilon` needs :math:`\alpha_t > 0`, and
        :math:`\varepsilon` from :math:`x_1` needs :math:`\sigma_t > 0`.

        Args:
            value: ``(B, *event)``, the prediction in ``source`` form.
            x_t: ``(B, *event)``, the point it was made at.
            t: ``(B,)``, the times.
            source, target: ``"velocity"``, ``"x1"``, ``"epsilon"`` or ``"v"``.
        """
        check_choice(source, "source", PARAMETERIZATIONS)
        check_choice(target, "target", PARAMETERIZATIONS)
        if source == target:
            return value
        t = _check_times(t, x_t)
        s = self.scheduler(t)
        a, sg = _expand(s.alpha_t, x_t), _expand(s.sigma_t, x_t)
        da, dsg = _expand(s.d_alpha_t, x_t), _expand(s.d_sigma_t, x_t)
        # Everything goes through (x1, epsilon), the pair that determines both x_t and v.
        if source == "velocity":
            det = dsg * a - sg * da
            x1, eps = (dsg * x_t - sg * value) / det, (a * value - da * x_t) / det
        elif source == "x1":
            x1, eps = value, (x_t - a * value) / sg
        elif source == "epsilon":
            x1, eps = (x_t - sg * value) / a, value
        else:  # v = alpha eps - sigma x1
            norm = a * a + sg * sg
            x1, eps = (a * x_t - sg * value) / norm, (sg * x_t + a * value) / norm
        if target == "velocity":
            return da * x1 + dsg * eps
        if target == "v":
            return a * eps - sg * x1
        return x1 if target == "x1" else eps

    def __repr__(self) -> str:
        return f"AffinePath({self.scheduler!r})"


class SchrodingerBridgePath:
    r"""The Brownian-bridge path of Schrödinger-bridge CFM (Tong et al., 2023):
    :math:`x_t = t x_1 + (1 - t) x_0 + \sigma\sqrt{t(1-t)}\,\varepsilon` with velocity
    :math:`\dot x_t = x_1 - x_0 + \frac{1 - 2t}{2t(1-t)}\,(x_t - t x_1 - (1 - t) x_0)`.

    Paired with the entropic OT coupling of the same :math:`\sigma`
    (:class:`~flowforge.matching.SinkhornCoupling`), its marginals follow the Schrödinger
    bridge between noise and data. The velocity's factor is singular at ``t = 0`` and ``t = 1``
    (where the noise vanishes, the product stays finite); times are clamped into
    ``[1e-5, 1 - 1e-5]`` for it.

    Args:
        sigma: :math:`\sigma > 0`, the bridge's noise scale.

    References:
        Improving and generalizing flow-based generative models with minibatch optimal
        transport (Tong et al., 2023) https://arxiv.org/abs/2302.00482
    """

    def __init__(self, sigma: float = 0.5):
        self.sigma = check_positive(sigma, "sigma")

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor, noise: Tensor | None = None) -> PathSample:
        """The bridge between the pairs ``x0, x1 (B, *event)`` at times ``t (B,)``; ``noise``
        (``(B, *event)``) defaults to a fresh standard normal draw."""
        if x0.shape != x1.shape:
            raise ValueError(
                f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        t = _check_times(t, x1)
        noise = torch.randn_like(x1) if noise is None else noise
        tt = _expand(t, x1)
        mean = tt * x1 + (1 - tt) * x0
        std = self.sigma * torch.sqrt(tt * (1 - tt))
        x_t = mean + std * noise
        # (1 - 2t) / (2 t (1 - t)) * std * noise, written without dividing by std.
        tc = tt.clamp(1e-5, 1 - 1e-5)
        dx_t = x1 - x0 + (1 - 2 * tt) / (2 * torch.sqrt(tc * (1 - tc))) * self.sigma * noise
        return PathSample(x_t, dx_t, t)

    def __repr__(self) -> str:
        return f"SchrodingerBridgePath(sigma={self.sigma})"


#: Paths by name, for recipes that choose one by name. Each builder takes the recipe's path
#: options by keyword (``sigma_min``, ``exponent``, ``sigma``) and uses only its own, so one
#: call serves every name; the affine ones take their scheduler from ``SCHEDULERS``.
PATHS: Registry[Callable[..., AffinePath | SchrodingerBridgePath]] = Registry("path")


@PATHS.register("condot")
def _condot(*, sigma_min: float, **_: object) -> AffinePath:
    return AffinePath(SCHEDULERS["condot"](sigma_min))


@PATHS.register("cosine")
def _cosine(**_: object) -> AffinePath:
    return AffinePath(SCHEDULERS["cosine"]())


@PATHS.register("polynomial")
def _polynomial(*, exponent: float, **_: object) -> AffinePath:
    return AffinePath(SCHEDULERS["polynomial"](exponent))


@PATHS.register("vp")
def _vp(**_: object) -> AffinePath:
    return AffinePath(SCHEDULERS["vp"]())


@PATHS.register("vp-cosine")
def _vp_cosine(**_: object) -> AffinePath:
    return AffinePath(SCHEDULERS["vp-cosine"]())


@PATHS.register("bridge")
def _bridge(*, sigma: float, **_: object) -> SchrodingerBridgePath:
    return SchrodingerBridgePath(sigma)
