"""The one name-to-object helper and every table built on it; the model registry at every
event shape, with class labels."""

import pytest
import torch

import flowforge as ff
import flowforge.transforms as T
from flowforge import dynamics, estimators, matching
from flowforge._registry import Registry
from flowforge.models.continuous import ACTIVATIONS
from helpers import autograd_ladj, perturb


def test_lookup_membership_and_order():
    reg = Registry("colour")
    reg.register("red", 1)

    @reg.register("blue")
    def blue():
        return 2

    reg.register("green", 3)
    assert reg["red"] == 1 and reg.get("blue") is blue and blue() == 2
    assert reg.names() == ("red", "blue", "green") == tuple(reg)
    assert list(reg.items()) == [("red", 1), ("blue", blue), ("green", 3)]
    assert "red" in reg and "pink" not in reg and 1 not in reg and len(reg) == 3
    assert reg.check("green") == "green"


def test_unknown_name_is_one_message_with_a_hint():
    reg = Registry("colour")
    reg.register("red", 1)
    reg.register("blue", 2)
    with pytest.raises(ValueError, match=r"^colour must be one of red, blue; got 'bleu'; did you"):
        reg["bleu"]
    with pytest.raises(ValueError, match=r"^hue must be one of red, blue; got 'pink'$"):
        reg.get("pink", "hue")
    with pytest.raises(ValueError, match=r"^colour must be one of red, blue; got \['red'\]$"):
        reg.check(["red"])


def test_duplicate_and_bad_names_are_refused():
    reg = Registry("colour")
    reg.register("red", 1)
    with pytest.raises(ValueError, match="'red' is already registered"):
        reg.register("red", 2)
    assert reg["red"] == 1
    with pytest.raises(TypeError, match="non-empty str"):
        reg.register("", 3)


@pytest.mark.parametrize(
    ("table", "names", "message"),
    [
        (matching.SCHEDULERS, ("condot", "cosine", "polynomial", "vp", "vp-cosine"), "scheduler"),
        (matching.PATHS, ("condot", "cosine", "polynomial", "vp", "vp-cosine", "bridge"), "path"),
        (matching.COUPLINGS, ("independent", "ot", "sinkhorn"), "coupling"),
        (matching.TIME_SAMPLERS, ("uniform", "logit-normal", "mode"), "time_sampler"),
        (ACTIVATIONS, ("tanh", "softplus", "silu", "elu"), "activation"),
        (estimators.DIVERGENCES, ("exact", "hutchinson"), "divergence"),
        (dynamics.METHODS, ("euler", "midpoint", "heun", "rk4", "dopri5"), "method"),
    ],
)
def test_every_table_is_a_registry(table, names, message):
    assert isinstance(table, Registry) and table.names() == names
    bad = names[0][:-1] + names[0][-1] * 2  # a doubled last letter: close enough to hint
    with pytest.raises(ValueError, match=rf"^{message} must be one of .*; did you mean"):
        table[bad]


def test_tables_hold_todays_objects():
    assert matching.SCHEDULERS["vp"] is matching.VPScheduler
    assert ACTIVATIONS["silu"] is torch.nn.SiLU
    assert estimators.DIVERGENCES["exact"] is estimators.divergence_exact
    assert dynamics.METHODS["heun"] == "heun2" and dynamics.METHODS["rk4"] == "rk4"
    path = matching.PATHS["polynomial"](sigma_min=1e-4, exponent=3.0, sigma=0.5)
    assert isinstance(path.scheduler, matching.PolynomialScheduler)
    assert isinstance(matching.COUPLINGS["sinkhorn"](sigma=0.2), matching.SinkhornCoupling)
    times = matching.TIME_SAMPLERS["mode"](
        loc=0.0, scale=1.0, mode_scale=0.5, shift=2.0, stratified=True
    )
    assert isinstance(times, matching.ModeTime) and times.scale == 0.5 and times.shift == 2.0


# -- the model registry: event shapes and class labels ---------------------------------------

IMAGE_SHAPES = [(1, 4, 4), (2, 4, 4)]
IMAGES = set(ff.models.image_models())


def small(name: str) -> dict:
    """Small networks, so every recipe builds and runs in a moment at 32 entries."""
    r = ff.models.recipe(name)
    opts: dict = {"hidden": (16,)}
    if "layers" in r.options():
        opts["layers"] = 3 if name != "resflow" else 2
    if name == "resflow":
        opts["tol"] = 1e-12
    return opts


def fast_solver(model: ff.Model) -> dict:
    return {"method": "rk4", "steps": 4} if model.solver_keys else {}


def test_image_models_are_the_recipes_registered_with_images():
    names = ff.models.image_models()
    assert names == [n for n in ff.models.available() if ff.models.recipe(n).images]
    assert {"nice", "realnvp", "nsf"} <= set(names)
    assert "resflow" in names  # Lipschitz convolutions (tests/test_resflow_image.py)
    assert not {"maf", "iaf", "nsf-ar"} & set(names)
    for name in ff.models.available():
        assert "shape" not in ff.models.recipe(name).options()
        assert "dim" not in ff.models.recipe(name).options()


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ff.models.image_models())
def test_image_recipes_build_and_run_at_image_shapes(name, shape):
    torch.manual_seed(0)
    opts = small(name)
    if name == "resflow":  # float32 here: a fixed point to 1e-12 is out of its reach
        opts["tol"] = 1e-6
    model = ff.models.create(name, shape=shape, **opts)
    assert model.event_shape == shape
    assert model.created_with["shape"] == list(shape) and model.created_with["dim"] == 16 * shape[0]
    solver = fast_solver(model)
    x = torch.randn(6, *shape)
    assert model.log_prob(x, **solver).shape == (6,)
    assert model.sample(3, **solver).shape == (3, *shape)


@pytest.mark.parametrize("conditioner", ["mlp", "conv"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(
    "name", [n for n in ff.models.image_models() if "conditioner" in ff.models.recipe(n).options()]
)
def test_image_flows_log_prob_matches_the_autograd_log_det(name, shape, conditioner):
    torch.manual_seed(0)
    model = ff.models.create(name, shape=shape, conditioner=conditioner, **small(name)).double()
    model.log_prob(torch.randn(64, *shape, dtype=torch.float64))  # ActNorm's initialisation
    model = perturb(model, std=0.05).eval()
    x = 2 * torch.randn(5, *shape, dtype=torch.float64)
    z = model.encode(x)
    assert z.shape == x.shape
    torch.testing.assert_close(model.decode(z), x, atol=1e-9, rtol=1e-9)
    jac_ladj = autograd_ladj(lambda v: model.encode(v.view(-1, *shape)).flatten(1), x.flatten(1))
    torch.testing.assert_close(model.log_prob(x), model.base.log_prob(z) + jac_ladj)
    samples, log_prob = model.sample_and_log_prob(4)
    torch.testing.assert_close(log_prob, model.log_prob(samples))


@pytest.mark.parametrize("name", [n for n in ff.models.available() if n not in IMAGES])
def test_other_recipes_refuse_image_shapes_naming_the_ones_that_take_them(name):
    listed = ", ".join(ff.models.image_models())
    message = rf"^model '{name}' takes flat vectors \(D,\), got shape \(1, 4, 4\); "
    with pytest.raises(ValueError, match=message + rf"models that take images: {listed}$"):
        ff.models.create(name, shape=(1, 4, 4))


@pytest.mark.parametrize("name", ff.models.available())
def test_dim_is_shape_of_one_entry(name):
    torch.manual_seed(0)
    a = ff.models.create(name, dim=2, **small(name))
    torch.manual_seed(0)
    b = ff.models.create(name, shape=(2,), **small(name))
    assert a.event_shape == b.event_shape == (2,)
    assert a.created_with == b.created_with
    assert a.created_with == {"name": name, "dim": 2, "shape": [2], "options": small(name)}
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, TypeError, r"exactly one of dim=D \(vectors\) or shape=\(C, H, W\), got neither"),
        ({"dim": 2, "shape": (2,)}, TypeError, "got both"),
        ({"shape": (4, 4)}, ValueError, r"vectors \(D,\) or images \(C, H, W\), got shape \(4, 4"),
        ({"shape": (1, 0, 4)}, ValueError, r"shape\[1\] must be a positive int"),
        ({"shape": "1x4x4"}, TypeError, "shape must be a positive int D"),
        ({"shape": (1, 4, 4), "conditioner": "cnn"}, ValueError, "conditioner must be one of"),
        ({"dim": 4, "conditioner": "conv"}, ValueError, r"conditioner='conv' takes image shapes"),
        ({"shape": (1, 1, 1)}, ValueError, "need at least 2 of them"),
        ({"dim": 2, "num_classes": 1}, ValueError, "num_classes must be >= 2"),
        ({"dim": 2, "num_classes": 3, "context_dim": 2}, ValueError, "not both"),
    ],
)
def test_create_rejects_bad_shapes(kwargs, error, message):
    with pytest.raises(error, match=message):
        ff.models.create("nsf", **kwargs)


def test_image_mixing_and_masks():
    # One scale (levels=1): the couplings of the image as it is; the default is multi-scale.
    flow = ff.models.create("realnvp", shape=(2, 4, 4), layers=4, hidden=(8,), levels=1)
    parts = list(flow.transform.transforms)
    couplings = [t for t in parts if isinstance(t, T.Coupling)]
    expected = [
        T.checkerboard_mask((2, 4, 4)),
        T.checkerboard_mask((2, 4, 4), flip=True),
        T.channel_mask((2, 4, 4)),
        T.channel_mask((2, 4, 4), flip=True),
    ]
    assert all(torch.equal(t.mask, m) for t, m in zip(couplings, expected, strict=True))
    # "auto" mixes channels by 1x1 convolutions with 2 channels, not at all with one.
    assert sum(isinstance(t, T.LULinear) for t in parts) == 3
    assert all(t.loc.shape == (2, 1, 1) for t in parts if isinstance(t, T.ActNorm))
    gray = ff.models.create("nsf", shape=(1, 4, 4), layers=3, hidden=(8,))
    assert not any(isinstance(t, T.LULinear | T.Permutation) for t in gray.transform.transforms)
    perm = ff.models.create("nice", shape=(3, 2, 2), mixing="permutation", hidden=(8,))
    assert sum(isinstance(t, T.RandomPermutation) for t in perm.transform.transforms) == 3


DISCRETE = [n for n in ff.models.available() if isinstance(ff.models.create(n, dim=2), ff.Flow)]


LABEL_CASES = [
    pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")
    for name in DISCRETE
    for shape in ([(3,), (2, 4, 4)] if name in IMAGES else [(3,)])
]


@pytest.mark.parametrize(("name", "shape"), LABEL_CASES)
def test_discrete_recipes_take_class_labels(name, shape):
    torch.manual_seed(0)
    model = ff.models.create(name, shape=shape, num_classes=3, **small(name)).double()
    assert model.num_classes == 3 and model.context_dim == 0
    labels = torch.tensor([0, 1, 2, 3])  # 3 is the null label
    x = torch.randn(4, *shape, dtype=torch.float64)
    model.log_prob(x, labels)  # ActNorm's initialisation
    model = perturb(model, std=0.1).eval()
    lp = model.log_prob(x, labels)
    assert lp.shape == (4,)
    # The same points under other labels have other densities.
    assert (lp - model.log_prob(x, (labels + 1) % 4)).abs().min() > 1e-8
    samples = model.sample(4, labels)
    assert samples.shape == (4, *shape)
    z = model.encode(samples, labels)
    torch.testing.assert_close(model.decode(z, labels), samples, atol=1e-8, rtol=1e-8)
    with pytest.raises(TypeError):
        model.log_prob(x, labels.double())
