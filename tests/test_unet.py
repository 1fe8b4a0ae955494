"""The U-Net vector field and the continuous recipes built with ``field="unet"``."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.estimators import divergence_exact
from flowforge.nets import TimeMLP, UNet
from helpers import perturb, state_round_trip

SHAPE = (2, 4, 4)


def unet(**options) -> UNet:
    torch.manual_seed(0)
    options = {"channels": 8, "groups": 4, **options}
    # Off the zero start (the last convolution of each block and the output are zero there).
    return perturb(UNet(SHAPE, **options).double(), std=0.1).eval()


def images(n: int = 5, shape=SHAPE) -> torch.Tensor:
    return torch.randn(n, *shape, dtype=torch.float64)


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((1, 4, 4), {}),
        ((3, 8, 8), {"multipliers": (1, 2, 2), "attention": (2,)}),
        ((2, 4, 6), {"blocks": 2, "attention": (0, 1)}),
        ((1, 5, 3), {"multipliers": (1,)}),
    ],
)
def test_shapes(shape, options):
    torch.manual_seed(0)
    v = UNet(shape, channels=8, groups=4, context_features=3, **options)
    x, c = torch.randn(4, *shape), torch.randn(4, 3)
    assert v(0.3, x, c).shape == (4, *shape)
    assert v(torch.rand(4), x, c).shape == (4, *shape)


def test_starts_at_zero_velocity():
    torch.manual_seed(0)
    v = UNet(SHAPE, channels=8, groups=4, attention=(1,))
    assert v(0.5, torch.randn(3, *SHAPE)).abs().max() == 0


def test_scalar_time_is_the_same_time_for_every_sample():
    v, x = unet(), images()
    torch.testing.assert_close(v(0.3, x), v(torch.full((5,), 0.3, dtype=torch.float64), x))


def test_depends_on_time_and_context():
    v, x = unet(context_features=3), images()
    c = torch.randn(5, 3, dtype=torch.float64)
    base = v(0.3, x, c)
    assert (base - v(0.7, x, c)).abs().amax(dim=(1, 2, 3)).min() > 1e-6
    assert (base - v(0.3, x, c + 1)).abs().amax(dim=(1, 2, 3)).min() > 1e-6


def test_batch_is_evaluated_per_sample():
    # GroupNorm and attention stay within a sample: exact divergences and guidance rely on it.
    v, x = unet(attention=(0, 1), context_features=2), images(4)
    c = torch.randn(4, 2, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    whole = v(t, x, c)
    for i in range(4):
        torch.testing.assert_close(whole[i : i + 1], v(t[i : i + 1], x[i : i + 1], c[i : i + 1]))


@pytest.mark.parametrize("create_graph", [False, True])
def test_exact_divergence_is_the_trace_of_the_jacobian(create_graph):
    # The batched VJPs of divergence_exact (kept for training when create_graph) must see one
    # Jacobian per sample; torch's fused GroupNorm fails there, the U-Net's own does not.
    v, x = unet(attention=(1,), context_features=2), images(3).requires_grad_(True)
    c = torch.randn(3, 2, dtype=torch.float64)
    div = divergence_exact(v(0.4, x, c), x, create_graph)
    jac = torch.autograd.functional.jacobian(lambda y: v(0.4, y, c).sum(0).flatten(), x)
    trace = torch.einsum("ibi->b", jac.flatten(2))
    torch.testing.assert_close(div, trace)


def test_gradients_reach_every_parameter():
    v = unet(attention=(0, 1), context_features=3, dropout=0.1).train()
    x, c = images(), torch.randn(5, 3, dtype=torch.float64)
    v(torch.rand(5, dtype=torch.float64), x, c).square().sum().backward()
    for name, p in v.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_two_times():
    v, x = unet(times=2), images()
    assert (v(0.3, x, r=0.8) - v(0.3, x)).abs().max() > 1e-6
    torch.testing.assert_close(v(0.3, x), v(0.3, x, r=0.3))
    with pytest.raises(ValueError, match="built with times=2"):
        unet()(0.3, x, r=0.5)


@pytest.mark.parametrize(
    ("shape", "options", "error", "message"),
    [
        ((16,), {}, ValueError, r"image events \(C, H, W\), got shape \(16,\); use TimeMLP"),
        ((1, 6, 6), {"multipliers": (1, 2, 2)}, ValueError, r"divisible by 4; got shape \(1, 6"),
        ((1, 4, 4), {"channels": 12}, ValueError, "groups must divide channels"),
        ((1, 4, 4), {"multipliers": ()}, ValueError, "at least one entry"),
        ((1, 4, 4), {"multipliers": (1, 0)}, ValueError, r"multipliers\[1\] must be a positive"),
        ((1, 4, 4), {"attention": (2,)}, ValueError, r"attention\[0\] must be a level index in"),
        ((1, 4, 4), {"attention": 1}, TypeError, "attention must be a sequence"),
        ((1, 4, 4), {"dropout": 1.0}, ValueError, "dropout"),
        ((1, 4, 4), {"blocks": 0}, ValueError, "blocks must be a positive int"),
    ],
)
def test_bad_options(shape, options, error, message):
    with pytest.raises(error, match=message):
        UNet(shape, **options)


def test_bad_inputs():
    v = UNet(SHAPE, channels=8, context_features=3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2, 4, 4\), got \(3, 16\)"):
        v(0.5, torch.randn(3, 16), torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"context must have shape \(3, 3\).*got None"):
        v(0.5, torch.randn(3, *SHAPE))
    with pytest.raises(ValueError, match="built without conditioning"):
        UNet(SHAPE, channels=8)(0.5, torch.randn(3, *SHAPE), torch.randn(3, 3))


# -- the recipes with field="unet" ---------------------------------------------------------------

RECIPES = ["fm", "rectified", "otfm", "sbfm", "diffusion", "ffjord", "meanflow"]
IMAGE = (1, 4, 4)
# Tight solves: the identities checked below are the solver's and the divergence's, to 1e-6.
TIGHT = {"rtol": 1e-9, "atol": 1e-9}


def recipe_model(name: str, seed: int = 0, std: float = 0.05, **options) -> ff.Model:
    torch.manual_seed(seed)
    options = {"field": "unet", "channels": 8, **TIGHT, **options}
    model = ff.models.create(name, shape=IMAGE, **options)
    return perturb(model.double(), std=std, seed=seed).eval()


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_build_a_unet_for_images_and_keep_the_mlp_for_vectors(name):
    model = ff.models.create(name, shape=IMAGE, field="unet")
    assert any(isinstance(m, UNet) for m in model.modules())
    assert model.created_with["options"] == {"field": "unet"}
    vector = ff.models.create(name, dim=3)
    assert any(isinstance(m, TimeMLP) for m in vector.modules())
    assert not any(isinstance(m, UNet) for m in vector.modules())
    with pytest.raises(ValueError, match=r"field='unet' takes image shapes \(C, H, W\), got"):
        ff.models.create(name, dim=4, field="unet")
    with pytest.raises(ValueError, match="field must be one of mlp, unet"):
        ff.models.create(name, shape=IMAGE, field="cnn")


@pytest.mark.parametrize("name", ["fm", "ffjord"])
def test_unet_recipes_invert_and_agree_with_their_samples(name):
    # The change of variables itself is checked for every family in test_models; here, that a
    # U-Net field keeps a model invertible and its densities consistent (tolerances: the solves').
    model = recipe_model(name, std=0.02, rtol=1e-7, atol=1e-7)
    x = 2 * images(2, IMAGE)
    torch.testing.assert_close(model.decode(model.encode(x)), x, atol=1e-5, rtol=1e-5)
    samples, log_prob = model.sample_and_log_prob(2)
    assert samples.shape == (2, *IMAGE)
    torch.testing.assert_close(log_prob, model.log_prob(samples), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", RECIPES)
def test_unet_recipes_train_every_parameter(name):
    model = recipe_model(name, rtol=1e-3, atol=1e-3).train()
    model.loss(images(8, IMAGE)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["fm", "diffusion", "meanflow"])
def test_unet_recipes_take_labels_and_the_null_label(name):
    model = recipe_model(name, num_classes=3)
    x = images(4, IMAGE)
    solver = {"method": "rk4", "steps": 4}
    labels = torch.tensor([0, 1, 2, 3])  # 3 is the null label
    lp = model.log_prob(x, labels, **solver)
    assert torch.isfinite(lp).all()
    assert (lp - model.log_prob(x, (labels + 1) % 4, **solver)).abs().min() > 1e-8
    guided = model.sample(4, context=torch.tensor([0, 1, 2, 0]), guidance=2.0, **solver)
    assert guided.shape == (4, *IMAGE) and torch.isfinite(guided).all()
    model.train()
    model.loss(x, labels).backward()
    grad = model.label_embedding.weight.grad
    assert grad is not None and bool((grad.abs().sum(dim=1) > 0).all())


@pytest.mark.parametrize("name", ["fm", "diffusion"])
def test_unet_recipes_round_trip_their_state_and_take_features(name):
    model = recipe_model(name, context_dim=2)
    torch.manual_seed(1)
    fresh = ff.models.create(name, shape=IMAGE, field="unet", channels=8, context_dim=2, **TIGHT)
    state_round_trip(model, fresh.double().eval())
    x, c = images(3, IMAGE), torch.randn(3, 2, dtype=torch.float64)
    solver = {"method": "rk4", "steps": 4}
    torch.testing.assert_close(fresh.log_prob(x, c, **solver), model.log_prob(x, c, **solver))
    assert (model.log_prob(x, c, **solver) - model.log_prob(x, c + 1, **solver)).abs().min() > 0


# -- training defaults by field, and the validation of convolutional fields ----------------------


@pytest.mark.parametrize("name", ["fm", "rectified", "otfm", "sbfm", "diffusion"])
def test_a_unet_field_has_its_own_training_defaults(name):
    r = ff.models.recipe(name)
    assert dict(r.train_defaults) == {"lr": 1e-2}  # vectors and the MLP: unchanged
    assert dict(r.training()) == {"lr": 1e-2}
    assert dict(r.training(field="mlp", hidden=(8,))) == {"lr": 1e-2}
    assert dict(r.training(field="unet", channels=16)) == {"lr": 2e-3}
    with pytest.raises(TypeError):
        r.training()["lr"] = 1.0  # read-only


def test_recipes_without_rules_keep_their_defaults():
    assert dict(ff.models.recipe("nsf").training(field="unet")) == {}
    assert dict(ff.models.recipe("meanflow").training(field="unet")) == {"lr": 1e-2}
    assert dict(ff.models.recipe("ffjord").training(field="unet")) == {"lr": 3e-3}


def test_the_cli_takes_the_training_defaults_of_the_model_options():
    import argparse

    from flowforge.cli.options import train_options

    args = argparse.Namespace()
    assert train_options({}, args, "fm").lr == 1e-2
    assert train_options({}, args, "fm", {"field": "unet"}).lr == 2e-3
    assert train_options({"lr": 5e-3}, args, "fm", {"field": "unet"}).lr == 5e-3  # [train] wins
    assert train_options({}, argparse.Namespace(lr=1e-4), "fm", {"field": "unet"}).lr == 1e-4


def test_register_refuses_a_rule_for_an_option_the_builder_lacks():
    from flowforge.models.registry import register

    with pytest.raises(ValueError, match=r"train_by_option of model 'x-test' names 'field'"):
        register("x-test", "a test", train_by_option={"field": {"unet": {"lr": 1.0}}})(
            lambda shape, hidden=1: None
        )
    assert "x-test" not in ff.models.available()


def test_continuous_models_validate_images_with_hutchinson_and_vectors_exactly():
    from flowforge.train.validation import validation_solver

    hutchinson = {"divergence": "hutchinson"}
    for name, options in [("fm", {"field": "unet"}), ("fm", {}), ("ffjord", {"field": "unet"})]:
        model = ff.models.create(name, shape=IMAGE, **options)
        assert validation_solver(model, IMAGE) == hutchinson
    for model, shape in (
        (ff.models.create("fm", dim=3), (3,)),
        (ff.models.create("diffusion", dim=3), (3,)),
        (ff.models.create("glow", shape=(1, 4, 4)), (1, 4, 4)),  # no divergence to estimate
        (ff.models.create("nsf", dim=3), (3,)),
    ):
        assert validation_solver(model, shape) == {}


def _validation(model, x, seed=0):
    from flowforge.train.validation import Validation

    config = ff.train.TrainConfig(steps=10, seed=seed, eval_every=5)
    return Validation(config, 100, x, None, 0, 0.0)


def test_unet_validation_uses_fixed_probes_and_an_unbiased_estimate():
    from flowforge.train.distributed import DistInfo

    info = DistInfo(0, 1, 0, torch.device("cpu"))
    model = recipe_model("fm", std=0.05, rtol=1e-6, atol=1e-6)
    x = images(6, IMAGE)
    val = _validation(model, x)
    torch.manual_seed(1)
    first = val.run(model, info, 5, 1.0)
    state = torch.get_rng_state()
    torch.manual_seed(2)  # the loop's stream differs at every validation; the probes do not
    second = val.run(model, info, 10, 2.0)
    assert first == second
    torch.manual_seed(1)
    val.run(model, info, 15, 3.0)
    assert torch.equal(torch.get_rng_state(), state)  # the loop's stream is left as it was
    other_seed = _validation(model, x, seed=3).run(model, info, 5, 1.0)
    assert other_seed != first  # other probes: it is an estimate
    exact = -model.log_prob(x).mean().item()
    assert abs(first - exact) < 0.05 * abs(exact) + 1.0  # the same quantity, estimated


def test_vector_validation_stays_exact():
    from flowforge.train.distributed import DistInfo

    info = DistInfo(0, 1, 0, torch.device("cpu"))
    torch.manual_seed(0)
    model = perturb(ff.models.create("fm", dim=4, hidden=(16,), **TIGHT).double(), 0.1)
    model.eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    value = _validation(model, x).run(model, info, 5, 1.0)
    with torch.no_grad():
        exact = -model.log_prob(x).double().mean().item()
    assert value == pytest.approx(exact, rel=1e-12)


def test_every_rule_is_valid_training_settings_and_the_models_command_lists_it(capsys):
    from flowforge.cli import main

    for name in ff.models.available():
        r = ff.models.recipe(name)
        for option, by_value in r.train_by_option.items():
            for value in by_value:
                ff.train.TrainConfig(**r.training(**{option: value}))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("\nfm\n") : out.index("\nrectified\n")]
    assert "training defaults (flags and [train] override them): lr=0.01" in block
    assert "with field='unet': lr=0.002" in block
