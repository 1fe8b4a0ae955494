"""Reflow, one-step distillation and the straightness metrics (flowforge.matching.reflow,
flowforge.train.reflow, flowforge.metrics.straightness, ``flowforge reflow``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import flowforge as ff
from flowforge.cli import main
from flowforge.matching import FixedTime, FlowMatching, Pairs, reflow_noise
from flowforge.metrics import straightness, transport_cost
from flowforge.train import TrainConfig, generate_pairs, load_pairs
from flowforge.train.rectify import save_pairs, student

# The straight map between N(0, I) and N(M, S^2 I): x = M + S z, at constant speed.
M, S = torch.tensor([1.5, -0.5]), 0.6


class StraightField(nn.Module):
    """The exact velocity of the straight flow x_t = (1 + (S - 1) t) z + t M: a model that
    already transports by straight lines."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # something to train, with no effect

    def forward(self, t, x, context=None):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)  # a scalar or (B,)
        return ((S - 1) * x + M.to(x)) / (1 + (S - 1) * t) + 0 * self.unused


class Rotation(nn.Module):
    """v(t, x) = A x, A the rotation generator at rate W: circles, not lines."""

    W = 2.0

    def forward(self, t, x, context=None):
        return self.W * torch.stack([-x[:, 1], x[:, 0]], dim=1)


def _model(hidden=(16, 16)):
    torch.manual_seed(0)
    return ff.models.create("rectified", dim=2, hidden=hidden)


def _config(steps, **changes):
    base = dict(steps=steps, lr=1e-2, progress=False, eval_every=0, device="cpu")
    return TrainConfig(**{**base, **changes})


# -- the metrics -------------------------------------------------------------------------------


def test_straightness_is_zero_for_a_constant_field():
    z = torch.randn(128, 2, dtype=torch.float64)
    assert straightness(lambda t, x: torch.full_like(x, 0.3), z) == pytest.approx(0, abs=1e-12)


def test_straightness_of_a_rotation_matches_its_closed_form():
    # x_t = R(Wt) z: ||x1 - z||^2 = 2 (1 - cos W)|z|^2, <x1 - z, v_t> integrates to the same,
    # |v_t|^2 = W^2 |z|^2, so S = E|z|^2 (W^2 - 2 + 2 cos W).
    z = torch.randn(512, 2, dtype=torch.float64)
    w = Rotation.W
    exact = float(z.square().sum(1).mean()) * (w * w - 2 + 2 * math.cos(w))
    assert straightness(Rotation(), z, steps=64) == pytest.approx(exact, rel=1e-3)
    assert straightness(Rotation(), z, steps=64, method="euler") > 0.5 * exact
    # A model is measured through its field, in its own space.
    model = FlowMatching(Rotation(), ff.distributions.StandardNormal((2,)))
    assert straightness(model, z, steps=64) == pytest.approx(exact, rel=1e-3)
    # One Euler step is a straight line: the discrete straightness is 0 for any field.
    assert straightness(Rotation(), z, steps=1, method="euler") == pytest.approx(0, abs=1e-12)


def test_straightness_refuses_bad_options():
    with pytest.raises(ValueError, match="method must be one of"):
        straightness(Rotation(), torch.randn(4, 2), method="dopri5")
    with pytest.raises(ValueError, match="steps"):
        straightness(Rotation(), torch.randn(4, 2), steps=0)


def test_transport_cost():
    x0 = torch.randn(1000, 2)
    assert transport_cost(x0, x0 + torch.tensor([3.0, 4.0])) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="paired row by row"):
        transport_cost(x0, x0[:10])


# -- the pairs ---------------------------------------------------------------------------------


def test_pairs_are_exactly_reproducible_and_chunking_keeps_them():
    model = _model()
    a = generate_pairs(model, 300, seed=3, progress=False)
    b = generate_pairs(model, 300, seed=3, progress=False)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.x1, b.x1)
    assert not torch.equal(a.x0, generate_pairs(model, 300, seed=4, progress=False).x0)
    c = generate_pairs(model, 300, seed=3, chunk_size=64, progress=False)
    assert torch.equal(a.x0, c.x0)
    # dopri5 picks its steps per chunk: the same ODE solution within its tolerance of 1e-5.
    torch.testing.assert_close(a.x1, c.x1, atol=1e-4, rtol=0)
    euler = {"method": "euler", "steps": 8}
    d = generate_pairs(model, 300, seed=3, solver=euler, progress=False)
    e = generate_pairs(model, 300, seed=3, solver=euler, chunk_size=64, progress=False)
    torch.testing.assert_close(d.x1, e.x1, atol=1e-6, rtol=0)
    assert (d.x1 - a.x1).abs().max() > 1e-4  # the solver option was used


def test_pair_generation_resumes_from_its_file(tmp_path):
    model = _model()
    path = tmp_path / "pairs-1.safetensors"
    whole = generate_pairs(model, 200, seed=1, chunk_size=50, progress=False)
    calls = []
    decode = model.decode

    def failing(z, **kw):
        calls.append(z.shape[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode(z, **kw)

    model.decode = failing
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(model, 200, seed=1, chunk_size=50, path=path, progress=False)
    _, meta, done = load_pairs(path)
    assert done == 100 and meta["seed"] == 1
    calls.clear()
    model.decode = lambda z, **kw: (calls.append(z.shape[0]), decode(z, **kw))[1]
    resumed = generate_pairs(model, 200, seed=1, chunk_size=50, path=path, progress=False)
    assert calls == [50, 50]  # only the chunks that were missing
    assert torch.equal(resumed.x0, whole.x0) and torch.equal(resumed.x1, whole.x1)
    calls.clear()
    again = generate_pairs(model, 200, seed=1, chunk_size=50, path=path, progress=False)
    assert calls == [] and torch.equal(again.x1, whole.x1)  # repeated from the file
    with pytest.raises(ValueError, match="other settings"):
        generate_pairs(model, 200, seed=2, chunk_size=50, path=path, progress=False)


def test_pairs_file_round_trip_keeps_labels(tmp_path):
    x0, x1, labels = torch.randn(6, 2), torch.randn(6, 2), torch.arange(6) % 3
    save_pairs(tmp_path / "p.safetensors", x0, x1, labels, {"seed": 5}, 6)
    pairs, _, done = load_pairs(tmp_path / "p.safetensors")
    assert torch.equal(pairs.context, labels) and pairs.seed == 5 and done == 6


def test_conditional_pairs_need_and_keep_labels():
    torch.manual_seed(0)
    model = ff.models.create("rectified", dim=2, hidden=(8,), num_classes=3)
    with pytest.raises(ValueError, match="conditional"):
        generate_pairs(model, 10, progress=False)
    labels = torch.arange(10) % 3
    pairs = generate_pairs(model, 10, context=labels, progress=False)
    assert torch.equal(pairs.context, labels)
    # Each pair was decoded with its own label.
    with torch.no_grad():
        one = model.decode(pairs.x0[:1], context=labels[:1])
    torch.testing.assert_close(one, pairs.x1[:1], atol=1e-4, rtol=0)


# -- reflow and distillation -------------------------------------------------------------------


def test_a_straight_model_is_a_fixed_point_of_reflow():
    base = ff.distributions.StandardNormal((2,))
    model = FlowMatching(StraightField(), base).double()
    pairs = generate_pairs(model, 500, seed=0, progress=False)
    z = pairs.x0.double()
    torch.testing.assert_close(pairs.x1.double(), M.double() + S * z, atol=1e-4, rtol=0)
    assert straightness(model, z, steps=8) < 1e-8
    expected = float(((S - 1) * z + M.double()).square().sum(1).mean())
    assert transport_cost(z, pairs.x1.double()) == pytest.approx(expected, rel=1e-4)
    # Its field already minimises reflow's loss: the regression residual vanishes.
    new = student(model)
    loss = new.objective(ff.Batch(pairs.x1.double(), x0=z)).loss
    assert float(loss.detach()) < 1e-8
    result = ff.train.reflow(model, pairs, _config(20), progress=False)
    with torch.no_grad():
        torch.testing.assert_close(result.model.decode(z[:50]), M.double() + S * z[:50])


def test_reflow_of_a_trained_gaussian_keeps_its_map_and_straightens_it():
    torch.manual_seed(0)
    x = M + S * torch.randn(4000, 2)
    model = _model(hidden=(32, 32))
    ff.train.train(model, x, _config(300))
    result = ff.train.reflow(model, pairs=2000, config=_config(300), progress=False)
    (r,) = result.rounds
    assert r.straightness < 0.25 * result.source_straightness
    z = reflow_noise(model.base, 256, 7)
    with torch.no_grad():
        before, after = model.decode(z), result.model.decode(z)
    # The coupling is kept: the same noise lands where it did (within training error).
    rms = float((before - after).square().sum(1).mean().sqrt())
    assert rms < 0.05  # the data's spread is S * sqrt(2) = 0.85
    # 2-rectified: one Euler step lands close to the accurate solve.
    with torch.no_grad():
        one = result.model.sample(1, steps=1)  # the sampler works at one step
    assert one.shape == (1, 2)
    with torch.no_grad():
        euler, euler_before = result.model.decode(z, steps=1), model.decode(z, steps=1)
    one_step = float((euler - after).square().sum(1).mean().sqrt())
    # (One Euler step of the 1-rectified flow sends every z to about the mean M.)
    assert one_step < 0.2 * float((euler_before - before).square().sum(1).mean().sqrt())


def test_distillation_loss_is_the_one_step_map():
    model = _model()
    model.time_sampler = FixedTime(0.0)
    z, x1 = torch.randn(64, 2), torch.randn(64, 2)
    loss = model.objective(ff.Batch(x1, x0=z)).loss
    one_step = z + model.field(torch.zeros(64), z)
    torch.testing.assert_close(loss, (one_step - x1).square().mean())


def test_distill_trains_a_one_step_sampler():
    torch.manual_seed(0)
    model = FlowMatching(Rotation(), ff.distributions.StandardNormal((2,)))
    # A curved teacher; the student learns its one-step map z -> R(W) z, which is linear.
    teacher_pairs = generate_pairs(model, 2000, seed=0, progress=False)
    learner = _model(hidden=(32, 32))
    result = ff.train.reflow(
        learner, teacher_pairs, _config(400), distill=True, progress=False, warm_start=True
    )
    (r,) = result.rounds
    assert r.distill
    z = teacher_pairs.x0[:200]
    with torch.no_grad():
        one = result.model.decode(z, steps=1)
    error = float((one - teacher_pairs.x1[:200]).square().sum(1).mean())
    assert error < 0.1 * transport_cost(z, teacher_pairs.x1[:200])


def test_reflow_refuses_what_it_cannot_reflow():
    with pytest.raises(TypeError, match="flow-matching model"):
        ff.train.reflow(ff.models.create("maf", dim=2), pairs=10)
    with pytest.raises(TypeError, match="got MeanFlow"):
        ff.train.reflow(ff.models.create("meanflow", dim=2, hidden=(8,)), pairs=10)
    with pytest.raises(ValueError, match="rounds"):
        ff.train.reflow(_model(), pairs=10, rounds=0)
    with pytest.raises(ValueError, match="same shape"):
        Pairs(torch.zeros(3, 2), torch.zeros(4, 2))


# -- the command line --------------------------------------------------------------------------


def test_cli_reflow_then_one_step_sample(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reflow", "--help"])
    assert e.value.code == 0 and "--distill" in capsys.readouterr().out
    src, new = tmp_path / "src", tmp_path / "new"
    tiny = ["-o", "hidden=16,16", "--no-progress", "--batch-size", "64", "--steps", "60"]
    data = ["--data", "moons", "--data-option", "n_train=2000"]
    assert main(["train", "--model", "rectified", *data, *tiny, "--out", str(src)]) == 0
    args = ["reflow", str(src), "--out", str(new), "--pairs", "300", "--steps", "40"]
    assert main([*args, "--distill", "--rounds", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "round 1 (reflowed, 300 pairs, seed 0)" in out and "round 2 (distilled" in out
    config = json.loads((new / "config.json").read_text())
    assert config["model"]["name"] == "rectified"
    assert config["model"]["options"]["sigma_min"] == 0.0
    lineage = config["reflow"]
    assert lineage["source"] == str(src) and lineage["round"] == 2 and lineage["distilled"]
    assert lineage["rectified"] == 2 and lineage["pairs"] == 300 and lineage["seed"] == 0
    assert [m["round"] for m in lineage["measured"]] == [1, 2]
    first = json.loads((new / "round-1" / "config.json").read_text())["reflow"]
    assert first["rectified"] == 2 and not first["distilled"]
    assert (new / "pairs-1.safetensors").exists() and (new / "pairs-2.safetensors").exists()
    samples = tmp_path / "one-step.npy"
    assert main(["sample", str(new), "--solver", "steps=1", "-n", "50", "--out", str(samples)]) == 0
    assert np.load(samples).shape == (50, 2)
    # The same command again finds everything done: nothing is trained or solved anew.
    weights = (new / "model.safetensors").read_bytes()
    assert main([*args, "--distill", "--rounds", "2", "--no-progress"]) == 0
    assert (new / "model.safetensors").read_bytes() == weights
    # Other settings into the same directory are refused, in one line.
    capsys.readouterr()
    assert main([*args, "--rounds", "1", "--no-progress"]) == 2
    assert "already holds another run" in capsys.readouterr().err
    # A reflow run trains on pairs: `train --resume` would train it on the data instead.
    assert main(["train", "--resume", str(new), "--no-progress"]) == 2
    assert "is a reflow of" in capsys.readouterr().err
