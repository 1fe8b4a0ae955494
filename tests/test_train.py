"""The training loop, its schedule, checkpoints, resumption and divergence handling."""

from __future__ import annotations

import itertools
import json
import math
import os

import pytest
import torch

import flowforge as ff
from flowforge.train import TrainConfig, TrainingDiverged, train
from flowforge.train import checkpoint as ckpt
from flowforge.train.loop import split_weights


def small_model(seed: int = 0) -> ff.Model:
    torch.manual_seed(seed)
    return ff.models.create("realnvp", dim=2, layers=2, hidden=(16,))


def quick(**kw) -> TrainConfig:
    base = dict(
        steps=30, batch_size=64, eval_every=10, checkpoint_every=10, log_every=5, progress=False
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def points():
    return ff.data.checkerboard(2000, seed=1), ff.data.checkerboard(500, seed=2)


def test_config_validation_names_the_option():
    for bad, message in [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"lr": math.nan}, "lr must be a positive number"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"device": ""}, "device"),
    ]:
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match=r"unknown training option.*stepz"):
        TrainConfig.from_dict({"stepz": 3})


def test_learning_rate_schedule_warms_up_then_decays():
    c = TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, min_lr_ratio=0.1)
    assert c.lr_at(50) == pytest.approx(5e-4)
    assert c.lr_at(100) == pytest.approx(1e-3)
    assert c.lr_at(550) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert c.lr_at(1000) == pytest.approx(1e-4)
    lrs = [c.lr_at(s) for s in range(100, 1001)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert TrainConfig(steps=1000).warmup == 50


def test_training_learns_and_writes_a_run(points, tmp_path):
    train_x, val_x = points
    torch.manual_seed(0)
    model = ff.models.create("nsf", dim=2, layers=2, hidden=(16,))
    before = -model.log_prob(val_x).mean().item()
    result = train(
        model, train_x, quick(steps=60, lr=3e-3, ema_decay=0.0), val_x=val_x, run_dir=tmp_path
    )
    assert result.steps == 60 and result.val_nll is not None
    assert result.val_nll < before - 1.0  # from ~7.2 (identity) towards ln 32 = 3.47
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(5, 61, 5))
    assert [r["step"] for r in records if "val_nll" in r] == [10, 20, 30, 40, 50, 60]
    assert all(r["steps_per_s"] > 0 for r in records if "loss" in r)
    weights, step = ckpt.load_weights(tmp_path)
    assert step == 60
    assert set(split_weights(weights, "model")) == set(model.state_dict())
    assert not split_weights(weights, "ema")  # EMA off: no EMA weights are kept
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".new", ".tmp"))]


def test_training_is_deterministic(points):
    train_x, _ = points
    a, b = small_model(), small_model()
    train(a, train_x, quick(steps=15))
    train(b, train_x, quick(steps=15))
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_resumed_run_ends_with_the_same_weights(points, tmp_path):
    train_x, val_x = points
    straight = small_model()
    train(straight, train_x, quick(), val_x=val_x, run_dir=tmp_path / "a")
    cut = small_model()
    train(cut, train_x, quick(), val_x=val_x, run_dir=tmp_path / "b", stop_at=20)
    resumed = small_model(seed=123)  # different init: everything must come from the checkpoint
    train(resumed, train_x, quick(), val_x=val_x, run_dir=tmp_path / "b", resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    wa, _ = ckpt.load_weights(tmp_path / "a")
    wb, _ = ckpt.load_weights(tmp_path / "b")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # The log of the resumed run reads like the uninterrupted one.
    assert (tmp_path / "a" / "metrics.jsonl").read_text().count("\n") == (
        tmp_path / "b" / "metrics.jsonl"
    ).read_text().count("\n")


def test_resume_needs_a_checkpoint_and_unfinished_steps(points, tmp_path):
    train_x, _ = points
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        train(small_model(), train_x, quick(), run_dir=tmp_path / "nothing", resume=True)
    train(small_model(), train_x, quick(steps=10), run_dir=tmp_path / "done")
    with pytest.raises(ValueError, match="already finished its 10 steps"):
        train(small_model(), train_x, quick(steps=10), run_dir=tmp_path / "done", resume=True)


class Exploding(ff.Model):
    """A flow whose loss turns NaN at a given call: divergence on demand."""

    def __init__(self, at: int):
        super().__init__()
        self.flow = small_model()
        self.event_shape, self.context_dim = (2,), 0
        self.calls, self.at = 0, at

    def _log_prob(self, x, context):
        return self.flow._log_prob(x, context)

    def _loss(self, x, context):
        self.calls += 1
        loss = self.flow._loss(x, context)
        return loss * math.nan if self.calls > self.at else loss


def test_divergence_stops_with_the_step_and_keeps_the_last_checkpoint(points, tmp_path):
    train_x, _ = points
    # Call 1 is the data-dependent initialisation pass; step s is call s + 1.
    with pytest.raises(TrainingDiverged, match=r"diverged at step 25.*checkpoint \(step 20\)"):
        train(Exploding(at=25), train_x, quick(), run_dir=tmp_path)
    weights, step = ckpt.load_weights(tmp_path)
    assert step == 20
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_corrupt_and_inconsistent_checkpoints_are_clear_errors(points, tmp_path):
    train_x, _ = points
    train(small_model(), train_x, quick(steps=10), run_dir=tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="not a valid safetensors file"):
        ckpt.load_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(data)
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**state, "step": 3}))
    with pytest.raises(ckpt.CheckpointError, match="different steps"):
        ckpt.load_checkpoint(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(tmp_path)


def test_interrupted_commits_roll_forward_and_torn_writes_roll_back(tmp_path):
    w = {"model.a": torch.zeros(3)}
    ckpt.save_checkpoint(tmp_path, 1, w, {}, {"optimizer": {}})
    # A crash after every .new file was complete and the marker written: roll forward.
    for name in ("model.safetensors", "state.safetensors", "state.json"):
        os.replace(tmp_path / name, tmp_path / (name + ".keep"))
    ckpt.save_checkpoint(tmp_path, 2, {"model.a": torch.ones(3)}, {}, {"optimizer": {}})
    for name in ("model.safetensors", "state.safetensors", "state.json"):
        os.replace(tmp_path / name, tmp_path / (name + ".new"))
        os.replace(tmp_path / (name + ".keep"), tmp_path / name)
    (tmp_path / "commit").write_bytes(b"")
    weights, step = ckpt.load_weights(tmp_path)
    assert step == 2 and torch.equal(weights["model.a"], torch.ones(3))
    assert not (tmp_path / "commit").exists()
    # A crash while the .new files were being written (no marker): they are discarded.
    (tmp_path / "model.safetensors.new").write_bytes(b"garbage")
    weights, step = ckpt.load_weights(tmp_path)
    assert step == 2 and not (tmp_path / "model.safetensors.new").exists()


def test_optimizer_state_round_trip():
    model = small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.loss(torch.randn(8, 2)).backward()
    opt.step()
    tensors, saved = ckpt.optimizer_state(opt)
    fresh = torch.optim.AdamW(model.parameters(), lr=5.0)
    ckpt.load_optimizer_state(fresh, tensors, json.loads(json.dumps(saved)))
    assert fresh.param_groups[0]["lr"] == 1e-3
    for a, b in zip(opt.state.values(), fresh.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_ema_tracks_the_weights():
    model = small_model()
    ema = ff.train.EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ema.model.parameters()]
    ema.update(model)
    beta = min(0.5, 2 / 11)
    for b, a, p in zip(before, ema.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, beta * b + (1 - beta) * p)


def test_best_validation_weights_are_kept_and_loaded(tmp_path):
    """On tiny data the model overfits: the best-validation weights must be the ones kept."""
    train_x = ff.data.checkerboard(64, seed=1)  # 64 points: overfitting within 200 steps
    val_x = ff.data.checkerboard(2000, seed=2)
    torch.manual_seed(0)
    model = ff.models.create("nsf", dim=2, layers=2, hidden=(64,))
    config = quick(steps=200, lr=5e-3, ema_decay=0.0, eval_every=10, checkpoint_every=100)
    train(model, train_x, config, val_x=val_x, run_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["val_nll"] for r in records if "val_nll" in r}
    best_step = min(vals, key=vals.get)
    assert best_step < 200 and vals[200] > vals[best_step] + 0.1  # it did overfit
    weights, step, val_nll = ckpt.load_best(tmp_path)
    assert step == best_step and val_nll == pytest.approx(vals[best_step])
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best_step"] == best_step
    # The kept weights reproduce the best validation NLL.
    fresh = ff.models.create("nsf", dim=2, layers=2, hidden=(64,))
    fresh.load_state_dict(weights)
    with torch.no_grad():
        assert -fresh.eval().log_prob(val_x).mean().item() == pytest.approx(vals[best_step])


def test_keep_best_can_be_turned_off(points, tmp_path):
    train_x, val_x = points
    train(small_model(), train_x, quick(steps=10, keep_best=False), val_x=val_x, run_dir=tmp_path)
    assert ckpt.load_best(tmp_path) is None
    with pytest.raises(ValueError, match="keep_best"):
        TrainConfig(keep_best="yes")
