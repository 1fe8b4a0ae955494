"""MeanFlow: the identity's target, its loss against flow matching, the few-step sampler, and the
likelihood of its instantaneous field."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import flowforge as ff
from flowforge.distributions import StandardNormal
from flowforge.dynamics import CNF, SolverOptions
from flowforge.matching import (
    FlowMatching,
    MeanFlow,
    TimeSampler,
    cfm_loss,
    meanflow_loss,
    meanflow_target,
)
from flowforge.nets import TimeMLP
from helpers import perturb

TIGHT = SolverOptions("dopri5", None, 1e-10, 1e-10)


def two_time_net(d: int = 3, embedding: str = "sinusoidal", seed: int = 0) -> TimeMLP:
    torch.manual_seed(seed)
    net = TimeMLP(d, (16, 16), embedding, times=2).double()
    return perturb(net, std=0.2, seed=seed)


def small(d: int = 3, **options) -> MeanFlow:
    torch.manual_seed(0)
    model = ff.models.create("meanflow", dim=d, hidden=(16, 16), **options).double()
    return perturb(model, std=0.2).eval()


class FixedTimes(TimeSampler):
    """The same times on every call: two samplers then draw alike whatever else they draw."""

    def __init__(self, t: Tensor):
        super().__init__()
        self.t = t

    def _draw(self, n, device, dtype, generator) -> Tensor:
        return self.t[:n].to(dtype)


class AtRT(nn.Module):
    """The field v(t, x) = u(x, r=t, t), with r passed explicitly."""

    def __init__(self, net: TimeMLP):
        super().__init__()
        self.net = net

    def forward(self, t, x, context=None):
        return self.net(t, x, context, r=t)


# -- the identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["concat", "sinusoidal", "film"])
def test_target_is_v_minus_gap_times_the_finite_difference_total_derivative(embedding):
    net = two_time_net(embedding=embedding)
    g = torch.Generator().manual_seed(1)
    z, v = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.rand(6, generator=g, dtype=torch.float64)
    r = t + (1 - t) * torch.rand(6, generator=g, dtype=torch.float64)

    def u(z, r, t):
        return net(t, z, r=r)

    prediction, target = meanflow_target(u, z, r, t, v)
    torch.testing.assert_close(prediction, u(z, r, t))
    assert prediction.requires_grad and not target.requires_grad
    # d/dt u(z + s v, r, t + s) at s = 0, by a central difference (error O(eps^2) ~ 1e-12).
    eps = 1e-5
    ddt = (u(z + eps * v, r, t + eps) - u(z - eps * v, r, t - eps)) / (2 * eps)
    expected = v - (t - r)[:, None] * ddt
    torch.testing.assert_close(target, expected.detach(), rtol=1e-7, atol=1e-8)
    # The derivative matters: the target is not v where r != t.
    assert (target - v).abs().max() > 1e-3


def test_target_at_r_equal_t_is_the_velocity_and_the_loss_is_flow_matching():
    net = two_time_net()
    z, v = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    t = torch.rand(8, dtype=torch.float64)
    prediction, target = meanflow_target(lambda z, r, t: net(t, z, r=r), z, t, t, v)
    torch.testing.assert_close(target, v, rtol=0, atol=0)
    torch.testing.assert_close(prediction, net(t, z))  # u(z, t, t) is the field without r
    torch.testing.assert_close(meanflow_loss(prediction, target, p=0), cfm_loss(net(t, z), v))


def test_with_r_equal_t_the_model_loss_is_the_flow_matching_loss():
    net = two_time_net()
    x0, x1 = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    times = FixedTimes(torch.rand(16, dtype=torch.float64))
    base = StandardNormal((3,))
    mean = MeanFlow(net, base, time_sampler=times, ratio=0.0, p=0.0).double()
    fm = FlowMatching(net, base, time_sampler=times).double()
    batch = ff.Batch(x1, x0=x0)
    got, want = mean.objective(batch), fm.objective(batch)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.terms["mse"], want.terms["cfm"], rtol=1e-12, atol=0)
    # The adaptive weight changes the value but not which field is best.
    weighted = MeanFlow(net, base, time_sampler=times, ratio=0.0, p=1.0).double()
    assert abs(float(weighted.objective(batch).loss.detach() - want.loss.detach())) > 1e-3


def test_times_are_ordered_and_apart_for_the_ratio():
    model = small(ratio=0.25)
    torch.manual_seed(0)
    r, t = model.times(20_000, dtype=torch.float64)
    assert bool((t <= r).all()) and bool(((0 <= t) & (r <= 1)).all())
    apart = (r > t).double().mean()
    assert abs(float(apart) - 0.25) < 0.02
    r, t = small(ratio=0.0).times(100, dtype=torch.float64)
    torch.testing.assert_close(r, t, rtol=0, atol=0)


# -- sampling -------------------------------------------------------------------------------------


def test_one_step_sampling_is_one_evaluation_of_the_average_velocity():
    model = small()
    torch.manual_seed(0)
    x = model.sample(5, steps=1)
    assert x.shape == (5, 3) and model.last_nfe == 1
    torch.manual_seed(0)
    torch.testing.assert_close(model.sample(5, steps=1), x, rtol=0, atol=0)  # deterministic
    torch.manual_seed(0)
    z = model.base.sample(5)
    expected = z + model.average(0.0, z, r=1.0)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(model.decode(z, method="meanflow"), expected)
    # The average over [0, 1] is not the velocity at 0: one Euler step lands elsewhere.
    assert (model.decode(z, method="euler", steps=1) - expected).abs().max() > 1e-3


def test_few_steps_compose_mean_velocity_jumps():
    model = small()
    z = torch.randn(4, 3, dtype=torch.float64)
    half = z + 0.5 * model.average(0.0, z, r=0.5)
    expected = half + 0.5 * model.average(0.5, half, r=1.0)
    before = model.field.nfe
    torch.testing.assert_close(model.decode(z, steps=2), expected)
    assert model.field.nfe - before == 2 and model.last_nfe == 2
    assert model.decode(z, steps=2).requires_grad  # decode keeps autograd, as for every CNF


def test_mean_sampler_takes_guidance_in_one_batched_evaluation():
    torch.manual_seed(0)
    model = perturb(
        ff.models.create("meanflow", dim=2, hidden=(16,), num_classes=3).double(), std=0.3
    ).eval()
    z = torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    cond = model.average(0.0, z, model._condition(y), r=1.0)
    null = model.average(0.0, z, model._condition(torch.full_like(y, 3)), r=1.0)
    expected = z + null + 2.0 * (cond - null)
    torch.testing.assert_close(model.decode(z, y, steps=1, guidance=2.0), expected)
    assert model.last_nfe == 1


def test_mean_sampler_options_are_checked():
    model = small()
    x = torch.randn(4, 3, dtype=torch.float64)
    for call in (model.log_prob, model.encode):
        with pytest.raises(ValueError, match="few-step sampler from noise to data"):
            call(x, method="meanflow")
    with pytest.raises(ValueError, match="few-step sampler"):
        model.sample_and_log_prob(2, method="meanflow", steps=1)
    with pytest.raises(ValueError, match=r"takes steps, guidance, guidance_interval, not rtol"):
        model.sample(2, method="meanflow", rtol=1e-3)
    with pytest.raises(ValueError, match="steps must be an int >= 1 for method='meanflow'"):
        model.sample(2, steps=0)
    # steps alone in encode is Euler, as for every CNF.
    torch.testing.assert_close(model.encode(x, steps=3), model.encode(x, method="euler", steps=3))


# -- the likelihood -------------------------------------------------------------------------------


def test_log_prob_is_the_cnf_of_the_field_at_r_equal_t():
    model = small()
    model.solver = TIGHT
    cnf = CNF(AtRT(model.average), model.base, solver=TIGHT).double()
    x = 2 * torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(model.log_prob(x), cnf.log_prob(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.encode(x), cnf.encode(x), rtol=1e-9, atol=1e-9)
    # The default sampler (dopri5) is the same CNF's decode.
    z = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(model.decode(z), cnf.decode(z), rtol=1e-9, atol=1e-9)


def test_training_learns_a_one_step_sampler():
    torch.manual_seed(0)
    mean, std = torch.tensor([2.0, -1.0]), 0.5
    data = mean + std * torch.randn(4096, 2)
    model = ff.models.create("meanflow", dim=2, hidden=(64, 64))
    config = ff.train.TrainConfig(steps=300, batch_size=256, lr=1e-2, progress=False)
    ff.train.train(model, data, config)
    model.eval()
    torch.manual_seed(1)
    x = model.sample(4000, steps=1)
    torch.testing.assert_close(x.mean(0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), std), atol=0.1, rtol=0)


# -- the network ----------------------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["concat", "sinusoidal", "film"])
@pytest.mark.parametrize("shape", [(3,), (2, 3, 3)])
def test_two_time_net_without_r_is_its_value_at_r_equal_t(embedding, shape):
    torch.manual_seed(0)
    net = perturb(TimeMLP(shape, (8,), embedding, times=2), std=0.3)
    x, t = torch.randn(4, *shape), torch.rand(4)
    out = net(t, x)
    assert out.shape == (4, *shape)
    torch.testing.assert_close(out, net(t, x, r=t))
    assert (net(t, x, r=t + 0.5) - out).abs().max() > 1e-4  # the second time reaches the output


def test_fields_of_one_time_are_refused():
    with pytest.raises(ValueError, match=r"times must be 1 .* or 2"):
        TimeMLP(2, (8,), times=3)
    with pytest.raises(ValueError, match="r is the second time of a field built with times=2"):
        TimeMLP(2, (8,))(0.5, torch.randn(3, 2), r=0.7)
    with pytest.raises(TypeError, match="field must be a field of two times"):
        MeanFlow(TimeMLP(2, (8,)), StandardNormal((2,)))
