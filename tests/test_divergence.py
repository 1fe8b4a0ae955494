"""Divergence estimators against the trace of the autograd Jacobian."""

from __future__ import annotations

import pytest
import torch

from flowforge.estimators import (
    divergence_and_frobenius,
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


# -- events of any shape ----------------------------------------------------------------------
IMAGE = (2, 3, 3)


def make_image_field(seed: int = 0):
    """A per-sample map of (B, 2, 3, 3) events that mixes every entry with every other."""
    d = 18
    flat = make_field(d, seed)
    return lambda x: flat(x.flatten(1)).view(x.shape)


def image_jacobian(field, x):
    """(B, 18, 18) Jacobians of the flattened events, by autograd."""
    return batch_jacobian(lambda z: field(z.view(-1, *IMAGE)).flatten(1), x.flatten(1))


def test_exact_divergence_at_image_shape_is_the_jacobian_trace():
    field = make_image_field()
    x = torch.randn(4, *IMAGE, dtype=torch.float64)
    v, div = field_and_divergence(field, x)
    assert v.shape == x.shape and div.shape == (4,)
    jac = image_jacobian(field, x)
    torch.testing.assert_close(div, jac.diagonal(dim1=1, dim2=2).sum(-1))
    # The Frobenius norm from the same batched rows is ||J||_F^2.
    xg = x.clone().requires_grad_(True)
    div2, frob = divergence_and_frobenius(field(xg), xg)
    torch.testing.assert_close(div2, div)
    torch.testing.assert_close(frob, jac.square().sum(dim=(1, 2)))


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_at_image_shape_is_the_probe_quadratic_form(kind):
    # For one probe, Hutchinson's estimate is exactly eps^T J eps over the flattened event and
    # its Frobenius estimate ||eps^T J||^2: a sum over every event dimension, not the first.
    field = make_image_field(seed=2)
    x = torch.randn(3, *IMAGE, dtype=torch.float64, requires_grad=True)
    noise = probe(x, kind, generator=torch.Generator().manual_seed(0))
    assert noise.shape == x.shape
    jac = image_jacobian(field, x.detach())
    eps = noise.flatten(1)
    ej = torch.einsum("bi,bij->bj", eps, jac)
    torch.testing.assert_close(divergence_hutchinson(field(x), x, noise), (ej * eps).sum(1))
    div, frob = divergence_and_frobenius(field(x), x, "hutchinson", noise)
    torch.testing.assert_close(div, (ej * eps).sum(1))
    torch.testing.assert_close(frob, ej.square().sum(1))


def test_hutchinson_mean_at_image_shape_matches_exact():
    field = make_image_field(seed=3)
    x = torch.randn(1, *IMAGE, dtype=torch.float64).expand(20_000, *IMAGE).contiguous()
    noise = probe(x, generator=torch.Generator().manual_seed(1))
    _, estimates = field_and_divergence(field, x, "hutchinson", noise)
    _, exact = field_and_divergence(field, x[:1])
    stderr = estimates.std() / estimates.numel() ** 0.5
    assert abs(estimates.mean() - exact[0]) < 4 * stderr and estimates.std() > 0


def test_probes_at_image_shape_have_identity_second_moment():
    x = torch.zeros(40_000, 1, 2, 2)
    for kind in ("rademacher", "gaussian"):
        e = probe(x, kind, generator=torch.Generator().manual_seed(2))
        assert e.shape == x.shape
        e = e.flatten(1)
        torch.testing.assert_close(e.T @ e / e.shape[0], torch.eye(4), atol=0.03, rtol=0)


def test_vector_divergences_are_the_formulas_of_before_bit_for_bit():
    # The (B, D) path is unchanged: the same batched rows and reductions as flowforge 0.1.
    field = make_field(5, seed=4)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    v = field(x)
    basis = torch.eye(5, dtype=x.dtype).unsqueeze(1).expand(5, 7, 5)
    (rows,) = torch.autograd.grad(v, x, basis, retain_graph=True, is_grads_batched=True)
    noise = probe(x)
    (vjp,) = torch.autograd.grad(v, x, noise, retain_graph=True)
    assert torch.equal(divergence_exact(field(x), x), torch.einsum("ibi->b", rows))
    div, frob = divergence_and_frobenius(field(x), x)
    assert torch.equal(div, torch.einsum("ibi->b", rows))
    assert torch.equal(frob, rows.square().sum(dim=(0, 2)))
    assert torch.equal(divergence_hutchinson(field(x), x, noise), (vjp * noise).sum(dim=1))
    div, frob = divergence_and_frobenius(field(x), x, "hutchinson", noise)
    assert torch.equal(div, (vjp * noise).sum(dim=1))
    assert torch.equal(frob, vjp.square().sum(dim=1))


def test_image_shaped_arguments_are_checked():
    x = torch.randn(2, *IMAGE, requires_grad=True)
    with pytest.raises(ValueError, match=r"same shape; got v \(2, 18\)"):
        divergence_exact(x.flatten(1) * 2, x)
    with pytest.raises(ValueError, match="noise must have the shape of x"):
        divergence_hutchinson(x * 2, x, torch.ones(2, 18))
    with pytest.raises(ValueError, match=r"\(B, \*event\)"):
        divergence_exact(x[0, 0, 0] * 2, x[0, 0, 0])
