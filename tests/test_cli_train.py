"""``flowforge train``: budgets in seconds, early stopping, resuming from any moment, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import flowforge as ff
from flowforge.cli import build_parser, main
from flowforge.cli.options import train_options
from flowforge.train import TrainConfig
from flowforge.train import checkpoint as ckpt

TINY = ["-o", "layers=2", "-o", "hidden=16", "--no-progress", "--batch-size", "64"]


def train_args(run: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--model",
        "realnvp",
        "--data",
        "checkerboard",
        "--out",
        str(run),
        *TINY,
        *extra,
    ]


def cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flowforge", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def test_time_limit_and_patience_flags():
    parse = build_parser().parse_args
    timed = train_options({}, parse(["train", "--time-limit", "30"]))
    assert timed.time_limit == 30.0 and timed.steps is None  # open-ended in steps
    bounded = train_options({}, parse(["train", "--time-limit", "30", "--steps", "900"]))
    assert bounded.steps == 900
    assert train_options({"steps": 700, "time_limit": 5}, parse(["train"])).steps == 700
    assert train_options({}, parse(["train", "--patience", "0"])).patience is None
    assert train_options({}, parse(["train", "--patience", "4"])).patience == 4
    assert train_options({}, parse(["train"])).patience == TrainConfig().patience
    assert train_options({}, parse(["train", "--eval-every", "auto"])).eval_every == "auto"
    assert train_options({}, parse(["train", "--eval-every", "25"])).eval_every == 25
    compare = parse(["compare", "--out", "x", "--time-limit", "12", "--patience", "3"])
    assert (compare.time_limit, compare.patience) == (12.0, 3)


def test_bad_budget_flags_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--eval-every", "sometimes"])
    assert e.value.code == 2
    assert "expected 'auto' or a number of steps" in capsys.readouterr().err
    assert main(train_args(tmp_path / "r", "--time-limit", "-1")) == 2
    assert "time_limit must be a positive number" in capsys.readouterr().err


def test_final_line_names_the_best_step_and_how_training_stopped(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(train_args(run, "--steps", "40", "--eval-every", "10")) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    best = ckpt.load_best(run)
    assert line.startswith("trained 40 steps in ") and "s (step limit); " in line
    assert f"best validation NLL {best[2]:.4f} nats at step {best[1]}" in line
    assert "(the weights sample and evaluate use)" in line and line.endswith(f"saved in {run}")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "50"]) == 0
    assert "trained to step 50 (resumed from step 40)" in capsys.readouterr().out


def test_a_time_limit_on_the_command_line(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(train_args(run, "--time-limit", "1")) == 0
    assert "(time limit); best validation NLL" in capsys.readouterr().out
    assert state(run)["stop_reason"] == "time"
    assert json.loads((run / "config.json").read_text())["train"]["steps"] is None
    # The budget is spent: the run says how to go on; a larger one resumes it.
    assert main(["train", "--resume", str(run)]) == 2
    assert "raise --time-limit" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--time-limit", "1.5"]) == 0
    assert "resumed from step" in capsys.readouterr().out


def test_resume_refuses_settings_it_cannot_change(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(train_args(run, "--steps", "5")) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "9", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr cannot change" in err and "--time-limit" in err


def test_rerunning_a_command_whose_run_saved_no_checkpoint_starts_it_again(tmp_path, capsys):
    run = tmp_path / "r"
    argv = train_args(run, "--steps", "20")
    assert main(argv) == 0
    for name in ("model.safetensors", "state.safetensors", "state.json", "best.safetensors"):
        (run / name).unlink()  # as if killed after config.json, before the first checkpoint
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0  # --resume starts it from step 0
    assert "trained 20 steps" in capsys.readouterr().out
    for name in ("model.safetensors", "state.safetensors", "state.json"):
        (run / name).unlink()
    assert main(argv) == 0  # and so does the original command
    assert state(run)["step"] == 20 and state(run)["stop_reason"] == "steps"


def test_clear_errors_for_paths_that_are_not_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(train_args(tmp_path / "file", "--steps", "5")) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot be a run directory" in err and "Errno" not in err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "holds no run yet" in capsys.readouterr().err


def test_a_run_trained_from_python_works_with_the_cli(tmp_path, capsys):
    train_x = ff.data.checkerboard(2000, seed=1)
    val_x = ff.data.checkerboard(400, seed=2)
    torch.manual_seed(0)
    model = ff.models.create("nsf", dim=2, layers=2, hidden=(16,))
    config = TrainConfig(steps=40, batch_size=64, progress=False)
    ff.train.train(model, train_x, config, val_x=val_x, run_dir=tmp_path / "py")
    loaded, run_config = ff.train.load(tmp_path / "py")
    assert run_config["model"]["name"] == "nsf" and run_config["loaded"]["weights"] == "best"
    assert loaded.sample(5).shape == (5, 2)
    assert main(["evaluate", str(tmp_path / "py"), "--samples", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "nsf" and result["n"] == 400  # the validation split it was given
    plot = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "py"), "-n", "100", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["train", "--resume", str(tmp_path / "py"), "--steps", "50"]) == 0


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_finishes(tmp_path):
    """Kill ``flowforge train`` at moments from its first second on (importing, loading data,
    writing the config, training, committing checkpoints), start it again each time, with
    ``--resume`` or the original command, and it finishes.

    The killed runs ask for far more steps than any machine trains in the 30 s of the kill
    schedule, so every start is killed whatever the machine's speed; the last start resumes to a
    few hundred steps past the last committed checkpoint and must finish there."""
    run = tmp_path / "r"
    original = train_args(run, "--steps", "1000000", "--checkpoint-every", "25")
    moments = (0.4, 1.0, 1.8, 2.7, 3.8, 5.2, 6.5, 8.0)
    for i, moment in enumerate(moments):
        # Before config.json exists only the original command can start it; after, both do.
        use_resume = (run / "config.json").exists() and i % 2 == 0
        proc = cli(*(["train", "--resume", str(run), "--no-progress"] if use_resume else original))
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            proc.kill()
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        if ckpt.has_checkpoint(run):
            ckpt.load_checkpoint(run)  # what a kill leaves always loads
    assert (run / "config.json").exists()
    committed = state(run)["step"] if (run / "state.json").exists() else 0
    target = committed + 200
    proc = cli("train", "--resume", str(run), "--steps", str(target), "--no-progress")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert "run saved in" in out
    assert state(run)["step"] == target and state(run)["stop_reason"] == "steps"
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["stop"] == "steps"


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_says_how_to_resume_and_exits_130(tmp_path):
    run = tmp_path / "r"
    argv = train_args(run, "--steps", "100000", "--checkpoint-every", "100000")
    proc = cli(*argv)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    step = state(run)["step"]
    assert 1 <= step < 100000 and state(run)["stop_reason"] == "interrupted"
    assert lines[0] == (
        f"interrupted at step {step}; the checkpoint is saved \u2014 resume with: "
        f"flowforge train --resume {run}"
    )
    resume = cli("train", "--resume", str(run), "--steps", str(step + 30), "--no-progress")
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    assert f"trained to step {step + 30} (resumed from step {step})" in out
    assert state(run)["stop_reason"] == "steps"
