r"""Stochastic samplers on an affine Gaussian path: DDPM ancestral steps, DDIM, Euler–Maruyama.

Every model whose flow follows the marginals of :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon`,
:math:`\varepsilon \sim N(0, I)` independent of the data :math:`x_1` (a diffusion model, a
flow-matching model with independent pairs: :meth:`CNF.gaussian_path
<flowforge.dynamics.CNF.gaussian_path>`), can be sampled with noise as well as by its ODE. Its
field is the velocity :math:`v(t, x)`; the data and noise predictions follow from it,
:math:`\hat x_1, \hat\varepsilon =` ``path.convert(v, x, t, "velocity", "x1" | "epsilon")``, and
so does the score :math:`\nabla\log p_t(x) = -\hat\varepsilon / \sigma_t`. Time is
flowforge's: :math:`t = 0` noise, :math:`t = 1` data; the samplers step forward in it.

Registered in :data:`~flowforge.dynamics.SOLVERS` on import (``import flowforge`` does):
``method="ddpm"``, ``"ddim"`` (option ``eta``), ``"euler-maruyama"`` (options ``noise``,
``diffusion``). Each takes ``steps`` (required) and a time grid (``grid`` and its options) like
the fixed-step ODE solvers, costs one field evaluation per step, and draws its noise from
torch's global generator with :func:`torch.randn_like`: one draw of the state's shape per step,
in step order, none on the last step (which adds no noise), so a seed reproduces a sample and
diffusers' schedulers driven from the same seed draw the same noise.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import torch
from torch import Tensor

from .._checks import check_number
from .._registry import Registry
from ..dynamics import SOLVERS, SolverOptions, StochasticSolver
from ..matching import AffinePath, SchedulerOutput

#: The per-step coefficients of a sampler by name: ``(steps,)`` tensors in the state's dtype,
#: or plain numbers.
Plan = dict[str, Tensor | float]


def _as_time(t: Tensor | float, name: str) -> Tensor:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name} must be one time (a float or a 0-d tensor), got {t.shape}")
        return t.detach().reshape(()).double().cpu()
    return torch.tensor(check_number(t, name, 0.0, 1.0), dtype=torch.float64)


def _posterior(
    alpha_s: Tensor, sigma_s: Tensor, alpha_t: Tensor, sigma_t: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The coefficients of ``x_s`` and ``x1`` in the posterior mean, and its variance."""
    alpha_st = alpha_s / alpha_t
    # sigma_{s|t}^2 >= 0 whenever the SNR alpha^2 / sigma^2 grows from s to t; rounding can
    # take it a hair below 0 for two very close times.
    var_st = (sigma_s**2 - alpha_st**2 * sigma_t**2).clamp_min(0.0)
    ratio = sigma_t**2 / sigma_s**2
    return alpha_st * ratio, alpha_t * var_st / sigma_s**2, var_st * ratio


def ddpm_posterior(
    path: AffinePath, s: Tensor | float, t: Tensor | float, x_s: Tensor, x1_hat: Tensor
) -> tuple[Tensor, Tensor]:
    r"""The mean and variance of :math:`q(x_t \mid x_s, x_1 = \hat x_1)`, one DDPM step from
    the noisier time :math:`s` to :math:`t > s` on ``path``.

    In the notation of Kingma et al. (2021), with flowforge's time (noise at 0):
    :math:`\alpha_{s|t} = \alpha_s / \alpha_t`,
    :math:`\sigma_{s|t}^2 = \sigma_s^2 - \alpha_{s|t}^2 \sigma_t^2` (the transition that
    noises :math:`x_t` into :math:`x_s`), and

    .. math::
        \mu = \frac{\alpha_{s|t}\sigma_t^2}{\sigma_s^2} x_s
            + \frac{\alpha_t \sigma_{s|t}^2}{\sigma_s^2} \hat x_1, \qquad
        \operatorname{Var} = \frac{\sigma_{s|t}^2 \sigma_t^2}{\sigma_s^2},

    DDPM's "fixed small" posterior variance :math:`\tilde\beta`. On a VP path with
    :math:`\bar\alpha = \alpha^2` these are Ho et al.'s
    :math:`\frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1 - \bar\alpha_t} x_0 +
    \frac{\sqrt{1 - \beta_t}(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t} x_t` and
    :math:`\frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\beta_t` (their time runs the other way).

    Args:
        path: the affine path.
        s, t: the times, ``0 <= s < t <= 1`` (floats or 0-d tensors).
        x_s: ``(B, *event)``, the state at ``s``.
        x1_hat: ``(B, *event)``, the prediction of the data.

    Returns:
        the mean ``(B, *event)`` and the variance (a 0-d tensor: the same for every entry), in
        ``x_s``'s dtype.

    Example:
        >>> from flowforge.matching import AffinePath
        >>> x_s, x1 = torch.zeros(3, 2), torch.ones(3, 2)
        >>> mean, var = ddpm_posterior(AffinePath(), 0.0, 0.5, x_s, x1)  # the linear path
        >>> mean[0].tolist(), round(float(var), 4)
        ([0.5, 0.5], 0.25)

    References:
        Denoising Diffusion Probabilistic Models (Ho et al., 2020), Eq. 7
        https://arxiv.org/abs/2006.11239; Variational Diffusion Models (Kingma et al., 2021),
        Appendix A https://arxiv.org/abs/2107.00630
    """
    _check_path("ddpm_posterior", path)
    times = torch.stack([_as_time(s, "s"), _as_time(t, "t")])
    if not 0.0 <= float(times[0]) < float(times[1]) <= 1.0:
        raise ValueError(
            f"ddpm_posterior steps from the noisier time s to a later t, 0 <= s < t <= 1 (t = 0 "
            f"is the noise), got s={float(times[0])!r}, t={float(times[1])!r}"
        )
    out = path.scheduler(times)
    c_x, c_1, var = _posterior(out.alpha_t[0], out.sigma_t[0], out.alpha_t[1], out.sigma_t[1])
    # .to(x_s): x_s's dtype and device.
    return c_x.to(x_s) * x_s + c_1.to(x_s) * x1_hat, var.to(x_s)


def _check_path(name: str, path: object) -> AffinePath:
    if not isinstance(path, AffinePath):
        raise TypeError(
            f"{name} steps along an affine Gaussian path, an AffinePath; got "
            f"{type(path).__name__} (a model gives its own with model.gaussian_path())"
        )
    return path


class PathSampler(StochasticSolver):
    """The shared loop of the samplers: ``steps`` steps along the grid from ``t0`` to ``t1``,
    one field evaluation each; a subclass gives the per-step coefficients (:meth:`plan`) and
    the step (:meth:`step`)."""

    def sample(
        self,
        field: Callable[..., Tensor],
        x: Tensor,
        t0: float,
        t1: float,
        options: SolverOptions,
        context: Tensor | None,
        path: object,
    ) -> Tensor:
        """The sample at ``t1`` from the noise ``x (B, *event)`` at ``t0`` along ``path`` (an
        :class:`~flowforge.matching.AffinePath`); see :meth:`StochasticSolver.sample
        <flowforge.dynamics.StochasticSolver.sample>`."""
        path = _check_path(f"method {self.name!r}", path)
        if not 0.0 <= t0 < t1 <= 1.0:
            raise ValueError(
                f"method {self.name!r} samples from the noise to the data, 0 <= t0 < t1 <= 1 "
                f"(t = 0 is the noise), got t0={t0!r}, t1={t1!r}; it has no inverse (use an "
                "ODE method to encode)"
            )
        times = self.times(t0, t1, options, like=x)
        # The coefficients in float64 on the CPU (differences of nearby sigmas lose digits in
        # float32, and not every accelerator has float64), then in the state's dtype and place.
        grid = times.detach().cpu()
        coefficients = path.scheduler(grid.double())
        plan = {
            k: v.to(dtype=x.dtype, device=x.device) if isinstance(v, Tensor) else v
            for k, v in self.plan(coefficients, grid, options).items()
        }
        n, steps = x.shape[0], len(times) - 1
        for i in range(steps):
            s = times[i]
            v = field(s, x, context)
            x = self.step(path, i, s.expand(n), x, v, plan, last=i == steps - 1)
        return x

    def plan(self, out: SchedulerOutput, times: Tensor, options: SolverOptions) -> Plan:
        """The coefficients of each step, by name: ``(steps,)`` tensors or numbers, from the
        path's coefficients ``out`` (float64) on the ``(steps + 1,)`` grid ``times`` (in the
        state's dtype, on the CPU)."""
        raise NotImplementedError

    def step(
        self, path: AffinePath, i: int, s: Tensor, x: Tensor, v: Tensor, plan: Plan, last: bool
    ) -> Tensor:
        """Step ``i`` from the state ``x (B, *event)`` at times ``s (B,)``, where the field is
        ``v``; ``last`` is the final step (no noise)."""
        raise NotImplementedError


class DDPM(PathSampler):
    r"""Ancestral sampling (Ho et al., 2020): each step draws
    :math:`x_t \sim N(\mu, \operatorname{Var})` of :func:`ddpm_posterior` with
    :math:`\hat x_1` from the velocity, on any affine path; the last step returns its mean.

    Takes ``steps`` (required) and the grid options. On a VP path and the times of a discrete
    DDPM schedule it is DDPM's sampler with the "fixed small" variance, step for step.

    References:
        Denoising Diffusion Probabilistic Models (Ho et al., 2020) https://arxiv.org/abs/2006.11239
    """

    name = "ddpm"

    def plan(self, out, times, options):
        c_x, c_1, var = _posterior(
            out.alpha_t[:-1], out.sigma_t[:-1], out.alpha_t[1:], out.sigma_t[1:]
        )
        return {"c_x": c_x, "c_1": c_1, "std": var.sqrt()}

    def step(self, path, i, s, x, v, plan, last):
        x1 = path.convert(v, x, s, "velocity", "x1")
        mean = plan["c_x"][i] * x + plan["c_1"][i] * x1
        return mean if last else mean + plan["std"][i] * torch.randn_like(x)


class DDIM(PathSampler):
    r"""DDIM (Song et al., 2020): :math:`x_t = \alpha_t \hat x_1 + \sqrt{\sigma_t^2 - c^2}\,
    \hat\varepsilon + c z`, :math:`c = \eta\sqrt{\operatorname{Var}}` with the DDPM posterior
    variance of :func:`ddpm_posterior`.

    ``eta=0`` (the default) is deterministic: the same marginals as DDPM, no noise drawn (a
    first-order solver of the probability-flow ODE in the variables
    :math:`x/\sigma`, :math:`\alpha/\sigma`). ``eta=1`` is DDPM's ancestral step, draw for
    draw. The last step adds no noise.

    Options:
        eta: in [0, 1], the share of the posterior standard deviation re-drawn each step
            (above 1, :math:`\sigma_t^2 - c^2` can go negative).

    References:
        Denoising Diffusion Implicit Models (Song, Meng & Ermon, 2020), Eq. 12
        https://arxiv.org/abs/2010.02502
    """

    name = "ddim"
    own = MappingProxyType({"eta": 0.0})

    def check(self, options):
        super().check(options)
        check_number(
            options.get("eta"),
            "eta",
            0.0,
            1.0,
            described="a number in [0, 1] (0: deterministic DDIM, 1: DDPM's posterior variance)",
        )

    def plan(self, out, times, options):
        *_, var = _posterior(out.alpha_t[:-1], out.sigma_t[:-1], out.alpha_t[1:], out.sigma_t[1:])
        eta = float(options.get("eta"))
        c = eta * var.sqrt()
        # sigma_t^2 - c^2 >= 0 for eta <= 1 (Var <= sigma_t^2); rounding may dip below 0.
        keep = (out.sigma_t[1:] ** 2 - c**2).clamp_min(0.0).sqrt()
        return {"alpha": out.alpha_t[1:], "keep": keep, "c": c, "eta": eta}

    def step(self, path, i, s, x, v, plan, last):
        x1 = path.convert(v, x, s, "velocity", "x1")
        eps = path.convert(v, x, s, "velocity", "epsilon")
        x = plan["alpha"][i] * x1 + plan["keep"][i] * eps
        if last or not plan["eta"]:
            return x
        return x + plan["c"][i] * torch.randn_like(x)


def _g2(out: SchedulerOutput) -> tuple[Tensor, Tensor]:
    # g^2 = 2 sigma (sigma alpha'/alpha - sigma'): the diffusion of the forward SDE whose
    # marginals are the path's; w / sigma is returned too, finite where sigma = 0.
    ratio = 2.0 * (out.sigma_t * out.d_alpha_t / out.alpha_t - out.d_sigma_t)
    return out.sigma_t * ratio, ratio


def _sigma(out: SchedulerOutput) -> tuple[Tensor, Tensor]:
    return out.sigma_t, torch.ones_like(out.sigma_t)


#: The diffusion coefficient :math:`w(t)` of Euler–Maruyama by name: each maps the path's
#: coefficients on the grid to :math:`(w, w / \sigma)`.
DIFFUSIONS: Registry[Callable[[SchedulerOutput], tuple[Tensor, Tensor]]] = Registry("diffusion")
DIFFUSIONS.register("sigma", _sigma)
DIFFUSIONS.register("path", _g2)


class EulerMaruyama(PathSampler):
    r"""The reverse SDE by Euler–Maruyama steps:
    :math:`dx = [v + \tfrac12 \lambda w(t) \nabla\log p_t(x)]\,dt + \sqrt{\lambda w(t)}\,dW`,
    :math:`\nabla\log p_t = -\hat\varepsilon / \sigma_t`.

    For every :math:`w \ge 0` its marginals are the path's (the extra drift and the noise
    cancel in the Fokker–Planck equation), so :math:`\lambda` = ``noise`` trades ODE for SDE:
    ``noise=0`` is Euler on the probability-flow ODE exactly (no score, no draws). Each step
    from :math:`s` to :math:`t = s + h` evaluates at :math:`s`:
    :math:`x + h\,[v - \tfrac12\lambda (w/\sigma_s)\hat\varepsilon] + \sqrt{\lambda w h}\,z`;
    the last step adds no noise.

    Options:
        noise: :math:`\lambda \ge 0`, multiplies :math:`w` (default 1).
        diffusion: :math:`w(t)` (:data:`DIFFUSIONS`): ``"sigma"`` (default),
            :math:`w = \sigma_t` (Ma et al., 2024), bounded by 1 on every registered path;
            ``"path"``, :math:`g^2 = 2\sigma_t(\sigma_t\dot\alpha_t/\alpha_t - \dot\sigma_t)`,
            the path's own forward SDE (:math:`\beta(t)` on a VP path: Song et al.'s reverse
            SDE), which needs many steps where it is large (20 at the noise end of the linear
            VP schedule, 472 of the cosine one, where 8 to 32 steps diverged on the
            checkerboard) and is infinite at the noise end of the linear path,
            :math:`2(1 - t)/t`.

    References:
        Score-Based Generative Modeling through Stochastic Differential Equations (Song et
        al., 2021) https://arxiv.org/abs/2011.13456; SiT: Exploring Flow and Diffusion-based
        Generative Models with Scalable Interpolant Transformers (Ma et al., 2024)
        https://arxiv.org/abs/2401.08740
    """

    name = "euler-maruyama"
    own = MappingProxyType({"noise": 1.0, "diffusion": "sigma"})

    def check(self, options):
        super().check(options)
        check_number(
            options.get("noise"),
            "noise",
            0.0,
            described="a number >= 0 (0: Euler on the ODE, 1: the full diffusion w(t))",
        )
        DIFFUSIONS.check(options.get("diffusion"))

    def plan(self, out, times, options):
        name = str(options.get("diffusion"))
        w, ratio = DIFFUSIONS[name](out)
        if not bool(torch.isfinite(w[:-1]).all()):
            raise ValueError(
                f"diffusion={name!r}: w(t) = g^2 = 2 sigma (sigma alpha'/alpha - sigma') is "
                f"infinite at t={float(times[0]):g} on this path (alpha_t = "
                f"{float(out.alpha_t[0]):g}; the linear path's g^2 = 2(1 - t)/t); choose "
                "diffusion='sigma' (the default), w = sigma_t"
            )
        noise = float(options.get("noise"))
        h = times[1:] - times[:-1]  # in the state's dtype, as torchdiffeq's Euler steps
        return {
            "h": h,
            "drift": 0.5 * noise * ratio[:-1],
            "std": (noise * w[:-1] * h.double()).clamp_min(0.0).sqrt(),
            "noise": noise,
        }

    def step(self, path, i, s, x, v, plan, last):
        if not plan["noise"]:
            return x + plan["h"][i] * v  # torchdiffeq's Euler step, to the bit
        eps = path.convert(v, x, s, "velocity", "epsilon")
        x = x + plan["h"][i] * (v - plan["drift"][i] * eps)
        return x if last else x + plan["std"][i] * torch.randn_like(x)


for _solver in (DDPM(), DDIM(), EulerMaruyama()):
    SOLVERS.register(_solver.name, _solver)
del _solver
