"""The subcommands: ``train``, ``sample``, ``evaluate``, ``compare``, ``reflow``, ``datasets``,
``models``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from .._checks import check_int
from .options import _TRAIN_FLAGS, eval_every_flag, load_toml, parse_assignments, train_options

# -- train -------------------------------------------------------------------------------------


def _add_train_flags(
    p: argparse.ArgumentParser, steps_default: str = "5000", time_default: str = "none"
) -> None:
    g = p.add_argument_group("training options (override the config file)")
    g.add_argument(
        "--steps",
        type=int,
        help=f"optimiser steps (default {steps_default}; with --time-limit alone: open-ended)",
    )
    g.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help=f"stop after this many seconds, validation included (default: {time_default})",
    )
    g.add_argument(
        "--patience",
        type=int,
        metavar="N",
        help="stop after N validations without a better validation NLL (default 20; 0: never)",
    )
    g.add_argument("--batch-size", type=int, help="global batch size (default 256)")
    g.add_argument(
        "--lr",
        type=float,
        help="peak learning rate of AdamW (default 1e-3, or the model's own: `flowforge models`)",
    )
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0)")
    g.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default min(100, 5%%))")
    g.add_argument("--grad-clip", type=float, help="gradient-norm clip (default 5; 0 disables)")
    g.add_argument("--ema-decay", type=float, help="weight EMA decay (default 0.999; 0 disables)")
    g.add_argument(
        "--eval-every",
        type=eval_every_flag,
        metavar="STEPS",
        help="steps between validation NLLs, or auto (default: about once per epoch, "
        "10 to 500 steps)",
    )
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    g.add_argument("--seed", type=int, help="seed of everything random (default 0)")
    g.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    g.add_argument(
        "--dequantization",
        choices=("redraw", "fixed"),
        help="discrete data (digits, images): redraw the uniform dequantisation noise of every "
        "training batch (default), or train on the noise drawn at load (fixed)",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a dataset or your own file",
        description="Train a registered model; writes config.json, model.safetensors, "
        "state.safetensors/state.json and metrics.jsonl to --out.",
        epilog="examples:\n"
        "  flowforge train --model nsf --data checkerboard --steps 5000 --out runs/nsf\n"
        "  flowforge train --model fm --data checkerboard --time-limit 600 --out runs/fm\n"
        "  flowforge train --model maf --data my_points.csv --config maf.toml --out runs/maf\n"
        "  flowforge train --resume runs/nsf --steps 8000\n"
        "  torchrun --nproc_per_node=2 -m flowforge train --model nsf --data checkerboard "
        "--out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="a model name (see `flowforge models`)")
    p.add_argument(
        "--data",
        help="a built-in dataset (see `flowforge datasets`), a .npy/.npz/.csv file, or a folder "
        "of PNG/JPEG images (class sub-folders are labels)",
    )
    p.add_argument("--out", help="the run directory to create")
    p.add_argument("--config", help="a TOML file with [model], [data] and [train] tables")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model option, e.g. -o layers=8 -o hidden=256,256 (repeatable)",
    )
    p.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option, e.g. --data-option n_train=50000 (repeatable)",
    )
    p.add_argument(
        "--no-standardize",
        action="store_true",
        help="train on the raw data instead of standardised data",
    )
    p.add_argument(
        "--conditional",
        action="store_true",
        help="train a class-conditional model on the dataset's labels (digits, 8gaussians, ...; "
        "a file's with --data-option label=COLUMN)",
    )
    p.add_argument(
        "--label-dropout",
        type=float,
        metavar="P",
        help="with --conditional: the probability of training on the null label instead, so "
        "guided sampling works (continuous models; default 0.1)",
    )
    _add_train_flags(p)
    p.set_defaults(handler=run_train)


# Flags a resumed run may take: its budget and the progress bar.
_RESUME_FLAGS = ("steps", "time_limit", "patience")


def run_train(args: argparse.Namespace) -> int:
    from ..train import RunSpec, resume, start

    if args.resume:
        run_flags = (
            "model",
            "data",
            "config",
            "option",
            "data_option",
            "out",
            "no_standardize",
            "conditional",
            "label_dropout",
        )
        given = [a for a in run_flags if getattr(args, a)]
        given += [n for n in _TRAIN_FLAGS if n not in _RESUME_FLAGS and getattr(args, n, None)]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise ValueError(
                f"--resume continues a run as configured; {flags} cannot change "
                "(--steps, --time-limit and --patience can)"
            )
        changes: dict[str, Any] = {}
        if args.time_limit is not None:
            changes["time_limit"] = args.time_limit
        if args.patience is not None:
            changes["patience"] = args.patience or None  # 0: never stop early
        if args.no_progress:
            changes["progress"] = False
        result = resume(args.resume, steps=args.steps, **changes)
        out = args.resume
    else:
        config = load_toml(args.config) if args.config else {}
        model_cfg = dict(config.get("model", {}))
        data_cfg = dict(config.get("data", {}))
        model = args.model or model_cfg.pop("name", None)
        model_cfg.pop("name", None)
        source = args.data or data_cfg.pop("source", None)
        data_cfg.pop("source", None)
        standardize = bool(data_cfg.pop("standardize", True)) and not args.no_standardize
        if not model:
            raise ValueError("no model given: pass --model NAME (see `flowforge models`)")
        if not source:
            raise ValueError("no data given: pass --data NAME_OR_FILE (see `flowforge datasets`)")
        if not args.out:
            raise ValueError("no run directory given: pass --out DIR")
        model_options = {**model_cfg, **parse_assignments(args.option, "--option")}
        if args.label_dropout is not None:
            if not args.conditional:
                raise ValueError(
                    "--label-dropout applies to a conditional model: add --conditional"
                )
            model_options["label_dropout"] = args.label_dropout
        spec = RunSpec(
            model=model,
            data=source,
            model_options=model_options,
            data_options={**data_cfg, **parse_assignments(args.data_option, "--data-option")},
            standardize=standardize,
            train=train_options(config.get("train", {}), args, model, model_options),
            conditional=args.conditional,
        )
        result = start(spec, args.out)
        out = args.out
    if _is_main():
        print(train_summary(result, out))
    return 0


_HOW = {
    "steps": "step limit",
    "time": "time limit",
    "early_stop": "early stop: the validation NLL stopped improving",
    "interrupted": "stopped",
}


def train_summary(result, out: str) -> str:
    """The last line of ``flowforge train``: steps, time, how it stopped, the best validation
    NLL and its step (the weights ``sample`` and ``evaluate`` load), the last if different."""
    steps = f"{result.steps} steps"
    if result.resumed_from is not None:
        steps = f"to step {result.steps} (resumed from step {result.resumed_from})"
    line = f"trained {steps} in {result.seconds:.1f}s ({_HOW[result.stop_reason]})"
    if result.best_val_nll is not None:
        kept = (Path(out) / "best.safetensors").exists()  # else they load the last weights
        line += f"; best validation NLL {result.best_val_nll:.4f} nats at step {result.best_step}"
        line += " (the weights sample and evaluate use)" if kept else ""
        if result.val_nll is not None and result.best_step != result.steps:
            line += f", last {result.val_nll:.4f} at step {result.steps}"
    return f"{line}; run saved in {out}"


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


# -- sample ------------------------------------------------------------------------------------


def _add_loading_flags(p: argparse.ArgumentParser) -> None:
    """Which weights of a run to load, where, and how a continuous model integrates."""
    p.add_argument(
        "--weights",
        choices=("best", "last"),
        default="best",
        help="best: the weights of the best validation NLL (default); last: the last checkpoint",
    )
    p.add_argument(
        "--no-ema", action="store_true", help="with --weights last: the raw, not the EMA, weights"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda[:N], or auto")
    p.add_argument(
        "--solver",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="continuous models: a solver option, e.g. --solver method=rk4 --solver steps=8, "
        "--solver divergence=hutchinson (repeatable; default: adaptive dopri5, exact)",
    )
    p.add_argument(
        "--label",
        metavar="LABEL",
        help="conditional runs: the class to sample or evaluate, by index (0..K-1) or by name "
        "(a CSV label's text); default: labels in the training data's proportions (sample), "
        "each test point's own label (evaluate)",
    )


def _label(args: argparse.Namespace, config: dict) -> int | None:
    """The ``--label`` of a conditional run as a class index, or ``None`` when not given."""
    if args.label is None:
        return None
    if not config.get("conditional"):
        raise ValueError(
            f"--label applies to a conditional run; {args.run_dir} was trained without labels "
            "(train with --conditional)"
        )
    k = int(config["num_classes"])
    names = config.get("label_names") or [str(i) for i in range(k)]
    if args.label in names:
        return names.index(args.label)
    try:
        index = int(args.label)
    except ValueError:
        index = -1
    if not 0 <= index < k:
        shown = ", ".join(names[:12]) + (", ..." if k > 12 else "")
        raise ValueError(
            f"--label must be one of the run's {k} classes ({shown}); got {args.label!r}"
        )
    return index


def _sample_labels(config: dict, label: int | None, n: int, seed: int):
    """``n`` labels for a conditional run's samples: ``label`` for all, or drawn in the
    training data's class proportions; ``None`` for an unconditional run."""
    import torch

    if not config.get("conditional"):
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.int64)
    counts = torch.tensor(config["label_counts"], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(counts, n, replacement=True, generator=g)


def _load_run(args: argparse.Namespace):
    from ..train import checkpoint as ckpt
    from ..train import load
    from ..train.distributed import resolve_device

    run = Path(args.run_dir)
    if run.is_file():
        inside = f"; the run is {run.parent}" if run.name == ckpt.CONFIG_FILE else ""
        raise ValueError(f"{run} is a file, not a run directory{inside}")
    # An empty directory (a run stopped before it began) and one with weights but no config
    # get load's own messages; any other directory without a config is not a run at all.
    if run.is_dir() and not (run / ckpt.CONFIG_FILE).exists() and not ckpt.has_checkpoint(run):
        runs = [str(p.parent) for p in sorted(run.glob(f"runs/*/{ckpt.CONFIG_FILE}"))]
        if runs:
            raise ValueError(
                f"{run} is a comparison report, not a run; its runs are {', '.join(runs)}"
            )
        if any(run.iterdir()):
            raise ValueError(
                f"{run} is not a run directory (it has no {ckpt.CONFIG_FILE}); pass the --out "
                "directory of `flowforge train`, or a runs/NAME directory of a compare report"
            )
    has_best = (run / ckpt.BEST_FILE).exists()
    if (run / ckpt.CONFIG_FILE).exists() and not ckpt.has_checkpoint(run) and not has_best:
        raise ValueError(
            f"{run} has no trained weights yet (it was stopped before its first checkpoint); "
            f"train it with: flowforge train --resume {shlex.quote(str(run))}"
        )
    device = resolve_device(args.device)  # a bad or absent device is a one-line error
    return load(run, ema=not args.no_ema, device=str(device), weights=args.weights)


def _solver_options(args: argparse.Namespace, model, config: dict) -> dict[str, object]:
    """The ``--solver`` options, checked against the run's model and named by its recipe."""
    solver = parse_assignments(args.solver, "--solver")
    name = config["model"]["name"]
    unknown = sorted(set(solver) - set(model.solver_keys))
    if unknown and not model.solver_keys:
        raise ValueError(
            f"{name} is a discrete flow and takes no solver options (got {', '.join(unknown)}); "
            "--solver is for the continuous-time models (ffjord and the flow-matching recipes)"
        )
    if unknown:
        raise ValueError(
            f"unknown solver option {', '.join(map(repr, unknown))} for {name}; "
            f"it takes {', '.join(model.solver_keys)}"
        )
    return solver


def _output_file(path: str | None, flag: str, suffixes: tuple[str, ...] | None = None):
    """``path`` as a :class:`Path` after checking it can be written, before any work is done."""
    if path is None:
        return None
    out = Path(path)
    if suffixes is not None and out.suffix.lower() not in suffixes:
        choices = (
            ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        )
        raise ValueError(
            f"{flag} must end with {choices} (the suffix chooses the format), got {path}"
        )
    if out.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name inside it")
    folder = out.absolute().parent
    while not folder.exists():  # missing folders are created on writing, inside the first one
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path} cannot be written: {folder} is not a writable directory")
    return out


def _output_folder(path: str | None, flag: str):
    """``path`` as a folder to write files into (created if missing), checked before any work."""
    if path is None:
        raise ValueError(f"--format png writes one file per sample: give the folder as {flag} DIR")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {path} is a file; --format png needs a folder to write into")
    folder = out.absolute()
    while not folder.exists():  # missing folders are created on writing, inside the first one
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path} cannot be written: {folder} is not writable")
    return out


def _check_png_run(dataset, model) -> tuple[int, tuple[int, ...]]:
    """The data's levels and image shape for ``--format png``; refused for a run whose data are
    not images of discrete levels."""
    shape = dataset.image_shape or (model.event_shape if len(model.event_shape) == 3 else None)
    if shape is None or dataset.levels is None:
        what = "not images" if shape is None else "continuous (no discrete levels)"
        raise ValueError(
            f"--format png writes image files, and this run's data ({dataset.name}) are {what}; "
            "write .npy or .csv instead"
        )
    if shape[0] not in (1, 3):
        raise ValueError(
            f"--format png writes grey (1 channel) or RGB (3 channels) images; this run's images "
            f"have {shape[0]} channels; write .npy instead"
        )
    return dataset.levels, tuple(shape)


def _write(path: Path, flag: str, write) -> None:
    """Call ``write(path)``; an operating-system refusal becomes one line naming ``flag``."""
    try:
        write(path)
    except OSError as e:
        raise ValueError(f"{flag} {path} cannot be written: {e.strerror or e}") from None


def register_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Draw samples from a trained run, in the data's own units. A .csv file "
        "starts with a header row: the column names of the training CSV where it had them, "
        "else x1, x2, ..., xD.",
    )
    p.add_argument("run_dir", metavar="RUN", help="the run directory")
    p.add_argument("-n", type=int, default=10_000, help="number of samples (default 10000)")
    p.add_argument(
        "--out",
        help="write the samples to this .npy or .csv file, or with --format png to this folder, "
        "one PNG file per sample",
    )
    p.add_argument(
        "--format",
        choices=("npy", "csv", "png"),
        help="the format of --out (default: its suffix); png: image runs, one 8-bit PNG per "
        "sample at the data's grey levels",
    )
    p.add_argument(
        "--plot", help="write a figure of the samples beside the data (.png, .pdf or .svg)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--chunk-size",
        type=int,
        help="samples per model call (bounds memory; default: 2^22 entries' worth, e.g. 65536 "
        "digits); several chunks show a progress bar",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--guidance",
        type=float,
        metavar="W",
        help="conditional continuous models: classifier-free guidance scale (1: the plain "
        "conditional model, 0: the unconditional one, above 1: sharper classes)",
    )
    _add_loading_flags(p)
    p.set_defaults(handler=run_sample)


def _samples_file(x, columns: list[str] | None) -> bytes:
    """``(n, D)`` samples as CSV text: a header row of column names, then one row per sample."""
    import csv
    import io

    import numpy as np

    flat = x.reshape(x.shape[0], -1).numpy()
    if not columns or len(columns) != flat.shape[1]:
        columns = [f"x{j + 1}" for j in range(flat.shape[1])]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    np.savetxt(buf, flat, delimiter=",", fmt="%.7g")
    return buf.getvalue().encode()


def run_sample(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    import torch

    from .. import viz
    from ..train import load_dataset
    from ..train.checkpoint import write_atomic
    from ..train.sampling import sample_in_chunks, write_pngs
    from ..viz.figure import FIGURE_SUFFIXES

    check_int(args.n, "-n", 1, "a positive number of samples")
    if args.chunk_size is not None:
        check_int(args.chunk_size, "--chunk-size", 1, "a positive number of samples per call")
    png = args.format == "png"
    if png:
        out = _output_folder(args.out, "--out")
    else:
        out = _output_file(args.out, "--out", (".npy", ".csv"))
        if out is not None and args.format and out.suffix.lower() != f".{args.format}":
            raise ValueError(
                f"--format {args.format} needs --out ending with .{args.format}, got {args.out}"
            )
    plot = _output_file(args.plot, "--plot", FIGURE_SUFFIXES)
    model, config = _load_run(args)
    solver = _solver_options(args, model, config)
    label = _label(args, config)
    # The data of the figure first: a moved or deleted data file fails before any sampling.
    dataset = load_dataset(config) if plot or png else None
    pixels = _check_png_run(dataset, model) if png else None
    labels = _sample_labels(config, label, args.n, args.seed)
    if args.guidance is not None:  # a model that takes no guidance says so, in one line
        solver["guidance"] = args.guidance
    torch.manual_seed(args.seed)
    x = sample_in_chunks(
        model,
        args.n,
        labels,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        **solver,
    )
    if out and pixels is not None:
        levels, shape = pixels
        images = x.reshape(x.shape[0], *shape)
        _write(out, "--out", lambda path: write_pngs(images, levels, path))
        print(f"wrote {args.n} PNG files of {shape[1]}x{shape[2]} pixels to {out}")
    elif out:
        if out.suffix.lower() == ".npy":
            buf = io.BytesIO()
            np.save(buf, x.numpy())
            content = buf.getvalue()
        else:
            content = _samples_file(x, config.get("columns"))
        _write(out, "--out", lambda path: write_atomic(path, content))
        print(f"wrote {args.n} samples of shape {tuple(x.shape[1:])} to {out}")
    if plot and dataset is not None:
        reference, title = dataset.test, f"{config['model']['name']} samples"
        if label is not None:
            names = config.get("label_names") or []
            title += f", label {names[label] if names else label}"
            if dataset.labels is not None and "test" in dataset.labels:
                reference = dataset.test[dataset.labels["test"] == label]  # that class's data
        fig = viz.plot_samples(
            x,
            reference,
            title=title,
            image_shape=dataset.image_shape,
            columns=dataset.columns or config.get("columns"),
        )
        _write(plot, "--plot", lambda path: viz.save_figure(fig, path))
        print(f"wrote the figure to {plot}")
    if not out and not plot:
        print(f"drew {args.n} samples; pass --out FILE to keep them or --plot FILE to see them")
    return 0


# -- evaluate ----------------------------------------------------------------------------------


def register_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test NLL, bits/dim and sample distances as JSON",
        description="Evaluate a trained run on held-out data; prints JSON.",
    )
    p.add_argument("run_dir", metavar="RUN", help="the run directory")
    p.add_argument("--data", help="evaluate on this dataset instead of the run's own")
    p.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="which held-out split (default test)",
    )
    p.add_argument(
        "--samples", type=int, default=5000, help="samples drawn for the distances (default 5000)"
    )
    p.add_argument("--out", help="also write the JSON to this file")
    _add_loading_flags(p)
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..compare import evaluate_model
    from ..train.checkpoint import write_json_atomic

    check_int(args.samples, "--samples", 1, "a positive number of samples")
    out = _output_file(args.out, "--out")
    model, config = _load_run(args)
    result = evaluate_model(
        model,
        config,
        source=args.data,
        split=args.split,
        n_samples=args.samples,
        solver=_solver_options(args, model, config),
        label=_label(args, config),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        _write(out, "--out", lambda path: write_json_atomic(path, result))
    return 0


# -- compare -----------------------------------------------------------------------------------


def register_compare(sub) -> None:
    from ..compare import BUDGETS

    p = sub.add_parser(
        "compare",
        help="train several models on the same data and budget, write a report",
        description="Train each model on the same data for the same wall-clock time (the "
        "--budget preset's seconds, or --time-limit), or for the same number of steps with "
        "--steps; evaluate them alike and write report.md, results.json and figures to --out. "
        "A model whose recipe has training defaults (see `flowforge models`) trains with them "
        "unless a flag or the [train] table sets the option for all.",
        epilog="budgets (--budget):\n"
        + "".join(f"  {b.name:9s} {b.summary}\n" for b in BUDGETS.values())
        + "examples:\n"
        "  flowforge compare --data checkerboard --out reports/cb\n"
        "  flowforge compare --data checkerboard --budget thorough --out reports/cb-60s\n"
        "  flowforge compare --models nsf,maf,fm --time-limit 30 --out reports/30s\n"
        "  flowforge compare --models nsf,maf --steps 5000 --out reports/5000-steps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        default="checkerboard",
        help="a built-in dataset, a .npy/.npz/.csv file or a folder of PNG/JPEG images (default "
        "checkerboard)",
    )
    p.add_argument(
        "--models",
        help="comma-separated model names (default: every registered one; on image data every "
        "one that takes images)",
    )
    p.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option, e.g. --data-option image=true (repeatable)",
    )
    p.add_argument("--out", required=True, help="the report directory to create")
    p.add_argument("--config", help="a TOML file with [data] and [train] tables")
    p.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        default="quick",
        help="training seconds per model and how fully each is evaluated (default quick: "
        f"{BUDGETS['quick'].time_limit:g} s a model; thorough: "
        f"{BUDGETS['thorough'].time_limit:g} s and the full evaluation)",
    )
    p.add_argument(
        "--samples",
        type=int,
        help="samples per model for the distances and figures (default 5000)",
    )
    p.add_argument("--no-standardize", action="store_true", help="train on the raw data")
    p.add_argument(
        "--conditional",
        action="store_true",
        help="condition every model on the dataset's class labels (docs/conditioning.md)",
    )
    p.add_argument(
        "--guidance-scales",
        metavar="W,W,...",
        help="with --conditional: the guidance scales of the report's label-accuracy table "
        "for continuous models (default 0,1,2,4; discrete flows: 1 only)",
    )
    _add_train_flags(
        p, steps_default="none: equal time, see --budget", time_default="the --budget preset's"
    )
    p.set_defaults(handler=run_compare)


def compare_train(table: dict, args: argparse.Namespace) -> dict[str, object]:
    """The training settings of a comparison for every model: the file's ``[train]`` table,
    then the flags given, read as ``flowforge train`` reads them (``--grad-clip 0``: no
    clipping, ``--patience 0``: never stop early). The library adds each recipe's defaults and
    the budget preset beneath them (:func:`flowforge.compare.train_configs`)."""
    values = dict(table)
    for name in _TRAIN_FLAGS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    for name in ("grad_clip", "patience"):
        if values.get(name) == 0:
            values[name] = None
    if args.no_progress:
        values["progress"] = False
    return values


def _guidance_scales(text: str | None) -> tuple[float, ...] | None:
    """``--guidance-scales 0,1,2,4`` as numbers (checked further by the library)."""
    if text is None:
        return None
    try:
        return tuple(float(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise ValueError(
            f"--guidance-scales must be comma-separated numbers, e.g. 0,1,2,4, got {text!r}"
        ) from None


def run_compare(args: argparse.Namespace) -> int:
    from ..compare import compare

    config = load_toml(args.config) if args.config else {}
    names = args.models.split(",") if args.models else None
    if names is not None:
        names = [n.strip() for n in names if n.strip()]
    if args.samples is not None and args.samples < 2:
        raise ValueError(f"--samples must be at least 2, got {args.samples}")
    data_cfg = dict(config.get("data", {}))
    source = data_cfg.pop("source", None) or args.data
    standardize = bool(data_cfg.pop("standardize", True)) and not args.no_standardize
    data_cfg.update(parse_assignments(args.data_option, "--data-option"))
    result = compare(
        names,
        source,
        out=args.out,
        budget=args.budget,
        train=compare_train(dict(config.get("train", {})), args),
        data_options=data_cfg,
        standardize=standardize,
        samples=args.samples,
        conditional=args.conditional,
        guidance=_guidance_scales(args.guidance_scales),
    )
    print(f"report written to {result.report}")
    return 0


# -- reflow ------------------------------------------------------------------------------------


def register_reflow(sub) -> None:
    p = sub.add_parser(
        "reflow",
        help="retrain a flow-matching run on its own noise/sample pairs (straighter, fewer steps)",
        description="Reflow (Liu et al., 2022): draw N pairs (z, decode(z)) of a trained "
        "flow-matching run (adaptive dopri5, kept in --out as pairs-R.safetensors), train a "
        "copy of it on the straight path between them, and write a normal run to --out that "
        "sample, evaluate and compare read. --distill makes the last round a one-step "
        "distillation (sample it with --solver steps=1). Run the same command again to "
        "resume a stopped reflow. Prints the transport cost and straightness per round.",
        epilog="examples:\n"
        "  flowforge reflow runs/rectified --out runs/2-rectified --pairs 20000 --steps 3000\n"
        "  flowforge reflow runs/2-rectified --out runs/distilled --distill\n"
        "  flowforge sample runs/distilled --solver steps=1 --plot one-step.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN", help="the trained flow-matching run")
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument(
        "--pairs", type=int, default=10_000, help="noise/sample pairs per round (default 10000)"
    )
    p.add_argument("--steps", type=int, help="training steps per round (default: the source run's)")
    p.add_argument(
        "--rounds", type=int, default=1, help="reflow rounds: k gives a (k+1)-rectified flow"
    )
    p.add_argument(
        "--distill", action="store_true", help="make the last round a one-step distillation"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of round 1's noise; round R uses seed + R - 1"
    )
    p.add_argument(
        "--solver",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="solver of the pair generation (default: method=dopri5 rtol=1e-5 atol=1e-5)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=4096, help="pairs per solve (bounds memory; default 4096)"
    )
    p.add_argument(
        "--no-warm-start",
        action="store_true",
        help="train each round from a fresh initialisation instead of a copy of the model",
    )
    p.add_argument("--lr", type=float, help="peak learning rate (default: the source run's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the source run's)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the source run's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=run_reflow)


def run_reflow(args: argparse.Namespace) -> int:
    from ..train import reflow_run

    check_int(args.pairs, "--pairs", 1, "a positive number of pairs")
    check_int(args.rounds, "--rounds", 1, "a positive number of rounds")
    check_int(args.chunk_size, "--chunk-size", 1, "a positive number of pairs per solve")
    changes = {
        k: getattr(args, k) for k in ("lr", "batch_size", "device") if getattr(args, k) is not None
    }
    result = reflow_run(
        args.run_dir,
        args.out,
        pairs=args.pairs,
        steps=args.steps,
        rounds=args.rounds,
        distill=args.distill,
        seed=args.seed,
        warm_start=not args.no_warm_start,
        solver=parse_assignments(args.solver, "--solver"),
        chunk_size=args.chunk_size,
        train_changes=changes,
        progress=not args.no_progress,
    )
    print(f"source {args.run_dir}: straightness {result.source_straightness:.4g}")
    for r in result.rounds:
        what = "distilled" if r.distill else "reflowed"
        print(
            f"round {r.round} ({what}, {r.pairs} pairs, seed {r.seed}): transport cost "
            f"{r.transport_cost:.4g}, straightness {r.straightness:.4g}; run in {r.run_dir}"
        )
    print(
        f"run saved in {args.out}; sample it with: flowforge sample {shlex.quote(args.out)} "
        "--solver steps=1"
    )
    return 0


# -- listings ----------------------------------------------------------------------------------


def register_datasets(sub) -> None:
    p = sub.add_parser(
        "datasets",
        help="list the built-in datasets",
        description="List the built-in datasets; --data also takes a file.",
    )
    p.set_defaults(handler=run_datasets)


def run_datasets(args: argparse.Namespace) -> int:
    from .. import data

    names = data.available()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:{width}s}  {data.describe(name)}")
    print("\n--data also takes your own .npy, .npz or .csv file of shape (N, D).")
    return 0


def register_models(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list the registered models and their options",
        description="List the registered models with their options and defaults.",
    )
    p.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    from .. import models

    for name in models.available():
        r = models.recipe(name)
        options = ", ".join(f"{k}={v!r}" for k, v in r.options().items())
        shapes = "vectors (D,) and images (C, H, W)" if r.images else "vectors (D,)"
        print(f"{name}\n    {r.summary}\n    takes: {shapes}\n    options: {options}")
        if r.train_defaults:
            train = ", ".join(f"{k}={v!r}" for k, v in r.train_defaults.items())
            print(f"    training defaults (flags and [train] override them): {train}")
        for option, by_value in r.train_by_option.items():
            for value, changes in by_value.items():
                train = ", ".join(f"{k}={v!r}" for k, v in changes.items())
                print(f"    with {option}={value!r}: {train}")
    return 0


SUBCOMMANDS = (
    register_train,
    register_sample,
    register_evaluate,
    register_compare,
    register_reflow,
    register_datasets,
    register_models,
)
