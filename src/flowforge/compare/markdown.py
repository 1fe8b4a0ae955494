"""The ``compare`` report's text: the budget rule, the ranked table with its marks, notes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from .. import data
from ..train import TrainConfig
from .evaluation import Evaluation

STOP_REASONS = {
    "steps": "step limit",
    "time": "time limit",
    "early_stop": "early stop",
    "interrupted": "interrupted",
}
"""How the report words a run's ``stop_reason``."""


# The training settings the report states; where models differ, the exceptions are listed.
_REPORTED_SETTINGS = (
    "time_limit",
    "steps",
    "batch_size",
    "lr",
    "ema_decay",
    "patience",
    "max_val_samples",
    "seed",
)


def shared_setting(configs: Mapping[str, TrainConfig], key: str) -> object:
    """The value of setting ``key`` that most models train with."""
    return Counter(getattr(c, key) for c in configs.values()).most_common(1)[0][0]


def _setting(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _exceptions(configs: Mapping[str, TrainConfig], shared: Mapping[str, object]) -> list[str]:
    """``"resflow: lr 0.01"`` for every model whose settings differ from the ``shared`` ones."""
    out = []
    for name, cfg in configs.items():
        diff = [
            f"{key.replace('_', ' ')} {_setting(getattr(cfg, key))}"
            for key in _REPORTED_SETTINGS
            if getattr(cfg, key) != shared[key]
        ]
        if diff:
            out.append(f"{name}: {', '.join(diff)}")
    return out


def _noise_text(configs: Mapping[str, TrainConfig]) -> str:
    """How the training batches' dequantisation noise was drawn (``TrainConfig.dequantization``)."""
    if shared_setting(configs, "dequantization") == "redraw":
        return (
            "Training batches draw new noise u at every step; the validation and test points "
            "keep the noise drawn at load, the same for every model."
        )
    return "The noise u was drawn once at load (`--dequantization fixed`), the same for all models."


def _preprocess_text(rows: list[dict]) -> str:
    """Which models trained on which preprocessing of the data, when they differ."""
    by_kind: dict[str, list[str]] = {}
    for row in rows:
        if row.get("preprocess"):
            by_kind.setdefault(str(row["preprocess"]).split(":")[0], []).append(row["model"])
    if len(by_kind) < 2:
        return ""
    parts = [f"{', '.join(names)}: {kind}" for kind, names in by_kind.items()]
    return (
        "Preprocessing (each model's density is reported in the data's own units, its "
        "preprocessing's log-determinant counted): " + "; ".join(parts) + "."
    )


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _weights(loaded: dict | None) -> str:
    return "" if not loaded else f"{loaded['weights']} @ {loaded['step']}"


def ranked(rows: list[dict]) -> list[dict]:
    """The rows of a comparison in the report's order: by test NLL, lowest first, models whose
    NLL is NaN or infinite last (in their given order)."""
    return sorted(rows, key=lambda r: (not math.isfinite(r["nll_nats"]), r["nll_nats"]))


# -- the markdown ------------------------------------------------------------------------------

BEST = "◆"
"""Marks the best value of a column and every value tied with it."""


def best_marks(values: list[float], tolerances: list[float]) -> list[str]:
    """For each value of a lower-is-better column: ``"bold"`` (the best, tied with no other),
    ``"tied"`` (the best or tied with it) or ``""``.

    Value ``i`` is tied with the best ``b`` when ``values[i] - values[b]`` is at most
    ``hypot(tolerances[i], tolerances[b])``: within one standard error of the difference when
    the tolerances are standard errors. NaN values are never marked.
    """
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return [""] * len(values)
    b = min(finite, key=lambda i: values[i])
    tied = [i for i in finite if values[i] - values[b] <= math.hypot(tolerances[i], tolerances[b])]
    marks = [""] * len(values)
    for i in tied:
        marks[i] = "bold" if len(tied) == 1 else "tied"
    return marks


def _mark(text: str, mark: str) -> str:
    if mark == "bold":
        return f"**{text}** {BEST}"
    return f"{text} {BEST}" if mark == "tied" else text


def _nfe_cells(nfe: dict | None) -> str:
    if not nfe:
        return " — | — |"
    train = nfe.get("train")
    cell = f" {train['first']:.0f} → {train['last']:.0f} |" if train else " — |"
    return cell + f" {nfe['sample']:.0f} / {nfe['log_prob']:.0f} |"


def _distance_cell(value: float, floor: float) -> str:
    if not math.isfinite(value):
        return "—"
    ratio = f" ({value / floor:.1f}×)" if floor > 0 else ""
    return f"{value:.4f}{ratio}"


def _budget_text(shared: Mapping[str, object], n_train: int, budget: str | None) -> str:
    preset = f" (preset `{budget}`)" if budget else ""
    batch = f"batch {shared['batch_size']}"
    if shared["time_limit"] is not None:
        limit = f"{shared['time_limit']:g} s"
        steps = f", or {shared['steps']:,} steps if sooner" if shared["steps"] else ""
        return (
            f"**Budget: equal training time{preset}.** Every model trained for {limit} of "
            f"wall-clock time{steps} (its validation passes included), {batch}, on the same "
            f"{n_train:,} training points: each reached as many steps as its step cost allows, "
            "and the learning-rate schedule ran over its time budget. The models are ranked at "
            "this budget; a longer one can rank them differently (`--time-limit SECONDS`, "
            "`--budget thorough`; `--steps N` for equal steps)."
        )
    return (
        f"**Budget: equal steps{preset}.** Every model trained for {shared['steps']:,} "
        f"optimiser steps of {batch} on the same {n_train:,} training points, whatever its "
        "step costs (see the training times)."
    )


def markdown(
    dataset: data.Dataset,
    configs: Mapping[str, TrainConfig],
    rows: list[dict],
    figures: list[tuple[str, str]],
    evaluation: Evaluation,
    reference: dict,
    budget: str | None,
    seconds: float,
    *,
    labels: Mapping[str, object] | None = None,
) -> str:
    has_bpd = dataset.levels is not None
    shared = {key: shared_setting(configs, key) for key in _REPORTED_SETTINGS}
    exceptions = _exceptions(configs, shared)
    patience = (
        f"early stopping after {shared['patience']} validations without improvement"
        if shared["patience"]
        else "no early stopping"
    )
    lines = [
        f"# flowforge compare: {dataset.name}",
        "",
        _budget_text(shared, dataset.train.shape[0], budget),
        "",
        f"Shared settings: AdamW, lr {shared['lr']:g}, warm-up + cosine, EMA "
        f"{shared['ema_decay']:g}, {patience}, validation NLL on at most "
        f"{shared['max_val_samples']:,} held-out points, seed {shared['seed']}. Each model is "
        "evaluated with the weights of its best validation NLL (the step in *weights*). Test "
        f"NLL on {rows[0]['n']:,} held-out points"
        + (
            f" (the first {evaluation.test_points:,} of the {dataset.test.shape[0]:,} of the "
            "test split, the same for every model)"
            if rows[0]["n"] < dataset.test.shape[0]
            else ""
        )
        + f". The whole comparison took {duration(seconds)}.",
        "",
    ]
    if rows and all(r.get("conditional") for r in rows):
        k = dataset.num_classes
        lines += [
            f"Conditional: every model learned p(x | label) on the dataset's {k} class labels; "
            "the test NLL is -log p(x | y) under each point's own label (not comparable with an "
            "unconditional model's -log p(x)), and the samples are drawn under labels in the "
            "training data's proportions.",
            "",
        ]
    if has_bpd:
        lines += [
            f"Bits/dim: the data are {dataset.levels} discrete levels per entry, made continuous "
            f"by {dataset.dequantization or 'uniform'} dequantisation (x = (v + u) / "
            f"{dataset.levels}, u ~ U[0, 1)), so a model's density on x bounds the probability "
            "of the discrete data: bits/dim = (NLL + D log L) / (D ln 2), D entries per "
            "sample, comparable with published tables for the same data. " + _noise_text(configs),
            "",
        ]
    preprocess = _preprocess_text(rows)
    if preprocess:
        lines += [preprocess, ""]
    if exceptions:
        lines += [
            "Except where its recipe sets its own training defaults (`flowforge models`): "
            + "; ".join(exceptions)
            + ".",
            "",
        ]
    conditional = bool(rows) and all(r.get("conditional") for r in rows)
    if dataset.entropy is not None and not conditional:
        floor = f"{dataset.entropy:.3f}"
        if dataset.entropy_stderr:
            floor += f" ± {dataset.entropy_stderr:.3f} (Monte Carlo)"
        lines += [
            f"Entropy of the data, the floor no model's test NLL can beat: **{floor} nats**.",
            "",
        ]
    rows = ranked(rows)
    floor = reference["floor"]
    nll_marks = best_marks([r["nll_nats"] for r in rows], [r["nll_stderr"] for r in rows])
    dist_marks = {
        key: best_marks(
            [r["distances"].get(key, math.nan) for r in rows],
            [r["distances"].get(f"{key}_stderr", 0.0) for r in rows],
        )
        for key in ("energy_distance", "mmd")
    }
    header = "| rank | model | test NLL (nats) |"
    rule = "|---|---|---|"
    if has_bpd:
        header += " bits/dim |"
        rule += "---|"
    header += (
        " energy dist. (× floor) | MMD² (× floor) | steps | stopped by | weights |"
        " train (s) | eval (s) |"
    )
    rule += "---|---|---|---|---|---|---|"
    has_nfe = any(r.get("nfe") for r in rows)
    if has_nfe:
        header += " NFE train (first → last) | NFE sample / log-density |"
        rule += "---|---|"
    lines += ["## Ranking at this budget", "", header, rule]
    for rank, r in enumerate(rows, 1):
        nll = _mark(f"{r['nll_nats']:.3f} ± {r['nll_stderr']:.3f}", nll_marks[rank - 1])
        line = f"| {rank} | {r['model']} | {nll} |"
        if has_bpd:
            line += f" {r['bits_per_dim']:.3f} |"
        for key in ("energy_distance", "mmd"):
            cell = _distance_cell(r["distances"].get(key, math.nan), floor[key])
            line += f" {_mark(cell, dist_marks[key][rank - 1])} |"
        line += (
            f" {r['steps']:,} | {STOP_REASONS.get(r['stop_reason'], r['stop_reason'])} |"
            f" {_weights(r.get('weights'))} | {r['train_seconds']:.1f} | {r['eval_seconds']:.1f} |"
        )
        if has_nfe:
            line += _nfe_cells(r.get("nfe"))
        lines.append(line)
    cols = 3 + has_bpd
    line = "| — | *data vs data (floor)* |" + " — |" * (cols - 2)
    line += f" {floor['energy_distance']:.4f} | {floor['mmd']:.4f} |" + " — |" * 5
    lines += [line + (" — | — |" if has_nfe else ""), ""]
    lines += [
        "Ranked by test NLL (lower is better). "
        f"{BEST} marks the best value of a column and every value tied with it, **bold** when "
        "the best is tied with no other: tied means within one standard error of the "
        "difference (the distances' standard errors are in `results.json`).",
        "",
        f"Distances: {evaluation.samples:,} samples drawn per model; the energy distance and "
        f"MMD² compare {reference['size']:,} of them with {reference['size']:,} test points "
        "(lower is better). They are the biased V-statistics, never negative: the unbiased "
        "estimates scatter around 0 and dip below it for a model that matches the data. Even "
        "perfect samples score above 0 at a finite size, so the last row gives the **floor**, "
        f"the same distances between {reference['size']:,} training points and the test points "
        "(two independent draws of the data): a model at about 1× floor is as close to the "
        "data as the data itself at this size. MMD² uses Gaussian kernels at 0.25-4× the "
        "data's median pairwise distance, the same for every model.",
        "",
        "Stopped by: *time limit* (the budget), *step limit*, or *early stop* (the validation "
        "NLL stopped improving); train (s) includes validation; eval (s) is the test NLL, "
        "sampling, distances and density image of that model"
        + (", and the guidance table's samples and scores." if labels else "."),
        "",
    ]
    if has_nfe:
        lines += [
            "NFE: function evaluations of the vector field per solve, the cost of a continuous "
            "model: per training step (mean of the first and the last logged window), per "
            "sampling solve and per log-density solve (adaptive dopri5, exact divergence). "
            "Discrete flows have none (—).",
            "",
        ]
    straight = [(r["model"], r["straightness"]) for r in rows if r.get("straightness") is not None]
    if straight:
        values = ", ".join(f"{name} {value:.3g}" for name, value in straight)
        lines += [
            "Straightness of the flow-matching and diffusion models' own (probability-flow) "
            "paths, S = E ∫ ‖(x1 − x0) − v(t, x_t)‖² dt (0: straight lines, sampled exactly in "
            f"one Euler step; RK4, 16 steps, from 1,000 noise points): {values}.",
            "",
        ]
    if evaluation.test_points is not None or not evaluation.exact_w2:
        skipped = [] if evaluation.exact_w2 else ["the exact W2 distance"]
        if evaluation.test_points is not None:
            skipped.insert(0, f"the test NLL beyond the first {evaluation.test_points:,} points")
        lines += [
            f"This quick evaluation leaves out {' and '.join(skipped)}; `--budget thorough` "
            "evaluates everything.",
            "",
        ]
    if labels is not None:
        lines += guidance_section(rows, labels, dataset)
    for i, (fig, caption) in enumerate(figures, 1):
        lines += [f"![{fig}]({fig})", "", f"*Figure {i}. {caption}*", ""]
    return "\n".join(lines)


def _scale_cell(w: float, guided: bool) -> str:
    return f"{w:g}" if guided else f"{w:g} (discrete flow: no guidance)"


def guidance_section(
    rows: list[dict], labels: Mapping[str, object], dataset: data.Dataset
) -> list[str]:
    """The conditional comparison's table: label accuracy and per-label energy distance of
    each model's samples per guidance scale, the classifier on real test points first."""
    floor = float(labels["energy_floor"])  # type: ignore[arg-type]
    counts = list(labels["samples_per_label"])  # type: ignore[call-overload]
    targets = list(labels["test_points_per_label"])  # type: ignore[call-overload]
    solver = dict(labels["solver"])  # type: ignore[call-overload]
    lines = [
        "## Conditional samples by guidance scale",
        "",
        "| model | guidance w | label accuracy | energy dist. per label (× floor) | non-finite |"
        " sampling (s) |",
        "|---|---|---|---|---|---|",
        f"| *real test points (the classifier)* | — | {labels['test_accuracy']:.3f} |"
        f" {floor:.4f} (floor) | — | — |",
    ]
    discrete = False
    for r in rows:
        for g in r["guidance"]:
            discrete |= not g["guided"]
            cell = _distance_cell(g["energy_distance"], floor)
            lines.append(
                f"| {r['model']} | {_scale_cell(g['guidance'], g['guided'])} |"
                f" {g['label_accuracy']:.3f} | {cell} | {g['non_finite_samples']} |"
                f" {g['sample_seconds']:.1f} |"
            )
    k = len(counts)
    per = f"{min(counts):,}" if min(counts) == max(counts) else f"{min(counts):,}-{max(counts):,}"
    near = (
        f"{min(targets):,}"
        if min(targets) == max(targets)
        else f"{min(targets):,}-{max(targets):,}"
    )
    if solver:
        steps = f", {solver['steps']} steps" if "steps" in solver else ""
        sampler = f"{solver.get('method', 'its default method')}{steps} for every model"
    else:
        sampler = "each model's default solver, adaptive dopri5 for continuous models"
    lines += [
        "",
        f"Each model drew {per} samples of each of the {k} labels at every guidance scale w "
        f"({sampler}; the same noise at every scale). Guided sampling integrates "
        "v(t, x, ∅) + w · (v(t, x, y) − v(t, x, ∅)): w = 0 is the unconditional model (the "
        "null label), w = 1 the conditional model itself, w > 1 pushes samples towards their "
        "label; non-finite samples count as misclassified and are left out of the distance.",
        "",
        f"**Label accuracy**: the fraction of samples that one classifier ({labels['classifier']}"
        f", `flowforge.metrics.fit_classifier`, fit once on {labels['classifier_points']:,} "
        f"points of the real training split of {dataset.name}, the same for every model) "
        "recognises as the label they were drawn for. The first row is its accuracy on the "
        "real test points, which good samples approach (guided samples can exceed it: they "
        "sit far from the class boundaries). At w = 0 the samples ignore their label: chance, "
        "1/K, is expected.",
        "",
        "**Energy distance per label**: the energy distance (V-statistic) of the samples of "
        f"label k to {near} test points of label k, averaged over the labels (lower is "
        "better): how well each p(x | k) is matched, not only the mixture. The floor is the "
        "same distance from as many training points of label k. Past some w it grows again "
        "as guided samples lose diversity (and at w = 0 it is large by design).",
        "",
    ]
    if discrete:
        lines += [
            "Discrete flows are measured at w = 1 only: guidance mixes two vector fields of a "
            "continuous model; a discrete flow's conditional density is its whole model "
            "(docs/conditioning.md).",
            "",
        ]
    return lines
