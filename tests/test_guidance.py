"""Classifier-free guidance: label dropout, the guided field, honest likelihoods, Bayes' rule."""

from __future__ import annotations

import math

import pytest
import torch

import flowforge as ff
from flowforge.dynamics.cnf import Guidance, _Guided
from helpers import perturb

CONTINUOUS = ["ffjord", "fm", "rectified", "otfm", "sbfm"]
FAST = {"method": "rk4", "steps": 4}


def guided_model(name: str = "fm", **options) -> ff.Model:
    torch.manual_seed(0)
    model = ff.models.create(name, dim=2, hidden=(16, 16), num_classes=3, **options)
    return perturb(model.double(), std=0.3).eval()


def test_the_guided_field_is_the_stated_combination_in_one_batched_evaluation():
    model = guided_model()
    x = torch.randn(5, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    t = torch.tensor(0.3, dtype=torch.float64)
    cond = model._condition(y)
    null = model._condition(model._null(5))
    v_c, v_0 = model.field(t, x, cond), model.field(t, x, null)
    for w in (0.0, 1.0, 2.5, -1.0):
        field = _Guided(model.field, Guidance(w), null)
        before = model.field.nfe
        got = field(t, x, cond)
        # One call of the network per evaluation (two batches stacked), never two.
        assert model.field.nfe - before == 1
        torch.testing.assert_close(got, v_0 + w * (v_c - v_0), rtol=1e-12, atol=1e-12)
    # w = 1 is the conditional field, w = 0 the null field, exactly.
    torch.testing.assert_close(_Guided(model.field, Guidance(0.0), null)(t, x, cond), v_0)
    torch.testing.assert_close(_Guided(model.field, Guidance(1.0), null)(t, x, cond), v_c)
    # Outside the guided interval: the conditional field.
    limited = _Guided(model.field, Guidance(3.0, (0.5, 1.0)), null)
    torch.testing.assert_close(limited(t, x, cond), v_c)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_guided_sampling_at_the_two_ends(name):
    model = guided_model(name)
    y = torch.tensor([0, 1, 2, 1])
    torch.manual_seed(3)
    z = model._base_sample(4)
    plain = model.decode(z, y, **FAST)
    torch.testing.assert_close(model.decode(z, y, guidance=1.0, **FAST), plain)
    # w = 0 is the unconditional model: the null label for every sample.
    null = torch.full((4,), model.null_label)
    torch.testing.assert_close(
        model.decode(z, y, guidance=0.0, **FAST), model.decode(z, null, **FAST)
    )
    guided = model.decode(z, y, guidance=3.0, **FAST)
    assert (guided - plain).abs().max() > 1e-4
    # sample() draws the same base points: guided samples are guided decodings.
    torch.manual_seed(3)
    torch.testing.assert_close(model.sample(4, context=y, guidance=3.0, **FAST), guided)
    # Every solver takes guidance (the adaptive one included).
    assert model.sample(4, context=1, guidance=2.0).shape == (4, 2)


def test_guided_encode_inverts_guided_decode():
    model = guided_model(rtol=1e-9, atol=1e-9)
    y = torch.tensor([0, 1, 2])
    x = torch.randn(3, 2, dtype=torch.float64)
    z = model.encode(x, y, guidance=2.0)
    torch.testing.assert_close(model.decode(z, y, guidance=2.0), x, atol=1e-6, rtol=1e-6)


def test_log_prob_refuses_a_guided_field():
    model = guided_model()
    x, y = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0, 1, 2])
    with pytest.raises(
        ValueError, match=r"guidance=2: a guided field .* defines no log-likelihood"
    ):
        model.log_prob(x, y, guidance=2.0)
    with pytest.raises(ValueError, match="no log-likelihood"):
        model.sample_and_log_prob(3, context=y, guidance=0.5)
    # guidance=1 is the conditional density itself; the null label gives p(x).
    torch.testing.assert_close(
        model.log_prob(x, y, guidance=1.0, **FAST), model.log_prob(x, y, **FAST)
    )
    assert model.log_prob(x, torch.full((3,), 3), **FAST).shape == (3,)


@pytest.mark.parametrize(
    ("options", "context", "guidance", "error", "message"),
    [
        ({}, 0, math.nan, ValueError, "guidance must be a finite number, got nan"),
        ({}, 0, True, TypeError, "guidance must be a finite number, got True"),
        ({}, 0, "2", TypeError, "guidance must be a finite number"),
        ({"label_dropout": 0.0}, 0, 2.0, ValueError, "built with label_dropout=0"),
        ({}, 5, 2.0, ValueError, r"labels in 0..2"),
    ],
)
def test_bad_guidance_is_a_clear_error(options, context, guidance, error, message):
    model = guided_model(**options)
    with pytest.raises(error, match=message):
        model.sample(2, context=context, guidance=guidance, **FAST)


def test_guidance_needs_a_conditional_continuous_model():
    plain = ff.models.create("fm", dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="guidance applies to a conditional model"):
        plain.sample(2, guidance=2.0, **FAST)
    flow = ff.models.create("nsf", dim=2, layers=1, hidden=(8,), num_classes=3)
    with pytest.raises(TypeError, match="discrete flow and takes no guidance"):
        flow.sample(2, context=0, guidance=2.0)
    model = guided_model()
    with pytest.raises(ValueError, match=r"guidance_interval must be \(lo, hi\)"):
        model.sample(2, context=0, guidance=2.0, guidance_interval=(0.8, 0.2), **FAST)
    with pytest.raises(ValueError, match="guidance_interval needs guidance"):
        model.sample(2, context=0, guidance_interval=(0.2, 0.8), **FAST)


def test_label_dropout_drops_at_the_stated_rate():
    model = ff.models.create("fm", dim=2, hidden=(8,), num_classes=4, label_dropout=0.2).train()
    labels = torch.arange(20_000) % 4
    torch.manual_seed(0)
    dropped = model._drop_labels(labels)
    rate = (dropped == 4).double().mean().item()
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20_000)
    kept = dropped != 4
    assert torch.equal(dropped[kept], labels[kept])  # the others keep their own label
    # Only in training, and never for a model without dropout.
    assert torch.equal(model.eval()._drop_labels(labels), labels)
    no_dropout = ff.models.create("fm", dim=2, hidden=(8,), num_classes=4, label_dropout=0.0)
    assert torch.equal(no_dropout.train()._drop_labels(labels), labels)
    with pytest.raises(ValueError, match="label_dropout must be below 1"):
        ff.models.create("fm", dim=2, num_classes=4, label_dropout=1.0)


def test_feature_contexts_drop_to_a_learned_null_row():
    model = ff.models.create("fm", dim=2, hidden=(8,), context_dim=3, label_dropout=0.5).train()
    assert model.null_context.shape == (3,)
    c = torch.randn(1000, 3)
    torch.manual_seed(0)
    dropped = model._drop_labels(c)
    is_null = (dropped == model.null_context).all(dim=1)
    assert 400 < int(is_null.sum()) < 600
    # The null row is learned: the loss reaches it.
    model.objective(ff.Batch(torch.randn(64, 2), c[:64])).loss.backward()
    assert model.null_context.grad is not None and model.null_context.grad.abs().sum() > 0
    model.eval()
    assert model.sample(3, context=c[0], guidance=2.0, **FAST).shape == (3, 2)


def test_classify_is_bayes_rule_over_the_labels():
    model = guided_model("nsf", layers=2)
    x = torch.randn(6, 2, dtype=torch.float64)
    log_post = model.classify(x)
    assert log_post.shape == (6, 3)
    torch.testing.assert_close(log_post.exp().sum(dim=1), torch.ones(6, dtype=torch.float64))
    joint = torch.stack([model.log_prob(x, torch.full((6,), k)) for k in range(3)], dim=1)
    torch.testing.assert_close(log_post, torch.log_softmax(joint, dim=1))
    prior = torch.tensor([1.0, 1.0, 2.0])
    weighted = torch.log_softmax(joint + torch.log(prior / prior.sum()).double(), dim=1)
    torch.testing.assert_close(model.classify(x, prior=prior), weighted)
    with pytest.raises(ValueError, match=r"prior must be a \(3,\) tensor"):
        model.classify(x, prior=torch.ones(2))
    with pytest.raises(ValueError, match="classify needs a model of class labels"):
        ff.models.create("nsf", dim=2, layers=1).classify(torch.zeros(2, 2))


@pytest.mark.slow
def test_guidance_sharpens_the_classes_of_a_trained_model():
    ds = ff.data.load("8gaussians", n_train=4000, n_val=500, n_test=100)
    torch.manual_seed(0)
    model = ff.models.create("fm", dim=2, num_classes=8, hidden=(64, 64), label_dropout=0.2)
    config = ff.train.TrainConfig(
        steps=800, batch_size=256, lr=1e-2, progress=False, eval_every=10_000, patience=None
    )
    ff.train.train(model, ds.train, config, train_context=ds.labels["train"])
    model.eval()
    labels = torch.arange(8).repeat_interleave(100)
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = ff.data.EIGHT_GAUSSIANS_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)

    def hit(w: float) -> float:
        torch.manual_seed(1)
        x = model.sample(len(labels), context=labels, guidance=w, method="rk4", steps=8)
        return (torch.cdist(x.double(), centres).argmin(dim=1) == labels).double().mean().item()

    rates = [hit(w) for w in (0.0, 1.0, 3.0)]
    assert rates[0] < 0.5 < rates[1] <= rates[2] and rates[2] >= 0.99, rates
    # Unconditional samples (w = 0) still cover every component.
    torch.manual_seed(2)
    x = model.sample(800, context=model.null_label, method="rk4", steps=8)
    counts = torch.bincount(torch.cdist(x.double(), centres).argmin(dim=1), minlength=8)
    assert int(counts.min()) >= 40, counts.tolist()
