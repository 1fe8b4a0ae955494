r"""Time samplers: the distribution of :math:`t` in the flow-matching loss (``t = 1`` is data).

Where the loss samples :math:`t` decides which parts of the path the network learns best.
Uniform is the default; Esser et al. (2024) found logit-normal and mode sampling, which favour
intermediate times, better for images. Every sampler takes an optional ``shift`` that moves
mass towards the noise (``shift > 1``) or the data (``shift < 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_bool, check_number, check_positive
from .._registry import Registry


class TimeSampler:
    r"""Draws ``n`` times in :math:`[0, 1]`: ``sampler(n, device=None, dtype=None) -> (n,)``.

    Args:
        shift: :math:`s > 0`, applied to the noise level :math:`\tau = 1 - t` as
            :math:`\tau' = s\tau / (1 + (s - 1)\tau)` (Esser et al. 2024's resolution shift);
            1 leaves the times unchanged.
        stratified: draw the batch's underlying uniforms one per stratum,
            :math:`u_i = (\pi_i + U_i) / n` for a random permutation :math:`\pi`: each time
            keeps its distribution (the loss stays unbiased) while the batch covers
            :math:`[0, 1]` evenly, which lowers the variance of the loss and its gradient (the
            low-discrepancy sampler of Kingma et al., 2021, "Variational Diffusion Models").
    """

    name = "time sampler"

    def __init__(self, shift: float = 1.0, stratified: bool = False):
        self.shift = check_positive(shift, "shift")
        self.stratified = check_bool(stratified, "stratified")

    def __call__(
        self,
        n: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        dtype = dtype or torch.get_default_dtype()
        t = self._draw(n, device, dtype, generator)
        if self.shift != 1.0:
            tau = 1.0 - t
            t = 1.0 - self.shift * tau / (1.0 + (self.shift - 1.0) * tau)
        return t

    def _draw(self, n, device, dtype, generator) -> Tensor:
        raise NotImplementedError

    def _uniform(self, n, device, dtype, generator) -> Tensor:
        """``n`` uniforms on [0, 1), one per stratum when ``stratified``."""
        u = torch.rand(n, device=device, dtype=dtype, generator=generator)
        if not self.stratified:
            return u
        strata = torch.randperm(n, device=device, dtype=dtype, generator=generator)
        return u.add_(strata).div_(n)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class UniformTime(TimeSampler):
    """:math:`t \\sim U[0, 1]`."""

    name = "uniform"

    def _draw(self, n, device, dtype, generator) -> Tensor:
        return self._uniform(n, device, dtype, generator)


class LogitNormalTime(TimeSampler):
    r""":math:`t = \mathrm{sigmoid}(m + s\,\xi)`, :math:`\xi \sim N(0, 1)`: median
    :math:`\mathrm{sigmoid}(m)`, concentrated around it for small :math:`s`.

    ``loc`` :math:`m > 0` favours the data end here (t = 1 is data); Esser et al.'s time runs the
    other way, so their :math:`m` is :math:`-m` here (their recommended :math:`m = 0, s = 1` is the
    same either way).

    References:
        Scaling Rectified Flow Transformers for High-Resolution Image Synthesis (Esser et al.,
        2024) https://arxiv.org/abs/2403.03206
    """

    name = "logit-normal"

    def __init__(
        self, loc: float = 0.0, scale: float = 1.0, shift: float = 1.0, stratified: bool = False
    ):
        super().__init__(shift, stratified)
        self.loc = check_number(loc, "loc")
        self.scale = check_positive(scale, "scale")

    def _draw(self, n, device, dtype, generator) -> Tensor:
        if self.stratified:  # the normal quantiles of stratified uniforms
            u = self._uniform(n, device, dtype, generator).clamp(1e-7, 1.0 - 1e-7)
            xi = torch.special.ndtri(u)
        else:
            xi = torch.randn(n, device=device, dtype=dtype, generator=generator)
        return torch.sigmoid(self.loc + self.scale * xi)


class ModeTime(TimeSampler):
    r"""Mode sampling with heavy tails (Esser et al. 2024, eq. 20), in this library's time:
    :math:`t = u + s\,(\cos^2(\pi u / 2) - 1 + u)`, :math:`u \sim U[0, 1]`.

    :math:`s = 0` is uniform; :math:`s > 0` favours intermediate times. The map is monotone
    (a valid density) for :math:`-1 \le s \le 2 / (\pi - 2) \approx 1.75`.
    """

    name = "mode"

    def __init__(self, scale: float = 1.29, shift: float = 1.0, stratified: bool = False):
        super().__init__(shift, stratified)
        limit = 2.0 / (math.pi - 2.0)
        self.scale = check_number(scale, "scale", -1.0, limit)

    def _draw(self, n, device, dtype, generator) -> Tensor:
        u = self._uniform(n, device, dtype, generator)
        return u + self.scale * (torch.cos(0.5 * math.pi * u) ** 2 - 1.0 + u)


#: Time samplers by name, for recipes that choose one by name. Each builder takes the
#: recipe's options by keyword (``loc``, ``scale``, ``mode_scale``, ``shift``,
#: ``stratified``) and uses only its own.
TIME_SAMPLERS: Registry[Callable[..., TimeSampler]] = Registry("time_sampler")


@TIME_SAMPLERS.register("uniform")
def _uniform(*, shift: float, stratified: bool, **_: object) -> UniformTime:
    return UniformTime(shift, stratified)


@TIME_SAMPLERS.register("logit-normal")
def _logit_normal(
    *, loc: float, scale: float, shift: float, stratified: bool, **_: object
) -> LogitNormalTime:
    return LogitNormalTime(loc, scale, shift, stratified)


@TIME_SAMPLERS.register("mode")
def _mode(*, mode_scale: float, shift: float, stratified: bool, **_: object) -> ModeTime:
    return ModeTime(mode_scale, shift, stratified)
