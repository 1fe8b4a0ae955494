"""Continuous normalizing flows against ground truth: linear and time-dependent fields whose
flows, densities and regularisers are known in closed form; Hutchinson against exact; adjoint
against backpropagation; solver options; NFE logging in training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import flowforge as ff
from flowforge.dynamics import CNF, SolverOptions, total_nfe

TIGHT = {"rtol": 1e-10, "atol": 1e-10}


class Linear(nn.Module):
    """v(t, x) = A x: the flow is x_t = expm(t A) x_0."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t, x, context=None):
        return x @ self.a.T


class Scaling(nn.Module):
    """v(t, x) = t x: x_1 = exp(1/2) x_0, divergence t D, so log-det D/2."""

    def forward(self, t, x, context=None):
        return t * x


def linear_cnf(d: int = 3, seed: int = 0, **kw) -> tuple[CNF, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = 0.5 * torch.randn(d, d, generator=g, dtype=torch.float64)
    base = ff.distributions.StandardNormal((d,))
    model = CNF(Linear(a), base, solver=SolverOptions("dopri5", None, **TIGHT), **kw).double()
    return model, a


def gaussian_log_prob(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x = expm(A) z with z ~ N(0, I): log p(x) = log N(expm(-A) x) - tr A."""
    z = x @ torch.linalg.matrix_exp(-a).T
    d = x.shape[1]
    return -0.5 * (z**2).sum(1) - 0.5 * d * math.log(2 * math.pi) - torch.trace(a)


def test_linear_field_pushes_a_gaussian_to_the_known_gaussian():
    model, a = linear_cnf()
    x = torch.randn(16, 3, dtype=torch.float64)
    expm = torch.linalg.matrix_exp(a)
    torch.testing.assert_close(model.encode(x), x @ torch.linalg.inv(expm).T, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(model.decode(x), x @ expm.T, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(model.log_prob(x), gaussian_log_prob(x, a), rtol=1e-8, atol=1e-8)
    samples, log_p = model.sample_and_log_prob(16)
    torch.testing.assert_close(log_p, gaussian_log_prob(samples, a), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(("method", "steps", "tol"), [("rk4", 50, 1e-7), ("midpoint", 400, 1e-4)])
def test_fixed_step_solvers_converge_to_the_closed_form(method, steps, tol):
    model, a = linear_cnf()
    x = torch.randn(16, 3, dtype=torch.float64)
    got = model.log_prob(x, method=method, steps=steps)
    torch.testing.assert_close(got, gaussian_log_prob(x, a), rtol=tol, atol=tol)


def test_time_dependent_field_runs_forward_in_time():
    # With t = 0 the base: decode multiplies by exp(1/2); a reversed clock would not.
    d = 4
    model = CNF(Scaling(), ff.distributions.StandardNormal((d,)), solver=SolverOptions(**TIGHT))
    model = model.double()
    x = torch.randn(5, d, dtype=torch.float64)
    torch.testing.assert_close(model.decode(x), math.exp(0.5) * x)
    z = math.exp(-0.5) * x
    expected = model.base.log_prob(z) - d / 2
    torch.testing.assert_close(model.log_prob(x), expected)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_log_prob_is_unbiased(kind):
    model, a = linear_cnf(probe=kind)
    x = torch.randn(4, 3, dtype=torch.float64).repeat(2000, 1)
    torch.manual_seed(0)
    draws = model.log_prob(x, divergence="hutchinson").reshape(2000, 4)
    exact = gaussian_log_prob(x[:4], a)
    mean, stderr = draws.mean(0), draws.std(0) / math.sqrt(2000)
    assert (stderr > 0).all()  # the estimate does vary
    assert ((mean - exact).abs() < 4 * stderr).all(), (mean - exact) / stderr


def test_hutchinson_training_loss_is_unbiased_for_the_nll():
    model, a = linear_cnf(train_solver=SolverOptions(**TIGHT))
    x = torch.randn(4000, 3, dtype=torch.float64)
    torch.manual_seed(0)
    per_row = []
    for chunk in x.split(400):
        per_row.append(model.loss(chunk).detach())
    exact = -gaussian_log_prob(x, a).mean()
    # Each loss is a mean over 400 rows, each with its own estimate; 10 independent chunks.
    losses = torch.stack(per_row)
    exact_chunks = torch.stack([-gaussian_log_prob(c, a).mean() for c in x.split(400)])
    err = losses - exact_chunks
    assert err.abs().max() > 1e-6  # it is an estimate
    assert err.mean().abs() < 4 * err.std() / math.sqrt(len(err)) + 1e-12
    torch.testing.assert_close(exact_chunks.mean(), exact)


def test_regularisers_match_their_closed_forms():
    model, a = linear_cnf(
        train_solver=SolverOptions(**TIGHT), train_divergence="exact", kinetic=0.3, jacobian=0.2
    )
    x = torch.randn(6, 3, dtype=torch.float64)
    result = model.objective(ff.Batch(x))
    loss, terms = result.loss, {k: float(v) for k, v in result.terms.items()}
    # Jacobian of v = A x is A everywhere: int_0^1 ||A||_F^2 dt.
    assert terms["jacobian"] == pytest.approx(float((a**2).sum()), rel=1e-8)
    # Kinetic energy: x_t = expm((t - 1) A) x; int_0^1 ||A x_t||^2 dt by Simpson's rule.
    ts = torch.linspace(0, 1, 2001, dtype=torch.float64)
    speeds = torch.stack(
        [((x @ torch.linalg.matrix_exp((t - 1) * a).T) @ a.T).square().sum(1) for t in ts]
    )
    w = torch.ones(2001, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    kinetic = ((w[:, None] * speeds).sum(0) / (3 * 2000)).mean()
    assert terms["kinetic"] == pytest.approx(float(kinetic), rel=1e-7)
    nll = -gaussian_log_prob(x, a).mean()
    assert terms["nll"] == pytest.approx(float(nll), rel=1e-8)
    assert float(loss.detach()) == pytest.approx(
        float(nll) + 0.3 * float(kinetic) + 0.2 * float((a**2).sum())
    )


def test_hutchinson_frobenius_estimate_is_unbiased():
    # ||eps^T A||^2 does not depend on x or t: one Euler step integrates it exactly.
    model, a = linear_cnf(train_solver=SolverOptions("euler", 1), jacobian=1.0)
    torch.manual_seed(1)
    estimates = []
    for _ in range(300):
        result = model.objective(ff.Batch(torch.randn(32, 3, dtype=torch.float64)))
        estimates.append(float(result.terms["jacobian"]))
    est = torch.tensor(estimates, dtype=torch.float64)
    exact = float((a**2).sum())
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(est))


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_adjoint_gradients_match_backpropagation(divergence):
    torch.manual_seed(0)
    net = ff.models.create("ffjord", dim=3, hidden=(16, 16), **TIGHT).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(32, 3, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        net.train_solver = SolverOptions("dopri5", None, adjoint=adjoint, **TIGHT)
        net.train_divergence = divergence
        net.zero_grad()
        torch.manual_seed(7)  # the same Hutchinson probe in both runs
        net.loss(x).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def test_solver_options_choose_the_solver_and_count_evaluations():
    model = ff.models.create("ffjord", dim=2, hidden=(8,))
    z = torch.randn(5, 2)
    model.decode(z, steps=8)  # steps alone: Euler
    assert model.last_nfe == 8
    model.decode(z, method="rk4", steps=3)
    assert model.last_nfe == 12
    model.log_prob(z, method="midpoint", steps=5, divergence="hutchinson")
    assert model.last_nfe == 10
    before = total_nfe(model)
    model.sample(4, method="euler", steps=6)
    assert total_nfe(model) - before == 6
    assert total_nfe(ff.models.create("nsf", dim=2)) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"solver": "fast"}, TypeError, "unknown solver option 'solver'; CNF takes method"),
        ({"method": "rk45"}, ValueError, "method must be one of euler"),
        ({"method": "rk4"}, ValueError, "steps must be an int >= 1"),
        ({"steps": 0}, ValueError, "steps must be an int >= 1"),
        ({"rtol": -1.0}, ValueError, "rtol must be a positive number"),
        ({"divergence": "exactly"}, ValueError, "divergence must be one of exact, hutchinson"),
    ],
)
def test_bad_solver_options_are_named(kwargs, error, message):
    model = ff.models.create("ffjord", dim=2, hidden=(8,))
    x = torch.randn(3, 2)
    for call in (lambda: model.log_prob(x, **kwargs), lambda: model.sample(3, **kwargs)):
        with pytest.raises(error, match=message):
            call()


def test_discrete_flows_refuse_solver_options():
    model = ff.models.create("nsf", dim=2)
    with pytest.raises(TypeError, match=r"Flow is not a continuous-time model.*got steps"):
        model.sample(3, steps=8)
    with pytest.raises(TypeError, match="not a continuous-time model"):
        model.log_prob(torch.zeros(2, 2), method="euler")


def test_standardize_passes_solver_options_through():
    inner = ff.models.create("ffjord", dim=2, hidden=(8,))
    model = ff.data.Standardize(inner, torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    assert model.solver_keys == inner.solver_keys
    x = model.sample(4, steps=3)
    assert x.shape == (4, 2) and inner.last_nfe == 3
    lp = model.log_prob(x, method="rk4", steps=2)
    assert inner.last_nfe == 8
    expected = inner.log_prob((x - model.mean) / model.std, method="rk4", steps=2)
    torch.testing.assert_close(lp, expected - torch.log(model.std).sum())
    _, log_p = model.sample_and_log_prob(3, steps=5)
    assert inner.last_nfe == 5 and log_p.shape == (3,)


def test_ffjord_learns_a_correlated_gaussian():
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    chol = torch.linalg.cholesky(cov)
    data = torch.randn(4000, 2) @ chol.T + torch.tensor([1.0, -1.0])
    model = ff.models.create(
        "ffjord", dim=2, hidden=(32, 32), divergence="exact", method="rk4", steps=4
    )
    config = ff.train.TrainConfig(
        steps=200, batch_size=128, lr=1e-2, progress=False, ema_decay=0, device="cpu"
    )
    ff.train.train(model, data, config)
    test = torch.randn(2000, 2) @ chol.T + torch.tensor([1.0, -1.0])
    entropy = 0.5 * math.log(torch.linalg.det(2 * math.pi * math.e * cov).item())
    nll = ff.metrics.nll(model.eval(), test).mean
    assert nll < entropy + 0.1, (nll, entropy)


@pytest.mark.parametrize("adjoint", [False, True])
def test_training_logs_the_nfe_of_every_step(tmp_path, adjoint):
    model = ff.models.create(
        "ffjord", dim=2, hidden=(8,), kinetic=0.01, jacobian=0.01, adjoint=adjoint
    )
    config = ff.train.TrainConfig(steps=3, batch_size=16, log_every=1, progress=False, device="cpu")
    ff.train.train(model, torch.randn(64, 2), config, run_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert r["nfe"] >= 6 and r["nfe_max"] == r["nfe"]  # dopri5: at least one step
        assert (r["nfe_backward"] > 0) == adjoint
        assert {"loss_nll", "loss_kinetic", "loss_jacobian"} <= set(r)
    # The logged loss is the NLL plus the weighted regularisers.
    r = records[-1]
    expected = r["loss_nll"] + 0.01 * (r["loss_kinetic"] + r["loss_jacobian"])
    assert r["loss"] == pytest.approx(expected, rel=1e-5)


# -- events of any shape ----------------------------------------------------------------------
SHAPE = (1, 4, 4)


def create(name: str, **options) -> ff.Model:
    """The recipe ``name`` built for (1, 4, 4) images."""
    return ff.models.create(name, shape=SHAPE, **options)


class ImageLinear(Linear):
    """v(t, x) = A vec(x), reshaped to the event: a linear field on images."""

    def forward(self, t, x, context=None):
        return super().forward(t, x.flatten(1)).view(x.shape)


def image_linear_cnf(seed: int = 0, **kw) -> tuple[CNF, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = 0.3 * torch.randn(16, 16, generator=g, dtype=torch.float64)
    base = ff.distributions.StandardNormal(SHAPE)
    model = CNF(ImageLinear(a), base, solver=SolverOptions(**TIGHT), **kw).double()
    return model, a


def test_linear_field_at_image_shape_gives_the_closed_form_gaussian():
    model, a = image_linear_cnf()
    assert model.event_shape == SHAPE
    x = torch.randn(6, *SHAPE, dtype=torch.float64)
    expm = torch.linalg.matrix_exp(a)
    flat = x.flatten(1)
    z = model.encode(x)
    assert z.shape == x.shape
    torch.testing.assert_close(z.flatten(1), flat @ torch.linalg.inv(expm).T, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(model.decode(z), x, rtol=1e-8, atol=1e-8)
    # The trace of the Jacobian over all 16 entries, not over the channel axis alone.
    torch.testing.assert_close(model.log_prob(x), gaussian_log_prob(flat, a), rtol=1e-8, atol=1e-8)
    samples, log_p = model.sample_and_log_prob(5)
    assert samples.shape == (5, *SHAPE)
    expected = gaussian_log_prob(samples.flatten(1), a)
    torch.testing.assert_close(log_p, expected, rtol=1e-8, atol=1e-8)
    assert model.sample(3).shape == (3, *SHAPE)


def test_hutchinson_log_prob_at_image_shape_is_unbiased():
    model, a = image_linear_cnf()
    x = torch.randn(2, *SHAPE, dtype=torch.float64).repeat(1000, 1, 1, 1)
    torch.manual_seed(0)
    draws = model.log_prob(x, divergence="hutchinson").reshape(1000, 2)
    exact = gaussian_log_prob(x[:2].flatten(1), a)
    mean, stderr = draws.mean(0), draws.std(0) / math.sqrt(1000)
    assert (stderr > 0).all()
    assert ((mean - exact).abs() < 4 * stderr).all(), (mean - exact) / stderr


def test_regularisers_at_image_shape_sum_over_every_event_entry():
    model, a = image_linear_cnf(
        train_solver=SolverOptions(**TIGHT), train_divergence="exact", kinetic=1.0, jacobian=1.0
    )
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    terms = model.objective(ff.Batch(x)).terms
    assert float(terms["jacobian"]) == pytest.approx(float((a**2).sum()), rel=1e-8)
    # Kinetic energy int_0^1 ||A x_t||^2 dt with x_t = expm((t - 1) A) x, by Simpson's rule.
    ts = torch.linspace(0, 1, 1001, dtype=torch.float64)
    flat = x.flatten(1)
    speeds = torch.stack(
        [((flat @ torch.linalg.matrix_exp((t - 1) * a).T) @ a.T).square().sum(1) for t in ts]
    )
    w = torch.ones(1001, dtype=torch.float64)
    w[1:-1:2], w[2:-1:2] = 4, 2
    kinetic = ((w[:, None] * speeds).sum(0) / (3 * 1000)).mean()
    assert float(terms["kinetic"]) == pytest.approx(float(kinetic), rel=1e-6)


def test_ffjord_at_image_shape_keeps_the_model_identities():
    from helpers import autograd_ladj, perturb

    torch.manual_seed(0)
    model = create("ffjord", hidden=(32,), **TIGHT).double()
    perturb(model, 0.1).eval()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    z = model.encode(x)
    assert z.shape == x.shape and model.sample(2, steps=2).shape == (2, *SHAPE)
    torch.testing.assert_close(model.decode(z), x, atol=1e-7, rtol=1e-7)
    ladj = autograd_ladj(lambda v: model.encode(v.view(-1, *SHAPE)).flatten(1), x.flatten(1))
    log_p = model.log_prob(x)
    assert log_p.shape == (3,)
    torch.testing.assert_close(log_p, model.base.log_prob(z) + ladj, atol=1e-7, rtol=1e-7)


def test_ffjord_trains_on_image_shaped_data():
    torch.manual_seed(0)
    model = create("ffjord", hidden=(16,), method="rk4", steps=2)
    data = 0.5 * torch.randn(64, *SHAPE) + 1.0
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(1)
    first = float(model.loss(data).detach())
    config = ff.train.TrainConfig(
        steps=20, batch_size=32, lr=1e-2, progress=False, ema_decay=0, device="cpu"
    )
    ff.train.train(model, data, config)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    torch.manual_seed(1)  # the same Hutchinson probe as the first loss
    assert float(model.loss(data).detach()) < first  # the mean shift alone is quick to learn


def test_label_conditioned_ffjord_at_image_shape():
    from helpers import perturb

    torch.manual_seed(0)
    model = create("ffjord", hidden=(16,), num_classes=3)
    assert model.num_classes == 3
    perturb(model, 0.3)
    x = torch.randn(4, *SHAPE)
    labels = torch.tensor([0, 1, 2, 1])
    fast = {"method": "rk4", "steps": 3}
    lp = model.log_prob(x, context=labels, **fast)
    assert (lp - model.log_prob(x, context=torch.tensor([2, 0, 1, 0]), **fast)).abs().min() > 1e-4
    # One label per sample: each sample is its base point decoded under its own label.
    torch.manual_seed(5)
    samples = model.sample(4, context=labels, **fast)
    torch.manual_seed(5)
    z = model.base.sample(4)
    torch.testing.assert_close(samples, model.decode(z, context=labels, **fast).detach())
    torch.manual_seed(5)
    shared = model.sample(4, context=1, **fast)
    torch.testing.assert_close(shared[[1, 3]], samples[[1, 3]])
    assert (shared[[0, 2]] - samples[[0, 2]]).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    loss = model.loss(x, labels)
    loss.backward()
    assert model.label_embedding.weight.grad[:3].abs().sum() > 0
