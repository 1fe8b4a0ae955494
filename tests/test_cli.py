"""The ``flowforge`` command, used as a person would: real subprocesses where it matters."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge
from flowforge.cli import main
from flowforge.train import checkpoint as ckpt
from flowforge.train import load

TINY = ["-o", "layers=2", "-o", "hidden=16", "--no-progress", "--batch-size", "64"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flowforge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_help_everywhere(capsys):
    for cmd in ([], ["train"], ["sample"], ["evaluate"], ["compare"], ["datasets"], ["models"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        assert "usage: flowforge" in capsys.readouterr().out


def test_listings(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "nsf" in out and "options: layers=5" in out
    assert "training defaults (flags and [train] override them): lr=0.01" in out
    # Which models take images, from the registry.
    assert "maf\n    MAF" in out and out.count("takes: vectors (D,) and images (C, H, W)") == len(
        flowforge.models.image_models()
    )
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "checkerboard" in out and "digits" in out


def test_train_sample_evaluate_round_trip(tmp_path, capsys):
    run = tmp_path / "nsf"
    code = main(
        [
            "train",
            "--model",
            "nsf",
            "--data",
            "checkerboard",
            "--steps",
            "40",
            "--eval-every",
            "20",
            "--out",
            str(run),
            *TINY,
        ]
    )
    assert code == 0
    assert "run saved in" in capsys.readouterr().out
    for name in (
        "config.json",
        "model.safetensors",
        "state.safetensors",
        "state.json",
        "metrics.jsonl",
    ):
        assert (run / name).exists(), name
    samples, fig = tmp_path / "s.npy", tmp_path / "s.png"
    assert main(["sample", str(run), "-n", "500", "--out", str(samples), "--plot", str(fig)]) == 0
    x = np.load(samples)
    assert x.shape == (500, 2) and np.isfinite(x).all()
    # Samples come back in the data's units (the checkerboard spans [-4, 4]), not standardised.
    assert 2.0 < np.abs(x).max() < 10
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--samples", "500"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "nsf" and result["split"] == "test"
    assert result["entropy_nats"] == pytest.approx(np.log(32))
    assert result["nll_nats"] > result["entropy_nats"]
    assert {"mmd", "energy_distance", "sliced_wasserstein"} <= set(result["distances"])
    assert result["weights"]["weights"] == "best" and result["weights"]["step"] in (20, 40)
    assert main(["evaluate", str(run), "--samples", "200", "--weights", "last"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == {"weights": "ema", "step": 40}


def test_ffjord_trains_samples_and_evaluates_with_solver_options(tmp_path, capsys):
    run = tmp_path / "ffjord"
    argv = ["train", "--model", "ffjord", "--data", "8gaussians", "--steps", "6"]
    argv += ["-o", "hidden=8", "--no-progress", "--batch-size", "32", "--out", str(run)]
    assert main(argv) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and records[-1]["nfe"] >= 6
    samples = tmp_path / "s.npy"
    capsys.readouterr()
    argv = ["sample", str(run), "-n", "50", "--out", str(samples)]
    assert main([*argv, "--solver", "method=rk4", "--solver", "steps=2"]) == 0
    assert np.load(samples).shape == (50, 2)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--samples", "100", "--solver", "steps=4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["solver"] == {"steps": 4}
    assert result["nfe"]["sample"] == 4 and result["nfe"]["log_prob"] == 4
    assert np.isfinite(result["nll_nats"])
    # A solver option a model does not take is a one-line user error.
    assert main(["sample", str(run), "--solver", "order=2"]) == 2
    assert "unknown solver option 'order'" in capsys.readouterr().err


def test_diffusion_samples_with_the_stochastic_samplers_and_evaluates_by_its_ode(tmp_path, capsys):
    run = tmp_path / "diffusion"
    argv = ["train", "--model", "diffusion", "--data", "moons", "--steps", "20"]
    argv += ["-o", "hidden=16", "--no-progress", "--batch-size", "64", "--out", str(run)]
    assert main(argv) == 0
    samples = tmp_path / "s.npy"
    for solver in (
        ["method=ddim", "steps=5", "eta=0.5"],
        ["method=ddpm", "steps=5"],
        ["method=euler-maruyama", "steps=5", "noise=0.5", "diffusion=path"],
    ):
        capsys.readouterr()
        flags = [x for option in solver for x in ("--solver", option)]
        assert main(["sample", str(run), "-n", "40", "--out", str(samples), *flags]) == 0
        drawn = np.load(samples)
        assert drawn.shape == (40, 2) and np.isfinite(drawn).all()
    # A stochastic sampler has no density: one line, naming why and what to use.
    capsys.readouterr()
    assert main(["evaluate", str(run), "--solver", "method=ddpm", "--solver", "steps=5"]) == 2
    err = capsys.readouterr().err
    assert "no density along it" in err and len(err.strip().splitlines()) == 1
    assert main(["sample", str(run), "--solver", "method=ddim", "--solver", "eta=2"]) == 2
    assert "steps must be an int >= 1 for method 'ddim'" in capsys.readouterr().err
    bad = ["--solver", "method=ddim", "--solver", "steps=5", "--solver", "eta=2"]
    assert main(["sample", str(run), *bad]) == 2
    assert "eta must be a number in [0, 1]" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--samples", "100", "--solver", "steps=4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nfe"]["log_prob"] == 4 and np.isfinite(result["nll_nats"])


def test_train_on_a_user_csv_with_a_toml_config(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(600, 3)) * [1.0, 10.0, 100.0] + [0.0, 50.0, -500.0]
    csv = tmp_path / "points.csv"
    csv.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in pts))
    cfg = tmp_path / "maf.toml"
    cfg.write_text(
        '[model]\nname = "maf"\nlayers = 2\nhidden = [16]\n\n'
        "[train]\nsteps = 30\nbatch_size = 64\neval_every = 10\nprogress = false\n"
    )
    run = tmp_path / "maf"
    assert main(["train", "--data", str(csv), "--config", str(cfg), "--out", str(run)]) == 0
    model, config = load(run)
    assert config["model"] == {"name": "maf", "options": {"layers": 2, "hidden": [16]}}
    with torch.no_grad():
        x = model.sample(2000)
    # Standardisation statistics travel with the model: samples are in the user's units.
    scale = np.array([1.0, 10.0, 100.0])
    mean_error = np.abs(x.mean(0).numpy() - [0.0, 50.0, -500.0]) / scale
    assert (mean_error < 0.5).all(), x.mean(0)
    assert (np.abs(x.std(0).numpy() / scale - 1) < 0.5).all(), x.std(0)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--samples", "200"]) == 0
    assert json.loads(capsys.readouterr().out)["entropy_nats"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "--model", "nfs", "--data", "checkerboard", "--out", "{tmp}/r"],
            "unknown model 'nfs'",
        ),
        (["train", "--model", "nsf", "--data", "chekerboard", "--out", "{tmp}/r"], "chekerboard"),
        (
            ["train", "--model", "nsf", "--data", "{tmp}/missing.csv", "--out", "{tmp}/r"],
            "missing.csv",
        ),
        (["train", "--model", "nsf", "--data", "{tmp}/bad.csv", "--out", "{tmp}/r"], "bad.csv"),
        (
            [
                "train",
                "--model",
                "nsf",
                "--data",
                "checkerboard",
                "--steps",
                "0",
                "--out",
                "{tmp}/r",
            ],
            "steps must be an integer >= 1",
        ),
        (
            [
                "train",
                "--model",
                "nsf",
                "--data",
                "checkerboard",
                "-o",
                "bins=1",
                "--out",
                "{tmp}/r",
            ],
            "bins",
        ),
        (
            [
                "train",
                "--model",
                "nsf",
                "--data",
                "checkerboard",
                "-o",
                "blocks=3",
                "--out",
                "{tmp}/r",
            ],
            "no option 'blocks'",
        ),
        (
            [
                "train",
                "--model",
                "nsf",
                "--data",
                "checkerboard",
                "--config",
                "{tmp}/nope.toml",
                "--out",
                "{tmp}/r",
            ],
            "nope.toml",
        ),
        (["train", "--model", "nsf", "--data", "checkerboard"], "--out"),
        (["train", "--resume", "{tmp}/nothing"], "does not exist"),
        (["sample", "{tmp}/nothing"], "does not exist"),
        (["evaluate", "{tmp}/nothing"], "does not exist"),
        (["sample", "{tmp}/nothing", "-n", "0"], "-n must be a positive"),
        (["train", "--steps", "many"], "invalid int value"),
        (
            [
                "train",
                "--model",
                "nsf",
                "--data",
                "checkerboard",
                "--data-option",
                "n_trian=5",
                "--out",
                "{tmp}/r",
            ],
            "unknown data option(s) n_trian; valid: image, key, label, layout, levels, mode, n_",
        ),
        (["compare", "--models", "nsf,bogus", "--out", "{tmp}/c"], "unknown model 'bogus'"),
    ],
)
def test_user_mistakes_are_one_line_and_status_2(tmp_path, argv, message):
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n3,oops\n5,6\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = run_cli(*argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in lines[0]


def test_an_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "r"
    args = [
        "train",
        "--model",
        "maf",
        "--data",
        "checkerboard",
        "--steps",
        "5",
        "--out",
        str(run),
        *TINY,
    ]
    assert main(args) == 0
    before = (run / "model.safetensors").read_bytes()
    proc = run_cli(*args)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (run / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_sigkill_never_leaves_an_unloadable_checkpoint(tmp_path):
    """Kill training at random moments; every checkpoint left loads, and resume finishes.

    4000 steps: more than a fast machine trains between a first checkpoint and the first kill."""
    run = tmp_path / "r"
    args = [
        "train",
        "--model",
        "realnvp",
        "--data",
        "checkerboard",
        "--steps",
        "4000",
        "--checkpoint-every",
        "10",
        "--eval-every",
        "100",
        "--out",
        str(run),
        *TINY,
    ]
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowforge", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kills = 0
    while kills < 6:
        deadline = time.time() + 60
        while not (run / "model.safetensors").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        weights, step = ckpt.load_weights(run)  # never fails to load
        ckpt.load_checkpoint(run)
        assert step >= 10 and weights
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowforge", "train", "--resume", str(run), "--no-progress"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    proc.wait(timeout=300)
    assert kills >= 1
    assert proc.returncode == 0
    _, step = ckpt.load_weights(run)
    assert step == 4000


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    """DDP over 2 CPU processes (gloo) gives the single-process result for the same global batch."""
    # nsf, not realnvp: right after ActNorm's data-dependent initialisation its gradient is ~0,
    # and Adam turns the summation-order noise of such gradients into full +-lr steps.
    common = [
        "--model",
        "nsf",
        "--data",
        "checkerboard",
        "--steps",
        "20",
        "--batch-size",
        "64",
        "-o",
        "layers=2",
        "-o",
        "hidden=16",
        "--no-progress",
        "--eval-every",
        "10",
    ]
    single = run_cli("train", *common, "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "flowforge",
            "train",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run saved in") == 1  # rank 0 alone reports and writes
    one, _ = ckpt.load_weights(tmp_path / "one")
    two, _ = ckpt.load_weights(tmp_path / "two")
    assert set(one) == set(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4)
    logs = [
        [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("one", "two")
    ]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    for a, b in zip(*logs, strict=True):
        for key in ("loss", "val_nll"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a["step"])
    assert not list(Path(tmp_path / "two").glob("*.new"))


def test_recipe_training_defaults_yield_to_config_and_flags():
    from flowforge import models
    from flowforge.cli import build_parser
    from flowforge.cli.options import train_options
    from flowforge.train import TrainConfig

    # Every recipe's training defaults are valid TrainConfig settings.
    for name in models.available():
        TrainConfig(**models.recipe(name).train_defaults)
    assert dict(models.recipe("resflow").train_defaults) == {"lr": 1e-2}
    with pytest.raises(TypeError):
        models.recipe("resflow").train_defaults["lr"] = 1.0  # read-only

    parse = build_parser().parse_args
    plain = parse(["train"])
    assert train_options({}, plain).lr == 1e-3
    assert train_options({}, plain, "nsf").lr == 1e-3  # no defaults of its own
    assert train_options({}, plain, "resflow").lr == 1e-2
    assert train_options({"lr": 3e-3}, plain, "resflow").lr == 3e-3  # [train] table
    flagged = parse(["train", "--lr", "2e-3"])
    assert train_options({"lr": 3e-3}, flagged, "resflow").lr == 2e-3  # flag over table
    with pytest.raises(ValueError, match="unknown model"):
        train_options({}, plain, "resflw")


def test_compare_reports_per_model_settings(tmp_path):
    from flowforge.compare import Comparison, Evaluation, run
    from flowforge.train import TrainConfig

    base = dict(steps=20, batch_size=64, eval_every=0, checkpoint_every=0, progress=False)
    configs = {
        "nice": TrainConfig(**base),
        "realnvp": TrainConfig(**base),
        "maf": TrainConfig(**base, lr=3e-3),
    }
    comparison = Comparison(
        tuple(configs), "checkerboard", configs, evaluation=Evaluation(samples=200)
    )
    text = run(comparison, tmp_path / "c").report.read_text()
    assert "**Budget: equal steps.** Every model trained for 20 optimiser steps of batch 64" in text
    assert "Shared settings: AdamW, lr 0.001" in text
    assert "recipe sets its own training defaults (`flowforge models`): maf: lr 0.003." in text
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert [r["train"]["lr"] for r in results["results"]] == [1e-3, 1e-3, 3e-3]
    with pytest.raises(ValueError, match="no training config for nsf"):
        Comparison(("nsf",), "checkerboard", configs)


@pytest.mark.slow
def test_compare_writes_a_report(tmp_path):
    out = tmp_path / "cmp"
    proc = run_cli(
        "compare",
        "--data",
        "checkerboard",
        "--models",
        "nice,ffjord",
        "--steps",
        "30",
        "--batch-size",
        "64",
        "--samples",
        "300",
        "--no-progress",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    report = (out / "report.md").read_text()
    assert "| nice |" in report and "| ffjord |" in report and "3.466" in report
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["model"] for r in results] == ["nice", "ffjord"]
    # The continuous model's cost is reported: NFE of training, sampling and log-density.
    assert results[0]["nfe"] is None
    nfe = results[1]["nfe"]
    assert nfe["sample"] >= 6 and nfe["log_prob"] >= 6 and nfe["train"]["last"] >= 6
    assert "NFE train (first → last)" in report and "| nice |" in report
    assert "![densities.png](densities.png)" in report
    for fig in ("samples.png", "curves.png", "densities.png"):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
