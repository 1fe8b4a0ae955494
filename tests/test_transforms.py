"""Registry-driven contract tests: every transform, float64, parameters off their identity init."""

from __future__ import annotations

import pytest
import torch

import flowforge.transforms as T
from helpers import autograd_ladj, perturb, state_round_trip

C = 3  # context features of the conditional constructors
H = (16, 16)

# name -> (constructor(features, context_features), takes a context)
TRANSFORMS = {
    "elementwise_affine": (lambda d, c: T.ElementwiseAffine(d), False),
    "actnorm": (lambda d, c: T.ActNorm(d), False),
    "reverse": (lambda d, c: T.Reverse(d), False),
    "random_permutation": (lambda d, c: T.RandomPermutation(d, seed=3), False),
    "lu_linear": (lambda d, c: T.LULinear(d, seed=1), False),
    "additive_coupling": (lambda d, c: T.AdditiveCoupling(d, hidden=H, context_features=c), True),
    "affine_coupling": (lambda d, c: T.AffineCoupling(d, hidden=H, context_features=c), True),
    "affine_coupling_flip": (
        lambda d, c: T.AffineCoupling(d, flip=True, hidden=H, context_features=c),
        True,
    ),
    "spline_coupling": (
        lambda d, c: T.SplineCoupling(d, bins=6, bound=3.0, hidden=H, context_features=c),
        True,
    ),
    "maf_affine": (
        lambda d, c: T.MaskedAffineAutoregressive(d, hidden=H, context_features=c),
        True,
    ),
    "maf_spline": (
        lambda d, c: T.MaskedSplineAutoregressive(
            d, bins=6, bound=3.0, hidden=H, context_features=c
        ),
        True,
    ),
    "iaf_affine": (
        lambda d, c: T.Inverse(T.MaskedAffineAutoregressive(d, hidden=H, context_features=c)),
        True,
    ),
    "compose": (
        lambda d, c: T.Compose(
            [
                T.ActNorm(d),
                T.SplineCoupling(d, bins=4, hidden=H, context_features=c),
                T.LULinear(d),
                T.MaskedAffineAutoregressive(d, hidden=H, context_features=c),
            ]
        ),
        True,
    ),
}
DIMS = [2, 5]


def build(name: str, d: int, conditional: bool = False) -> tuple[T.Transform, torch.Tensor | None]:
    make, takes_context = TRANSFORMS[name]
    c = C if conditional and takes_context else 0
    t = make(d, c).double()
    context = torch.randn(16, c, dtype=torch.float64) if c else None
    # Run once in training mode so data-dependent initialisation (ActNorm) happens first.
    t.forward_and_ladj(
        2 * torch.randn(64, d, dtype=torch.float64) + 1,
        None if c == 0 else torch.randn(64, c, dtype=torch.float64),
    )
    perturb(t, std=0.1)
    return t.eval(), context


def inputs(d: int) -> torch.Tensor:
    # Wide enough that spline inputs land both inside and outside the spline's interval.
    return 2.5 * torch.randn(16, d, dtype=torch.float64)


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_invertible(name, d, conditional):
    t, c = build(name, d, conditional)
    x = inputs(d)
    y, _ = t.forward_and_ladj(x, c)
    torch.testing.assert_close(t.inverse_and_ladj(y, c)[0], x, atol=1e-9, rtol=1e-9)
    x2, _ = t.inverse_and_ladj(x, c)
    torch.testing.assert_close(t.forward_and_ladj(x2, c)[0], x, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "context"])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("name", TRANSFORMS)
def test_ladj_matches_autograd(name, d, conditional):
    t, c = build(name, d, conditional)
    x = inputs(d)
    y, ladj = t.forward_and_ladj(x, c)
    assert ladj.shape == (x.shape[0],)
    torch.testing.assert_close(ladj, autograd_ladj(lambda v: t.forward_and_ladj(v, c)[0], x))
    _, inv_ladj = t.inverse_and_ladj(y, c)
    torch.testing.assert_close(inv_ladj, -ladj)
    torch.testing.assert_close(inv_ladj, autograd_ladj(lambda v: t.inverse_and_ladj(v, c)[0], y))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_gradients_reach_every_parameter(name):
    t, c = build(name, 5, conditional=True)
    x = inputs(5).requires_grad_()
    y, ladj = t.forward_and_ladj(x, c)
    x2, ladj2 = t.inverse_and_ladj(x, c)
    (y.square().sum() + ladj.sum() + x2.square().sum() + ladj2.sum()).backward()
    for pname, p in t.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", TRANSFORMS)
def test_state_dict_round_trip(name):
    t, c = build(name, 5, conditional=True)
    make, takes_context = TRANSFORMS[name]
    fresh = make(5, C if takes_context else 0).double().eval()
    state_round_trip(t, fresh)
    x = inputs(5)
    for a, b in zip(t.forward_and_ladj(x, c), fresh.forward_and_ladj(x, c), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n, (_, ctx) in TRANSFORMS.items() if ctx])
def test_context_changes_output(name):
    t, c = build(name, 5, conditional=True)
    x = inputs(5)
    y1, _l1 = t.forward_and_ladj(x, c)
    y2, _l2 = t.forward_and_ladj(x, c + 1.0)
    assert (y1 - y2).abs().max() > 1e-6
    # It reaches every transformed feature: for MADE the first in the order too, which only
    # the context can influence.
    changed = ((y1 - y2).abs() > 1e-9).any(dim=0)
    if isinstance(t, T.Coupling):
        assert changed[t.transformed_idx].all() and not changed[t.identity_idx].any()
    elif not isinstance(t, T.Compose):
        assert changed.all()


@pytest.mark.parametrize("name", ["reverse", "lu_linear", "spline_coupling", "maf_affine"])
def test_wrong_feature_count_is_an_error(name):
    t, _ = build(name, 5)
    with pytest.raises(ValueError, match=r"shape \(B, 5\)"):
        t.forward_and_ladj(torch.randn(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(B, 5\)"):
        t.inverse_and_ladj(torch.randn(4, 5, 1, dtype=torch.float64))


def test_compose_rejects_non_transforms():
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        T.Compose([T.Reverse(2), torch.nn.Linear(2, 2)])


def test_actnorm_initialises_from_first_batch_and_only_once():
    t = T.ActNorm(3)
    x = torch.randn(500, 3) * torch.tensor([0.5, 2.0, 10.0]) + torch.tensor([1.0, -3.0, 7.0])
    y, _ladj = t.forward_and_ladj(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(3), atol=1e-5, rtol=0)
    assert bool(t.initialized)
    loc = t.loc.detach().clone()
    t.forward_and_ladj(x + 100)
    torch.testing.assert_close(t.loc.detach(), loc)
    # A loaded ActNorm keeps its state: it is not initialised again on the next batch.
    fresh = state_round_trip(t, T.ActNorm(3))
    fresh.forward_and_ladj(x + 100)
    torch.testing.assert_close(fresh.loc.detach(), loc)


def test_lu_linear_weight_and_determinant():
    t = perturb(T.LULinear(4, seed=2).double(), std=0.3)
    w = t.weight()
    x = torch.randn(3, 4, dtype=torch.float64)
    y, ladj = t.forward_and_ladj(x)
    torch.testing.assert_close(y, x @ w.T + t.bias)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(w)[1].expand(3))


def test_permutation_rejects_non_permutations():
    with pytest.raises(ValueError, match="exactly once"):
        T.Permutation(torch.tensor([0, 0, 2]))


def test_coupling_needs_two_features():
    with pytest.raises(ValueError, match="at least 2 features"):
        T.AffineCoupling(1)
