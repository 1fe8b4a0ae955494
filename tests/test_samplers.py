"""The stochastic samplers (DDPM, DDIM, Euler–Maruyama) on Gaussian data, where the velocity of
every affine path is known in closed form, and through flow-matching models."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from flowforge.diffusion import DIFFUSIONS, ddpm_posterior
from flowforge.dynamics import SOLVERS, SolverOptions, integrate
from flowforge.matching import AffinePath, CondOTScheduler, VPCosineScheduler, VPScheduler

#: The data N(MU, diag(S^2)): two coordinates of different scales, neither centred.
MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = torch.tensor([0.5, 1.5], dtype=torch.float64)

PATHS = {
    "condot": lambda: AffinePath(CondOTScheduler(0.0)),
    "vp": lambda: AffinePath(VPScheduler()),
    "vp-cosine": lambda: AffinePath(VPCosineScheduler()),
}

SAMPLERS = [
    ("ddpm", {}),
    ("ddim", {}),
    ("ddim", {"eta": 1.0}),
    ("euler-maruyama", {}),
    ("euler-maruyama", {"diffusion": "sigma", "noise": 2.0}),
]


class GaussianVelocity:
    r"""The exact velocity of ``path`` for data N(MU, diag(S^2)) and independent noise:
    with :math:`r = (x - \alpha\mu) / (\alpha^2 s^2 + \sigma^2)`,
    :math:`E[x_1 \mid x_t] = \mu + \alpha s^2 r`, :math:`E[\varepsilon \mid x_t] = \sigma r`,
    and :math:`v = \dot\alpha E[x_1 \mid x_t] + \dot\sigma E[\varepsilon \mid x_t]`."""

    def __init__(self, path: AffinePath):
        self.path = path

    def __call__(self, t, x, context=None):
        o = self.path.scheduler(t)
        a, sg = o.alpha_t, o.sigma_t
        r = (x - a * MU) / (a * a * S * S + sg * sg)
        return o.d_alpha_t * (MU + a * S * S * r) + o.d_sigma_t * (sg * r)


def run(path, method, steps, z, **extra):
    options = SolverOptions(method, steps, extra=extra)
    return integrate(GaussianVelocity(path), z, 0.0, 1.0, options, path=path)


def test_registered_with_their_options():
    for name in ("ddpm", "ddim", "euler-maruyama"):
        assert SOLVERS[name].stochastic and SOLVERS[name].takes[0] == "steps"
        assert {"grid", "shift", "rho"} <= set(SOLVERS[name].takes)
    assert SOLVERS["ddim"].defaults["eta"] == 0.0
    assert SOLVERS["euler-maruyama"].defaults["noise"] == 1.0
    assert SOLVERS["euler-maruyama"].defaults["diffusion"] == "sigma"
    assert "eta" not in SOLVERS["ddpm"].takes and "noise" not in SOLVERS["ddim"].takes


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize(("method", "extra"), SAMPLERS)
def test_samples_have_the_data_law(path_name, method, extra):
    """Mean and spread of 20,000 samples of N(mu, diag(s^2)) within 4 standard errors, plus 3%
    of s for the discretisation (200 steps: DDPM's variance is the furthest off, ~2%)."""
    path = PATHS[path_name]()
    torch.manual_seed(0)
    n = 20_000
    x = run(path, method, 200, torch.randn(n, 2, dtype=torch.float64), **extra).state
    assert torch.all((x.mean(0) - MU).abs() < 4 * S / math.sqrt(n) + 0.01 * S)
    assert torch.all((x.std(0) - S).abs() < 4 * S / math.sqrt(2 * n) + 0.03 * S)


def test_ddim_deterministic_converges_to_the_flow_map():
    """DDIM with eta = 0 draws nothing and, as the steps grow, maps z to mu + s z (the flow of
    the linear path between N(0, I) and N(mu, diag(s^2))) with first-order error."""
    path = PATHS["condot"]()
    torch.manual_seed(1)
    z = torch.randn(256, 2, dtype=torch.float64)
    state = torch.get_rng_state()
    errors = [(run(path, "ddim", n, z).state - (MU + S * z)).abs().max() for n in (100, 200)]
    assert torch.equal(torch.get_rng_state(), state)
    assert errors[1] < 0.05
    assert 0.4 < float(errors[1] / errors[0]) < 0.6


def test_ddim_on_the_linear_path_is_euler():
    """On x_t = t x1 + (1 - t) eps the DDIM step t x1_hat + (1 - t) eps_hat is the Euler step
    x_s + (t - s)(x1_hat - eps_hat), on any grid."""
    path = PATHS["condot"]()
    z = torch.randn(64, 2, dtype=torch.float64)
    for extra in ({}, {"grid": "shift", "shift": 2.0}):
        ddim = run(path, "ddim", 7, z, **extra).state
        euler = run(path, "euler", 7, z, **extra).state
        torch.testing.assert_close(ddim, euler, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path_name", list(PATHS))
def test_ddim_eta_one_is_ddpm_draw_for_draw(path_name):
    path = PATHS[path_name]()
    z = torch.randn(128, 2, dtype=torch.float64)
    torch.manual_seed(3)
    ddpm = run(path, "ddpm", 12, z).state
    after = torch.get_rng_state()
    torch.manual_seed(3)
    ddim = run(path, "ddim", 12, z, eta=1.0).state
    torch.testing.assert_close(ddim, ddpm, rtol=1e-10, atol=1e-10)
    assert torch.equal(torch.get_rng_state(), after)  # the same number of draws
    torch.manual_seed(4)
    assert not torch.allclose(run(path, "ddpm", 12, z).state, ddpm)


def test_ddpm_draws_one_noise_per_step_in_order_none_last():
    """The sampler equals the loop written out with ddpm_posterior and torch.randn_like, so a
    seed reproduces it and a scheduler drawing the same noise in the same order matches it."""
    path = PATHS["vp"]()
    field = GaussianVelocity(path)
    z = torch.randn(32, 2, dtype=torch.float64)
    steps = 6
    torch.manual_seed(5)
    sampled = run(path, "ddpm", steps, z).state
    torch.manual_seed(5)
    x = z
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    for i in range(steps):
        s = times[i].expand(x.shape[0])
        x1 = path.convert(field(times[i], x), x, s, "velocity", "x1")
        mean, var = ddpm_posterior(path, times[i], times[i + 1], x, x1)
        x = mean if i == steps - 1 else mean + var.sqrt() * torch.randn_like(x)
    torch.testing.assert_close(sampled, x, rtol=1e-12, atol=1e-12)


def test_ddpm_posterior_is_ddpms_discrete_formula():
    """On the VP path, with abar = alpha^2 at the grid's times, the posterior is Ho et al.'s
    (Eq. 7): mean sqrt(abar_prev) beta / (1 - abar) x0 + sqrt(1 - beta) (1 - abar_prev) /
    (1 - abar) x_t, variance (1 - abar_prev) / (1 - abar) beta."""
    path = PATHS["vp"]()
    times = torch.linspace(0.0, 0.999, 9, dtype=torch.float64)
    abar = path.scheduler(times).alpha_t ** 2
    x_s, x1 = torch.randn(2, 5, 3, dtype=torch.float64)
    for i in range(len(times) - 1):
        # DDPM's step t -> t - 1 is flowforge's times[i] -> times[i + 1].
        a_t, a_prev = abar[i], abar[i + 1]
        beta = 1 - a_t / a_prev
        mean = (a_prev.sqrt() * beta * x1 + (1 - beta).sqrt() * (1 - a_prev) * x_s) / (1 - a_t)
        var = (1 - a_prev) / (1 - a_t) * beta
        got_mean, got_var = ddpm_posterior(path, times[i], times[i + 1], x_s, x1)
        torch.testing.assert_close(got_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got_var, var, rtol=1e-10, atol=1e-14)


def test_ddpm_posterior_is_gaussian_conditioning_on_the_linear_path():
    """Given x1, x_t = alpha_t x1 + sigma_t e and x_s = alpha_{s|t} x_t + sigma_{s|t} e' have
    covariance alpha_{s|t} sigma_t^2: conditioning x_t on x_s gives the posterior."""
    path = AffinePath(CondOTScheduler(1e-4))
    x_s, x1 = torch.randn(2, 4, 2, dtype=torch.float64)
    for s, t in ((0.0, 0.1), (0.3, 0.35), (0.9, 1.0)):
        o = path.scheduler(torch.tensor([s, t], dtype=torch.float64))
        (a_s, a_t), (sg_s, sg_t) = o.alpha_t, o.sigma_t
        cov = a_s / a_t * sg_t**2
        mean = a_t * x1 + cov / sg_s**2 * (x_s - a_s * x1)
        mean_got, var_got = ddpm_posterior(path, s, t, x_s, x1)
        torch.testing.assert_close(mean_got, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var_got, sg_t**2 - cov**2 / sg_s**2, rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="0 <= s < t <= 1"):
        ddpm_posterior(path, 0.5, 0.5, x_s, x1)


def test_diffusion_coefficients():
    """w = g^2 is beta(t) on the VP path (Song et al.'s reverse SDE) and 2 (1 - t) / t on the
    linear one; 'sigma' is sigma_t."""
    t = torch.linspace(0.0, 0.9, 10, dtype=torch.float64)
    vp = VPScheduler()
    w, ratio = DIFFUSIONS["path"](vp(t))
    torch.testing.assert_close(w, 0.1 + (20.0 - 0.1) * (1 - t), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ratio * vp(t).sigma_t, w)
    torch.testing.assert_close(DIFFUSIONS["sigma"](vp(t))[0], vp(t).sigma_t)
    linear = CondOTScheduler(0.0)(t)
    w = DIFFUSIONS["path"](linear)[0]
    assert math.isinf(float(w[0]))
    torch.testing.assert_close(w[1:], 2 * (1 - t[1:]) / t[1:])
    torch.testing.assert_close(DIFFUSIONS["sigma"](linear)[0], 1 - t)


def test_euler_maruyama_without_noise_is_euler_to_the_bit():
    torch.manual_seed(6)
    model = ff.models.create("fm", dim=2).eval()
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        z = torch.randn(50, 2, dtype=dtype)
        for extra in ({}, {"grid": "edm"}):
            euler = model.decode(z, method="euler", steps=5, **extra)
            state = torch.get_rng_state()
            em = model.decode(z, method="euler-maruyama", steps=5, noise=0.0, **extra)
            assert torch.equal(em, euler)
            assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    assert not torch.equal(model.decode(z, method="euler-maruyama", steps=5), euler)


def test_linear_path_with_g2_is_refused_at_the_noise():
    with pytest.raises(ValueError, match="diffusion='sigma'"):
        run(PATHS["condot"](), "euler-maruyama", 4, torch.randn(3, 2).double(), diffusion="path")
    # From t0 > 0 it is finite and allowed.
    path = PATHS["condot"]()
    opts = SolverOptions("euler-maruyama", 4, extra={"diffusion": "path"})
    x = integrate(GaussianVelocity(path), torch.randn(3, 2).double(), 0.5, 1.0, opts, path=path)
    assert torch.isfinite(x.state).all()


@pytest.mark.parametrize(
    ("method", "extra", "match"),
    [
        ("ddim", {"eta": -0.1}, r"eta must be a number in \[0, 1\]"),
        ("ddim", {"eta": 1.5}, r"eta must be a number in \[0, 1\]"),
        ("ddim", {"eta": "1"}, "eta must be"),
        ("euler-maruyama", {"noise": float("nan")}, "noise must be a number >= 0"),
        ("euler-maruyama", {"noise": -1.0}, "noise must be a number >= 0"),
        ("euler-maruyama", {"diffusion": "sigmaa"}, "did you mean 'sigma'"),
        ("ddpm", {"eta": 0.5}, "method 'ddpm' takes steps, grid.*not eta.*ddim"),
        ("ddim", {"noise": 0.5}, "not noise.*euler-maruyama"),
    ],
)
def test_bad_options_are_clear_errors(method, extra, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SolverOptions(method, 4, extra=extra)


def test_steps_are_required_and_the_path_too():
    for method in ("ddpm", "ddim", "euler-maruyama"):
        with pytest.raises(ValueError, match="steps must be an int >= 1"):
            SolverOptions(method)
    options = SolverOptions("ddpm", 4)
    field = GaussianVelocity(PATHS["vp"]())
    with pytest.raises(ValueError, match="needs that path"):
        integrate(field, torch.randn(3, 2).double(), 0.0, 1.0, options)
    with pytest.raises(TypeError, match="AffinePath"):
        integrate(field, torch.randn(3, 2).double(), 0.0, 1.0, options, path="vp")
    with pytest.raises(ValueError, match="from the noise to the data"):
        integrate(field, torch.randn(3, 2).double(), 1.0, 0.0, options, path=PATHS["vp"]())


def test_through_flow_matching_models():
    torch.manual_seed(7)
    model = ff.models.create("fm", dim=2).eval()
    for method, extra in SAMPLERS:
        x = model.sample(64, method=method, steps=20, **extra)
        assert x.shape == (64, 2) and torch.isfinite(x).all() and model.last_nfe == 20
    torch.manual_seed(8)
    a = model.sample(16, method="ddpm", steps=5)
    torch.manual_seed(8)
    assert torch.equal(model.sample(16, method="ddpm", steps=5), a)
    x = torch.randn(8, 2)
    for call in (model.log_prob, model.encode):
        with pytest.raises(ValueError, match="no inverse and no density"):
            call(x, method="ddim", steps=4)
    with pytest.raises(ValueError, match="no inverse and no density"):
        model.sample_and_log_prob(8, method="ddpm", steps=4)
    with pytest.raises(ValueError, match=r"'euler' takes steps, adjoint.*not eta.*takes it .ddim"):
        model.sample(8, method="euler", steps=4, eta=0.5)


def test_images_and_guidance():
    torch.manual_seed(9)
    model = ff.models.create("fm", shape=(1, 4, 4), num_classes=3).eval()
    labels = torch.tensor([0, 1, 2, 3])
    for method in ("ddpm", "ddim", "euler-maruyama"):
        x = model.sample(4, context=labels, method=method, steps=3, guidance=2.0)
        assert x.shape == (4, 1, 4, 4) and torch.isfinite(x).all()


def test_models_off_a_gaussian_path_refuse_with_the_reason():
    with pytest.raises(ValueError, match="not Gaussian, so the score does not follow"):
        ff.models.create("otfm", dim=2).sample(4, method="ddpm", steps=4)
    with pytest.raises(ValueError, match="not an affine one"):
        ff.models.create("sbfm", dim=2).sample(4, method="euler-maruyama", steps=4)
    with pytest.raises(ValueError, match="maximum likelihood"):
        ff.models.create("ffjord", dim=2).sample(4, method="ddim", steps=4)
