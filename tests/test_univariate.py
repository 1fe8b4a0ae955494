"""The elementwise transformers, the rational-quadratic spline above all."""

from __future__ import annotations

import pytest
import torch

from flowforge.transforms import AffineTransformer, RQSplineTransformer


def spline_params(b: int, d: int, bins: int, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(b, d, 3 * bins - 1, dtype=torch.float64)


def test_spline_is_identity_at_zero_parameters():
    s = RQSplineTransformer(bins=5, bound=3.0)
    x = torch.linspace(-6, 6, 101, dtype=torch.float64).view(-1, 1)
    y, log_deriv = s.forward_and_log_deriv(x, torch.zeros(101, 1, 14, dtype=torch.float64))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_deriv, torch.zeros_like(x))


def test_spline_is_monotone_and_maps_the_interval_onto_itself():
    s = RQSplineTransformer(bins=8, bound=2.0)
    n = 200_001  # fine enough for the trapezoid rule inside the narrowest bins
    x = torch.linspace(-2, 2, n, dtype=torch.float64).view(-1, 1)
    params = spline_params(1, 1, 8).expand(n, 1, 23)
    y, log_deriv = s.forward_and_log_deriv(x, params)
    assert (y.diff(dim=0) > 0).all()
    torch.testing.assert_close(y[[0, -1]], x[[0, -1]])
    # The log-derivative integrates to the map itself (trapezoid rule on a fine grid).
    integral = torch.cumulative_trapezoid(log_deriv.exp().squeeze(1), x=x.squeeze(1))
    torch.testing.assert_close(integral, (y - y[0]).squeeze(1)[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value", [1e4, -1e6, 5.0 + 1e-12, 1e30])
def test_spline_tails_far_outside_the_bound_are_finite_and_invertible(value):
    s = RQSplineTransformer(bins=8, bound=5.0)
    x = torch.full((4, 3), value, dtype=torch.float64)
    params = spline_params(4, 3, 8)
    y, log_deriv = s.forward_and_log_deriv(x, params)
    assert torch.isfinite(y).all() and torch.isfinite(log_deriv).all()
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(log_deriv, torch.zeros_like(x))
    x2, _ = s.inverse_and_log_deriv(y, params)
    torch.testing.assert_close(x2, x)


def test_spline_is_continuous_at_the_bound_with_slope_one():
    s = RQSplineTransformer(bins=8, bound=5.0)
    params = spline_params(1, 1, 8).expand(4, 1, 23)
    x = torch.tensor(
        [[-5.0 - 1e-9], [-5.0 + 1e-9], [5.0 - 1e-9], [5.0 + 1e-9]], dtype=torch.float64
    )
    y, log_deriv = s.forward_and_log_deriv(x, params)
    torch.testing.assert_close(y, x, atol=1e-8, rtol=0)
    # Within 1e-9 of the knot the slope moves by at most 1e-9 times the spline's curvature.
    torch.testing.assert_close(log_deriv, torch.zeros_like(x), atol=1e-4, rtol=0)


def test_spline_inverts_at_the_knots():
    s = RQSplineTransformer(bins=6, bound=1.0)
    params = spline_params(1, 1, 6)
    xs, ys, _ = s._knots(params)
    knots = xs.reshape(-1, 1)
    p = params.expand(knots.shape[0], 1, params.shape[-1])
    y, _ = s.forward_and_log_deriv(knots, p)
    torch.testing.assert_close(y, ys.reshape(-1, 1))
    torch.testing.assert_close(s.inverse_and_log_deriv(y, p)[0], knots)


def test_spline_float32_with_extreme_parameters_stays_finite_and_consistent():
    s = RQSplineTransformer(bins=8, bound=5.0)
    x = 4 * torch.randn(1000, 2)
    params = 8 * torch.randn(1000, 2, 23)
    y, log_deriv = s.forward_and_log_deriv(x, params)
    x2, inv = s.inverse_and_log_deriv(y, params)
    assert torch.isfinite(log_deriv).all() and torch.isfinite(inv).all()
    # Where the spline is nearly flat, float32 cannot recover x from y (the map is that
    # ill-conditioned), so check the inverse where it is well defined: it maps back onto y.
    torch.testing.assert_close(s.forward_and_log_deriv(x2, params)[0], y, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(inv, -s.forward_and_log_deriv(x2, params)[1], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 1}, "bins"),
        ({"bound": 0.0}, "bound"),
        ({"bins": 8, "min_width": 0.2}, "min_width"),
        ({"min_derivative": 1.5}, "min_derivative"),
    ],
)
def test_spline_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RQSplineTransformer(**kwargs)


def test_affine_scale_is_bounded():
    a = AffineTransformer(scale_bound=2.0)
    x = torch.ones(3, 1)
    params = torch.tensor([[[0.0, 1e6]], [[0.0, -1e6]], [[0.0, 0.0]]])
    y, log_deriv = a.forward_and_log_deriv(x, params)
    assert log_deriv.abs().max() <= 2.0
    torch.testing.assert_close(y.squeeze(1), torch.exp(log_deriv).squeeze(1))
    with pytest.raises(ValueError, match="scale_bound"):
        AffineTransformer(0.0)
