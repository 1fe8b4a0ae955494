"""Flow matching against ground truth: path derivatives by jvp, scheduler derivatives by
autograd, the OT coupling against brute force, time samplers against their laws, and the
Gaussian-to-Gaussian marginal velocity recovered by training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import flowforge as ff
from flowforge.matching import (
    AffinePath,
    CondOTScheduler,
    CosineScheduler,
    IndependentCoupling,
    LogitNormalTime,
    ModeTime,
    OTCoupling,
    PolynomialScheduler,
    SchrodingerBridgePath,
    SinkhornCoupling,
    UniformTime,
    VPCosineScheduler,
    VPScheduler,
    cfm_loss,
)

SCHEDULERS = {
    "condot": CondOTScheduler(),
    "condot-sigma-min": CondOTScheduler(0.1),
    "cosine": CosineScheduler(),
    "polynomial": PolynomialScheduler(3.0),
    "vp": VPScheduler(),
    "vp-cosine": VPCosineScheduler(),
}
T = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_derivatives_match_autograd(name):
    s = SCHEDULERS[name]
    out = s(T)
    for value, deriv in (("alpha_t", "d_alpha_t"), ("sigma_t", "d_sigma_t")):
        t = T.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(getattr(s(t), value).sum(), t)
        torch.testing.assert_close(getattr(out, deriv), grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_run_from_noise_to_data(name):
    out = SCHEDULERS[name](torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert out.alpha_t[0] < 0.01 and out.sigma_t[0] == pytest.approx(1.0, abs=1e-4)
    assert out.alpha_t[1] == pytest.approx(1.0) and out.sigma_t[1] < 0.11
    mid = SCHEDULERS[name](T)
    assert (mid.d_alpha_t > 0).all() and (mid.d_sigma_t < 0).all()


def test_scheduler_table_covers_the_registry():
    from flowforge.matching import SCHEDULERS as REGISTERED

    assert {type(s).name for s in SCHEDULERS.values()} == set(REGISTERED)


def test_vp_cosine_is_nichol_and_dhariwals_schedule_on_a_stretched_clock():
    # Their alpha_bar(s) = cos^2((s + d) / (1 + d) pi / 2) / cos^2(d / (1 + d) pi / 2) has an angle
    # linear in s; ours stops the angle where alpha_0 = alpha_min, so it is theirs at s * k.
    d, scheduler = 0.008, VPCosineScheduler()
    start = 0.5 * math.pi * d / (1 + d)
    end = math.acos(scheduler.alpha_min * math.cos(start))
    k = (end - start) / (0.5 * math.pi - start)
    s = (1 - T) * k
    theirs = torch.cos((s + d) / (1 + d) * math.pi / 2) ** 2 / math.cos(start) ** 2
    torch.testing.assert_close(scheduler(T).alpha_t ** 2, theirs, rtol=1e-10, atol=1e-12)
    out = scheduler(torch.tensor([0.0], dtype=torch.float64))
    assert out.alpha_t.item() == pytest.approx(math.exp(-0.25 * 20.1))  # the linear VP's alpha_0
    with pytest.raises(ValueError, match="alpha_min must be a number in"):
        VPCosineScheduler(alpha_min=0.0)


PATHS = {name: AffinePath(s) for name, s in SCHEDULERS.items()}


@pytest.mark.parametrize("name", [*PATHS, "bridge"])
def test_path_velocity_is_the_time_derivative(name):
    torch.manual_seed(0)
    x0, x1 = torch.randn(25, 3, dtype=torch.float64), torch.randn(25, 3, dtype=torch.float64)
    if name == "bridge":
        path, noise = SchrodingerBridgePath(0.7), torch.randn(25, 3, dtype=torch.float64)

        def x_t(t):
            return path.sample(x0, x1, t, noise).x_t

        dx = path.sample(x0, x1, T, noise).dx_t
    else:
        path = PATHS[name]

        def x_t(t):
            return path.sample(x0, x1, t).x_t

        dx = path.sample(x0, x1, T).dx_t
    _, jvp = torch.func.jvp(x_t, (T,), (torch.ones_like(T),))
    torch.testing.assert_close(dx, jvp, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", PATHS)
def test_parameterisations_convert_both_ways(name):
    path = PATHS[name]
    torch.manual_seed(1)
    x0, x1 = torch.randn(25, 4, dtype=torch.float64), torch.randn(25, 4, dtype=torch.float64)
    s = path.sample(x0, x1, T)
    c = path.scheduler(T)
    alpha, sigma = c.alpha_t[:, None], c.sigma_t[:, None]
    # Salimans & Ho's v = alpha eps - sigma x1, diffusion's v-prediction.
    truth = {"velocity": s.dx_t, "x1": x1, "epsilon": x0, "v": alpha * x0 - sigma * x1}
    for source, target in itertools.permutations(truth, 2):
        got = path.convert(truth[source], s.x_t, T, source, target)
        torch.testing.assert_close(got, truth[target], rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="target must be one of velocity, x1, epsilon, v"):
        path.convert(x1, s.x_t, T, "x1", "score")


def _cost(x0, x1, idx):
    return (x0[idx] - x1).square().sum().item()


@pytest.mark.parametrize("n", [2, 4, 6])
def test_ot_coupling_is_the_best_permutation(n):
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        x0, x1 = torch.randn(n, 3, generator=g), torch.randn(n, 3, generator=g) + 1
        idx = OTCoupling().pair(x0, x1)
        assert sorted(idx.tolist()) == list(range(n))  # a permutation: every noise row once
        best = min(_cost(x0, x1, torch.tensor(p)) for p in itertools.permutations(range(n)))
        assert _cost(x0, x1, idx) == pytest.approx(best, rel=1e-6)
        re0, re1 = OTCoupling()(x0, x1)
        assert torch.equal(re1, x1) and torch.equal(re0, x0[idx])


def test_sinkhorn_coupling_moves_between_ot_and_independent():
    torch.manual_seed(0)
    x0, x1 = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64) + 2
    ot_idx = OTCoupling().pair(x0, x1)
    # Small sigma: the entropic plan is nearly the OT permutation.
    sharp = SinkhornCoupling(sigma=0.05, max_iter=20_000).pair(x0, x1)
    assert (sharp == ot_idx).double().mean() > 0.8
    # Large sigma: nearly independent, so the mean cost is that of a random pairing.
    blurred = [_cost(x0, x1, SinkhornCoupling(sigma=20.0).pair(x0, x1)) for _ in range(30)]
    independent = torch.cdist(x0, x1).square().mean().item() * 64
    assert sum(blurred) / 30 == pytest.approx(independent, rel=0.1)
    assert _cost(x0, x1, ot_idx) < 0.8 * independent


def test_couplings_reject_mismatched_batches():
    for coupling in (IndependentCoupling(), OTCoupling(), SinkhornCoupling()):
        with pytest.raises(ValueError, match="same shape"):
            coupling.pair(torch.zeros(4, 2), torch.zeros(5, 2))


def test_time_samplers_follow_their_laws():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    u = UniformTime()(n, generator=g, dtype=torch.float64)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean().item() - 0.5) < 0.005
    ln = LogitNormalTime(loc=1.0, scale=0.5)(n, generator=g, dtype=torch.float64)
    assert ln.median().item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.005)
    logit = torch.log(ln / (1 - ln))
    assert logit.std().item() == pytest.approx(0.5, abs=0.01)
    m = ModeTime(scale=1.0)(n, generator=g, dtype=torch.float64)
    assert 0 <= m.min() and m.max() <= 1
    # Mode sampling with s > 0 puts more mass in the middle than uniform does.
    assert ((m - 0.5).abs() < 0.25).double().mean() > 0.55
    assert torch.allclose(
        ModeTime(scale=0.0)(10, generator=torch.Generator().manual_seed(3)),
        UniformTime()(10, generator=torch.Generator().manual_seed(3)),
    )
    # shift > 1 moves every time towards the noise (t = 0).
    a = UniformTime(shift=3.0)(1000, generator=torch.Generator().manual_seed(5))
    b = UniformTime()(1000, generator=torch.Generator().manual_seed(5))
    assert (a <= b + 1e-7).all() and a.mean() < b.mean() - 0.1


def test_stratified_times_keep_the_law_and_cover_every_stratum():
    n, draws = 64, 4000
    g = torch.Generator().manual_seed(0)
    for sampler in (
        UniformTime(stratified=True),
        LogitNormalTime(loc=0.5, scale=0.8, stratified=True),
        ModeTime(scale=1.0, stratified=True),
    ):
        plain = type(sampler)(**{**vars(sampler), "stratified": False})
        t = torch.stack([sampler(n, generator=g, dtype=torch.float64) for _ in range(draws)])
        ref = plain(n * draws, generator=g, dtype=torch.float64)
        # Same marginal law: every decile matches the independent sampler's.
        q = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
        assert torch.allclose(t.flatten().quantile(q), ref.quantile(q), atol=0.01)
        # A lower-variance batch mean: the point of stratifying.
        assert t.mean(dim=1).var() < 0.1 * ref.view(draws, n).mean(dim=1).var()
    # Uniform: exactly one time per stratum [k/n, (k+1)/n), in random order.
    t = UniformTime(stratified=True)(n, generator=g, dtype=torch.float64)
    assert torch.equal((t * n).floor().sort().values, torch.arange(n, dtype=torch.float64))
    assert not torch.equal(t, t.sort().values)
    with pytest.raises(TypeError, match="stratified must be True or False"):
        UniformTime(stratified=1)
    assert not ff.models.create("otfm", dim=2).time_sampler.stratified
    assert ff.models.create("fm", dim=2, stratified=True).time_sampler.stratified


def test_fm_default_loss_is_the_plain_cfm_estimator_draw_for_draw():
    # The recipe's defaults draw noise, then independent uniform times, as the plain
    # conditional flow-matching estimator does: the benchmark's "same recipe as the peers".
    torch.manual_seed(0)
    model = ff.models.create("fm", dim=2, hidden=(16, 16))
    x1 = ff.data.checkerboard(64, seed=1)
    torch.manual_seed(7)
    loss = model.loss(x1)
    torch.manual_seed(7)
    x0 = torch.randn_like(x1)
    t = torch.rand(64)
    sigma_min = 1e-4
    xt = t[:, None] * x1 + (1 - (1 - sigma_min) * t[:, None]) * x0
    target = x1 - (1 - sigma_min) * x0
    with torch.no_grad():
        expected = (model.field(t, xt) - target).square().mean()
    assert torch.allclose(loss.detach(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CondOTScheduler(1.0), "sigma_min must be a number in"),
        (lambda: PolynomialScheduler(0), "exponent n must be > 0"),
        (lambda: VPScheduler(2.0, 1.0), "beta_min <= beta_max"),
        (lambda: SchrodingerBridgePath(0.0), "sigma must be a positive number"),
        (lambda: SinkhornCoupling(-1.0), "sigma must be a positive number"),
        (lambda: LogitNormalTime(scale=0.0), "scale must be a positive number"),
        (lambda: ModeTime(scale=3.0), "scale must be a number in"),
        (lambda: UniformTime(shift=0.0), "shift must be a positive number"),
    ],
)
def test_bad_settings_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_cfm_loss_weights_times():
    v, u = torch.ones(4, 2), torch.zeros(4, 2)
    t = torch.tensor([0.0, 0.5, 0.5, 1.0])
    assert cfm_loss(v, u).item() == pytest.approx(1.0)
    assert cfm_loss(v, u, t, lambda t: 2 * t).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="a weighting needs the times"):
        cfm_loss(v, u, weighting=lambda t: t)


def test_training_recovers_the_gaussian_marginal_velocity():
    # Data N(mu, s^2) per coordinate, noise N(0, 1), linear path, independent pairs: the
    # marginal velocity is E[x1 - x0 | x_t = x] = mu + (t s^2 - (1 - t)) / var_t (x - t mu),
    # var_t = t^2 s^2 + (1 - t)^2.
    torch.manual_seed(0)
    mu, s = torch.tensor([1.5, -1.0]), torch.tensor([0.5, 2.0])
    data = mu + s * torch.randn(20_000, 2)
    model = ff.models.create("rectified", dim=2, hidden=(64, 64), time_embedding="sinusoidal")
    config = ff.train.TrainConfig(
        steps=1500, batch_size=512, lr=3e-3, progress=False, ema_decay=0, device="cpu"
    )
    ff.train.train(model, data, config)
    for t in (0.25, 0.5, 0.75):
        var = t**2 * s**2 + (1 - t) ** 2
        x = t * mu + var.sqrt() * torch.linspace(-1.5, 1.5, 7)[:, None]
        exact = mu + (t * s**2 - (1 - t)) / var * (x - t * mu)
        with torch.no_grad():
            learned = model.field(torch.tensor(t), x)
        # Velocities here reach about 3.7; the fit is good to a few percent.
        assert (learned - exact).abs().max() < 0.25, (t, learned - exact)
    # The trained model is a CNF: its exact likelihood approaches the data's entropy.
    entropy = (0.5 * torch.log(2 * math.pi * math.e * s**2)).sum().item()
    nll = ff.metrics.nll(model.eval(), mu + s * torch.randn(2000, 2)).mean
    assert nll < entropy + 0.05, (nll, entropy)
    # A few RK4 steps (NFE 16) already sample the data law.
    with torch.no_grad():
        x = model.sample(4000, method="rk4", steps=4)
    assert (x.mean(0) - mu).abs().max() < 0.1 and (x.std(0) / s - 1).abs().max() < 0.1


PATH_COUPLINGS = [
    ("condot", "independent"),
    ("cosine", "ot"),
    ("polynomial", "independent"),
    ("vp", "independent"),
    ("bridge", "sinkhorn"),
]


@pytest.mark.parametrize(("path", "coupling"), PATH_COUPLINGS)
def test_model_identities_hold_for_every_path_and_coupling(path, coupling):
    from helpers import autograd_ladj, perturb

    torch.manual_seed(0)
    model = ff.models.create(
        "fm", dim=3, hidden=(32, 32), path=path, coupling=coupling, rtol=1e-9, atol=1e-9
    ).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    result = model.objective(ff.Batch(x))
    loss = result.loss
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in model.parameters())
    assert float(result.terms["cfm"]) == pytest.approx(loss.item())
    perturb(model, 0.05).eval()
    x = x[:6]
    z = model.encode(x)
    torch.testing.assert_close(model.decode(z), x, atol=1e-6, rtol=1e-6)
    expected = model.base.log_prob(z) + autograd_ladj(model.encode, x)
    torch.testing.assert_close(model.log_prob(x), expected, atol=1e-6, rtol=1e-6)


def test_flow_matching_training_costs_one_evaluation_per_step(tmp_path):
    model = ff.models.create("otfm", dim=2, hidden=(16,))
    config = ff.train.TrainConfig(steps=4, batch_size=32, log_every=1, progress=False, device="cpu")
    ff.train.train(model, torch.randn(128, 2), config, run_dir=tmp_path)
    import json

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["nfe"] == 1 and r["nfe_backward"] == 0 and "loss_cfm" in r for r in records)


def test_heun_sampling_costs_two_evaluations_per_step():
    model = ff.models.create("fm", dim=2, hidden=(8,))
    model.sample(5, method="heun", steps=3)
    assert model.last_nfe == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "spiral"}, "path must be one of condot, cosine"),
        ({"coupling": "greedy"}, "coupling must be one of independent, ot, sinkhorn"),
        ({"time_sampler": "beta"}, "time_sampler must be one of uniform, logit-normal, mode"),
        ({"sigma_min": 1.5}, "sigma_min must be a number in"),
        ({"shift": -1.0}, "shift must be a positive number"),
        ({"activation": "relu"}, "activation must be one of"),
    ],
)
def test_recipe_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ff.models.create("fm", dim=2, **kwargs)


def test_presets_differ_only_in_their_documented_defaults():
    options = {n: ff.models.recipe(n).options() for n in ("fm", "rectified", "otfm", "sbfm")}
    assert options["fm"]["sigma_min"] == 1e-4 and options["rectified"]["sigma_min"] == 0.0
    assert options["otfm"]["coupling"] == "ot"
    assert options["sbfm"]["path"] == "bridge" and options["sbfm"]["coupling"] == "sinkhorn"
    assert isinstance(ff.models.create("otfm", dim=2).coupling, OTCoupling)


def _global_pairing_worker(rank: int, world: int, init: str, x0, x1, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        b = x1.shape[0] // world
        mine = slice(rank * b, (rank + 1) * b)
        paired, data = OTCoupling()(x0[mine], x1[mine])
        torch.save({"paired": paired, "data": data}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ot_coupling_is_solved_over_the_global_batch_under_ddp(tmp_path):
    # Two processes, each with half the noise and half the data: every data row must get the
    # noise row the exact OT solution over the *whole* batch gives it (torchcfm pairs per
    # process, which is a different, worse coupling).
    torch.manual_seed(0)
    x0, x1 = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64) + 1
    init = f"file://{tmp_path / 'store'}"
    out = str(tmp_path / "pairs")
    torch.multiprocessing.spawn(
        _global_pairing_worker, args=(2, init, x0, x1, out), nprocs=2, join=True
    )
    results = [torch.load(f"{out}.{r}") for r in range(2)]
    paired = torch.cat([r["paired"] for r in results])
    torch.testing.assert_close(torch.cat([r["data"] for r in results]), x1)
    torch.testing.assert_close(paired, x0[OTCoupling().pair(x0, x1)])


# -- events of any shape ----------------------------------------------------------------------
SHAPE = (1, 4, 4)
PRESETS = ("fm", "rectified", "otfm", "sbfm")


def create(name: str, **options) -> ff.Model:
    """The recipe ``name`` built for (1, 4, 4) images."""
    return ff.models.create(name, shape=SHAPE, **options)


@pytest.mark.parametrize("name", [*PATHS, "bridge"])
def test_paths_at_image_shape_are_the_vector_paths_reshaped(name):
    # t broadcasts as (B, 1, 1, 1): every entry of an image moves with its sample's time.
    torch.manual_seed(2)
    x0, x1 = torch.randn(25, 2, 3, 3, dtype=torch.float64), torch.randn(25, 2, 3, 3).double()
    flat = (x0.flatten(1), x1.flatten(1))
    if name == "bridge":
        path, noise = SchrodingerBridgePath(0.7), torch.randn(25, 2, 3, 3, dtype=torch.float64)
        image, vector = path.sample(x0, x1, T, noise), path.sample(*flat, T, noise.flatten(1))
    else:
        path = PATHS[name]
        image, vector = path.sample(x0, x1, T), path.sample(*flat, T)
        velocity = path.convert(image.dx_t, image.x_t, T, "velocity", "x1")
        assert velocity.shape == x1.shape
        torch.testing.assert_close(velocity, x1, rtol=1e-6, atol=1e-8)
    assert image.x_t.shape == image.dx_t.shape == x0.shape
    torch.testing.assert_close(image.x_t.flatten(1), vector.x_t, rtol=0, atol=0)
    torch.testing.assert_close(image.dx_t.flatten(1), vector.dx_t, rtol=0, atol=0)


def test_couplings_pair_images_as_flattened_vectors():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(12, 2, 3, 3, generator=g), torch.randn(12, 2, 3, 3, generator=g) + 0.5
    idx = OTCoupling().pair(x0, x1)
    assert torch.equal(idx, OTCoupling().pair(x0.flatten(1), x1.flatten(1)))
    assert not torch.equal(idx, torch.arange(12))  # the OT pairing of these rows is not trivial
    paired, data = OTCoupling()(x0, x1)
    assert torch.equal(paired, x0[idx]) and torch.equal(data, x1)
    torch.manual_seed(3)
    sink = SinkhornCoupling(0.3).pair(x0, x1)
    torch.manual_seed(3)
    assert torch.equal(sink, SinkhornCoupling(0.3).pair(x0.flatten(1), x1.flatten(1)))
    assert IndependentCoupling()(x0, x1)[0] is x0


def test_cfm_loss_at_image_shape_averages_every_entry():
    g = torch.Generator().manual_seed(1)
    v, u = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    per_sample = (v - u).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(cfm_loss(v, u), per_sample.mean())
    torch.testing.assert_close(cfm_loss(v, u, t, lambda t: 1 + t), ((1 + t) * per_sample).mean())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_at_image_shape_keeps_the_model_identities_and_trains(name):
    from helpers import perturb

    torch.manual_seed(0)
    model = create(name, hidden=(32,), rtol=1e-9, atol=1e-9).double()
    assert model.event_shape == SHAPE
    data = 0.5 * torch.randn(64, *SHAPE, dtype=torch.float64) + 1.0
    result = model.objective(ff.Batch(data[:16]))
    result.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    config = ff.train.TrainConfig(steps=5, batch_size=16, progress=False, ema_decay=0, device="cpu")
    ff.train.train(model, data, config)  # the coupling and the path at image shape, in training
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    perturb(model, 0.05).eval()
    x = data[:3]
    z = model.encode(x)
    assert z.shape == x.shape and model.sample(2, steps=2).shape == (2, *SHAPE)
    torch.testing.assert_close(model.decode(z), x, atol=1e-6, rtol=1e-6)
    log_p = model.log_prob(x)
    assert log_p.shape == (3,) and torch.isfinite(log_p).all()
    _, log_q = model.sample_and_log_prob(2, method="rk4", steps=4)
    assert log_q.shape == (2,)


def test_label_conditioned_flow_matching_at_image_shape():
    from helpers import perturb

    torch.manual_seed(0)
    model = create("fm", hidden=(16,), num_classes=3)
    assert model.num_classes == 3 and model.field.field.layers[0].in_features == 16 + 4 + 1
    perturb(model, 0.3)
    x, labels = torch.randn(4, *SHAPE), torch.tensor([0, 1, 2, 1])
    fast = {"method": "rk4", "steps": 3}
    lp = model.log_prob(x, context=labels, **fast)
    assert (lp - model.log_prob(x, context=torch.tensor([2, 0, 1, 0]), **fast)).abs().min() > 1e-4
    torch.manual_seed(5)
    samples = model.sample(4, context=labels, **fast)
    torch.manual_seed(5)
    torch.testing.assert_close(samples, model.decode(model.base.sample(4), labels, **fast).detach())
    torch.manual_seed(5)
    shared = model.sample(4, context=1, **fast)
    torch.testing.assert_close(shared[[1, 3]], samples[[1, 3]])
    assert (shared[[0, 2]] - samples[[0, 2]]).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    model.loss(x, labels).backward()
    assert model.label_embedding.weight.grad[:3].abs().sum() > 0


@pytest.mark.parametrize("name", ["fm", "otfm", "sbfm"])
def test_given_noise_is_regressed_along_exactly_its_pairs(name):
    # Batch(x1, x0=x0): no noise drawn, no re-pairing (otfm's OT and sbfm's Sinkhorn would move
    # the pairs), the path between exactly x0[i] and x1[i] at the drawn times.
    torch.manual_seed(0)
    model = create(name, hidden=(16,)).double()
    x1 = torch.randn(16, *SHAPE, dtype=torch.float64) + 2.0
    x0 = torch.randn(16, *SHAPE, dtype=torch.float64)
    torch.manual_seed(7)
    result = model.objective(ff.Batch(x1, x0=x0))
    torch.manual_seed(7)
    t = model.time_sampler(16, dtype=torch.float64)
    path = model.path.sample(x0, x1, t)  # the bridge draws its noise after the times
    with torch.no_grad():
        expected = cfm_loss(model.field(t, path.x_t), path.dx_t, t, model.weighting)
    torch.testing.assert_close(result.loss.detach(), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(result.terms["cfm"], expected, rtol=1e-12, atol=0)
    # The pairs matter: the same noise in another order, or drawn noise, is another loss.
    for other in (ff.Batch(x1, x0=x0.flip(0)), ff.Batch(x1)):
        torch.manual_seed(7)
        assert abs(model.objective(other).loss.item() - expected.item()) > 1e-6
