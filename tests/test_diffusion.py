"""The diffusion model: closed-form Gaussian data, the parameterisations, min-SNR, the loss,
the recipe and its errors. (The registry-driven contract tests cover it in test_models.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.diffusion import Diffusion, PredictionField, min_snr_weight
from flowforge.matching import (
    AffinePath,
    FixedTime,
    VPCosineScheduler,
    VPScheduler,
)

SCHEDULERS = {"linear": VPScheduler, "cosine": VPCosineScheduler}
MU = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
S = torch.tensor([0.7, 1.3, 0.2], dtype=torch.float64)


class GaussianOptimal(nn.Module):
    r"""The optimal predictor of Gaussian data :math:`N(\mu, \mathrm{diag}(s^2))` on a path:
    :math:`E[\varepsilon \mid x_t] = \sigma_t (x - \alpha_t\mu) / (\alpha_t^2 s^2 + \sigma_t^2)`,
    converted to ``prediction``."""

    def __init__(self, path: AffinePath, prediction: str):
        super().__init__()
        self.path, self.prediction = path, prediction
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))  # a dtype to report

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        out = self.path.scheduler(t)
        a, sg = out.alpha_t[:, None], out.sigma_t[:, None]
        eps = sg * (x - a * MU) / (a**2 * S**2 + sg**2)
        return self.path.convert(eps, x, t, "epsilon", self.prediction)


def gaussian_model(schedule: str, prediction: str) -> Diffusion:
    scheduler = SCHEDULERS[schedule]()
    network = GaussianOptimal(AffinePath(scheduler), prediction)
    model = Diffusion(
        network,
        ff.distributions.StandardNormal((3,)),
        scheduler=scheduler,
        prediction=prediction,
        solver=ff.dynamics.SolverOptions("dopri5", None, 1e-9, 1e-9),
    )
    return model.double().eval()


def marginal(model: Diffusion, t: float) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the path's marginal at ``t``, per dimension."""
    out = model.path.scheduler(torch.tensor(t, dtype=torch.float64))
    return out.alpha_t * MU, torch.sqrt(out.alpha_t**2 * S**2 + out.sigma_t**2)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x1"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_optimal_predictor_of_gaussian_data_gives_the_exact_flow_and_density(
    schedule, prediction
):
    model = gaussian_model(schedule, prediction)
    start, end = model.span
    assert model.span == (0.0, 1.0 - 1e-3)
    (m0, r0), (m1, r1) = marginal(model, start), marginal(model, end)
    torch.manual_seed(0)
    z = torch.randn(16, 3, dtype=torch.float64)
    # The probability-flow ODE of Gaussian marginals is the monotone affine map between them.
    expected = m1 + r1 / r0 * (z - m0)
    x = model.decode(z)
    torch.testing.assert_close(x, expected, rtol=1e-6, atol=1e-6)
    # The density at t = 1 - truncation is the base pushed through that map.
    log_prob = model.base.log_prob(m0 + r0 / r1 * (x - m1)) + torch.log(r0 / r1).sum()
    torch.testing.assert_close(model.log_prob(x), log_prob, rtol=1e-6, atol=1e-6)
    # Near the data end the path's marginal is close to the data distribution itself.
    torch.testing.assert_close(m1, MU, atol=2e-3, rtol=0)
    torch.testing.assert_close(r1, S, atol=2e-2, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_and_ddpm_on_the_optimal_predictor(schedule):
    model = gaussian_model(schedule, "epsilon")
    torch.manual_seed(1)
    z = torch.randn(256, 3, dtype=torch.float64)
    ode = model.decode(z)
    # Deterministic DDIM follows the probability-flow ODE as its steps shrink (first order:
    # 8 times the steps, an eighth of the error).
    coarse = (model.decode(z, method="ddim", steps=64) - ode).abs().max()
    fine = (model.decode(z, method="ddim", steps=512) - ode).abs().max()
    assert fine < 0.015 and fine < coarse / 6
    # Ancestral samples have the data's moments (within Monte Carlo error).
    torch.manual_seed(2)
    x = model.sample(8000, method="ddpm", steps=200)
    _, r1 = marginal(model, model.span[1])
    se = r1 / math.sqrt(8000)
    assert ((x.mean(0) - MU).abs() < 4 * se + 2e-3).all()
    assert ((x.std(0) - r1).abs() < 4 * r1 / math.sqrt(2 * 8000) + 0.02).all()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_epsilon_v_and_x1_convert_into_each_other_exactly(schedule):
    path = AffinePath(SCHEDULERS[schedule]())
    g = torch.Generator().manual_seed(0)
    x1, eps = (
        torch.randn(64, 3, generator=g, dtype=torch.float64),
        torch.randn(64, 3, generator=g, dtype=torch.float64),
    )
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.98 + 0.01
    out = path.scheduler(t)
    a, sg = out.alpha_t[:, None], out.sigma_t[:, None]
    x_t = a * x1 + sg * eps
    truth = {"epsilon": eps, "x1": x1, "v": a * eps - sg * x1}
    truth["velocity"] = out.d_alpha_t[:, None] * x1 + out.d_sigma_t[:, None] * eps
    for source, value in truth.items():
        for target, expected in truth.items():
            got = path.convert(value, x_t, t, source, target)
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_min_snr_weights_are_one_weighting_of_the_data_error():
    snr = torch.tensor([1e-3, 0.5, 5.0, 80.0], dtype=torch.float64)
    gamma = 5.0
    capped = torch.tensor([1e-3, 0.5, 5.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(min_snr_weight(snr, gamma, "epsilon"), capped / snr)
    torch.testing.assert_close(min_snr_weight(snr, gamma, "v"), capped / (snr + 1))
    torch.testing.assert_close(min_snr_weight(snr, gamma, "x1"), capped)
    # On a VP path the three weighted errors of one prediction are the same number.
    alpha = torch.sqrt(snr / (1 + snr))
    sigma = torch.sqrt(1 / (1 + snr))
    error_x1 = torch.randn(4, dtype=torch.float64)  # x1_hat - x1 at fixed x_t
    error_eps = -alpha / sigma * error_x1
    error_v = alpha * error_eps - sigma * error_x1
    weighted = [
        min_snr_weight(snr, gamma, p) * e**2
        for p, e in (("epsilon", error_eps), ("v", error_v), ("x1", error_x1))
    ]
    torch.testing.assert_close(weighted[0], capped * error_x1**2)
    torch.testing.assert_close(weighted[1], weighted[0])
    torch.testing.assert_close(weighted[2], weighted[0])
    with pytest.raises(ValueError, match="prediction must be one of epsilon, v, x1"):
        min_snr_weight(snr, gamma, "score")


@pytest.mark.parametrize("min_snr", [0.0, 5.0])
@pytest.mark.parametrize("prediction", ["epsilon", "v", "x1"])
def test_the_loss_is_the_weighted_regression_onto_the_target(prediction, min_snr):
    torch.manual_seed(0)
    network = ff.nets.TimeMLP(2, (16,)).double()
    model = Diffusion(
        network,
        scheduler=VPScheduler(),
        prediction=prediction,
        min_snr=min_snr,
        time_sampler=FixedTime(0.6),
    ).double()
    x1, eps = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    t = torch.full((8,), 0.6 * (1 - 1e-3), dtype=torch.float64)  # u scaled into [0, 1 - tau]
    out = VPScheduler()(t)
    a, sg = out.alpha_t[:, None], out.sigma_t[:, None]
    target = {"epsilon": eps, "v": a * eps - sg * x1, "x1": x1}[prediction]
    mse = (network(t, a * x1 + sg * eps) - target).square().mean(1)
    weight = min_snr_weight((a / sg).square()[:, 0], min_snr, prediction) if min_snr else 1.0
    counted = model.field.nfe
    result = model.objective(ff.Batch(x1, x0=eps))
    torch.testing.assert_close(result.loss, (weight * mse).mean())
    assert set(result.terms) == {"mse"}
    assert model.field.nfe == counted + 1  # one evaluation of the network, counted


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x1"])
def test_training_lowers_the_loss(prediction):
    # Narrow data far from the origin: the optimal predictor's loss is far below a fresh
    # network's, whatever it predicts.
    torch.manual_seed(0)
    model = ff.models.create("diffusion", dim=2, hidden=(64, 64), prediction=prediction)
    data = torch.tensor([2.0, -1.0]) + 0.1 * torch.randn(4096, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out() -> float:
        torch.manual_seed(123)  # the same noise and times each time
        with torch.no_grad():
            return float(sum(model.loss(data[i * 512 : (i + 1) * 512]) for i in range(8)) / 8)

    before = held_out()
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        idx = torch.randint(0, 4096, (256,), generator=g)
        optimizer.zero_grad()
        model.loss(data[idx]).backward()
        optimizer.step()
    after = held_out()
    assert after < 0.5 * before, (before, after)


def test_the_field_is_the_velocity_of_the_prediction_and_the_network_is_held_once():
    torch.manual_seed(0)
    model = ff.models.create("diffusion", dim=2, hidden=(8,), prediction="v").double()
    assert isinstance(model.field.field, PredictionField)
    assert model.network is model.field.field.network
    keys = list(model.state_dict())
    assert keys and all(k.startswith("field.field.network.") for k in keys)
    assert len(keys) == len({id(p) for p in model.parameters()})
    assert model.gaussian_path() is model.path
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.3, dtype=torch.float64)
    v = model.predict(x, t, target="v")
    torch.testing.assert_close(v, model.network(t, x))
    torch.testing.assert_close(model.predict(x, 0.3, target="velocity"), model.field(t, x))
    eps = model.predict(x, t)
    torch.testing.assert_close(model.path.convert(eps, x, t, "epsilon", "v"), v)


def test_samplers_and_refusals_through_the_model():
    torch.manual_seed(0)
    model = ff.models.create("diffusion", dim=2, hidden=(8,))
    for method in ("ddpm", "ddim", "euler-maruyama", "heun"):
        x = model.sample(6, method=method, steps=4)
        assert x.shape == (6, 2) and bool(torch.isfinite(x).all())
    with pytest.raises(ValueError, match="log_prob needs an ODE method"):
        model.log_prob(torch.zeros(3, 2), method="ddpm", steps=4)
    with pytest.raises(ValueError, match="encode needs an ODE method"):
        model.encode(torch.zeros(3, 2), method="ddim", steps=4)
    # Classifier-free guidance of the velocity, through a stochastic sampler too.
    labelled = ff.models.create("diffusion", dim=2, hidden=(8,), num_classes=3)
    y = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(3)
    guided = labelled.sample(4, context=y, guidance=3.0, method="ddim", steps=4)
    torch.manual_seed(3)
    plain = labelled.sample(4, context=y, method="ddim", steps=4)
    assert guided.shape == (4, 2) and (guided - plain).abs().max() > 1e-6
    with pytest.raises(ValueError, match="defines no log-likelihood"):
        labelled.log_prob(torch.zeros(4, 2), y, guidance=3.0)


def test_recipe_options_reach_the_model():
    model = ff.models.create(
        "diffusion", dim=2, schedule="cosine", prediction="x1", min_snr=5.0, truncation=1e-4
    )
    assert isinstance(model.path.scheduler, VPCosineScheduler)
    assert model.prediction == "x1" and model.min_snr == 5.0
    assert model.span == (0.0, 1.0 - 1e-4)
    linear = ff.models.create("diffusion", dim=2, schedule="linear", beta_min=0.2, beta_max=10.0)
    assert isinstance(linear.path.scheduler, VPScheduler)
    assert linear.path.scheduler.beta_min == 0.2 and linear.path.scheduler.beta_max == 10.0
    images = ff.models.create("diffusion", shape=(1, 4, 4), hidden=(8,))
    assert images.sample(2, method="ddim", steps=3).shape == (2, 1, 4, 4)
    assert "diffusion" in ff.models.image_models()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"prediction": "score"}, ValueError, "prediction must be one of epsilon, v, x1"),
        ({"prediction": "eps"}, ValueError, "prediction must be one of"),
        ({"schedule": "cosin"}, ValueError, r"schedule must be one of linear, cosine.*'cosine'"),
        ({"min_snr": -1.0}, ValueError, "min_snr must be a number >= 0"),
        ({"min_snr": math.nan}, ValueError, "min_snr must be"),
        ({"truncation": 0.0}, ValueError, r"truncation must be a number in \(0, 0.5\)"),
        ({"truncation": 0.5}, ValueError, "truncation must be"),
        (
            {"schedule": "linear", "beta_min": 5.0, "beta_max": 1.0},
            ValueError,
            "beta_min <= beta_max",
        ),
        ({"label_dropout": 1.5}, ValueError, "label_dropout"),
    ],
)
def test_bad_options_are_named_errors(options, error, message):
    with pytest.raises(error, match=message):
        ff.models.create("diffusion", dim=2, **options)


def test_bad_arguments_are_named_errors():
    net = ff.nets.TimeMLP(2, (8,))
    with pytest.raises(TypeError, match="scheduler must be a flowforge Scheduler"):
        Diffusion(net, scheduler="vp")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="time_sampler must be a flowforge TimeSampler"):
        Diffusion(net, time_sampler=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base is needed"):
        Diffusion(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="base must be a StandardNormal"):
        Diffusion(net, base=ff.distributions.DiagNormal((2,)))
    model = Diffusion(net)
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="target must be one of velocity, x1, epsilon, v"):
        model.predict(x, 0.5, target="score")
    with pytest.raises(ValueError, match=r"t must be a number in \[0, 1\]"):
        model.predict(x, 1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        model.predict(x, torch.tensor([0.1, 0.2, -0.1]))
    with pytest.raises(ValueError, match=r"one time per point, shape \(3,\), got \(2,\)"):
        model.predict(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        model.predict(torch.zeros(3, 4), 0.5)
