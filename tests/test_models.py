"""Registry-driven contract tests: every registered model, float64, perturbed parameters."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from helpers import autograd_ladj, perturb, state_round_trip

MODELS = ff.models.available()
# Discrete flows have a transform; continuous ones (CNFs) integrate an ODE.
DISCRETE = [n for n in MODELS if isinstance(ff.models.create(n, dim=2), ff.Flow)]
CONTINUOUS = [n for n in MODELS if n not in DISCRETE]
# Trained by maximum likelihood (flows, FFJORD) rather than by regression (flow matching).
LIKELIHOOD_TRAINED = [
    n for n in MODELS if n in DISCRETE or "divergence" in ff.models.recipe(n).options()
]
DIMS = [2, 5, 64]
C = 3


def options(name: str) -> dict:
    """Continuous models solve to a tolerance far below the tests' 1e-6, with a smaller field
    than their default (the identities are the solver's and the divergence's, not the width's;
    at 1e-9 in 64-D a 256-wide field makes these tests minutes long). Residual flows invert by
    fixed-point iteration, here to 1e-12, with fewer, smaller blocks."""
    if name in CONTINUOUS:
        return {"rtol": 1e-9, "atol": 1e-9, "hidden": (64, 64)}
    if name == "resflow":
        return {"tol": 1e-12, "layers": 3, "hidden": (32, 32)}
    return {}


def build(name: str, d: int, context_dim: int = 0, seed: int = 0, **extra) -> ff.Model:
    torch.manual_seed(seed)
    model = ff.models.create(name, dim=d, context_dim=context_dim, **options(name), **extra)
    model = model.double()
    context = torch.randn(256, context_dim, dtype=torch.float64) if context_dim else None
    # One training-mode pass first, so data-dependent initialisation (ActNorm) is done. Without
    # a graph: at 64-D and 1e-9 a continuous model's exact-divergence graph over 256 points
    # outgrows the memory (diffusion's field takes a few hundred steps there).
    with torch.no_grad():
        model.log_prob(1.5 * torch.randn(256, d, dtype=torch.float64) + 0.5, context)
    return perturb(model, std=0.05, seed=seed).eval()


def data(d: int, n: int = 8) -> torch.Tensor:
    return 2 * torch.randn(n, d, dtype=torch.float64)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("name", MODELS)
def test_encode_decode_and_log_prob_identities(name, d):
    model = build(name, d)
    x = data(d)
    z = model.encode(x)
    assert z.shape == x.shape
    torch.testing.assert_close(model.decode(z), x, atol=1e-6, rtol=1e-6)
    # log p(x) = log p_Z(encode(x)) + log|det d encode / dx|, the log-det by autograd.
    expected = model.base.log_prob(z) + autograd_ladj(model.encode, x)
    torch.testing.assert_close(model.log_prob(x), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("name", MODELS)
def test_sampling(name, d):
    model = build(name, d)
    x = model.sample(7)
    assert x.shape == (7, d) and x.dtype == torch.float64 and torch.isfinite(x).all()
    x, log_prob = model.sample_and_log_prob(7)
    assert log_prob.shape == (7,)
    torch.testing.assert_close(log_prob, model.log_prob(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_samples_carry_no_gradient_but_log_prob_and_decode_do(name):
    # The README's `model.sample(1000).numpy()` must work on a model fresh from training.
    model = build(name, 2).train()
    x = model.sample(5)
    assert not x.requires_grad and x.grad_fn is None
    assert x.numpy().shape == (5, 2)
    assert model.log_prob(data(2, 4)).requires_grad
    assert model.decode(torch.randn(4, 2, dtype=torch.float64)).requires_grad  # reparameterised
    assert model.sample_and_log_prob(4)[0].requires_grad


@pytest.mark.parametrize("name", DISCRETE)
def test_inverse_log_det_is_minus_forward(name):
    model = build(name, 5)
    x = data(5)
    z, ladj = model.transform.forward_and_ladj(x)
    _, inv = model.transform.inverse_and_ladj(z)
    torch.testing.assert_close(inv, -ladj)


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    model = build(name, 5).train()
    model.loss(data(5, 32)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", LIKELIHOOD_TRAINED)
def test_loss_is_the_mean_negative_log_likelihood(name):
    # A CNF's training loss is this NLL when it trains with the exact divergence (its default,
    # Hutchinson's estimate, is tested against it in test_cnf).
    model = build(name, 5, **({"divergence": "exact"} if name in CONTINUOUS else {}))
    x = data(5, 16)
    torch.testing.assert_close(model.loss(x), -model.log_prob(x).mean())


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip(name):
    model = build(name, 5, context_dim=C)
    fresh = ff.models.create(name, dim=5, context_dim=C, **options(name)).double().eval()
    state_round_trip(model, fresh)
    x, c = data(5), torch.randn(8, C, dtype=torch.float64)
    torch.testing.assert_close(fresh.log_prob(x, c), model.log_prob(x, c), rtol=0, atol=0)


@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("name", MODELS)
def test_context_reaches_the_model(name, d):
    model = build(name, d, context_dim=C)
    x = data(d)
    c = torch.randn(8, C, dtype=torch.float64)
    lp1, lp2 = model.log_prob(x, c), model.log_prob(x, c + 1)
    assert (lp1 - lp2).abs().min() > 1e-8
    # Identities hold under a context as well.
    z = model.encode(x, c)
    torch.testing.assert_close(model.decode(z, c), x, atol=1e-6, rtol=1e-6)
    expected = model.base.log_prob(z) + autograd_ladj(lambda v: model.encode(v, c), x)
    torch.testing.assert_close(lp1, expected, atol=1e-6, rtol=1e-6)
    # sample: one row of context per sample, or one row shared by all.
    assert model.sample(8, c).shape == (8, d)
    shared = model.sample(5, c[0])
    assert shared.shape == (5, d)
    torch.testing.assert_close(model.sample_and_log_prob(4, c[:1])[1].shape, torch.Size([4]))


# -- bad input -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain():
    return ff.models.create("maf", dim=3, layers=2, hidden=(8,))


@pytest.fixture(scope="module")
def conditional():
    return ff.models.create("nsf", dim=3, layers=2, hidden=(8,), context_dim=2)


@pytest.mark.parametrize("method", ["log_prob", "loss", "encode", "decode"])
@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (torch.zeros(4, 2), ValueError, r"shape \(B, 3\), got \(4, 2\)"),
        (torch.zeros(3), ValueError, r"2 dimensions\), got \(3,\) \(1 dimensions"),
        (torch.zeros(4, 3, 1), ValueError, r"got \(4, 3, 1\)"),
        (torch.zeros(0, 3), ValueError, "at least one sample"),
        (torch.zeros(4, 3, dtype=torch.long), TypeError, "floating-point tensor.*int64"),
        (torch.zeros(4, 3, dtype=torch.float64), TypeError, "float32.*got torch.float64"),
        (
            torch.tensor([[0.0, 0, 0], [0, math.nan, 0]]),
            ValueError,
            r"NaN or infinite.*1 of 2 rows",
        ),
        (torch.tensor([[math.inf, 0, 0]]), ValueError, "NaN or infinite"),
        ([[0.0, 0.0, 0.0]], TypeError, "must be a torch.Tensor, got list"),
    ],
)
def test_bad_inputs_are_named_errors(plain, method, value, error, message):
    with pytest.raises(error, match=message):
        getattr(plain, method)(value)


def test_context_errors(plain, conditional):
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="unconditional, but context was given"):
        plain.log_prob(x, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"conditional and needs context of shape \(B, 2\)"):
        conditional.log_prob(x)
    with pytest.raises(ValueError, match=r"one row per sample, shape \(4, 2\), got \(5, 2\)"):
        conditional.log_prob(x, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"context must have shape \(B, 2\), got \(4, 3\)"):
        conditional.log_prob(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        conditional.log_prob(x, torch.full((4, 2), math.nan))
    with pytest.raises(ValueError, match="context"):
        conditional.sample(3)
    with pytest.raises(ValueError, match="unconditional"):
        plain.sample(3, torch.zeros(3, 2))


@pytest.mark.parametrize(("n", "error"), [(0, ValueError), (-2, ValueError), (2.0, TypeError)])
def test_bad_sample_counts(plain, n, error):
    with pytest.raises(error, match="n must be a positive int"):
        plain.sample(n)


# -- the registry --------------------------------------------------------------------------------


def test_registry_lists_the_families_in_order_of_publication():
    assert MODELS[:7] == ["nice", "realnvp", "nsf", "maf", "iaf", "nsf-ar", "resflow"]
    assert {"ffjord", "fm", "rectified", "otfm", "sbfm"} <= set(CONTINUOUS)


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        ("pixelcnn", {"dim": 2}, ValueError, "unknown model 'pixelcnn': available models are"),
        ("glowish", {"dim": 2}, ValueError, r"unknown model 'glowish': did you mean 'glow'\?"),
        ("nsff", {"dim": 2}, ValueError, r"unknown model 'nsff': did you mean 'nsf'\? available"),
        ("NSF", {"dim": 2}, ValueError, r"unknown model 'NSF': did you mean 'nsf'\?"),
        ("nsf", {"dim": 0}, ValueError, "dim must be a positive int"),
        ("nsf", {"dim": 2.0}, TypeError, "dim must be a positive int"),
        ("nsf", {"dim": 2, "bins": 1}, ValueError, "bins"),
        ("nsf", {"dim": 2, "bound": -1.0}, ValueError, "bound"),
        ("nsf", {"dim": 2, "layers": 0}, ValueError, "layers must be an int >= 1"),
        ("nsf", {"dim": 2, "hidden": []}, ValueError, "hidden"),
        ("nsf", {"dim": 2, "mixing": "shuffle"}, ValueError, "mixing"),
        ("nsf", {"dim": 1}, ValueError, "need dim >= 2"),
        ("nsf", {"dim": 2, "blocks": 3}, TypeError, "no option 'blocks'; its options are: layers"),
        ("nsf", {"dim": 2, "layer": 3}, TypeError, r"'layer'; did you mean 'layers'\? its options"),
        ("maf", {"dim": 2, "context_dim": -1}, ValueError, "context_dim"),
        ("realnvp", {"dim": 2, "scale_bound": 0.0}, ValueError, "scale_bound"),
        ("ffjord", {"dim": 2, "divergence": "trace"}, ValueError, "must be one of exact, hutch"),
        ("ffjord", {"dim": 2, "probe": "uniform"}, ValueError, "probe must be one of"),
        ("ffjord", {"dim": 2, "activation": "relu"}, ValueError, "activation must be one of"),
        ("ffjord", {"dim": 2, "time_embedding": "x"}, ValueError, "time_embedding must be"),
        ("ffjord", {"dim": 2, "kinetic": -0.1}, ValueError, "kinetic must be a number >= 0"),
        ("ffjord", {"dim": 2, "jacobian": math.nan}, ValueError, "jacobian must be a number"),
        ("ffjord", {"dim": 2, "method": "rk45"}, ValueError, "method must be one of euler"),
        ("ffjord", {"dim": 2, "method": "rk4"}, ValueError, "steps must be an int >= 1"),
        ("ffjord", {"dim": 2, "steps": 8}, ValueError, "chooses its own steps"),
        ("ffjord", {"dim": 2, "rtol": 0.0}, ValueError, "rtol must be a positive number"),
        ("ffjord", {"dim": 2, "hidden": (0,)}, ValueError, "hidden sizes"),
        ("resflow", {"dim": 2, "coeff": 1.0}, ValueError, "coeff must be a number in"),
        ("resflow", {"dim": 2, "estimator": "hutch"}, ValueError, "estimator must be one of"),
        ("resflow", {"dim": 2, "eval_estimator": "x"}, ValueError, "eval_estimator must be"),
        ("resflow", {"dim": 2, "p": 1.5}, ValueError, "p must be"),
        ("resflow", {"dim": 2, "distribution": "uniform"}, ValueError, "distribution must be"),
        ("resflow", {"dim": 2, "tol": 0.0}, ValueError, "tol must be"),
    ],
)
def test_create_rejects_bad_options(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        ff.models.create(name, **kwargs)


@pytest.mark.parametrize("mixing", ["alternate", "permutation", "lu"])
def test_coupling_mixing_options(mixing):
    model = build_mixing(mixing)
    x = data(6)
    torch.testing.assert_close(model.decode(model.encode(x)), x)


def build_mixing(mixing: str) -> ff.Model:
    model = ff.models.create("realnvp", dim=6, mixing=mixing, hidden=(16,)).double()
    return perturb(model, std=0.05).eval()


# -- multi-scale image flows: glow and realnvp at small image shapes ------------------------

MULTISCALE = ["glow", "realnvp"]
IMAGE_SHAPES = [(1, 4, 4), (2, 4, 4)]


def build_image(name: str, shape: tuple, seed: int = 0, **extra) -> ff.Model:
    torch.manual_seed(seed)
    model = ff.models.create(name, shape=shape, hidden=(8,), steps=2, **extra).double()
    e = extra.get("context_dim", 0)
    context = torch.randn(64, e, dtype=torch.float64) if e else None
    with torch.no_grad():  # ActNorm's initialisation
        model.log_prob(1.5 * torch.randn(64, *shape, dtype=torch.float64) + 0.5, context)
    return perturb(model, std=0.05, seed=seed).eval()


def image_ladj(f, x: torch.Tensor) -> torch.Tensor:
    shape = x.shape[1:]
    return autograd_ladj(lambda v: f(v.view(-1, *shape)).flatten(1), x.flatten(1))


VARIANTS = {
    "glow": {},
    "glow-resnet": {"conditioner": "resnet"},
    "glow-3-levels-no-prior": {"levels": 3, "split_prior": False},
    "realnvp": {},
    "realnvp-prior-mlp": {"split_prior": True, "conditioner": "mlp"},
}


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("variant", VARIANTS)
def test_multiscale_image_identities(variant, shape):
    name = variant.split("-")[0]
    if VARIANTS[variant].get("levels", 0) > 2 and shape[1] < 8:
        shape = (shape[0], 8, 8)  # three squeezes need 8x8
    model = build_image(name, shape, **VARIANTS[variant])
    x = 2 * torch.randn(6, *shape, dtype=torch.float64)
    z, ladj = model.transform.forward_and_ladj(x)
    assert z.shape == x.shape
    torch.testing.assert_close(model.decode(z), x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(model.transform.inverse_and_ladj(z)[1], -ladj)
    expected = model.base.log_prob(z) + image_ladj(model.encode, x)
    torch.testing.assert_close(model.log_prob(x), expected)
    samples, log_prob = model.sample_and_log_prob(4)
    assert samples.shape == (4, *shape)
    torch.testing.assert_close(log_prob, model.log_prob(samples))


@pytest.mark.parametrize("name", MULTISCALE)
def test_multiscale_gradients_and_context(name):
    shape = (2, 4, 4)
    model = build_image(name, shape, context_dim=C, split_prior=True).train()
    x, c = 2 * torch.randn(8, *shape, dtype=torch.float64), torch.randn(8, C).double()
    model.loss(x, c).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    model.eval()
    assert (model.log_prob(x, c) - model.log_prob(x, c + 1)).abs().min() > 1e-8
    z = model.encode(x, c)
    torch.testing.assert_close(model.decode(z, c), x, atol=1e-9, rtol=1e-9)
    expected = model.base.log_prob(z) + image_ladj(lambda v: model.encode(v, c), x)
    torch.testing.assert_close(model.log_prob(x, c), expected)


def test_glow_and_realnvp_are_multi_scale_on_images():
    glow = ff.models.create("glow", shape=(1, 8, 8), levels=3, steps=2, hidden=(8,))
    scales, t = [], glow.transform
    while t is not None:  # MultiScale -> its FactorOut's inner -> ...
        scales.append(t)
        assert isinstance(t, ff.transforms.MultiScale)
        t = t.split.inner if t.split is not None else None
    assert [s.event_shape for s in scales] == [(1, 8, 8), (2, 4, 4), (4, 2, 2)]
    assert all(s.split is not None and s.split.prior is not None for s in scales[:-1])
    steps = list(scales[0].transform.transforms)
    kinds = [ff.transforms.ActNorm, ff.transforms.LULinear, ff.transforms.AffineCoupling]
    assert [type(p) for p in steps] == kinds * 2
    assert isinstance(steps[2].conditioner, ff.nets.ConvConditioner)
    # RealNVP: checkerboard couplings, a squeeze, channel couplings, factor-out; 2 scales here.
    nvp = ff.models.create("realnvp", shape=(1, 8, 8), hidden=(8,), steps=2, actnorm=False)
    *board, split = nvp.transform.transforms
    assert [c.mask.sum().item() for c in board] == [32, 32]
    assert torch.equal(board[1].mask, ff.transforms.checkerboard_mask((1, 8, 8), flip=True))
    assert isinstance(split, ff.transforms.MultiScale) and split.split.prior is None
    assert all(
        torch.equal(c.mask, ff.transforms.channel_mask((4, 4, 4), flip=i % 2 == 1))
        for i, c in enumerate(split.transform.transforms)
    )
    assert len(split.split.inner.transforms) == 3  # the last scale: steps + 1 checkerboards


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("glow", {"shape": (1, 8, 8), "levels": 4}, r"levels=4 .* shape \(1, 8, 8\).*levels <= 3"),
        ("glow", {"shape": (1, 6, 6), "levels": 2}, r"levels <= 1"),
        ("glow", {"shape": (1, 8, 8), "levels": 0}, "levels must be an int >= 1"),
        ("glow", {"dim": 1}, "need dim >= 2"),
        ("glow", {"dim": 4, "steps": 0}, "steps must be an int >= 1"),
        ("realnvp", {"shape": (1, 8, 8), "levels": 4}, r"levels <= 3"),
        ("realnvp", {"dim": 4, "levels": 2}, "levels applies to images"),
        ("realnvp", {"dim": 4, "conditioner": "resnet"}, "'resnet' takes image shapes"),
        ("glow", {"dim": 4, "conditioner": "conv"}, "'conv' takes image shapes"),
        ("glow", {"shape": (1, 4, 4), "conditioner": "unet"}, "conditioner must be one of"),
        ("realnvp", {"shape": (1, 8, 8), "mixing": "lu"}, "mixing applies to single-scale"),
    ],
)
def test_multiscale_options_are_checked(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ff.models.create(name, **kwargs)


def test_realnvp_on_vectors_is_unchanged():
    # The image options leave vectors alone: same parameters, same numbers, bit for bit.
    torch.manual_seed(0)
    a = ff.models.create("realnvp", dim=4, hidden=(8,))
    torch.manual_seed(0)
    b = ff.models.create("realnvp", dim=4, hidden=(8,), conditioner="mlp", steps=5, levels=1)
    x = torch.randn(5, 4)
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x), rtol=0, atol=0)
    assert list(a.state_dict()) == list(b.state_dict())


@pytest.mark.parametrize("name", MULTISCALE)
def test_multiscale_flows_learn(name):
    # A few Adam steps on correlated images lower the NLL: the parameters are wired to the loss.
    torch.manual_seed(0)
    base = torch.randn(256, 1, 2, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    x = base + 0.1 * torch.randn(256, 1, 4, 4)
    model = ff.models.create(name, shape=(1, 4, 4), hidden=(16,), steps=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(x).item()
    for _ in range(30):
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()
    assert model.loss(x).item() < first - 5.0
