"""Monotone elementwise maps whose parameters come from a conditioner (the "transformers").

A coupling or autoregressive layer splits into a *conditioner*, a network that outputs
parameters, and a *transformer*, a monotone scalar map applied to each feature with those
parameters. Each transformer here takes ``params`` of shape ``(B, D, P)`` for inputs of shape
``(B, D)`` and returns the output with the elementwise log-derivative, shape ``(B, D)``.
A zero ``params`` tensor is the identity map, so conditioners whose last layer starts at zero
make every layer start as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_number, check_positive


class Transformer(nn.Module):
    """A monotone scalar map :math:`y = \\tau(x; \\theta)` applied feature by feature.

    Attributes:
        num_params: ``P``, the number of parameters per feature.
    """

    num_params: int

    def forward_and_log_deriv(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return :math:`\\tau(x)` and :math:`\\log \\tau'(x)`, both ``(B, D)``."""
        raise NotImplementedError

    def inverse_and_log_deriv(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return :math:`x = \\tau^{-1}(y)` and :math:`\\log (\\tau^{-1})'(y)`, both ``(B, D)``."""
        raise NotImplementedError


class AdditiveTransformer(Transformer):
    r""":math:`y = x + t`, volume preserving (NICE).

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014)
        https://arxiv.org/abs/1410.8516
    """

    num_params = 1

    def forward_and_log_deriv(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params[..., 0], torch.zeros_like(x)

    def inverse_and_log_deriv(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params[..., 0], torch.zeros_like(y)


class AffineTransformer(Transformer):
    r""":math:`y = x \exp(s) + t` with a softly bounded log-scale, :math:`s = b \tanh(\hat s / b)`.

    The soft bound keeps :math:`|s| < b`, so one layer can neither blow up nor collapse its input
    (a raw exponential overflows early in training); ``tanh`` keeps the gradient smooth.

    Args:
        scale_bound: ``b``, the largest absolute log-scale.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803
    """

    num_params = 2

    def __init__(self, scale_bound: float = 3.0):
        super().__init__()
        self.scale_bound = check_positive(scale_bound, "scale_bound")

    def _log_scale(self, raw: Tensor) -> Tensor:
        return self.scale_bound * torch.tanh(raw / self.scale_bound)

    def forward_and_log_deriv(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        s = self._log_scale(params[..., 1])
        return x * torch.exp(s) + params[..., 0], s

    def inverse_and_log_deriv(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        s = self._log_scale(params[..., 1])
        return (y - params[..., 0]) * torch.exp(-s), -s


class RQSplineTransformer(Transformer):
    r"""Monotone rational-quadratic spline on :math:`[-B, B]` with identity (linear) tails.

    ``K`` bins with widths, heights and interior knot derivatives from the parameters; the
    derivative at both ends of the interval is 1, so the map continues as the identity outside
    :math:`[-B, B]`: inputs far outside stay finite and invertible, with zero log-derivative.

    Parameters per feature: ``K`` widths, ``K`` heights, ``K - 1`` interior derivatives
    (``P = 3K - 1``), all unconstrained.

    Args:
        bins: ``K``, the number of bins.
        bound: ``B``, the half-width of the interval the spline acts on.
        min_width: smallest bin width, as a fraction of ``2B``.
        min_height: smallest bin height, as a fraction of ``2B``.
        min_derivative: smallest knot derivative.

    References:
        Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
    """

    def __init__(
        self,
        bins: int = 8,
        bound: float = 5.0,
        min_width: float = 1e-3,
        min_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ):
        super().__init__()
        check_int(bins, "bins", 2)
        check_positive(bound, "bound")
        if not 0 < min_width * bins < 1 or not 0 < min_height * bins < 1:
            raise ValueError("min_width * bins and min_height * bins must lie in (0, 1)")
        check_number(min_derivative, "min_derivative", above=0, below=1)
        self.bins = bins
        self.bound = float(bound)
        self.min_width = min_width
        self.min_height = min_height
        self.min_derivative = min_derivative
        self.num_params = 3 * bins - 1
        # softplus(c) = 1 - min_derivative, so a zero raw derivative gives slope 1 (identity).
        self._deriv_shift = math.log(math.expm1(1.0 - min_derivative))

    def _knots(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.bins
        raw_w, raw_h, raw_d = params[..., :k], params[..., k : 2 * k], params[..., 2 * k :]
        xs = _cumulative_knots(raw_w, self.min_width, self.bound)
        ys = _cumulative_knots(raw_h, self.min_height, self.bound)
        inner = self.min_derivative + F.softplus(raw_d + self._deriv_shift)
        ones = torch.ones_like(inner[..., :1])
        derivs = torch.cat([ones, inner, ones], dim=-1)
        return xs, ys, derivs

    def forward_and_log_deriv(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        xs, ys, ds = self._knots(params)
        inside = x.abs() <= self.bound
        xc = x.clamp(-self.bound, self.bound)
        idx = _bin_index(xs, xc)
        x_k, w, y_k, h, d0, d1 = _gather_bin(xs, ys, ds, idx)
        s = h / w
        xi = ((xc - x_k) / w).clamp(0, 1)
        t = xi * (1 - xi)
        denom = s + (d1 + d0 - 2 * s) * t
        y = y_k + h * (s * xi**2 + d0 * t) / denom
        num = d1 * xi**2 + 2 * s * t + d0 * (1 - xi) ** 2
        log_deriv = 2 * torch.log(s) + torch.log(num) - 2 * torch.log(denom)
        return torch.where(inside, y, x), torch.where(inside, log_deriv, torch.zeros_like(x))

    def inverse_and_log_deriv(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        xs, ys, ds = self._knots(params)
        inside = y.abs() <= self.bound
        yc = y.clamp(-self.bound, self.bound)
        idx = _bin_index(ys, yc)
        x_k, w, y_k, h, d0, d1 = _gather_bin(xs, ys, ds, idx)
        s = h / w
        dy = yc - y_k
        slope_sum = d1 + d0 - 2 * s
        a = h * (s - d0) + dy * slope_sum
        b = h * d0 - dy * slope_sum
        c = -s * dy
        # Rounding can push the discriminant a hair below zero; it is >= 0 mathematically.
        disc = (b**2 - 4 * a * c).clamp_min(0)
        # The numerically stable root of a xi^2 + b xi + c = 0 (Durkan et al., eq. 29).
        xi = ((2 * c) / (-b - torch.sqrt(disc))).clamp(0, 1)
        x = x_k + xi * w
        t = xi * (1 - xi)
        denom = s + slope_sum * t
        num = d1 * xi**2 + 2 * s * t + d0 * (1 - xi) ** 2
        log_deriv = -(2 * torch.log(s) + torch.log(num) - 2 * torch.log(denom))
        return torch.where(inside, x, y), torch.where(inside, log_deriv, torch.zeros_like(y))


def _cumulative_knots(raw: Tensor, min_size: float, bound: float) -> Tensor:
    """Knot positions ``(..., K + 1)`` from ``K`` unconstrained sizes, spanning ``[-B, B]``."""
    k = raw.shape[-1]
    sizes = min_size + (1 - min_size * k) * torch.softmax(raw, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    knots = 2 * bound * knots - bound
    # Pin the ends exactly: cumulative sums drift by rounding, and the tails start at +-B.
    return torch.cat(
        [
            knots.new_full(knots[..., :1].shape, -bound),
            knots[..., 1:-1],
            knots.new_full(knots[..., :1].shape, bound),
        ],
        dim=-1,
    )


def _bin_index(knots: Tensor, v: Tensor) -> Tensor:
    """Index of the bin of ``knots (B, D, K + 1)`` that holds each ``v (B, D)``, in ``[0, K)``."""
    inner = knots[..., 1:-1].contiguous()
    return torch.searchsorted(inner, v.unsqueeze(-1).contiguous(), right=True).squeeze(-1)


def _gather_bin(xs: Tensor, ys: Tensor, ds: Tensor, idx: Tensor) -> tuple[Tensor, ...]:
    i0 = idx.unsqueeze(-1)
    i1 = i0 + 1

    def take(t: Tensor, i: Tensor) -> Tensor:
        return torch.gather(t, -1, i).squeeze(-1)

    x_k, x_k1 = take(xs, i0), take(xs, i1)
    y_k, y_k1 = take(ys, i0), take(ys, i1)
    return x_k, x_k1 - x_k, y_k, y_k1 - y_k, take(ds, i0), take(ds, i1)
