"""Class labels as conditioning, for every registered model; batches that carry their own noise."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from helpers import autograd_ladj, perturb

MODELS = ff.models.available()
K = 3


def small(name: str) -> dict:
    """Small networks: these tests are about the labels' path, not the models' capacity."""
    options = dict(ff.models.recipe(name).options())
    out: dict[str, object] = {"hidden": (16, 16)}
    if "layers" in options:
        out["layers"] = 2
    if "rtol" in options:  # continuous models: tight solves, the identities are checked to 1e-6
        out.update(rtol=1e-8, atol=1e-8)
    if name == "resflow":
        out["tol"] = 1e-12
    return out


def labelled(name: str, d: int = 2, seed: int = 0) -> ff.Model:
    torch.manual_seed(seed)
    model = ff.models.create(name, dim=d, num_classes=K, **small(name)).double()
    # A training-mode pass (data-dependent initialisation), then off the identity start, where
    # zero-initialised output layers would ignore the labels.
    labels = torch.arange(64) % K
    model.log_prob(torch.randn(64, d, dtype=torch.float64), labels)
    return perturb(model, std=0.3, seed=seed).eval()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_conditions_on_integer_labels(name):
    model = labelled(name)
    assert model.num_classes == K and model.context_dim == 0
    x = torch.randn(6, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    lp = model.log_prob(x, y)
    assert lp.shape == (6,) and bool(torch.isfinite(lp).all())
    # The label changes the density of the same points.
    assert (lp - model.log_prob(x, (y + 1) % K)).abs().min() > 1e-6
    # The change of variables holds under a label as under no label.
    z = model.encode(x, y)
    torch.testing.assert_close(model.decode(z, y), x, atol=1e-6, rtol=1e-6)
    if isinstance(model, ff.Flow):
        expected = model.base.log_prob(z) + autograd_ladj(lambda v: model.encode(v, y), x)
        torch.testing.assert_close(lp, expected, atol=1e-6, rtol=1e-6)
    # The loss takes labels, and its gradient reaches the label embedding.
    model.train()
    model.loss(x, y).backward()
    grad = model.label_embedding.weight.grad
    assert grad is not None and bool((grad[:K].abs().sum(dim=1) > 0).all())


@pytest.mark.parametrize("name", MODELS)
def test_sample_honours_one_label_per_sample(name):
    model = labelled(name)
    # A fixed grid: an adaptive solver's steps depend on the whole batch, not on one row.
    solver = {"method": "rk4", "steps": 8} if model.solver_keys else {}
    y = torch.tensor([2, 0, 1, 2])
    torch.manual_seed(5)
    x = model.sample(4, context=y, **solver)
    torch.manual_seed(5)
    z = model._base_sample(4)
    # Row by row: each sample is the decoding of its own noise under its own label.
    for i in range(4):
        one = model.decode(z[i : i + 1], y[i : i + 1], **solver)
        torch.testing.assert_close(x[i : i + 1], one)
    # One label shared by all: an int, a 0-d or a (1,) tensor.
    for shared in (1, torch.tensor(1), torch.tensor([1])):
        torch.manual_seed(5)
        expected = model.decode(z, y * 0 + 1, **solver)
        torch.testing.assert_close(model.sample(4, context=shared, **solver), expected)
    xs, lps = model.sample_and_log_prob(4, context=y)
    torch.testing.assert_close(lps, model.log_prob(xs, y), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def label_model():
    return ff.models.create("nsf", dim=2, layers=2, hidden=(8,), num_classes=K)


@pytest.mark.parametrize(
    ("context", "error", "message"),
    [
        (None, ValueError, r"num_classes=3\) and needs context.*integer tensor.*got None"),
        (torch.tensor([0, 1, 4, 0]), ValueError, r"labels in 0..2 .*got labels from 0 to 4"),
        (torch.tensor([0, -1, 2, 0]), ValueError, r"labels in 0..2 .*got labels from -1 to 2"),
        (torch.zeros(4), TypeError, r"integer tensor.*got a torch.float32 tensor.*\.long\(\)"),
        (torch.zeros(4, dtype=torch.bool), TypeError, "got a torch.bool tensor"),
        (
            torch.zeros(4, 1, dtype=torch.long),
            ValueError,
            r"one label per sample.*\(4,\).*\(4, 1\)",
        ),
        (torch.zeros(5, dtype=torch.long), ValueError, r"shape \(4,\), got \(5,\)"),
        ([0, 1, 2, 0], TypeError, "integer tensor.*got list"),
    ],
)
def test_bad_labels_are_named_errors(label_model, context, error, message):
    with pytest.raises(error, match=message):
        label_model.log_prob(torch.zeros(4, 2), context)


def test_the_null_label_is_accepted_and_named(label_model):
    assert label_model.null_label == K
    assert label_model.log_prob(torch.zeros(2, 2), torch.tensor([K, K])).shape == (2,)
    with pytest.raises(ValueError, match="no class labels"):
        _ = ff.models.create("nsf", dim=2, layers=1).null_label


def test_labels_and_features_are_told_apart():
    plain = ff.models.create("maf", dim=2, layers=1, hidden=(8,))
    with pytest.raises(ValueError, match=r"unconditional, but context was given.*num_classes=K"):
        plain.log_prob(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    features = ff.models.create("maf", dim=2, layers=1, hidden=(8,), context_dim=2)
    with pytest.raises(TypeError, match=r"float features of shape \(B, 2\).*int64.*num_classes"):
        features.log_prob(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="not both"):
        ff.models.create("maf", dim=2, context_dim=2, num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        ff.models.create("maf", dim=2, num_classes=1)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        ff.models.create("maf", dim=2, num_classes=2.0)


def _nearest_component(x: torch.Tensor) -> torch.Tensor:
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = ff.data.EIGHT_GAUSSIANS_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
    return torch.cdist(x.double(), centres).argmin(dim=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nsf", "rectified"])
def test_trained_on_labels_each_label_samples_its_component(name):
    ds = ff.data.load("8gaussians", n_train=4000, n_val=500, n_test=100)
    torch.manual_seed(0)
    model = ff.models.create(name, dim=2, num_classes=8, hidden=(64, 64))
    config = ff.train.TrainConfig(
        steps=600,
        batch_size=256,
        lr=ff.models.recipe(name).train_defaults.get("lr", 1e-3),
        progress=False,
        eval_every=10_000,
        patience=None,
    )
    ff.train.train(model, ds.train, config, train_context=ds.labels["train"])
    model.eval()
    labels = torch.arange(8).repeat_interleave(50)
    torch.manual_seed(1)
    solver = {"method": "rk4", "steps": 8} if model.solver_keys else {}
    x = model.sample(len(labels), context=labels, **solver)
    hit = (_nearest_component(x) == labels).double().mean()
    assert hit >= 0.95, f"only {hit:.2%} of the samples land on their label's component"


# -- batches that carry their own noise ------------------------------------------------------------


def test_objective_validates_its_batch():
    model = ff.models.create("rectified", dim=2, hidden=(8,))
    with pytest.raises(TypeError, match="batch must be a flowforge Batch, got Tensor"):
        model.objective(torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"batch.x0 must hold one base point per sample"):
        model.objective(ff.Batch(torch.zeros(4, 2), x0=torch.zeros(3, 2)))
    with pytest.raises(ValueError, match=r"batch.x0 must have shape \(B, 2\)"):
        model.objective(ff.Batch(torch.zeros(4, 2), x0=torch.zeros(4, 3)))
    with pytest.raises(ValueError, match=r"batch\.x1 has NaN"):
        model.objective(ff.Batch(torch.full((4, 2), math.nan)))
    result = model.objective(ff.Batch(torch.zeros(4, 2), x0=torch.ones(4, 2)))
    assert set(result.terms) == {"cfm"} and result.loss.ndim == 0


def test_the_trainer_learns_the_pairing_it_is_given():
    # Pairs (z, Rz) with R a quarter turn: both ends are N(0, I), so flow matching on independent
    # pairs learns (about) the identity, while the given pairing is learnt as the rotation.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4096, 2, generator=g)
    rotate = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    config = ff.train.TrainConfig(
        steps=400, batch_size=256, lr=1e-2, progress=False, eval_every=10_000, patience=None
    )
    torch.manual_seed(0)
    model = ff.models.create("rectified", dim=2, hidden=(64, 64))
    ff.train.train(model, z @ rotate.T, config, train_noise=z)
    probe = torch.randn(256, 2, generator=g)
    moved = model.eval().decode(probe, method="rk4", steps=16)
    error = (moved - probe @ rotate.T).norm(dim=1).mean()
    assert error < 0.25 * (probe @ rotate.T - probe).norm(dim=1).mean()


def test_train_checks_that_noise_and_labels_align():
    model = ff.models.create("rectified", dim=2, hidden=(8,))
    config = ff.train.TrainConfig(steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match=r"train_noise must have one row per sample.*\(5, 2\)"):
        ff.train.train(model, torch.zeros(10, 2), config, train_noise=torch.zeros(5, 2))
    labels_model = ff.models.create("rectified", dim=2, hidden=(8,), num_classes=2)
    with pytest.raises(ValueError, match="train_context must have one row per sample"):
        ff.train.train(labels_model, torch.zeros(10, 2), config, train_context=torch.zeros(3))
