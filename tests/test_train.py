"""The training loop, its schedule, checkpoints, resumption and divergence handling."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import time

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
        ({"ema_decay": 1.0}, r"ema_decay must be a number in \[0, 1\)"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"device": ""}, "device"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
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

    def _loss(self, batch):
        self.calls += 1
        result = self.flow._loss(batch)
        return ff.LossResult(result.loss * math.nan) if self.calls > self.at else result


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
    with pytest.raises(TypeError, match="keep_best"):
        TrainConfig(keep_best="yes")


# -- budgets in seconds, early stopping, automatic validation, interruption -------------------


def test_open_ended_steps_need_a_time_limit_and_limits_are_validated():
    with pytest.raises(ValueError, match=r"steps=None .* needs a time_limit"):
        TrainConfig(steps=None)
    for bad, message in [
        ({"time_limit": 0}, "time_limit must be a positive number"),
        ({"time_limit": math.inf}, "time_limit"),
        ({"patience": 0}, "patience must be an integer >= 1 or None"),
        ({"eval_every": "often"}, "eval_every must be an integer >= 0 or 'auto'"),
        ({"eval_every": -1}, "eval_every"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            TrainConfig(**bad)
    assert TrainConfig(steps=None, time_limit=5).steps is None


def test_schedule_runs_over_the_share_of_the_time_budget():
    c = TrainConfig(steps=None, time_limit=100.0, lr=1e-3, warmup_steps=0, min_lr_ratio=0.1)
    assert c.lr_at(10, 0.0) == pytest.approx(1e-3)
    assert c.lr_at(10, 50.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert c.lr_at(10**6, 100.0) == pytest.approx(1e-4)
    lrs = [c.lr_at(s, s / 10) for s in range(1, 1001)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    # With steps as well, the larger share of the two sets the schedule.
    both = TrainConfig(steps=1000, time_limit=100.0, lr=1e-3, warmup_steps=0, min_lr_ratio=0.1)
    assert both.lr_at(500, 10.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert both.lr_at(100, 50.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert both.fraction_done(100, 50.0) == 0.5
    # The default warm-up (100 steps when open-ended) also ends once 5 % of the time is spent.
    warm = TrainConfig(steps=None, time_limit=100.0, lr=1e-3)
    assert warm.warmup == 100
    assert warm.lr_at(10, 0.0) == pytest.approx(1e-4)
    assert warm.lr_at(10, 2.5) == pytest.approx(5e-4)
    assert warm.lr_at(10, 5.0) == pytest.approx(1e-3, rel=1e-2)
    # Without a time limit the schedule ignores the clock (step budgets stay deterministic).
    plain = TrainConfig(steps=1000, lr=1e-3)
    assert plain.lr_at(500, 0.0) == plain.lr_at(500, 1e9)


def test_auto_validation_interval_follows_the_epoch():
    c = TrainConfig(batch_size=256)
    assert c.eval_interval(100_000) == 391  # the checkerboard: once per epoch
    assert c.eval_interval(1000) == 10  # the digits: at least every 10 steps
    assert c.eval_interval(160) == 10  # a CSV of 200 rows
    assert c.eval_interval(10**7) == 500  # at most every 500
    assert TrainConfig(batch_size=100).eval_interval(5000) == 50
    assert TrainConfig(eval_every=7).eval_interval(10**6) == 7
    assert TrainConfig().eval_every == "auto"


def test_auto_validation_catches_the_first_epoch_and_the_end(points, tmp_path):
    train_x, val_x = points
    config = quick(steps=30, eval_every="auto", checkpoint_every=0)
    train(small_model(), train_x[:640], config, val_x=val_x, run_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "val_nll" in r]
    # 640 points in batches of 64: an epoch is 10 steps. Later validations may wait while
    # validation has taken over a tenth of the time; the first and the last never do.
    assert steps[0] == 10 and steps[-1] == 30
    assert set(steps) <= {10, 20, 30} or all(b > a for a, b in itertools.pairwise(steps))


def read_records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_time_limit_stops_the_run_and_says_so(points, tmp_path):
    train_x, val_x = points
    config = quick(steps=None, time_limit=0.5, checkpoint_every=0, eval_every=0)
    result = train(small_model(), train_x, config, val_x=val_x, run_dir=tmp_path)
    assert result.stop_reason == "time" and result.steps >= 1
    assert result.best_step == result.steps  # validated at the end
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stop_reason"] == "time" and state["step"] == result.steps
    last = read_records(tmp_path)[-1]
    assert last["stop"] == "time" and last["stop_step"] == result.steps and "loss" in last
    # Time already spent counts: the same budget has nothing left to resume.
    with pytest.raises(ValueError, match=r"already spent .* time limit"):
        train(small_model(), train_x, config, val_x=val_x, run_dir=tmp_path, resume=True)
    # A larger budget goes on from there; the step bound still applies.
    more = quick(steps=result.steps + 5, time_limit=600.0, checkpoint_every=0, eval_every=0)
    again = train(small_model(), train_x, more, val_x=val_x, run_dir=tmp_path, resume=True)
    assert again.stop_reason == "steps" and again.steps == result.steps + 5
    assert again.resumed_from == result.steps and again.seconds >= state["elapsed_s"]


class Stuck(ff.Model):
    """A model whose density cannot change: its validation NLL never improves."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.event_shape, self.context_dim = (2,), 0

    def _log_prob(self, x, context):
        return -0.5 * (x**2).sum(-1) - math.log(2 * math.pi) + 0.0 * self.w

    def _loss(self, batch):
        return ff.LossResult(-self._log_prob(batch.x1, None).mean() + (self.w - 1) ** 2)


def test_patience_stops_a_run_that_no_longer_improves(points, tmp_path):
    train_x, val_x = points
    config = quick(steps=200, eval_every=5, patience=3, ema_decay=0.0)
    result = train(Stuck(), train_x, config, val_x=val_x, run_dir=tmp_path)
    # Validations at 5 (the best), 10, 15, 20: three without improvement.
    assert result.stop_reason == "early_stop" and result.steps == 20
    assert result.best_step == 5
    assert json.loads((tmp_path / "state.json").read_text())["stop_reason"] == "early_stop"
    assert read_records(tmp_path)[-1]["stop"] == "early_stop"
    with pytest.raises(ValueError, match="stopped early at step 20"):
        train(Stuck(), train_x, config, val_x=val_x, run_dir=tmp_path, resume=True)
    off = quick(steps=30, eval_every=5, patience=None, ema_decay=0.0)
    assert train(Stuck(), train_x, off, val_x=val_x, run_dir=tmp_path, resume=True).steps == 30


def test_stop_at_is_an_interruption_and_the_log_reads_straight_after_resume(points, tmp_path):
    train_x, val_x = points
    cut = train(small_model(), train_x, quick(), val_x=val_x, run_dir=tmp_path, stop_at=20)
    assert cut.stop_reason == "interrupted" and cut.steps == 20
    assert json.loads((tmp_path / "state.json").read_text())["stop_reason"] == "interrupted"
    done = train(small_model(), train_x, quick(), val_x=val_x, run_dir=tmp_path, resume=True)
    assert done.stop_reason == "steps" and done.resumed_from == 20
    stops = [r["step"] for r in read_records(tmp_path) if "stop" in r]
    assert stops == [30]  # only the last line says how the run ended


class SelfInterrupting(ff.Model):
    """A flow that sends itself SIGINT (Ctrl-C) during the loss of a given step."""

    def __init__(self, at: int | None, sig: int = signal.SIGINT):
        super().__init__()
        self.flow = small_model()
        self.event_shape, self.context_dim = (2,), 0
        self.calls, self.at, self.sig = 0, at, sig

    def _log_prob(self, x, context):
        return self.flow._log_prob(x, context)

    def _loss(self, batch):
        self.calls += 1
        if self.training and self.calls - 1 == self.at:  # call 1 is the initialisation pass
            os.kill(os.getpid(), self.sig)
        return self.flow._loss(batch)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_the_step_and_resumes_to_the_same_weights(points, tmp_path, sig):
    train_x, val_x = points
    straight = SelfInterrupting(at=None)
    train(straight, train_x, quick(), val_x=val_x, run_dir=tmp_path / "a")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ff.train.TrainingInterrupted, match="interrupted at step 13") as e:
        interrupting = SelfInterrupting(at=13, sig=sig)
        train(interrupting, train_x, quick(), val_x=val_x, run_dir=tmp_path / "b")
    assert isinstance(e.value, KeyboardInterrupt) and e.value.step == 13
    assert ckpt.load_weights(tmp_path / "b")[1] == 13
    assert json.loads((tmp_path / "b" / "state.json").read_text())["stop_reason"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) == before
    resumed = SelfInterrupting(at=None)
    train(resumed, train_x, quick(), val_x=val_x, run_dir=tmp_path / "b", resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_a_run_without_a_checkpoint_resumes_from_step_0(points, tmp_path):
    """A run killed before its first checkpoint: resume starts it over, initialisation too."""
    train_x, val_x = points
    straight = small_model()
    train(straight, train_x, quick(), val_x=val_x, run_dir=tmp_path / "a")
    run = tmp_path / "b"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"stale")  # from the attempt that was killed
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n{"step": 2')
    resumed = small_model()  # the run's own initialisation, as build_model makes it
    result = train(resumed, train_x, quick(), val_x=val_x, run_dir=run, resume=True)
    assert result.resumed_from is None and result.steps == 30
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert ckpt.load_best(run)[1] == ckpt.load_best(tmp_path / "a")[1]
    assert len(read_records(run)) == len(read_records(tmp_path / "a"))


def test_a_file_is_not_a_run_directory(points, tmp_path):
    train_x, _ = points
    (tmp_path / "f").write_text("x")
    for run_dir in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(FileExistsError, match="cannot be a run directory"):
            train(small_model(), train_x, quick(steps=2), run_dir=run_dir)


def test_a_run_trained_from_python_writes_its_config_and_data(points, tmp_path):
    train_x, val_x = points
    torch.manual_seed(0)
    model = ff.models.create("realnvp", dim=2, layers=2, hidden=(16,))
    train(model, train_x, quick(), val_x=val_x, run_dir=tmp_path / "py")
    config = json.loads((tmp_path / "py" / "config.json").read_text())
    assert config["model"] == {"name": "realnvp", "options": {"layers": 2, "hidden": [16]}}
    assert config["event_shape"] == [2] and config["train"]["steps"] == 30
    loaded, config = ff.train.load(tmp_path / "py", weights="last", ema=False)
    with torch.no_grad():
        expected = model.eval().log_prob(val_x[:50])
        torch.testing.assert_close(loaded.log_prob(val_x[:50]), expected)
    dataset = ff.train.load_dataset(config)
    assert torch.equal(dataset.test, val_x) and torch.equal(dataset.train, train_x)
    # Standardised models keep their statistics; models of your own write no config.
    wrapped = ff.data.Standardize(small_model(), *ff.data.fit_standardization(train_x))
    train(wrapped, train_x, quick(steps=5), val_x=val_x, run_dir=tmp_path / "std")
    again, _ = ff.train.load(tmp_path / "std")
    assert torch.equal(again.std, wrapped.std)
    # A fresh run from arrays in the same directory replaces the config of the one before.
    other = ff.models.create("maf", dim=2, layers=1, hidden=(8,))
    train(other, train_x, quick(steps=5), val_x=val_x, run_dir=tmp_path / "py")
    assert ff.train.read_config(tmp_path / "py")["model"]["name"] == "maf"
    train(Stuck(), train_x, quick(steps=5), val_x=val_x, run_dir=tmp_path / "py")
    assert not (tmp_path / "py" / "config.json").exists()  # a model of your own: none
    train(Stuck(), train_x, quick(steps=5), val_x=val_x, run_dir=tmp_path / "own")
    assert not (tmp_path / "own" / "config.json").exists()
    with pytest.raises(ckpt.CheckpointError, match=r"not built by flowforge\.models\.create"):
        ff.train.load(tmp_path / "own")
    state, loaded_info = ff.train.load_state_dict(tmp_path / "own")
    Stuck().load_state_dict(state)
    assert loaded_info["weights"] == "best"


class SlowDensity(Stuck):
    """A density that takes 0.1 ms a sample: a stand-in for an ODE-based log-density."""

    def _log_prob(self, x, context):
        time.sleep(1e-4 * x.shape[0])
        return super()._log_prob(x, context)


def test_time_limited_validation_is_sized_to_the_budget():
    from flowforge.train.distributed import setup
    from flowforge.train.validation import PROBE_SAMPLES, Validation

    x = torch.randn(5000, 2)
    info = setup("cpu")
    # 2 % of a 0.1 s budget scores 20 such samples: the set shrinks to the probe's 64.
    auto = {"steps": None, "eval_every": "auto"}
    short = Validation(quick(**auto, time_limit=0.1), 640, x, None, 0, 0.0)
    short.run(SlowDensity(), info, 10, 0.0)
    assert short.size == PROBE_SAMPLES
    # A long budget keeps them all (up to max_val_samples); step budgets never shrink it.
    long = Validation(quick(**auto, time_limit=1e6, max_val_samples=3000), 640, x, None, 0, 0)
    long.run(SlowDensity(), info, 10, 0.0)
    assert long.size == 3000
    steps = Validation(quick(eval_every="auto"), 640, x, None, 0, 0.0)
    steps.run(SlowDensity(), info, 10, 0.0)
    assert steps.size == 5000
    # Validation that has taken over a tenth of the run's time waits.
    assert not steps.due(20, elapsed=steps.spent * 5)
    assert steps.due(20, elapsed=steps.spent * 20)
