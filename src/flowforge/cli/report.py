"""Evaluation of trained runs and the side-by-side ``compare`` report."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch

from .. import data, metrics, viz
from ..distributions.model import Model
from ..dynamics import total_nfe
from ..train import RunSpec, TrainConfig, load, load_dataset, start
from ..train.checkpoint import write_atomic, write_json_atomic


def _dataset(config: dict, source: str | None) -> data.Dataset:
    return load_dataset(config) if source is None else data.load(source)


def evaluate_model(
    model: Model,
    config: dict,
    source: str | None = None,
    split: str = "test",
    n_samples: int = 5000,
    seed: int = 0,
    solver: dict | None = None,
) -> dict:
    """Test NLL (nats and bits/dim), the entropy floor when known, sample distances and timings.

    Args:
        model: a trained model (in the data's own units).
        config: its run config (names the training data).
        source: another dataset to evaluate on (default: the run's own).
        split: ``"test"`` or ``"val"``.
        n_samples: samples drawn for the distances and the sampling time.
        seed: seed of the sampling.
        solver: solver options of a continuous model (``method``, ``steps``, ...), for both
            the log-density and sampling; its accurate defaults when not given.
    """
    solver = solver or {}
    dataset = _dataset(config, source)
    x = getattr(dataset, split)
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        raise ValueError(
            f"dataset {dataset.name} has samples of shape {tuple(x.shape[1:])}, but the model "
            f"was trained on shape {tuple(model.event_shape)}"
        )
    dim = math.prod(model.event_shape)
    x = x.to(model.device)
    nfe = [total_nfe(model)]
    start_t = time.perf_counter()
    result = metrics.nll(model, x, batch_size=_EVAL_BATCH, **solver)
    log_prob_s = time.perf_counter() - start_t
    nfe.append(total_nfe(model))
    torch.manual_seed(seed)
    start_t = time.perf_counter()
    with torch.no_grad():
        samples = model.sample(n_samples, **solver)
    sample_s = time.perf_counter() - start_t
    samples, x = samples.cpu(), x.cpu()
    nfe.append(total_nfe(model))
    finite = torch.isfinite(samples.reshape(n_samples, -1)).all(dim=1)
    distances = (
        metrics.sample_distances(samples[finite].reshape(-1, dim), x.reshape(x.shape[0], -1))
        if finite.sum() >= 2
        else {}
    )
    return {
        "model": config["model"]["name"],
        "data": dataset.name,
        "split": split,
        "n": result.n,
        "nll_nats": result.mean,
        "nll_stderr": result.stderr,
        "bits_per_dim": metrics.bits_per_dim(result.mean, dim, levels=dataset.levels),
        "entropy_nats": dataset.entropy,
        "log_prob_seconds": log_prob_s,
        "sample_seconds": sample_s,
        "n_samples": n_samples,
        "non_finite_samples": int((~finite).sum()),
        "weights": config.get("loaded"),
        "solver": solver,
        "distances": distances,
        # Continuous models: function evaluations per solve (one solve per batch of rows).
        "nfe": None
        if nfe[0] is None
        else {
            "log_prob": (nfe[1] - nfe[0]) / math.ceil(result.n / _EVAL_BATCH),
            "sample": nfe[2] - nfe[1],
        },
    }


_EVAL_BATCH = 4096


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


def compare(
    names: list[str],
    source: str,
    data_options: dict,
    train_config: TrainConfig | Mapping[str, TrainConfig],
    out: Path,
    standardize: bool = True,
    n_samples: int = 5000,
) -> Path:
    """Train every model in ``names`` on the same data and budget; write the report to ``out``.

    ``train_config`` is one :class:`TrainConfig` for all, or one per name (the CLI passes each
    model its recipe's training defaults this way); the report names the settings in which
    models differ. Writes ``out/runs/NAME`` (each a normal run directory),
    ``out/results.json``, ``out/samples.png`` (samples per model beside the data),
    ``out/curves.png`` (training curves) and ``out/report.md``. Returns the path of
    ``report.md``.
    """
    out = Path(out)
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
    rows, samples = [], {}
    dataset = data.load(source, **data_options)
    for i, name in enumerate(names, 1):
        cfg = configs[name]
        print(
            f"[{i}/{len(names)}] training {name} on {dataset.name} ({cfg.steps} steps)",
            flush=True,
        )
        spec = RunSpec(name, source, {}, data_options, standardize, cfg)
        run_dir = out / "runs" / name
        trained = start(spec, run_dir)
        model, config = load(run_dir)
        row = evaluate_model(model, config, n_samples=n_samples)
        row["train_seconds"] = trained.seconds
        row["train"] = cfg.to_dict()
        if row["nfe"] is not None:
            row["nfe"]["train"] = _training_nfe(run_dir)
        rows.append(row)
        torch.manual_seed(0)
        with torch.no_grad():
            samples[name] = model.sample(min(n_samples, 5000))
        if dataset.event_shape == (2,):
            fig = viz.plot_density(
                model.log_prob, bounds=_bounds(dataset.test), title=f"{name}: learned density"
            )
            viz.save_figure(fig, out / f"density_{name}.png")
    write_json_atomic(
        out / "results.json",
        {
            "data": dataset.name,
            "steps": _shared(configs, "steps"),
            "batch_size": _shared(configs, "batch_size"),
            "results": rows,
        },
    )
    viz.save_figure(
        viz.plot_comparison(samples, dataset.test, image_shape=dataset.image_shape),
        out / "samples.png",
    )
    figures = ["samples.png"]
    if dataset.event_shape == (2,):
        figures += [f"density_{name}.png" for name in names]
    curves = [
        {**r, "model": n} for n in names for r in _records(out / "runs" / n / "metrics.jsonl")
    ]
    if curves:
        viz.save_figure(_curves_figure(names, out), out / "curves.png")
        figures.append("curves.png")
    report = out / "report.md"
    write_atomic(report, _markdown(dataset, configs, rows, figures).encode())
    return report


# The training settings the report states; where models differ, the exceptions are listed.
_REPORTED_SETTINGS = ("steps", "batch_size", "lr", "ema_decay", "seed")


def _shared(configs: Mapping[str, TrainConfig], key: str) -> object:
    """The value of setting ``key`` that most models train with."""
    return Counter(getattr(c, key) for c in configs.values()).most_common(1)[0][0]


def _exceptions(configs: Mapping[str, TrainConfig], shared: Mapping[str, object]) -> list[str]:
    """``"resflow: lr 0.01"`` for every model whose settings differ from the ``shared`` ones."""
    out = []
    for name, cfg in configs.items():
        diff = [
            f"{key.replace('_', ' ')} {getattr(cfg, key):g}"
            for key in _REPORTED_SETTINGS
            if getattr(cfg, key) != shared[key]
        ]
        if diff:
            out.append(f"{name}: {', '.join(diff)}")
    return out


def _weights(loaded: dict | None) -> str:
    return "" if not loaded else f"{loaded['weights']} @ {loaded['step']}"


def _bounds(x: torch.Tensor) -> tuple[float, float, float, float]:
    """A square window around the data, padded by 10%, for density heatmaps."""
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    pad = 0.1 * (hi - lo)
    lo, hi = (lo - pad).tolist(), (hi + pad).tolist()
    return lo[0], hi[0], lo[1], hi[1]


def _records(path: Path) -> list[dict]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curves_figure(names: list[str], out: Path):
    from matplotlib.figure import Figure

    records = {name: _records(out / "runs" / name / "metrics.jsonl") for name in names}
    continuous = [n for n in names if any("nfe" in r for r in records[n])]
    fig = Figure(figsize=(15 if continuous else 10, 4), layout="constrained")
    axes = fig.subplots(1, 3 if continuous else 2)
    ax_loss, ax_val = axes[0], axes[1]
    for name in names:
        loss = [(r["step"], r["loss"]) for r in records[name] if "loss" in r]
        val = [(r["step"], r["val_nll"]) for r in records[name] if "val_nll" in r]
        if loss:
            ax_loss.plot(*zip(*loss, strict=True), label=name)
        if val:
            ax_val.plot(*zip(*val, strict=True), marker="o", label=name)
    ax_loss.set(title="training loss (standardised units)", xlabel="step", ylabel="loss")
    ax_val.set(title="validation NLL (data units)", xlabel="step", ylabel="nats")
    if continuous:
        # The cost of a continuous model's step, which grows as its dynamics get harder.
        for name in continuous:
            nfe = [(r["step"], r["nfe"]) for r in records[name] if "nfe" in r]
            axes[2].plot(*zip(*nfe, strict=True), label=name)
        axes[2].set(title="function evaluations per training step", xlabel="step", ylabel="NFE")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _nfe_cells(nfe: dict | None) -> str:
    if not nfe:
        return " — | — |"
    train = nfe.get("train")
    cell = f" {train['first']:.0f} → {train['last']:.0f} |" if train else " — |"
    return cell + f" {nfe['sample']:.0f} / {nfe['log_prob']:.0f} |"


def _markdown(
    dataset: data.Dataset, configs: Mapping[str, TrainConfig], rows: list[dict], figures
) -> str:
    has_bpd = dataset.levels is not None
    shared = {key: _shared(configs, key) for key in _REPORTED_SETTINGS}
    exceptions = _exceptions(configs, shared)
    lines = [
        f"# flowforge compare: {dataset.name}",
        "",
        f"{'Each' if exceptions else 'Every'} model trained for {shared['steps']} steps of "
        f"batch {shared['batch_size']} (AdamW, lr {shared['lr']:g}, warm-up + cosine, EMA "
        f"{shared['ema_decay']:g}, seed {shared['seed']}), on the same "
        f"{dataset.train.shape[0]} training points; test NLL on {rows[0]['n']} held-out points.",
        "",
    ]
    if exceptions:
        lines += [
            "Except where its recipe sets its own training defaults (`flowforge models`): "
            + "; ".join(exceptions)
            + ".",
            "",
        ]
    if dataset.entropy is not None:
        floor = f"{dataset.entropy:.3f}"
        if dataset.entropy_stderr:
            floor += f" ± {dataset.entropy_stderr:.3f} (Monte Carlo)"
        lines += [f"Entropy of the data, the floor no model can beat: **{floor} nats**.", ""]
    header = "| model | test NLL (nats) |"
    rule = "|---|---|"
    if has_bpd:
        header += " bits/dim |"
        rule += "---|"
    header += " energy dist. | MMD² | train time (s) | sampling (s) | log-density (s) |"
    rule += "---|---|---|---|---|"
    has_nfe = any(r.get("nfe") for r in rows)
    if has_nfe:
        header += " NFE train (first → last) | NFE sample / log-density |"
        rule += "---|---|"
    header += " weights |"
    rule += "---|"
    lines += [header, rule]
    best = min(r["nll_nats"] for r in rows)
    for r in rows:
        nll = f"{r['nll_nats']:.3f} ± {r['nll_stderr']:.3f}"
        if r["nll_nats"] == best:
            nll = f"**{nll}**"
        line = f"| {r['model']} | {nll} |"
        if has_bpd:
            line += f" {r['bits_per_dim']:.3f} |"
        d = r["distances"]
        line += (
            f" {d.get('energy_distance', float('nan')):.4f} | {d.get('mmd', float('nan')):.4f} |"
            f" {r['train_seconds']:.1f} | {r['sample_seconds']:.3f} | {r['log_prob_seconds']:.3f} |"
        )
        if has_nfe:
            line += _nfe_cells(r.get("nfe"))
        line += f" {_weights(r.get('weights'))} |"
        lines.append(line)
    lines += [
        "",
        f"Sampling: {rows[0]['n_samples']} samples; log-density: the whole test split. "
        "Distances compare samples with the test split (lower is better). Weights: each model "
        "is evaluated with the weights of its best validation NLL (`best`, at the step given), "
        "else its last (EMA) checkpoint.",
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
    for fig in figures:
        lines += [f"![{fig}]({fig})", ""]
    return "\n".join(lines)
