"""Conditional runs from the command line: --conditional, --label, labelled files, images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge.cli import main

TINY = ["-o", "layers=2", "-o", "hidden=16", "--no-progress", "--batch-size", "64"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "nsf"
    args = ["train", "--model", "nsf", "--data", "digits", "--conditional", "--steps", "200"]
    code = main([*args, "--out", str(run), *TINY])
    assert code == 0
    return run


def test_a_conditional_run_records_its_labels(digits_run):
    config = json.loads((digits_run / "config.json").read_text())
    assert config["conditional"] is True and config["num_classes"] == 10
    assert sum(config["label_counts"]) == 1000 and len(config["label_counts"]) == 10
    model, _ = ff.train.load(digits_run)
    assert model.num_classes == 10
    x = ff.data.load("digits").test[:5]
    # The density depends on the label: each test digit is likelier under its own.
    lp = torch.stack([model.log_prob(x, torch.full((5,), k)) for k in range(10)], dim=1)
    assert lp.std(dim=1).min() > 0.1


def test_sample_a_label_with_a_plot(digits_run, tmp_path, capsys):
    out, plot = tmp_path / "s.npy", tmp_path / "grid.png"
    args = ["sample", str(digits_run), "--label", "3", "-n", "16", "--plot", str(plot)]
    assert main([*args, "--out", str(out)]) == 0
    assert np.load(out).shape == (16, 64)
    assert plot.stat().st_size > 0
    # Without --label, labels follow the training data's proportions.
    assert main(["sample", str(digits_run), "-n", "8", "--out", str(out)]) == 0


@pytest.mark.parametrize("label", ["10", "-1", "three"])
def test_bad_labels_name_the_classes(digits_run, label, capsys):
    assert main(["sample", str(digits_run), "--label", label, "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "--label must be one of the run's 10 classes (0, 1, 2" in err and repr(label) in err


def test_label_on_an_unconditional_run_and_conditional_without_labels(tmp_path, capsys):
    run = tmp_path / "plain"
    base = ["train", "--model", "nsf", "--steps", "2", *TINY]
    assert main([*base, "--data", "checkerboard", "--out", str(run)]) == 0
    assert main(["sample", str(run), "--label", "1", "-n", "2"]) == 2
    assert "trained without labels" in capsys.readouterr().err
    assert (
        main([*base, "--data", "checkerboard", "--conditional", "--out", str(tmp_path / "c")]) == 2
    )
    err = capsys.readouterr().err
    assert "no class labels" in err and "label=COLUMN" in err
    assert not (tmp_path / "c" / "config.json").exists()


def test_a_csv_label_column_trains_a_conditional_model(tmp_path):
    rng = np.random.default_rng(0)
    kind = rng.integers(0, 2, 300)
    x = rng.normal(size=(300, 2)) + 3 * kind[:, None]
    path = tmp_path / "points.csv"
    lines = ["a,b,kind"] + [f"{p:.4f},{q:.4f},{'ab'[k]}" for (p, q), k in zip(x, kind, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    args = ["train", "--model", "maf", "--data", str(path), "--data-option", "label=kind"]
    assert main([*args, "--conditional", "--steps", "5", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["label_names"] == ["a", "b"] and config["columns"] == ["a", "b"]
    assert config["event_shape"] == [2]
    assert (
        main(["sample", str(run), "--label", "b", "-n", "4", "--out", str(tmp_path / "s.csv")]) == 0
    )


def test_image_data_trains_an_image_model_or_says_which_do(tmp_path, capsys):
    run = tmp_path / "img"
    args = ["train", "--data", "digits", "--data-option", "image=true", "--steps", "2"]
    assert main([*args, "--model", "nsf", "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["event_shape"] == [1, 8, 8]
    model, _ = ff.train.load(run)
    assert model.event_shape == (1, 8, 8) and model.sample(2).shape == (2, 1, 8, 8)
    assert main([*args, "--model", "maf", "--out", str(tmp_path / "maf"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nsf" in err[0] and "maf" in err[0]


def test_compare_conditional_scores_each_point_under_its_label(tmp_path):
    out = tmp_path / "report"
    args = ["compare", "--data", "8gaussians", "--models", "nice,rectified", "--steps", "5"]
    args += ["--batch-size", "64", "--samples", "200", "--no-progress", "--conditional"]
    small = tmp_path / "small.toml"
    small.write_text("[data]\nn_train = 2000\nn_val = 200\nn_test = 300\n")
    assert main([*args, "--config", str(small), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["conditional"] is True
    assert all(r["conditional"] and r["entropy_nats"] is None for r in results["results"])
    report = (out / "report.md").read_text()
    assert "p(x | label)" in report and "floor no model's test NLL" not in report
    config = json.loads((out / "runs" / "nice" / "config.json").read_text())
    assert config["conditional"] and config["num_classes"] == 8


def test_evaluate_a_label_alone(digits_run, capsys):
    assert main(["evaluate", str(digits_run), "--label", "3", "--samples", "50"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["label"] == 3 and one["conditional"] and one["n"] < 100
    assert main(["evaluate", str(digits_run), "--samples", "50"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert every["n"] == 447 and "label" not in every


def test_guided_sampling_from_the_command_line(tmp_path, digits_run, capsys):
    run = tmp_path / "fm"
    args = ["train", "--model", "rectified", "--data", "8gaussians", "--conditional"]
    args += ["--label-dropout", "0.2", "--steps", "5", "--out", str(run), "--no-progress"]
    args += ["--data-option", "n_train=500", "--data-option", "n_val=100", "-o", "hidden=16"]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["options"]["label_dropout"] == 0.2
    out = tmp_path / "g.npy"
    sample = ["sample", str(run), "--label", "3", "--guidance", "2", "-n", "8"]
    assert (
        main([*sample, "--solver", "method=euler", "--solver", "steps=4", "--out", str(out)]) == 0
    )
    assert np.load(out).shape == (8, 2)
    assert main(["sample", str(digits_run), "--label", "3", "--guidance", "2", "-n", "2"]) == 2
    assert "discrete flow" in capsys.readouterr().err
    bad = ["train", "--model", "fm", "--data", "8gaussians", "--label-dropout", "0.2"]
    assert main([*bad, "--out", str(tmp_path / "x")]) == 2
    assert "add --conditional" in capsys.readouterr().err
