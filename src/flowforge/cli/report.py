"""The side-by-side ``compare`` report: train every model alike, evaluate, write figures."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from .. import data, models, viz
from ..distributions.model import Model
from ..matching.model import FlowMatching
from ..train import RunSpec, TrainConfig, load, start
from ..train.checkpoint import write_atomic, write_json_atomic
from .evaluation import Evaluation, distance_reference, evaluate_model, evaluate_with_samples
from .markdown import STOP_REASONS, best_marks, duration, markdown, shared_setting

__all__ = ["BUDGETS", "Budget", "Evaluation", "best_marks", "compare", "evaluate_model"]


@dataclass(frozen=True)
class Budget:
    """A preset of ``flowforge compare``: how long each model trains and how it is evaluated.

    Attributes:
        name: the preset's name (``--budget NAME``).
        time_limit: seconds of training per model (validation included).
        train: other training settings of the preset (a ``[train]`` table and flags override).
        evaluation: what is measured of each model.
        summary: one line for ``--help`` and the report.
    """

    name: str
    time_limit: float
    train: Mapping[str, object]
    evaluation: Evaluation
    summary: str


QUICK_SECONDS = 10.0
"""Training seconds per model of the quick preset: the README's main job (all 12 registered
models on the checkerboard, evaluated, with the report) then takes about 3 minutes on an idle
2-core machine; evaluation takes the rest (docs/plots.md, "compare budgets")."""

BUDGETS: dict[str, Budget] = {
    "quick": Budget(
        "quick",
        QUICK_SECONDS,
        # Validation is part of each model's seconds; 2,000 points (standard error about 0.01
        # nats) still pick the best step, and cost the continuous models a fifth of 10,000.
        {"max_val_samples": 2000},
        # The continuous models' exact log-densities set the cost: 5,000 test points (standard
        # error about 0.01 nats on the checkerboard), a 64 x 64 density grid (one solver call),
        # and no exact W2 (seconds a model; the sliced one stays).
        Evaluation(test_points=5000, exact_w2=False, density_resolution=64),
        f"{QUICK_SECONDS:g} s a model, test NLL on 5,000 test points, 64 x 64 density images",
    ),
    "thorough": Budget(
        "thorough",
        60.0,
        {},
        Evaluation(),
        "60 s a model, the whole test split, exact W2, 200 x 200 density images",
    ),
}
"""The presets of ``flowforge compare --budget``; ``quick`` is the default."""


# -- compare ---------------------------------------------------------------------------------------


def _training_nfe(run_dir: Path) -> dict | None:
    """NFE per training step from a run's ``metrics.jsonl``: the first and last logged window
    means, and the mean over training."""
    recs = [r for r in _records(run_dir / "metrics.jsonl") if "nfe" in r]
    if not recs:
        return None
    return {
        "first": recs[0]["nfe"],
        "last": recs[-1]["nfe"],
        "mean": sum(r["nfe"] for r in recs) / len(recs),
    }


def model_styles(names: list[str]) -> dict[str, viz.Style]:
    """Each model's style, fixed by its place in the registry: the same in every figure and
    every comparison, whichever models are compared."""
    return viz.style_map(names, order=models.available())


def objective(model: Model) -> str:
    """The name of the quantity a model's training loss is, for the curves' panels."""
    inner = getattr(model, "inner", model)  # Standardize wraps the recipe's model
    if isinstance(inner, FlowMatching):
        return "training loss: flow-matching regression (MSE)"
    return "training loss: NLL (standardised data, nats)"


def compare(
    names: list[str],
    source: str,
    data_options: dict,
    train_config: TrainConfig | Mapping[str, TrainConfig],
    out: Path,
    standardize: bool = True,
    n_samples: int | None = None,
    evaluation: Evaluation | None = None,
    budget: str | None = None,
) -> Path:
    """Train every model in ``names`` on the same data and budget; write the report to ``out``.

    ``train_config`` is one :class:`TrainConfig` for all, or one per name (the CLI passes each
    model its recipe's training defaults this way); the report states the budget rule (equal
    seconds, equal steps, or both), the steps each model reached and why it stopped, and names
    the settings in which models differ. Writes ``out/runs/NAME`` (each a normal run
    directory), ``out/results.json``, ``out/samples.png`` (samples per model beside the data;
    pairwise views for D > 2), ``out/densities.png`` (2-D data: every model's density on one
    scale beside the true one), ``out/curves.png`` (training curves) and ``out/report.md``.
    Returns the path of ``report.md``.

    Args:
        names: registered model names, in the order of the report.
        source: a built-in dataset or a file.
        data_options: options of :func:`flowforge.data.load`.
        train_config: the training settings, one for all or per name.
        out: the report directory.
        standardize: train on standardised data.
        n_samples: samples per model (overrides ``evaluation.samples``).
        evaluation: what is measured (default :class:`Evaluation`: everything, in full).
        budget: the preset's name, for the report (``"quick"``, ``"thorough"``), if any.
    """
    out = Path(out)
    evaluation = evaluation or Evaluation()
    if n_samples is not None:
        evaluation = replace(evaluation, samples=n_samples)
    if isinstance(train_config, TrainConfig):
        configs = dict.fromkeys(names, train_config)
    else:
        missing = [n for n in names if n not in train_config]
        if missing:
            raise ValueError(f"no training config for {', '.join(missing)}")
        configs = {n: train_config[n] for n in names}
    clashes = [n for n in names if (out / "runs" / n).exists()]
    if clashes:
        raise FileExistsError(
            f"{out} already holds runs for {', '.join(clashes)}; choose another --out"
        )
    began = time.perf_counter()
    dataset = data.load(source, **data_options)
    reference = distance_reference(dataset, "test", evaluation)
    two_d = dataset.event_shape == (2,)
    box = _bounds(dataset.test) if two_d else None
    rows, samples, densities, losses = [], {}, {}, {}
    for i, name in enumerate(names, 1):
        cfg = configs[name]
        label = f"[{i}/{len(names)}] {name}"
        left = _time_left(rows, configs, names)
        if not cfg.progress:  # else the bar says it, on the same line
            print(f"{label}: training {_budget_words(cfg)}{left}", flush=True)
        spec = RunSpec(name, source, {}, data_options, standardize, cfg)
        run_dir = out / "runs" / name
        trained = start(spec, run_dir, desc=label + left)
        model, config = load(run_dir)
        row, samples[name], densities[name] = _evaluate_run(
            model, dataset, evaluation, reference, box
        )
        row = {
            "model": name,
            **row,
            "weights": config.get("loaded"),
            "train_seconds": trained.seconds,
            "steps": trained.steps,
            "stop_reason": trained.stop_reason,
            "best_step": trained.best_step,
            "best_val_nll": trained.best_val_nll,
            "train": cfg.to_dict(),
        }
        losses[name] = objective(model)
        if row["nfe"] is not None:
            row["nfe"]["train"] = _training_nfe(run_dir)
        rows.append(row)
        print(
            f"{label}: {trained.steps:,} steps in {trained.seconds:.1f} s "
            f"({STOP_REASONS.get(trained.stop_reason, trained.stop_reason)}), test NLL "
            f"{row['nll_nats']:.3f}; evaluated in {row['eval_seconds']:.1f} s",
            flush=True,
        )
    styles = model_styles(names)
    colors = {n: s.color for n, s in styles.items()}
    figures = [_samples_figure(dataset, samples, colors, out)]
    if two_d:
        viz.save_figure(
            viz.plot_density_grid(
                densities,
                bounds=box,
                resolution=evaluation.density_resolution,
                reference=dataset.log_prob,
                data=dataset.test if dataset.log_prob is None else None,
                colors=colors,
                columns=dataset_columns(dataset),
            ),
            out / "densities.png",
        )
        figures.append(("densities.png", _density_caption(dataset, evaluation)))
    records = {n: _records(out / "runs" / n / "metrics.jsonl") for n in names}
    if any(records.values()):
        # Against seconds for a time budget (when every run logged its times), else steps.
        timed = shared_setting(configs, "time_limit") is not None
        fig = viz.plot_model_curves(
            records, styles=styles, loss_labels=losses, x="auto" if timed else "step"
        )
        viz.save_figure(fig, out / "curves.png")
        in_seconds = fig.axes[0].get_xlabel() == "training time (s)"
        figures.append(("curves.png", _curves_caption(losses, in_seconds)))
    seconds = time.perf_counter() - began
    write_json_atomic(
        out / "results.json",
        {
            "data": dataset.name,
            "budget": budget,
            "time_limit": shared_setting(configs, "time_limit"),
            "steps": shared_setting(configs, "steps"),
            "batch_size": shared_setting(configs, "batch_size"),
            "evaluation": asdict(evaluation),
            "distance_floor": reference["floor"],
            "distance_points": reference["size"],
            "seconds": seconds,
            "results": rows,
        },
    )
    report = out / "report.md"
    text = markdown(dataset, configs, rows, figures, evaluation, reference, budget, seconds)
    write_atomic(report, text.encode())
    return report


def _evaluate_run(
    model: Model,
    dataset: data.Dataset,
    evaluation: Evaluation,
    reference: dict,
    box: tuple[float, float, float, float] | None,
) -> tuple[dict, Tensor, object]:
    """One trained model's measurements, samples and (2-D data, ``box`` given) log-density
    grid, with the seconds it all took."""
    began = time.perf_counter()
    row, samples = evaluate_with_samples(model, dataset, evaluation, reference)
    grid = None
    if box is not None:
        t = time.perf_counter()
        grid = viz.log_density_grid(model.log_prob, box, evaluation.density_resolution, model.dtype)
        row["density_seconds"] = time.perf_counter() - t
    row["eval_seconds"] = time.perf_counter() - began
    return row, samples, grid


def dataset_columns(dataset: data.Dataset) -> tuple[str, ...] | None:
    """The data's column names (a CSV's header) when it has them, for axis labels."""
    return getattr(dataset, "columns", None)


def _samples_figure(
    dataset: data.Dataset, samples: dict[str, Tensor], colors: dict[str, str], out: Path
) -> tuple[str, str]:
    columns = dataset_columns(dataset)
    test = dataset.test
    if dataset.image_shape is None and len(dataset.event_shape) == 1 and dataset.dim > 2:
        fig = viz.plot_pairs(samples, test, columns=columns, colors=colors)
        k = min(dataset.dim, viz.comparison.PAIR_DIMS)
        which = f"the first {k} of the {dataset.dim}" if dataset.dim > k else f"the {k}"
        caption = (
            f"Samples against the data, pair by pair: each row is one model, each column one "
            f"pair of {which} coordinates; the test data in grey, "
            "the model's samples on top in its colour, on the same axes down each column. "
            "Where colour shows without grey beneath, the model puts mass the data lacks; grey "
            "left uncovered is data the model misses."
        )
    else:
        fig = viz.plot_comparison(
            samples, test, image_shape=dataset.image_shape, columns=columns, colors=colors
        )
        if dataset.image_shape is not None:
            caption = "The first test images, then the first 16 samples of each model."
        elif dataset.dim == 2:
            caption = (
                "2-D histograms of the test data (first panel) and of each model's samples, "
                "on the same axes and colour scale (the data's): matching colours mean "
                "matching density; a model that puts more mass anywhere than the data saturates "
                "there (yellow)."
            )
        else:
            caption = "Histograms of the test data and of each model's samples."
    viz.save_figure(fig, out / "samples.png")
    return "samples.png", caption


def _density_caption(dataset: data.Dataset, evaluation: Evaluation) -> str:
    first = (
        "the exact density of the data"
        if dataset.log_prob is not None
        else "a histogram of the test data"
    )
    r = evaluation.density_resolution
    return (
        f"Each model's learned density p(x) on a {r} x {r} grid, beside {first} (first panel), "
        "on one colour scale: 0 to the first panel's peak, so equal colours are equal "
        "densities, and a model denser anywhere than the data saturates there (yellow); red "
        "marks points where a model's log-density is NaN or +inf."
    )


def _curves_caption(losses: dict[str, str], timed: bool) -> str:
    axis = "training seconds" if timed else "optimiser steps"
    separate = (
        " Training losses of different objectives are in separate panels: a flow's NLL and a "
        "flow-matching regression loss are different quantities."
        if len(set(losses.values())) > 1
        else ""
    )
    return (
        f"Training curves against {axis}, one colour, line style and marker per model (the "
        "same as in the other figures). The validation NLL (data units, nats; lower is "
        f"better) compares every model.{separate} Each y-axis ends at the highest of the "
        "models' median values, so the large values of the first steps do not flatten the "
        "rest; the curves leave the top of a panel there."
    )


def _budget_words(cfg: TrainConfig) -> str:
    if cfg.time_limit is not None and cfg.steps is not None:
        return f"for {cfg.steps:,} steps or {cfg.time_limit:g} s, whichever comes first"
    if cfg.time_limit is not None:
        return f"for {cfg.time_limit:g} s"
    return f"for {cfg.steps:,} steps"


def _time_left(rows: list[dict], configs: Mapping[str, TrainConfig], names: list[str]) -> str:
    """``", 2 min 10 s left in all"``: the models to go, at the pace so far (a time limit
    plus the mean evaluation time so far; for step budgets, the mean time of a model so far)."""
    todo = names[len(rows) :]
    done = [r["train_seconds"] + r["eval_seconds"] for r in rows]
    evals = [r["eval_seconds"] for r in rows]
    left = 0.0
    for name in todo:
        limit = configs[name].time_limit
        if limit is not None:
            left += limit + (sum(evals) / len(evals) if evals else 0.0)
        elif done:
            left += sum(done) / len(done)
        else:
            return ""  # equal steps: no pace known before the first model ends
    return f", {duration(left)} left in all"


def _bounds(x: torch.Tensor) -> tuple[float, float, float, float]:
    """A window around the data, padded by 10%, for density heatmaps."""
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    pad = 0.1 * (hi - lo)
    lo, hi = (lo - pad).tolist(), (hi + pad).tolist()
    return lo[0], hi[0], lo[1], hi[1]


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
