r"""Schedulers :math:`(\alpha_t, \sigma_t)` of affine probability paths
:math:`x_t = \alpha_t x_1 + \sigma_t x_0`, with :math:`t = 0` noise and :math:`t = 1` data.

Each scheduler returns :math:`\alpha_t`, :math:`\sigma_t` and their time derivatives in closed
form; the tests check the derivatives against autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_number, check_positive
from .._registry import Registry


@dataclass(frozen=True)
class SchedulerOutput:
    r""":math:`\alpha_t, \sigma_t, \dot\alpha_t, \dot\sigma_t`, each shaped like ``t``."""

    alpha_t: Tensor
    sigma_t: Tensor
    d_alpha_t: Tensor
    d_sigma_t: Tensor


class Scheduler:
    r"""The coefficients of an affine path: ``scheduler(t) -> SchedulerOutput``.

    :math:`\alpha_0 = 0, \sigma_0 = 1` (pure noise) and :math:`\alpha_1 = 1, \sigma_1 \approx 0`
    (data), with :math:`\alpha` increasing and :math:`\sigma` decreasing.
    """

    name = "scheduler"

    def __call__(self, t: Tensor) -> SchedulerOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class CondOTScheduler(Scheduler):
    r"""The conditional optimal-transport (linear) path: :math:`\alpha_t = t`,
    :math:`\sigma_t = 1 - (1 - \sigma_{\min}) t`.

    With :math:`\sigma_{\min} = 0` it is the straight line of rectified flow (Liu et al., 2022)
    and I-CFM (Tong et al., 2023); Lipman et al. (2022) keep a small :math:`\sigma_{\min}` so the
    data end is a narrow Gaussian around each point.

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2022) https://arxiv.org/abs/2210.02747
    """

    name = "condot"

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = check_number(sigma_min, "sigma_min", 0.0, below=1.0)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        s = 1.0 - self.sigma_min
        return SchedulerOutput(t, 1.0 - s * t, torch.ones_like(t), torch.full_like(t, -s))


class CosineScheduler(Scheduler):
    r"""The cosine path: :math:`\alpha_t = \sin(\pi t / 2)`, :math:`\sigma_t = \cos(\pi t / 2)`
    (variance preserving: :math:`\alpha_t^2 + \sigma_t^2 = 1`).

    References:
        Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021)
        https://arxiv.org/abs/2102.09672
    """

    name = "cosine"

    def __call__(self, t: Tensor) -> SchedulerOutput:
        a = 0.5 * math.pi
        return SchedulerOutput(
            torch.sin(a * t), torch.cos(a * t), a * torch.cos(a * t), -a * torch.sin(a * t)
        )


class PolynomialScheduler(Scheduler):
    r"""The polynomial family :math:`\alpha_t = t^n`, :math:`\sigma_t = 1 - t^n` (``n = 1`` is the
    linear path); larger ``n`` spends longer near the noise."""

    name = "polynomial"

    def __init__(self, n: float = 2.0):
        self.n = check_positive(n, "the polynomial path's exponent n", "> 0")

    def __call__(self, t: Tensor) -> SchedulerOutput:
        n = self.n
        a = t**n
        # t^(n-1) at t = 0 is 0 for n > 1; for n < 1 the derivative is infinite there.
        da = n * t ** (n - 1)
        return SchedulerOutput(a, 1.0 - a, da, -da)


class VPScheduler(Scheduler):
    r"""The variance-preserving diffusion path (DDPM / VP-SDE), in flow-matching time:
    :math:`\alpha_t = e^{-T(1 - t)/2}`, :math:`\sigma_t = \sqrt{1 - \alpha_t^2}`, with
    :math:`T(s) = \beta_{\min} s + (\beta_{\max} - \beta_{\min}) s^2 / 2`.

    :math:`\alpha_0 = e^{-T(1)/2}` is small but not zero (about 0.0067 with the defaults): the
    path starts at a Gaussian close to, not exactly, the base.

    References:
        Score-Based Generative Modeling through Stochastic Differential Equations (Song et al.,
        2021) https://arxiv.org/abs/2011.13456; Lipman et al. (2022), section 4.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        check_positive(beta_min, "beta_min")
        check_positive(beta_max, "beta_max")
        if not beta_min <= beta_max:
            raise ValueError(
                f"need 0 < beta_min <= beta_max, got beta_min={beta_min!r}, beta_max={beta_max!r}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        s = 1.0 - t
        big_t = self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2
        beta = self.beta_min + (self.beta_max - self.beta_min) * s  # dT/ds
        alpha = torch.exp(-0.5 * big_t)
        d_alpha = 0.5 * beta * alpha  # d/dt = -d/ds
        # sigma = sqrt(1 - alpha^2); clamp keeps the derivative finite where alpha -> 1.
        sigma = torch.sqrt((1.0 - alpha**2).clamp_min(1e-12))
        d_sigma = -alpha * d_alpha / sigma
        return SchedulerOutput(alpha, sigma, d_alpha, d_sigma)


class VPCosineScheduler(Scheduler):
    r"""The cosine diffusion schedule of Nichol & Dhariwal (2021) in continuous time, variance
    preserving: :math:`\alpha_t = \cos\phi_t / \cos\phi_1`,
    :math:`\sigma_t = \sqrt{1 - \alpha_t^2}`, with the angle :math:`\phi` linear in diffusion
    time :math:`s = 1 - t`, from
    :math:`\phi_1 = \frac{\pi}{2}\frac{\delta}{1 + \delta}` at the data (the ``offset``
    :math:`\delta = 0.008` keeps the noise from vanishing too fast there) to :math:`\phi_0` at
    the noise, where :math:`\alpha_0 =` ``alpha_min``.

    Their :math:`\bar\alpha(s) = \cos^2(\frac{s + \delta}{1 + \delta}\frac{\pi}{2}) /
    \cos^2(\frac{\delta}{1 + \delta}\frac{\pi}{2})` reaches 0 at :math:`s = 1`, which makes an
    :math:`\varepsilon`-model's velocity singular at the noise end (the paper clips the
    discrete :math:`\beta_t` at 0.999 for the same reason); here the angle stops where
    :math:`\alpha_0 =` ``alpha_min``, by default the linear VP schedule's
    :math:`\alpha_0 = e^{-(\beta_{\min} + \beta_{\max})/4} \approx 0.0066`, so both
    schedules start from the same signal level.

    Args:
        offset: :math:`\delta \ge 0`.
        alpha_min: :math:`\alpha_0`, in (0, 1) (default: the linear schedule's).

    References:
        Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021)
        https://arxiv.org/abs/2102.09672
    """

    name = "vp-cosine"

    def __init__(self, offset: float = 0.008, alpha_min: float | None = None):
        self.offset = check_number(offset, "offset", 0.0)
        if alpha_min is None:
            # The linear VP schedule's alpha_0 = exp(-(beta_min + beta_max) / 4) at its defaults.
            alpha_min = math.exp(-0.25 * (0.1 + 20.0))
        # Above 0: at alpha_0 = 0 an epsilon-model's velocity is singular at the noise end.
        self.alpha_min = check_number(alpha_min, "alpha_min", above=0.0, below=1.0)

    def _angles(self) -> tuple[float, float]:
        start = 0.5 * math.pi * self.offset / (1.0 + self.offset)  # phi at the data, t = 1
        end = math.acos(self.alpha_min * math.cos(start))  # phi at the noise, t = 0
        return start, end

    def __call__(self, t: Tensor) -> SchedulerOutput:
        start, end = self._angles()
        phi = start + (1.0 - t) * (end - start)
        c = math.cos(start)
        alpha = torch.cos(phi) / c
        d_alpha = torch.sin(phi) * (end - start) / c  # d/dt = -d/ds, d phi/ds = end - start
        sigma = torch.sqrt((1.0 - alpha**2).clamp_min(1e-12))
        d_sigma = -alpha * d_alpha / sigma
        return SchedulerOutput(alpha, sigma, d_alpha, d_sigma)


#: The schedulers by name (each class's ``name``), called with the class's own arguments.
SCHEDULERS: Registry[Callable[..., Scheduler]] = Registry("scheduler")
for _cls in (CondOTScheduler, CosineScheduler, PolynomialScheduler, VPScheduler, VPCosineScheduler):
    SCHEDULERS.register(_cls.name, _cls)
del _cls
