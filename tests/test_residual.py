"""Residual flows: Lipschitz networks, residual log-det estimators and the residual block.

Estimators are checked against their exact counterparts in float64: the exact log-det against
``slogdet`` of the autograd Jacobian, stochastic estimators by their mean over many independent
draws (within 4 standard errors), the power series by its convergence as the order grows.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import pytest
import torch

import flowforge.transforms as T
from flowforge.estimators import (
    LogDetOptions,
    logdet_exact,
    logdet_roulette,
    logdet_series,
    probe,
    residual_logdet,
)
from flowforge.nets import (
    LipschitzMLP,
    LipSwish,
    SpectralLinear,
    converge_spectral_norms,
    frozen_power_iteration,
    lipschitz_estimate,
)
from flowforge.nets.lipschitz import LIPSWISH_BETA
from helpers import autograd_ladj, batch_jacobian, perturb, state_round_trip

F64 = torch.float64


def branch(d: int, coeff: float, context_features: int = 0, seed: int = 0) -> LipschitzMLP:
    """A float64 Lipschitz branch moved off its small initialisation, converged, in eval mode."""
    torch.manual_seed(seed)
    g = LipschitzMLP(d, hidden=(16, 16), coeff=coeff, context_features=context_features)
    g = perturb(g.double(), std=0.5, seed=seed)  # large weights: the normalisation is active
    converge_spectral_norms(g)
    return g.eval()


def tanh_map(d: int, lip: float, seed: int = 0):
    """g(x) = lip * tanh(Q x + b) with Q orthogonal: Lip(g) = lip, reached near Q x + b = 0."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=gen))[0]
    b = 0.2 * torch.randn(d, dtype=F64, generator=gen)
    return lambda x: lip * torch.tanh(x @ q.T + b)


def replicate(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` copies of the single point ``x (1, D)``: independent draws in one batch."""
    return x.expand(n, x.shape[1]).contiguous()


def truncated_series(g, x: torch.Tensor, order: int) -> torch.Tensor:
    """sum_{k<=order} (-1)^{k+1} tr(J^k) / k from explicit Jacobian powers, ``(B,)``."""
    jac = batch_jacobian(g, x)
    total, power = torch.zeros(x.shape[0], dtype=x.dtype), torch.eye(x.shape[1], dtype=x.dtype)
    for k in range(1, order + 1):
        power = power @ jac
        total = total + (-1) ** (k + 1) / k * power.diagonal(dim1=-2, dim2=-1).sum(-1)
    return total


def assert_unbiased(estimates: torch.Tensor, exact: torch.Tensor, dim: int = 0) -> None:
    """The mean of independent draws along ``dim`` is within 4 standard errors of ``exact``."""
    stderr = estimates.std(dim=dim) / estimates.shape[dim] ** 0.5
    assert (stderr > 0).all()  # a real estimator, not the exact value in disguise
    assert ((estimates.mean(dim=dim) - exact).abs() < 4 * stderr).all(), (
        estimates.mean(dim=dim),
        exact,
        stderr,
    )


# --- Lipschitz networks -----------------------------------------------------------------------


def test_lipschitz_estimate_of_a_linear_map_is_its_spectral_norm():
    a = torch.randn(4, 3, dtype=F64)
    estimate = lipschitz_estimate(lambda x: x @ a.T, torch.randn(5, 3, dtype=F64))
    torch.testing.assert_close(estimate, torch.linalg.matrix_norm(a, 2))


def test_lipswish_starts_at_its_beta():
    assert float(LipSwish().beta.detach()) == pytest.approx(LIPSWISH_BETA)
    for beta in (0.01, 1.0, 4.0, 1000.0):  # 1000: the inverse softplus must not overflow
        assert float(LipSwish(beta).beta.detach()) == pytest.approx(beta, rel=1e-6)
    for beta in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta must be a positive number"):
            LipSwish(beta)


def test_lipswish_is_1_lipschitz_for_every_beta():
    act = LipSwish(1.0).double()
    for raw in (-5.0, 0.0, 3.0):  # beta from 0.007 to 3
        with torch.no_grad():
            act.raw_beta.fill_(raw)
        assert act.beta > 0
        # The slope depends on beta * x only: cover beta * x in [-30, 30].
        x = (torch.linspace(-30, 30, 20_001, dtype=F64) / act.beta.detach()).requires_grad_(True)
        (slope,) = torch.autograd.grad(act(x).sum(), x)
        assert slope.abs().max() <= 1.0
        assert slope.abs().max() > 0.999  # the 1/1.1 scaling is nearly tight


@pytest.mark.parametrize("shape", [(3, 5), (7, 2), (16, 16)])
def test_spectral_linear_is_bounded_at_initialisation(shape):
    layer = perturb(SpectralLinear(*shape, coeff=0.8).double(), std=1.0)  # sigma well above 0.8
    assert torch.linalg.matrix_norm(layer.weight, 2) > 1.0
    layer.converge()
    norm = torch.linalg.matrix_norm(layer.normalized_weight(), 2)
    assert norm <= 0.8 * (1 + 1e-6)
    assert norm > 0.8 * (1 - 1e-6)  # rescaled to the bound, not below it
    # Power iteration approaches sigma from below.
    assert layer.compute_sigma() <= torch.linalg.matrix_norm(layer.weight, 2) * (1 + 1e-12)


def test_spectral_linear_leaves_small_weights_unchanged():
    layer = SpectralLinear(4, 3, coeff=0.9).double()
    with torch.no_grad():
        layer.weight.mul_(0.5 / torch.linalg.matrix_norm(layer.weight, 2))
    layer.converge()
    torch.testing.assert_close(layer.normalized_weight(), layer.weight)


def test_lipschitz_bound_holds_after_training_that_inflates_the_weights():
    torch.manual_seed(0)
    coeff = 0.9
    net = LipschitzMLP(3, hidden=(32, 32), coeff=coeff).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    x = torch.randn(256, 3, dtype=F64)
    for _ in range(50):  # one power-iteration step per call, as in training
        optimizer.zero_grad()
        (-net(x).square().mean()).backward()  # rewards large outputs: large weights
        optimizer.step()
    raw = [torch.linalg.matrix_norm(m.weight, 2) for m in net.linears]
    assert max(raw) > 3 * net.layer_coeff  # the normalisation is doing work
    # The tracked estimates (no extra iterations) are already close to the truth...
    for m in net.linears:
        assert torch.linalg.matrix_norm(m.normalized_weight(), 2) <= net.layer_coeff * (1 + 1e-3)
    # ... and converged ones hold the bound, layer by layer and for the network.
    converge_spectral_norms(net)
    for m in net.linears:
        assert torch.linalg.matrix_norm(m.normalized_weight(), 2) <= net.layer_coeff * (1 + 1e-6)
    net.eval()
    lip = lipschitz_estimate(net, 2 * torch.randn(64, 3, dtype=F64), steps=20)
    assert lip <= coeff * (1 + 1e-6)
    assert lip > 0.3 * coeff  # a trained network uses a fair part of its budget


def test_branch_applies_its_activation_to_the_input_first():
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=F64)
    for input_activation in (True, False):
        g = LipschitzMLP(3, hidden=(8, 8), coeff=0.9, input_activation=input_activation)
        g = g.double().eval()
        h = x if g.input_activation is None else g.input_activation(x)
        h = g.linears[0](h)
        for act, linear in zip(g.activations, g.linears[1:], strict=True):
            h = linear(act(h))
        torch.testing.assert_close(g(x), h)
        assert (g.input_activation is not None) == input_activation
    with pytest.raises(TypeError, match="input_activation must be True or False"):
        LipschitzMLP(3, input_activation=1)


def relative_jacobian_spread(g, x: torch.Tensor) -> float:
    """Mean |J(x) - mean J| / mean |J| over the points: 0 for an affine map."""
    jac = batch_jacobian(g, x)
    return float(
        (jac - jac.mean(0)).flatten(1).norm(dim=1).mean() / jac.flatten(1).norm(dim=1).mean()
    )


def test_default_branch_starts_far_from_affine():
    # The cause of the residual flow's slow start at lr 1e-3 (docs/benchmarks.md): a wide
    # spectrally normalised layer leaves each unit a small range, where LipSwish at beta 1 is
    # nearly linear. The default branch (input activation, LIPSWISH_BETA) starts nonlinear.
    x = torch.randn(500, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    old = {"input_activation": False, "activation": functools.partial(LipSwish, 1.0)}
    spreads = {"default": [], "old": []}
    for name, kwargs in (("default", {}), ("old", old)):
        for seed in range(3):
            torch.manual_seed(seed)
            g = LipschitzMLP(2, hidden=(128, 128), coeff=0.97, **kwargs)
            spreads[name].append(relative_jacobian_spread(g.double().eval(), x))
    assert min(spreads["default"]) > 0.4
    assert max(spreads["old"]) < 0.25


def test_power_iteration_runs_in_training_mode_only():
    layer = SpectralLinear(4, 3)
    perturb(layer, std=1.0)
    x = torch.randn(2, 4)
    # Evaluation converges the vectors once for the new weight, then leaves them alone.
    layer.eval()(x)
    u = layer.u.clone()
    torch.testing.assert_close(layer.compute_sigma(), torch.linalg.matrix_norm(layer.weight, 2))
    layer(x)
    torch.testing.assert_close(layer.u, u, rtol=0, atol=0)
    layer.train()
    with frozen_power_iteration(layer):
        layer(x)
    torch.testing.assert_close(layer.u, u, rtol=0, atol=0)
    assert not layer.power_iteration_frozen
    layer(x)
    assert not torch.equal(layer.u, u)


# --- log-det estimators -----------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
def test_exact_logdet_is_slogdet_of_the_autograd_jacobian(d):
    g = branch(d, coeff=0.9)
    x = torch.randn(8, d, dtype=F64)
    gx, logdet = residual_logdet(g, x, "exact")
    torch.testing.assert_close(gx, g(x))
    torch.testing.assert_close(logdet, autograd_ladj(lambda v: v + g(v), x))
    a = 0.3 * torch.randn(d, d, dtype=F64)
    _, linear = residual_logdet(lambda v: v @ a.T, x)
    torch.testing.assert_close(
        linear, torch.linalg.slogdet(torch.eye(d, dtype=F64) + a)[1].expand(8)
    )


def test_power_series_converges_to_exact_as_the_order_grows():
    d, lip = 4, 0.9
    g = tanh_map(d, lip)
    x = 0.3 * torch.randn(6, d, dtype=F64)  # where the Jacobian's eigenvalues are near 0.9
    exact = residual_logdet(g, x)[1]
    # Probing with every basis vector sums e_i^T J^k e_i to tr(J^k): the series without noise.
    xs = x.repeat_interleave(d, dim=0).requires_grad_(True)
    basis = torch.eye(d, dtype=F64).repeat(x.shape[0], 1)
    gx = g(xs)
    errors = []
    for order in (1, 4, 8, 16, 32, 64):
        series = logdet_series(gx, xs, basis, order).view(-1, d).sum(dim=1)
        torch.testing.assert_close(series, truncated_series(g, x, order))
        error = float((series - exact).abs().max().detach())
        # The documented bias bound D L^{n+1} / ((n + 1)(1 - L)).
        assert error <= d * lip ** (order + 1) / ((order + 1) * (1 - lip))
        errors.append(error)
    assert all(b < a for a, b in itertools.pairwise(errors[1:])), errors
    assert errors[0] > 0.5  # the first term alone is far off: the test can fail
    assert errors[3] < 0.1 and errors[-1] < 1e-3, errors


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_series_is_unbiased_for_its_truncation(kind):
    g = tanh_map(3, 0.9, seed=1)
    x = 0.3 * torch.randn(1, 3, dtype=F64)
    xs = replicate(x, 20_000)
    noise = probe(xs, kind, generator=torch.Generator().manual_seed(0))
    _, estimates = residual_logdet(g, xs, LogDetOptions("series", order=3, probe=kind))
    with torch.enable_grad():
        xg = xs.clone().requires_grad_(True)
        direct = logdet_series(g(xg), xg, noise, 3)
    assert direct.shape == (20_000,)
    exact_truncation = truncated_series(g, x, 3)
    assert_unbiased(estimates, exact_truncation)
    assert_unbiased(direct, exact_truncation)


@pytest.mark.parametrize(
    "options",
    [
        LogDetOptions("roulette", distribution="geometric", p=0.5, shared=False),
        LogDetOptions("roulette", distribution="geometric", p=0.3, n_exact_terms=0, shared=False),
        LogDetOptions("roulette", distribution="poisson", lam=2.0, shared=False),
        LogDetOptions("roulette", distribution="poisson", lam=1.0, n_exact_terms=1, shared=False),
    ],
    ids=["geometric", "geometric-no-exact-terms", "poisson", "poisson-one-exact-term"],
)
def test_roulette_mean_matches_exact_logdet(options):
    # Lip(g) = 0.6: finite variance for the geometric laws (L^2 < 1 - p); the Poisson tails
    # that make its variance infinite are, in practice, never drawn.
    g = tanh_map(3, 0.6, seed=2)
    x = 0.3 * torch.randn(1, 3, dtype=F64)
    exact = residual_logdet(g, x)[1]
    g_rng = torch.Generator().manual_seed(1)
    _, estimates = residual_logdet(g, replicate(x, 20_000), options, generator=g_rng)
    assert_unbiased(estimates, exact[0])
    # The random terms matter: the exact terms alone would fail the same comparison.
    exact_terms = truncated_series(g, x, options.n_exact_terms)
    assert (exact_terms - exact).abs() > 8 * estimates.std() / 20_000**0.5


def test_roulette_with_one_draw_per_batch_is_unbiased():
    g = tanh_map(2, 0.6, seed=3)
    x = 0.3 * torch.randn(3, 2, dtype=F64)
    exact = residual_logdet(g, x)[1]
    rng = torch.Generator().manual_seed(2)
    draws = torch.stack(
        [residual_logdet(g, x, LogDetOptions("roulette"), generator=rng)[1] for _ in range(400)]
    )
    assert_unbiased(draws, exact)
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        direct = logdet_roulette(g(xg), xg, probe(xg), distribution="poisson", n_exact_terms=3)
    assert direct.shape == (3,) and torch.isfinite(direct).all()


def per_sample_map(w: torch.Tensor, b: torch.Tensor):
    """g(x)_s = 0.6 tanh(W_s x_s + b): one weight matrix per sample, for per-draw gradients."""
    return lambda x: 0.6 * torch.tanh(torch.einsum("sij,sj->si", w, x) + b)


@pytest.mark.parametrize("estimator", ["roulette", "series"])
def test_neumann_gradient_matches_the_exact_gradient_in_expectation(estimator):
    d, n = 3, 20_000
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(d, d, dtype=F64, generator=gen)
    w = w / torch.linalg.matrix_norm(w, 2)  # Lip(g) <= 0.6
    b = 0.3 * torch.randn(d, dtype=F64, generator=gen)
    x = torch.randn(1, d, dtype=F64, generator=gen)
    order = 3
    # Reference: the exact log-det (roulette), or the exact truncated series (series, whose
    # gradient the Neumann estimator with the same truncation targets).
    w1, x1 = w[None].clone().requires_grad_(True), x.clone().requires_grad_(True)
    if estimator == "roulette":
        reference = logdet_exact(per_sample_map(w1, b)(x1), x1, create_graph=True)
    else:
        reference = truncated_series_differentiable(per_sample_map(w1, b), x1, order)
    ref_w, ref_x = torch.autograd.grad(reference.sum(), (w1, x1))
    # Estimates: every sample its own copy of W, so each gets its own gradient.
    ws = w.expand(n, d, d).clone().requires_grad_(True)
    xs = replicate(x, n).requires_grad_(True)
    options = LogDetOptions(estimator, order=order, shared=False, neumann_grad=True)
    _, logdet = residual_logdet(per_sample_map(ws, b), xs, options, generator=gen)
    grad_w, grad_x = torch.autograd.grad(logdet.sum(), (ws, xs))
    assert_unbiased(grad_w.reshape(n, -1), ref_w.reshape(-1))
    assert_unbiased(grad_x, ref_x[0])


def truncated_series_differentiable(g, x: torch.Tensor, order: int) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(lambda v: g(v).sum(0), x, create_graph=True)
    jac = jac.permute(1, 0, 2)
    total, power = x.new_zeros(x.shape[0]), torch.eye(x.shape[1], dtype=x.dtype)
    for k in range(1, order + 1):
        power = power @ jac
        total = total + (-1) ** (k + 1) / k * power.diagonal(dim1=-2, dim2=-1).sum(-1)
    return total


def test_neumann_gradient_keeps_the_value_and_only_one_product_in_the_graph():
    g = branch(3, coeff=0.9)
    x = torch.randn(5, 3, dtype=F64)
    values = []
    for neumann in (False, True):
        rng = torch.Generator().manual_seed(4)
        options = LogDetOptions("series", order=12, neumann_grad=neumann)
        values.append(residual_logdet(g, x, options, generator=rng)[1])
    torch.testing.assert_close(values[0], values[1])

    def graph_size(t: torch.Tensor) -> int:
        seen, stack = set(), [t.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions)
        return len(seen)

    sizes = [graph_size(v) for v in values]
    assert sizes[1] < sizes[0] / 4  # backpropagating through 12 products vs through one


def test_estimates_are_detached_under_no_grad_and_differentiable_otherwise():
    g = LipschitzMLP(2, hidden=(8,), coeff=0.9)
    x = torch.randn(4, 2)
    for name in ("exact", "series", "roulette"):
        with torch.no_grad():
            gx, logdet = residual_logdet(g, x, name)
        assert gx.grad_fn is None and logdet.grad_fn is None
        gx, logdet = residual_logdet(g, x, name)
        grads = torch.autograd.grad(logdet.sum(), list(g.parameters()), allow_unused=True)
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name
    gx, logdet = residual_logdet(g, x, "exact", create_graph=False)
    assert logdet.grad_fn is None and gx.grad_fn is not None


# --- residual block ---------------------------------------------------------------------------


def block(d: int = 3, context_features: int = 0, coeff: float = 0.9, **kwargs) -> T.ResidualBlock:
    torch.manual_seed(0)
    t = T.ResidualBlock(
        d, hidden=(16, 16), coeff=coeff, context_features=context_features, **kwargs
    )
    t = perturb(t.double(), std=0.5)
    converge_spectral_norms(t)
    return t.eval()


@pytest.mark.parametrize("context_features", [0, 2], ids=["plain", "context"])
def test_block_round_trip_and_ladj_against_autograd(context_features):
    t = block(4, context_features, tol=1e-12)
    x = 2 * torch.randn(10, 4, dtype=F64)
    c = torch.randn(10, context_features, dtype=F64) if context_features else None
    y, ladj = t.forward_and_ladj(x, c)
    assert t.ladj_is_exact and t.last_ladj_exact
    torch.testing.assert_close(y, x + t.branch(x, c) if c is not None else x + t.branch(x))
    torch.testing.assert_close(ladj, autograd_ladj(lambda v: t.forward_and_ladj(v, c)[0], x))
    x2, inv_ladj = t.inverse_and_ladj(y, c)
    torch.testing.assert_close(x2, x, atol=1e-10, rtol=0)
    torch.testing.assert_close(inv_ladj, -ladj)
    # The inverse's Jacobian, through its implicit-function gradient, is (I + J_g)^{-1}.
    torch.testing.assert_close(inv_ladj, autograd_ladj(lambda v: t.inverse_and_ladj(v, c)[0], y))


def test_fixed_point_inversion_reaches_its_tolerance():
    coeff, tol = 0.97, 1e-9
    t = block(3, coeff=coeff, tol=tol)
    x = 3 * torch.randn(64, 3, dtype=F64)
    with torch.no_grad():
        y = t(x)
        x2 = t.inverse(y)
        residual = (x2 + t.branch(x2) - y).abs().max()
    assert t.last_inverse_residual <= tol
    assert 1 < t.last_inverse_iterations < t.max_iter
    assert residual <= tol
    # ||x_k - x*|| <= L / (1 - L) ||x_k - x_{k-1}||, Euclidean; the update is at most tol per entry.
    bound = coeff / (1 - coeff) * math.sqrt(3) * tol
    assert (x2 - x).norm(dim=1).max() <= bound
    # float32 with the default tolerance.
    t32 = block(3, coeff=coeff).float()
    with torch.no_grad():
        y32 = t32(x.float())
        x32 = t32.inverse(y32)
        assert (x32 + t32.branch(x32) - y32).abs().max() <= t32.tol
    assert t32.last_inverse_residual <= t32.tol == 1e-5


def test_inverse_gradients_match_an_unrolled_fixed_point():
    t = block(3, context_features=2, tol=1e-12)
    y = torch.randn(6, 3, dtype=F64, requires_grad=True)
    c = torch.randn(6, 2, dtype=F64)
    weights = torch.randn(6, 3, dtype=F64)
    params = [y, *t.parameters()]
    implicit = torch.autograd.grad((t.inverse(y, c) * weights).sum(), params, allow_unused=True)
    x = y
    for _ in range(200):  # backpropagate through every iteration instead
        x = y - t.branch(x, c)
    unrolled = torch.autograd.grad((x * weights).sum(), params, allow_unused=True)
    for a, b in zip(implicit, unrolled, strict=True):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b)


def test_non_convergence_is_reported_with_the_residual():
    t = block(3, max_iter=1)
    y = torch.randn(5, 3, dtype=F64)
    with pytest.warns(RuntimeWarning, match=r"residual .* > tol .* after 1 iterations"):
        t.inverse(y)
    assert t.last_inverse_residual > t.tol and t.last_inverse_iterations == 1
    # An expansive branch, g(x) = 1.5 x, is no contraction: the iteration oscillates outwards.
    expansive = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        expansive.weight.copy_(1.5 * torch.eye(3))
    bad = T.ResidualBlock(3, branch=expansive, max_iter=50).eval()
    with pytest.warns(RuntimeWarning, match="did not converge"):
        bad.inverse(3 * torch.randn(5, 3))
    assert not bad.last_inverse_residual <= bad.tol


def test_training_mode_estimates_and_reaches_every_parameter():
    t = block(3, context_features=2).train()
    assert t.logdet_options.estimator == "roulette" and t.logdet_options.neumann_grad
    assert not t.ladj_is_exact
    x = torch.randn(32, 3, dtype=F64, requires_grad=True)
    c = torch.randn(32, 2, dtype=F64)
    y, ladj = t.forward_and_ladj(x, c)
    assert t.last_ladj_exact is False
    x2, inv_ladj = t.inverse_and_ladj(x, c)
    (y.square().sum() + ladj.sum() + x2.square().sum() + inv_ladj.sum()).backward()
    for name, p in t.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()
    t.eval()
    assert t.ladj_is_exact
    t.forward_and_ladj(x, c)
    assert t.last_ladj_exact is True


def test_default_eval_estimator_depends_on_the_dimension():
    assert T.ResidualBlock(64, hidden=(4,)).eval().ladj_is_exact
    wide = T.ResidualBlock(65, hidden=(4,)).eval()
    assert not wide.ladj_is_exact and wide.logdet_options.estimator == "roulette"
    custom = T.ResidualBlock(2, hidden=(4,), train_logdet="exact", eval_logdet="series")
    assert custom.ladj_is_exact and not custom.eval().ladj_is_exact


def test_block_state_dict_round_trip():
    t = block(3, context_features=2)
    fresh = T.ResidualBlock(3, hidden=(16, 16), coeff=0.9, context_features=2).double().eval()
    state_round_trip(t, fresh)
    torch.testing.assert_close(fresh.branch.linears[0].u, t.branch.linears[0].u, rtol=0, atol=0)
    x, c = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    for a, b in zip(t.forward_and_ladj(x, c), fresh.forward_and_ladj(x, c), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_arguments():
    for coeff in (0, 1, 1.5, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"coeff must be a number in \(0, 1\)"):
            T.ResidualBlock(2, coeff=coeff)
    with pytest.raises(ValueError, match="coeff must be a positive number"):
        SpectralLinear(2, 2, coeff=0.0)
    with pytest.raises(ValueError, match="n_power_iterations"):
        LipschitzMLP(2, n_power_iterations=0)
    with pytest.raises(ValueError, match="hidden"):
        LipschitzMLP(2, hidden=())
    with pytest.raises(ValueError, match="estimator must be one of"):
        T.ResidualBlock(2, train_logdet="hutchinson")
    with pytest.raises(TypeError, match="LogDetOptions"):
        T.ResidualBlock(2, eval_logdet=3)
    with pytest.raises(ValueError, match="tol"):
        T.ResidualBlock(2, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        T.ResidualBlock(2, max_iter=0)
    with pytest.raises(TypeError, match="branch"):
        T.ResidualBlock(2, branch=lambda x: x)
    bad_options = [
        ({"order": 0}, "order"),
        ({"n_exact_terms": -1}, "n_exact_terms"),
        ({"distribution": "binomial"}, "distribution"),
        ({"p": 0.0}, "p must be"),
        ({"p": 1.0}, "p must be"),
        ({"lam": 0.0}, "lam must be"),
        ({"probe": "uniform"}, "probe must be"),
    ]
    for kwargs, message in bad_options:
        with pytest.raises(ValueError, match=message):
            LogDetOptions("roulette", **kwargs)
    with pytest.raises(ValueError, match="neumann_grad applies"):
        LogDetOptions("exact", neumann_grad=True)
    t = T.ResidualBlock(3, hidden=(4,))
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        t.forward_and_ladj(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        t.inverse_and_ladj(torch.randn(4, 3, 1))
    with pytest.raises(ValueError, match="context"):
        t.forward_and_ladj(torch.randn(4, 3), torch.randn(4, 2))
    conditional = T.ResidualBlock(3, hidden=(4,), context_features=2)
    with pytest.raises(ValueError, match=r"context must have shape \(4, 2\)"):
        conditional.forward_and_ladj(torch.randn(4, 3), torch.randn(4, 3))
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="noise must have the shape"):
        logdet_series(x * 2, x, torch.ones(2, 2), 3)
    with pytest.raises(ValueError, match="require grad"):
        logdet_exact(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"g\(x\) and x must both have shape"):
        residual_logdet(lambda v: v.sum(1), torch.randn(2, 3))


# --- the resflow model ------------------------------------------------------------------------


def test_resflow_says_when_its_log_prob_is_an_estimate():
    import flowforge as ff

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    exact = ff.models.create("resflow", dim=3, layers=2, hidden=(8,)).eval()
    assert exact.log_prob_is_exact
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        exact.log_prob(x)  # exact: no warning
    torch.manual_seed(0)
    estimated = ff.models.create(
        "resflow", dim=3, layers=2, hidden=(8,), eval_estimator="estimate"
    ).eval()
    assert not estimated.log_prob_is_exact
    with pytest.warns(RuntimeWarning, match="stochastic estimate"):
        lp = estimated.log_prob(x)
    # Unbiased: over many draws its mean is within 4 standard errors of the exact value.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        draws = torch.stack([lp] + [estimated.log_prob(x) for _ in range(299)]).detach()
    se = draws.std(dim=0) / math.sqrt(len(draws))
    assert ((draws.mean(dim=0) - exact.log_prob(x).detach()).abs() < 4 * se + 1e-6).all()
    # Training always estimates; beyond 64 features "auto" evaluates by the estimator too.
    assert not exact.train().log_prob_is_exact
    wide = ff.models.create("resflow", dim=65, layers=1, hidden=(8,)).eval()
    assert not wide.log_prob_is_exact


def test_resflow_branch_options_reach_every_block():
    import flowforge as ff

    def swishes(model):
        return [m for m in model.modules() if isinstance(m, LipSwish)]

    default = ff.models.create("resflow", dim=2, layers=2, hidden=(8,))
    blocks = [m for m in default.modules() if isinstance(m, T.ResidualBlock)]
    assert len(blocks) == 2 and all(b.branch.input_activation is not None for b in blocks)
    assert len(swishes(default)) == 2 * 2  # input + one hidden activation per block
    assert all(float(a.beta.detach()) == pytest.approx(LIPSWISH_BETA) for a in swishes(default))
    old = ff.models.create(
        "resflow", dim=2, layers=2, hidden=(8,), input_activation=False, beta=1.0
    )
    assert len(swishes(old)) == 2
    assert all(float(a.beta.detach()) == pytest.approx(1.0) for a in swishes(old))
    with pytest.raises(ValueError, match="beta must be a positive number"):
        ff.models.create("resflow", dim=2, beta=0.0)


def test_resflow_sampling_skips_the_log_det():
    import flowforge as ff

    model = ff.models.create("resflow", dim=2, layers=2, hidden=(8,)).eval()
    block = next(m for m in model.modules() if isinstance(m, T.ResidualBlock))
    block.last_ladj_exact = None
    model.sample(5)
    model.encode(torch.randn(5, 2))
    assert block.last_ladj_exact is None  # decode/encode never computed a log-det
    model.log_prob(torch.randn(5, 2))
    assert block.last_ladj_exact is True
