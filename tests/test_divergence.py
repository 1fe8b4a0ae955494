"""Divergence estimators against the trace of the autograd Jacobian."""

from __future__ import annotations

import pytest
import torch

from flowforge.estimators import (
    divergence_exact,
    divergence_hutchinson,
    field_and_divergence,
    probe,
)
from helpers import batch_jacobian


def make_field(d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d, 32, generator=g, dtype=torch.float64) / d**0.5
    w2 = torch.randn(32, d, generator=g, dtype=torch.float64) / 32**0.5
    return lambda x: torch.tanh(x @ w1) @ w2 + x**3 / 10


@pytest.mark.parametrize("d", [1, 2, 7])
def test_exact_divergence_is_the_jacobian_trace(d):
    field = make_field(d)
    x = torch.randn(5, d, dtype=torch.float64)
    v, div = field_and_divergence(field, x)
    torch.testing.assert_close(v, field(x))
    trace = batch_jacobian(field, x).diagonal(dim1=1, dim2=2).sum(-1)
    torch.testing.assert_close(div, trace)


def test_linear_field_has_the_trace_of_its_matrix():
    a = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    _, div = field_and_divergence(lambda z: z @ a.T, x)
    torch.testing.assert_close(div, torch.trace(a).expand(3))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_mean_matches_exact_within_its_standard_error(kind):
    field = make_field(6, seed=1)
    x = torch.randn(1, 6, dtype=torch.float64).expand(20_000, 6).contiguous()
    g = torch.Generator().manual_seed(0)
    noise = probe(x, kind, generator=g)
    _, estimates = field_and_divergence(field, x, "hutchinson", noise)
    _, exact = field_and_divergence(field, x[:1])
    stderr = estimates.std() / estimates.numel() ** 0.5
    assert abs(estimates.mean() - exact[0]) < 4 * stderr
    assert estimates.std() > 0  # a real estimator, not the exact value in disguise


def test_divergence_is_differentiable_when_asked():
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    _, div = field_and_divergence(lambda z: torch.tanh(z @ w), x, create_graph=True)
    (grad,) = torch.autograd.grad(div.sum(), w)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_probes_have_identity_second_moment():
    x = torch.zeros(50_000, 3)
    for kind in ("rademacher", "gaussian"):
        e = probe(x, kind, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(e.T @ e / e.shape[0], torch.eye(3), atol=0.03, rtol=0)
    assert set(probe(x).unique().tolist()) == {-1.0, 1.0}


def test_bad_arguments():
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="probe kind"):
        probe(x, "uniform")
    with pytest.raises(ValueError, match="method must be"):
        field_and_divergence(lambda z: z, x, "trace")
    with pytest.raises(ValueError, match="needs a probe"):
        field_and_divergence(lambda z: z, x, "hutchinson")
    with pytest.raises(ValueError, match="shape"):
        divergence_exact(x.sum(1), x)
    with pytest.raises(ValueError, match="noise must have the shape"):
        divergence_hutchinson(x * 2, x, torch.ones(2, 2))
    with pytest.raises(ValueError, match="require grad"):
        divergence_exact(torch.zeros(2, 3), torch.zeros(2, 3))
