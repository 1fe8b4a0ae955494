"""Rough edges a newcomer hits with ``flowforge sample``/``evaluate``/``train`` (issue 12):
every mistake is one line naming what the user gave, caught before any work is done."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import flowforge as ff
from flowforge.cli import main

TINY = ["-o", "layers=2", "-o", "hidden=16", "--no-progress", "--batch-size", "64"]
COLUMNS = ("age", "income", "score")


def write_csv(path, header: bool) -> None:
    rows = np.random.default_rng(0).normal(size=(200, 3)) * [1.0, 10.0, 100.0]
    lines = [",".join(f"{v:.5f}" for v in row) for row in rows]
    path.write_text("\n".join(([",".join(COLUMNS)] if header else []) + lines) + "\n")


def train_run(tmp, name: str, header: bool):
    write_csv(tmp / f"{name}.csv", header)
    run = tmp / name
    argv = ["train", "--model", "nsf", "--data", str(tmp / f"{name}.csv"), "--steps", "4"]
    assert main([*argv, *TINY, "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return train_run(tmp, "named", header=True), train_run(tmp, "plain", header=False)


def error(capsys) -> str:
    """The one line a failed command printed to stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_misspelled_model_gets_a_suggestion(tmp_path, capsys):
    argv = ["train", "--model", "nsff", "--data", "checkerboard", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "unknown model 'nsff': did you mean 'nsf'? available models are nice," in error(capsys)
    assert not (tmp_path / "r" / "config.json").exists()
    assert main(["compare", "--models", "nsf,mafx", "--out", str(tmp_path / "c")]) == 2
    assert "unknown model 'mafx': did you mean 'maf'?" in error(capsys)


def test_a_directory_given_as_data_is_named_as_one(tmp_path, capsys):
    (tmp_path / "mydata").mkdir()
    write_csv(tmp_path / "mydata" / "points.csv", header=True)
    argv = ["train", "--model", "nsf", "--data", str(tmp_path / "mydata")]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    line = error(capsys)
    assert "mydata is a directory; a dataset is a built-in name (checkerboard," in line
    assert line.endswith("it holds points.csv") and "unknown dataset" not in line


def test_samples_written_as_csv_keep_the_column_names(runs, tmp_path, capsys):
    named, plain = runs
    assert json.loads((named / "config.json").read_text())["columns"] == list(COLUMNS)
    assert main(["sample", str(named), "-n", "20", "--out", str(tmp_path / "s.csv")]) == 0
    text = (tmp_path / "s.csv").read_text().splitlines()
    assert text[0] == "age,income,score" and len(text) == 21
    back = ff.data.load(tmp_path / "s.csv")  # the written file reads back with its names
    assert back.columns == COLUMNS and back.dim == 3
    # Without a header in the training file, the columns are x1..xD.
    assert main(["sample", str(plain), "-n", "5", "--out", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "x1,x2,x3"
    assert main(["sample", str(plain), "-n", "5", "--out", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (5, 3)


def test_sample_refuses_bad_outputs_before_loading_or_sampling(runs, tmp_path, capsys):
    named, _ = runs
    samples = tmp_path / "s.npy"
    argv = ["sample", str(named), "--out", str(samples), "--plot", str(tmp_path / "s.jpg")]
    assert main(argv) == 2
    assert "--plot must end with .png, .pdf or .svg (the suffix chooses the format)" in error(
        capsys
    )
    assert not samples.exists()  # nothing was written before the refusal
    # Checked before the run is even read: a missing run still gets the --out message.
    assert main(["sample", str(tmp_path / "nothing"), "--out", str(tmp_path / "s.txt")]) == 2
    assert "--out must end with .npy or .csv" in error(capsys)
    (tmp_path / "dir.csv").mkdir()
    assert main(["sample", str(named), "--out", str(tmp_path / "dir.csv")]) == 2
    assert "is a directory; give a file name inside it" in error(capsys)
    assert main(["evaluate", str(named), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a directory" in error(capsys)
    assert main(["evaluate", str(named), "--samples", "0"]) == 2
    assert "--samples must be a positive number" in error(capsys)


def test_a_plot_of_csv_data_is_written(runs, tmp_path, capsys):
    named, _ = runs
    assert main(["sample", str(named), "-n", "200", "--plot", str(tmp_path / "s.svg")]) == 0
    svg = (tmp_path / "s.svg").read_text()
    assert "income" in svg  # the axes carry the CSV's column names


def test_solver_options_on_a_discrete_run_name_the_model(runs, capsys):
    named, _ = runs
    for command in ("sample", "evaluate"):
        assert main([command, str(named), "--solver", "method=euler"]) == 2
        line = error(capsys)
        assert "nsf is a discrete flow and takes no solver options (got method)" in line
        assert "Standardize" not in line


def test_directories_that_are_not_runs(runs, tmp_path, capsys):
    named, _ = runs
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("train something")
    assert main(["sample", str(tmp_path / "notes")]) == 2
    assert "notes is not a run directory (it has no config.json)" in error(capsys)
    assert main(["sample", str(tmp_path / "notes" / "todo.txt")]) == 2
    assert "todo.txt is a file, not a run directory" in error(capsys)
    assert main(["evaluate", str(named / "config.json")]) == 2
    assert f"config.json is a file, not a run directory; the run is {named}" in error(capsys)
    report = tmp_path / "report"
    shutil.copytree(named, report / "runs" / "nsf")
    (report / "report.md").write_text("# report")
    assert main(["evaluate", str(report)]) == 2
    assert f"is a comparison report, not a run; its runs are {report / 'runs' / 'nsf'}" in error(
        capsys
    )


def test_damaged_runs_are_one_line(runs, tmp_path, capsys):
    named, _ = runs
    config = json.loads((named / "config.json").read_text())
    cases = {
        "not_json": ("{model: nsf", "config.json is not valid JSON"),
        "model_text": (json.dumps({**config, "model": "nsf"}), "is damaged: model is missing"),
        "no_source": (
            json.dumps({**config, "data": {"options": {}}}),
            "is damaged: data.source is missing",
        ),
        "no_weights": (json.dumps(config), "has no trained weights yet"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)
        if name != "no_weights":
            shutil.copy(named / "model.safetensors", tmp_path / name)
        assert main(["sample", str(tmp_path / name), "-n", "3"]) == 2, name
        assert message in error(capsys), name


def test_a_device_that_is_not_there_is_one_line(runs, capsys):
    named, _ = runs
    assert main(["sample", str(named), "--device", "gpu"]) == 2
    assert "device must be 'auto', 'cpu' or 'cuda[:N]', got 'gpu'" in error(capsys)


def test_a_closed_pipe_ends_the_command_quietly():
    # `flowforge models | head -1`: the reader is gone before the command writes.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowforge", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
