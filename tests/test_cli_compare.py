"""`flowforge compare`: equal-time budgets, the report's ranking, distances with their floor."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from flowforge import metrics, viz
from flowforge.cli import build_parser
from flowforge.cli.commands import compare_train
from flowforge.compare import (
    BUDGETS,
    Comparison,
    Evaluation,
    best_marks,
    model_styles,
    run,
    train_configs,
)
from flowforge.train import TrainConfig
from flowforge.viz import save_figure

SMALL_DATA = {"n_train": 2000, "n_val": 300, "n_test": 600}
TINY_EVAL = Evaluation(samples=400, distance_points=300, exact_w2=False, density_resolution=12)


@pytest.fixture(scope="module")
def timed_report(tmp_path_factory):
    """Two small models, one second each: the report of an equal-time comparison."""
    out = tmp_path_factory.mktemp("compare") / "c"
    cfg = TrainConfig(steps=None, time_limit=1.0, batch_size=64, progress=False)
    figures = {}

    def keep(fig, path, **kwargs):
        figures[Path(path).name] = fig
        return save_figure(fig, path, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(viz, "save_figure", keep)
        comparison = Comparison(
            ("nice", "maf"), "checkerboard", cfg, SMALL_DATA, evaluation=TINY_EVAL
        )
        report = run(comparison, out).report
    FIGURES.update(figures)
    return out, report.read_text(), json.loads((out / "results.json").read_text())


FIGURES = {}  # the figures of the timed report, by file name


def test_time_limited_compare_reports_steps_stop_reasons_and_weights(timed_report):
    _, text, results = timed_report
    assert results["time_limit"] == 1.0 and results["steps"] is None
    rows = {r["model"]: r for r in results["results"]}
    assert set(rows) == {"nice", "maf"}
    for name, r in rows.items():
        assert r["stop_reason"] == "time" and r["steps"] >= 1
        assert r["train_seconds"] == pytest.approx(1.0, abs=0.9)
        assert r["best_step"] is not None and r["weights"]["step"] == r["best_step"]
        # The table row: steps reached, why it stopped, which weights won.
        assert re.search(
            rf"\| {name} \|.*\| {r['steps']:,} \| time limit \| best @ {r['best_step']} \|", text
        ), text
    assert "**Budget: equal training time.** Every model trained for 1 s" in text
    assert "## Ranking at this budget" in text
    # Ranked by test NLL: rank 1 is the lower one.
    first = min(rows.values(), key=lambda r: r["nll_nats"])["model"]
    assert f"| 1 | {first} |" in text


def test_distances_are_non_negative_and_the_floor_is_beside_them(timed_report):
    _, text, results = timed_report
    floor = results["distance_floor"]
    assert {"mmd", "energy_distance", "sliced_wasserstein"} <= set(floor)
    assert "wasserstein2" not in floor  # no exact W2 asked for
    assert all(v >= 0 for v in floor.values())
    for r in results["results"]:
        assert all(v >= 0 for v in r["distances"].values())
        assert 0 < r["distances"]["energy_distance_stderr"] < r["distances"]["energy_distance"]
        assert r["distances"]["energy_distance"] > floor["energy_distance"]  # 1 s is not enough
    assert f"| *data vs data (floor)* | — | {floor['energy_distance']:.4f} |" in text
    assert "(× floor)" in text and "V-statistics, never negative" in text


def test_every_figure_exists_and_has_a_caption(timed_report):
    out, text, _ = timed_report
    figures = re.findall(r"!\[(.+?)\]\((.+?)\)\n\n\*Figure (\d+)\. (.+?)\*", text)
    assert [f[0] for f in figures] == ["samples.png", "densities.png", "curves.png"]
    assert [f[2] for f in figures] == ["1", "2", "3"]
    for _name, path, _, caption in figures:
        assert (out / path).read_bytes()[:4] == b"\x89PNG" and len(caption) > 40
    assert "exact density of the data" in text  # the checkerboard's, beside the models


def test_floor_matches_two_draws_of_the_data():
    # The floor is the V-statistic between two independent draws: near 0, but above it.
    x, y = torch.randn(500, 2), torch.randn(500, 2)
    energy = metrics.energy_distance(x, y, unbiased=False)
    assert energy > 0 and energy > metrics.energy_distance(x, y)  # V above U by the bias
    assert metrics.mmd(x, y, unbiased=False) > 0
    assert metrics.energy_distance(x, x, unbiased=False) == 0.0
    d = metrics.sample_distances(x, y, unbiased=False, exact_w2=False)
    assert "wasserstein2" not in d and d["energy_distance"] == pytest.approx(energy)


def test_distance_standard_errors_match_the_spread_of_repeated_draws():
    g = torch.Generator().manual_seed(0)
    values, errors = [], []
    for _ in range(40):
        x, y = torch.randn(300, 2, generator=g) + 0.3, torch.randn(300, 2, generator=g)
        d = metrics.sample_distances(x, y, unbiased=False, exact_w2=False, stderr=True)
        values.append(d["energy_distance"])
        errors.append(d["energy_distance_stderr"])
    spread = torch.tensor(values).std().item()
    assert 0.7 < torch.tensor(errors).mean().item() / spread < 1.4


def test_best_marks_bold_only_when_not_tied():
    # 3.50 ± 0.01 against 3.60 ± 0.01: a clear best.
    assert best_marks([3.6, 3.5, 3.9], [0.01, 0.01, 0.01]) == ["", "bold", ""]
    # Within one standard error of the difference: both are marked, neither bold.
    assert best_marks([3.505, 3.5, 3.9], [0.01, 0.01, 0.01]) == ["tied", "tied", ""]
    assert best_marks([math.nan, 2.0], [0.0, 0.0]) == ["", "bold"]
    assert best_marks([math.nan], [0.0]) == [""]


def _row(model: str, nll: float, stderr: float, energy: float, energy_se: float) -> dict:
    return {
        "model": model,
        "n": 100,
        "nll_nats": nll,
        "nll_stderr": stderr,
        "distances": {"energy_distance": energy, "energy_distance_stderr": energy_se, "mmd": 0.5},
        "steps": 10,
        "stop_reason": "steps",
        "weights": {"weights": "best", "step": 10},
        "train_seconds": 1.0,
        "eval_seconds": 0.1,
        "nfe": None,
    }


def test_tied_values_are_all_marked_in_the_table():
    from flowforge import data
    from flowforge.compare.markdown import markdown

    dataset = data.load("checkerboard", n_train=100, n_val=10, n_test=100)
    cfg = TrainConfig(steps=10)
    rows = [
        _row("a", 3.50, 0.01, 0.10, 0.02),
        _row("b", 3.505, 0.01, 0.13, 0.02),
        _row("c", 3.9, 0.01, 0.11, 0.01),
    ]
    reference = {"floor": {"energy_distance": 0.01, "mmd": 0.4}, "size": 100}
    text = markdown(
        dataset, dict.fromkeys("abc", cfg), rows, [], Evaluation(), reference, None, 1.0
    )
    table = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ")}
    # a and b are tied in NLL (within one standard error): both marked, neither bold.
    assert "| 3.500 ± 0.010 ◆ |" in table["a"] and "| 3.505 ± 0.010 ◆ |" in table["b"]
    assert "**" not in table["a"].split(" | ")[2] and "◆" not in table["c"].split(" | ")[2]
    # Energy distance: c is within one standard error of the difference from a (0.01 against
    # hypot(0.02, 0.01)), b is not (0.03 against hypot(0.02, 0.02)); MMD²: all equal, all tied.
    assert "0.1000 (10.0×) ◆" in table["a"] and "0.1100 (11.0×) ◆" in table["c"]
    assert "0.1300 (13.0×) |" in table["b"] and "0.5000 (1.2×) ◆" in table["b"]
    assert table["c"].startswith("| 3 | c |")  # ranked by test NLL
    assert "**Budget: equal steps.** Every model trained for 10 optimiser steps" in text


def test_budget_flags_choose_equal_time_or_equal_steps():
    parse = build_parser().parse_args
    quick = BUDGETS["quick"]

    def config(*argv, table=None, model="nsf"):
        args = parse(["compare", "--out", "x", *argv])
        budget = BUDGETS[args.budget]
        return train_configs([model], budget, compare_train(table or {}, args))[model]

    default = config()
    assert default.time_limit == quick.time_limit and default.steps is None
    assert default.max_val_samples == 2000  # the quick preset's validation
    assert config("--budget", "thorough").time_limit == 60.0
    steps = config("--steps", "300")
    assert steps.steps == 300 and steps.time_limit is None  # equal steps
    both = config("--steps", "300", "--time-limit", "5")
    assert (both.steps, both.time_limit) == (300, 5.0)
    assert config("--time-limit", "3").time_limit == 3.0
    assert config(table={"steps": 100}).time_limit is None
    # Recipes keep their own training defaults (resflow's lr) inside the budget.
    resflow = config(model="resflow")
    assert resflow.lr == 1e-2 and resflow.time_limit == quick.time_limit
    assert config("--lr", "3e-3", model="resflow").lr == 3e-3  # a flag applies to every model
    assert (
        config("--patience", "0").patience is None and config("--grad-clip", "0").grad_clip is None
    )


def test_style_map_follows_the_registry():
    from flowforge import models

    names = models.available()
    styles = model_styles(names)
    assert len({(s.color, s.linestyle, s.marker) for s in styles.values()}) == len(names)
    # A subset keeps each model's style.
    assert model_styles(["fm", "nsf"]) == {"fm": styles["fm"], "nsf": styles["nsf"]}


def test_each_model_keeps_its_style_in_every_figure(timed_report):
    styles = model_styles(["nice", "maf"])
    curves = FIGURES["curves.png"]
    for ax in curves.axes:
        for line in ax.lines:
            name = next(n for n, s in styles.items() if s.color == line.get_color())
            assert line.get_linestyle() == styles[name].linestyle
            assert line.get_marker() == styles[name].marker
    val = curves.axes[0]
    assert [line.get_color() for line in val.lines] == [styles[n].color for n in ("nice", "maf")]
    for fig in ("samples.png", "densities.png"):
        titled = {ax.get_title(): ax.title.get_color() for ax in FIGURES[fig].axes}
        assert titled["nice"] == styles["nice"].color and titled["maf"] == styles["maf"].color
    # Flows' NLL only: one training-loss panel, beside the validation NLL.
    assert [ax.get_title() for ax in curves.axes][:2] == [
        "validation NLL (data units)",
        "training loss: NLL (standardised data, nats)",
    ]


def test_compare_on_a_four_column_csv_draws_pairs_with_its_column_names(tmp_path, monkeypatch):
    rows = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    lines = ["age,height,weight,income"] + [",".join(f"{v:.5f}" for v in r) for r in rows.tolist()]
    (tmp_path / "people.csv").write_text("\n".join(lines) + "\n")
    figures = {}
    monkeypatch.setattr(viz, "save_figure", lambda fig, path, **k: figures.update({path.name: fig}))
    cfg = TrainConfig(steps=5, batch_size=32, eval_every=0, checkpoint_every=0, progress=False)
    ev = Evaluation(samples=100, distance_points=50, exact_w2=False)
    comparison = Comparison(("nice",), str(tmp_path / "people.csv"), cfg, evaluation=ev)
    text = run(comparison, tmp_path / "c").report.read_text()
    assert sorted(figures) == ["curves.png", "samples.png"]  # no density image for 4-D data
    pairs = figures["samples.png"].axes
    assert len(pairs) == 6 and (pairs[0].get_xlabel(), pairs[0].get_ylabel()) == ("age", "height")
    assert "each column one pair of the 4 coordinates" in text
    # A small file: the floor draws as many training rows as the model's compared samples.
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert results["distance_points"] == 50


def test_evaluation_settings_are_checked():
    with pytest.raises(ValueError, match="samples must be an int >= 2, got 1"):
        Evaluation(samples=1)
    with pytest.raises(TypeError, match="test_points must be an int >= 2 or None"):
        Evaluation(test_points=2.5)
    with pytest.raises(TypeError, match="exact_w2 must be True or False"):
        Evaluation(exact_w2="no")
    quick, thorough = BUDGETS["quick"].evaluation, BUDGETS["thorough"].evaluation
    assert quick.test_points == 5000 and not quick.exact_w2 and quick.density_resolution == 64
    assert thorough == Evaluation()  # everything, in full


# -- the Python entry point ------------------------------------------------------------------------

_TIMINGS = ("seconds", "train_seconds", "eval_seconds", "log_prob_seconds", "sample_seconds")


def _untimed(value):
    """``value`` (results.json or report.md) with its wall-clock times masked."""
    if isinstance(value, str):
        value = re.sub(r"(\d+ min )?\d+(\.\d+)? s\b", "T s", value)
        return re.sub(r"\| [\d.]+ \| [\d.]+ \|$", "| T | T |", value, flags=re.M)
    if isinstance(value, dict):
        return {
            k: "T" if k in _TIMINGS or k.endswith("_seconds") else _untimed(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def test_python_compare_matches_the_command_line(tmp_path, capsys):
    import flowforge as ff
    from flowforge.cli import main

    config = tmp_path / "small.toml"  # compare takes data options from a [data] table
    config.write_text("[data]\n" + "".join(f"{k} = {v}\n" for k, v in SMALL_DATA.items()))
    argv = ["compare", "--models", "nice,maf", "--steps", "12", "--batch-size", "64"]
    argv += ["--samples", "200", "--no-progress", "--config", str(config)]
    argv += ["--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    cli_out = capsys.readouterr().out
    result = ff.compare.compare(
        models=["nice", "maf"],
        data="checkerboard",
        budget="quick",
        out=tmp_path / "py",
        train={"steps": 12, "batch_size": 64, "progress": False},
        data_options=SMALL_DATA,
        samples=200,
    )
    py_out = capsys.readouterr().out
    # The same progress lines (the CLI adds where the report went).
    assert cli_out.splitlines()[-1] == f"report written to {tmp_path / 'cli' / 'report.md'}"
    lines = [_untimed(line) for line in py_out.splitlines()]
    assert lines == [_untimed(line) for line in cli_out.splitlines()[:-1]]
    assert lines[0] == "[1/2] nice: training for 12 steps" and len(lines) == 4
    assert lines[1].startswith("[1/2] nice: 12 steps in T s (step limit), test NLL ")
    # The same files, numbers and report, but for the seconds things took.
    files = {
        d: sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*"))
        for d in ("cli", "py")
    }
    assert files["cli"] == files["py"] and Path("runs/maf/config.json") in files["py"]
    cli_results = json.loads((tmp_path / "cli" / "results.json").read_text())
    written = json.loads((tmp_path / "py" / "results.json").read_text())
    assert json.loads(json.dumps(result.results)) == written  # what it returns, it wrote
    assert _untimed(cli_results) == _untimed(written)
    assert _untimed((tmp_path / "cli" / "report.md").read_text()) == _untimed(
        result.report.read_text()
    )
    # The ranking it returns is the report's.
    by_nll = sorted(cli_results["results"], key=lambda r: r["nll_nats"])
    assert result.ranking == [r["model"] for r in by_nll]
    assert [r["nll_nats"] for r in result.ranked()] == [r["nll_nats"] for r in by_nll]
    assert f"| 1 | {result.ranking[0]} |" in result.report.read_text()
    assert result.results["budget"] == "quick" and result.rows[0]["steps"] == 12


def test_python_compare_checks_its_arguments(tmp_path):
    from flowforge.compare import compare, plan

    with pytest.raises(ValueError, match="unknown model 'nsff'"):
        compare(["nice", "nsff"], out=tmp_path / "a")
    with pytest.raises(TypeError, match="models must be a list of model names"):
        plan("nice,maf")
    with pytest.raises(ValueError, match="budget must be one of quick, thorough; got 'quik'"):
        plan(["nice"], budget="quik")
    with pytest.raises(ValueError, match="each model once, got nice more than once"):
        plan(["nice", "maf", "nice"])
    with pytest.raises(ValueError, match="unknown training option"):
        plan(["nice"], train={"step": 10})
    with pytest.raises(ValueError, match="samples must be an int >= 2, got 1"):
        plan(["nice"], samples=1)
    assert not (tmp_path / "a").exists()  # nothing trained
    # The quick preset, each recipe's defaults beneath it, the flags' settings above both.
    quick = plan(["nice", "fm"], train={"batch_size": 32})
    assert quick.config("fm").lr == 1e-2 and quick.config("nice").lr == 1e-3
    assert quick.config("nice").time_limit == BUDGETS["quick"].time_limit
    assert {c.batch_size for c in quick.train.values()} == {32}
    assert quick.evaluation == BUDGETS["quick"].evaluation and quick.budget == "quick"
    steps = plan(["nice"], budget="thorough", train={"steps": 50}, samples=300)
    assert (steps.config("nice").steps, steps.config("nice").time_limit) == (50, None)
    assert steps.evaluation.samples == 300 and steps.evaluation.exact_w2


# -- conditional comparisons: samples by label, label accuracy per guidance scale ---------------


def _guidance_table(text: str) -> list[str]:
    """The rows of the report's guidance table (the reference row first)."""
    section = text.split("## Conditional samples by guidance scale", 1)[1]
    return [line for line in section.splitlines() if line.startswith("| ")][1:]


@pytest.fixture(scope="module")
def conditional_report(tmp_path_factory):
    from flowforge.cli import main

    out = tmp_path_factory.mktemp("conditional") / "c"
    config = out.parent / "small.toml"
    config.write_text("[data]\n" + "".join(f"{k} = {v}\n" for k, v in SMALL_DATA.items()))
    argv = ["compare", "--data", "8gaussians", "--models", "nice,fm", "--steps", "30"]
    argv += ["--batch-size", "64", "--samples", "200", "--no-progress", "--conditional"]
    argv += ["--guidance-scales", "0,1,3", "--config", str(config), "--out", str(out)]
    assert main(argv) == 0
    return out, (out / "report.md").read_text(), json.loads((out / "results.json").read_text())


def test_conditional_compare_measures_each_continuous_model_at_every_scale(conditional_report):
    _, text, results = conditional_report
    rows = {r["model"]: r for r in results["results"]}
    assert [g["guidance"] for g in rows["fm"]["guidance"]] == [0.0, 1.0, 3.0]
    assert [g["guidance"] for g in rows["nice"]["guidance"]] == [1.0]  # a discrete flow: w = 1
    assert [g["guided"] for g in rows["nice"]["guidance"]] == [False]
    labels = results["labels"]
    assert 0.9 <= labels["test_accuracy"] <= 1  # 8 well-separated blobs: the classifier is good
    assert labels["classifier"] == "knn" and len(labels["samples_per_label"]) == 8
    for row in rows.values():
        for g in row["guidance"]:
            assert 0 <= g["label_accuracy"] <= 1
            assert g["n_samples"] == sum(labels["samples_per_label"])
            assert len(g["energy_distance_per_label"]) == 8
            assert g["energy_distance"] == pytest.approx(sum(g["energy_distance_per_label"]) / 8)
    # One table row per model and scale, after the classifier's row on real test points.
    table = _guidance_table(text)
    assert table[0].startswith("| *real test points (the classifier)* | — | ")
    assert f"{labels['test_accuracy']:.3f}" in table[0]
    models = [line.split(" | ")[0].strip("| ") for line in table[1:]]
    assert sorted(models) == ["fm", "fm", "fm", "nice"]
    assert [line.split(" | ")[1] for line in table[1:] if line.startswith("| fm ")] == [
        "0",
        "1",
        "3",
    ]
    (nice,) = [line for line in table if line.startswith("| nice ")]
    assert "| 1 (discrete flow: no guidance) |" in nice
    assert "Discrete flows are measured at w = 1 only" in text
    assert "adaptive dopri5" in text  # the solver of the table is stated


def test_conditional_compare_draws_samples_by_label(conditional_report):
    import matplotlib.image

    out, text, _ = conditional_report
    image = matplotlib.image.imread(out / "samples_by_label.png")
    assert image.shape[0] > 100 and image[..., :3].var() > 1e-4
    assert "![samples_by_label.png](samples_by_label.png)" in text
    assert "coloured by the label they were drawn for" in text


def test_conditional_compare_of_images_draws_a_row_per_class(tmp_path, monkeypatch):
    from flowforge.compare import compare

    figures = {}

    def keep(fig, path, **kwargs):
        figures[Path(path).name] = fig
        return save_figure(fig, path, **kwargs)

    monkeypatch.setattr(viz, "save_figure", keep)
    small = Evaluation(samples=60, distance_points=50, exact_w2=False, test_points=40)
    result = compare(
        ["nsf"],
        "digits",
        out=tmp_path / "d",
        train={"steps": 3, "batch_size": 64, "progress": False},
        evaluation=replace(small, label_samples=12),
        conditional=True,
    )
    (row,) = result.rows
    assert [g["guidance"] for g in row["guidance"]] == [1.0]
    assert result.results["labels"]["samples_per_label"] == [12] * 10
    fig = figures["samples_by_label.png"]
    assert [ax.get_title() for ax in fig.axes] == ["data", "nsf"]
    for ax in fig.axes:  # ten digit rows, named 0..9
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(k) for k in range(10)]
    assert "one row per class" in result.report.read_text()


def test_guidance_scales_are_checked(tmp_path, capsys):
    from flowforge.cli import main
    from flowforge.compare import plan

    base = ["compare", "--models", "nice", "--out", str(tmp_path / "x")]
    assert main([*base, "--guidance-scales", "0,1"]) == 2
    assert "pass conditional=True (--conditional)" in capsys.readouterr().err
    assert main([*base, "--conditional", "--guidance-scales", "0,one"]) == 2
    assert "--guidance-scales must be comma-separated numbers" in capsys.readouterr().err
    with pytest.raises(ValueError, match="each scale once, got 1 more than once"):
        plan(["fm"], conditional=True, guidance=(1, 2, 1))
    with pytest.raises(ValueError, match="finite"):
        plan(["fm"], conditional=True, guidance=(float("nan"),))
    with pytest.raises(TypeError, match="sequence of guidance scales"):
        plan(["fm"], conditional=True, guidance="0,1")
    assert plan(["fm"], conditional=True, guidance=[2, 0]).evaluation.guidance == (2.0, 0.0)
    assert plan(["fm"], conditional=True).evaluation.guidance == (0.0, 1.0, 2.0, 4.0)
    assert not (tmp_path / "x").exists()


def test_a_cheaper_guidance_solver_is_used_and_named(tmp_path):
    from flowforge.compare import compare

    with pytest.raises(ValueError, match="label_samples must be an int >= 2"):
        Evaluation(label_samples=1)
    with pytest.raises(ValueError, match="guidance_steps must be an int >= 1 or None"):
        Evaluation(guidance_steps=0)
    cheap = Evaluation(
        samples=50,
        distance_points=50,
        exact_w2=False,
        test_points=40,
        density_resolution=8,
        label_samples=10,
        guidance=(1, 2),
        guidance_method="euler",
        guidance_steps=4,
    )
    assert cheap.guidance_solver == {"method": "euler", "steps": 4}
    result = compare(
        ["fm"],
        "8gaussians",
        out=tmp_path / "e",
        train={"steps": 3, "batch_size": 64, "progress": False},
        data_options=SMALL_DATA,
        evaluation=cheap,
        conditional=True,
    )
    (row,) = result.rows
    assert [g["solver"] for g in row["guidance"]] == [{"method": "euler", "steps": 4}] * 2
    assert result.results["labels"]["solver"] == {"method": "euler", "steps": 4}
    assert "(euler, 4 steps for every model;" in result.report.read_text()


def test_compare_reports_the_straightness_of_flow_matching_models(tmp_path):
    import flowforge as ff

    result = ff.compare.compare(
        models=["nice", "rectified", "otfm"],
        data="checkerboard",
        out=tmp_path / "s",
        train={"steps": 30, "batch_size": 64, "progress": False},
        data_options=SMALL_DATA,
        samples=200,
    )
    rows = {r["model"]: r for r in result.results["results"]}
    assert rows["nice"]["straightness"] is None  # a discrete flow has no path
    for name in ("rectified", "otfm"):
        assert rows[name]["straightness"] > 0
    text = result.report.read_text()
    assert "Straightness of the flow-matching and diffusion models' own" in text
    assert f"rectified {rows['rectified']['straightness']:.3g}" in text


def test_image_data_compare_every_model_that_takes_images():
    import flowforge as ff
    from flowforge.compare import plan

    images = plan(None, "digits", data_options={"image": True})
    assert list(images.models) == ff.models.image_models()
    assert "maf" not in images.models and "diffusion" in images.models
    assert list(plan(None, "digits").models) == ff.models.available()


def test_compare_takes_data_options_on_the_command_line(tmp_path):
    from flowforge.cli import main

    out = tmp_path / "cmp"
    argv = ["compare", "--data", "digits", "--data-option", "image=true", "--models", "nice"]
    assert main([*argv, "--steps", "2", "--samples", "20", "--out", str(out)]) == 0
    (row,) = json.loads((out / "results.json").read_text())["results"]
    assert row["model"] == "nice" and math.isfinite(row["bits_per_dim"])
    config = json.loads((out / "runs" / "nice" / "config.json").read_text())
    assert config["event_shape"] == [1, 8, 8]
