"""Train every model of a :class:`Comparison` alike, evaluate them alike, write the report."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import data, metrics, models, viz
from ..diffusion import Diffusion
from ..distributions.model import Model
from ..matching.model import FlowMatching
from ..train import RunSpec, TrainConfig, load, start
from ..train.checkpoint import write_atomic, write_json_atomic
from .evaluation import Evaluation, distance_reference, evaluate_with_samples
from .figures import (
    bounds,
    curves_figure,
    densities_figure,
    samples_by_label_figure,
    samples_figure,
)
from .guidance import figure_scale, guidance_rows, label_reference, label_summary
from .markdown import STOP_REASONS, duration, markdown, shared_setting
from .spec import Comparison, ComparisonResult


def run_spec(comparison: Comparison, name: str) -> RunSpec:
    """The run of model ``name`` in ``comparison``: where the comparison's options reach the
    training of each model (a new per-run option of :class:`Comparison` is passed on here)."""
    return RunSpec(
        name,
        comparison.data,
        {},
        dict(comparison.data_options),
        comparison.standardize,
        comparison.config(name),
        conditional=comparison.conditional,
    )


def run(comparison: Comparison, out: str | Path) -> ComparisonResult:
    """Train every model of ``comparison`` on the same data and budget; write the report.

    Prints one progress bar per model (or, without bars, one line as each begins) and one line
    as each ends, with its steps, stop reason and test NLL. Writes ``out/runs/NAME`` (each a
    normal run directory), ``out/results.json``, ``out/samples.png`` (samples per model beside
    the data; pairwise views for D > 2), ``out/densities.png`` (2-D data: every model's
    density on one scale beside the true one), ``out/curves.png`` (training curves) and
    ``out/report.md``; a conditional comparison also ``out/samples_by_label.png`` and the
    report's table of label accuracy and per-label energy distance per guidance scale
    (``compare/guidance.py``). The report states the budget rule (equal seconds, equal steps, or
    both), the steps each model reached and why it stopped, and names the settings in which
    models differ.

    Args:
        comparison: the models, data, training settings and evaluation.
        out: the report directory (created; it must not hold runs of these models already).

    Returns:
        The paths written and what ``results.json`` holds.

    Raises:
        FileExistsError: ``out`` already holds a run of one of the models.
    """
    out = Path(out)
    names = list(comparison.models)
    configs = {n: comparison.config(n) for n in names}
    evaluation = comparison.evaluation
    clashes = [n for n in names if (out / "runs" / n).exists()]
    if clashes:
        raise FileExistsError(
            f"{out} already holds runs for {', '.join(clashes)}; choose another --out"
        )
    began = time.perf_counter()
    dataset = data.load(comparison.data, **comparison.data_options)
    reference = distance_reference(dataset, "test", evaluation)
    two_d = dataset.event_shape == (2,)
    box = bounds(dataset.test) if two_d else None
    # One classifier, fit once on the training split, scores every model's labelled samples.
    labelled = None
    if comparison.conditional:
        labelled = label_reference(dataset, evaluation.label_samples)
    by_label: dict[str, tuple[Tensor, Tensor]] = {}
    rows: list[dict] = []
    samples: dict[str, Tensor] = {}
    densities: dict[str, np.ndarray] = {}
    losses: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        cfg = configs[name]
        label = f"[{i}/{len(names)}] {name}"
        left = _time_left(rows, configs, names)
        if not cfg.progress:  # else the bar says it, on the same line
            print(f"{label}: training {_budget_words(cfg)}{left}", flush=True)
        run_dir = out / "runs" / name
        trained = start(run_spec(comparison, name), run_dir, desc=label + left)
        model, config = load(run_dir)
        row, samples[name], grid = _evaluate_run(model, dataset, evaluation, reference, box)
        if grid is not None:
            densities[name] = grid
        if labelled is not None:
            t = time.perf_counter()
            guided, shown, shown_labels = guidance_rows(
                model, labelled, evaluation.guidance, evaluation.guidance_solver
            )
            row["guidance"], by_label[name] = guided, (shown, shown_labels)
            row["guidance_seconds"] = time.perf_counter() - t
            row["eval_seconds"] += row["guidance_seconds"]
        row = {
            "model": name,
            **row,
            "weights": config.get("loaded"),
            "train_seconds": trained.seconds,
            "steps": trained.steps,
            "stop_reason": trained.stop_reason,
            "best_step": trained.best_step,
            "best_val_nll": trained.best_val_nll,
            # What the model trained on: standardised data, the logit of [0, 1), or raw data.
            "preprocess": config.get("preprocess"),
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
    figures = [samples_figure(dataset, samples, colors, out)]
    if labelled is not None:
        scale = figure_scale(evaluation.guidance)
        figures.append(samples_by_label_figure(dataset, by_label, labelled, out, scale))
    if box is not None:
        figures.append(densities_figure(dataset, densities, box, evaluation, colors, out))
    records = {n: _records(out / "runs" / n / "metrics.jsonl") for n in names}
    if any(records.values()):
        timed = shared_setting(configs, "time_limit") is not None
        figures.append(curves_figure(records, styles, losses, timed, out))
    seconds = time.perf_counter() - began
    results = {
        "data": dataset.name,
        "budget": comparison.budget,
        "conditional": comparison.conditional,
        "time_limit": shared_setting(configs, "time_limit"),
        "steps": shared_setting(configs, "steps"),
        "batch_size": shared_setting(configs, "batch_size"),
        "evaluation": asdict(evaluation),
        "distance_floor": reference["floor"],
        "distance_points": reference["size"],
        "seconds": seconds,
        "results": rows,
    }
    if labelled is not None:
        results["labels"] = label_summary(labelled, evaluation.guidance_solver)
    write_json_atomic(out / "results.json", results)
    report = out / "report.md"
    text = markdown(
        dataset,
        configs,
        rows,
        figures,
        evaluation,
        reference,
        comparison.budget,
        seconds,
        labels=results.get("labels"),
    )
    write_atomic(report, text.encode())
    return ComparisonResult(out, report, results)


def _evaluate_run(
    model: Model,
    dataset: data.Dataset,
    evaluation: Evaluation,
    reference: dict,
    box: tuple[float, float, float, float] | None,
) -> tuple[dict, Tensor, np.ndarray | None]:
    """One trained model's measurements, samples and (2-D data, ``box`` given) log-density
    grid, with the seconds it all took."""
    began = time.perf_counter()
    row, samples = evaluate_with_samples(model, dataset, evaluation, reference)
    grid = None
    if box is not None:
        t = time.perf_counter()
        log_prob = model.log_prob
        if model.num_classes and dataset.labels is not None:
            # The label-free density p(x) = sum_y p(y) p(x | y), p(y) as in the training data.
            counts = torch.bincount(dataset.labels["train"], minlength=model.num_classes)
            log_prob = functools.partial(
                metrics.marginal_log_prob,
                model,
                num_classes=model.num_classes,
                weights=counts[: model.num_classes].double(),
            )
        grid = viz.log_density_grid(log_prob, box, evaluation.density_resolution, model.dtype)
        row["density_seconds"] = time.perf_counter() - t
    row["eval_seconds"] = time.perf_counter() - began
    return row, samples, grid


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
    if isinstance(inner, Diffusion):
        return "training loss: denoising regression (MSE)"
    if not isinstance(model, data.Standardize):  # e.g. glow's logit takes the raw data
        return "training loss: NLL (nats)"
    return "training loss: NLL (standardised data, nats)"


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


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
