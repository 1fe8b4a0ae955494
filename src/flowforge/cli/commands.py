"""The subcommands: ``train``, ``sample``, ``evaluate``, ``compare``, ``datasets``, ``models``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import load_toml, parse_assignments, train_options

# -- train -------------------------------------------------------------------------------------


def _add_train_flags(p: argparse.ArgumentParser, steps_default: str = "5000") -> None:
    g = p.add_argument_group("training options (override the config file)")
    g.add_argument("--steps", type=int, help=f"optimiser steps (default {steps_default})")
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
    g.add_argument("--eval-every", type=int, help="steps between validation NLLs (default 500)")
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    g.add_argument("--seed", type=int, help="seed of everything random (default 0)")
    g.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a dataset or your own file",
        description="Train a registered model; writes config.json, model.safetensors, "
        "state.safetensors/state.json and metrics.jsonl to --out.",
        epilog="examples:\n"
        "  flowforge train --model nsf --data checkerboard --steps 5000 --out runs/nsf\n"
        "  flowforge train --model maf --data my_points.csv --config maf.toml --out runs/maf\n"
        "  flowforge train --resume runs/nsf --steps 8000\n"
        "  torchrun --nproc_per_node=2 -m flowforge train --model nsf --data checkerboard "
        "--out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="a model name (see `flowforge models`)")
    p.add_argument(
        "--data", help="a built-in dataset (see `flowforge datasets`) or a .npy/.npz/.csv file"
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
    _add_train_flags(p)
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ..train import RunSpec, resume, start

    if args.resume:
        if args.model or args.data or args.config or args.option or args.out:
            raise ValueError("--resume continues a run as configured; only --steps may change")
        result = resume(args.resume, steps=args.steps)
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
        spec = RunSpec(
            model=model,
            data=source,
            model_options={**model_cfg, **parse_assignments(args.option, "--option")},
            data_options={**data_cfg, **parse_assignments(args.data_option, "--data-option")},
            standardize=standardize,
            train=train_options(config.get("train", {}), args, model),
        )
        result = start(spec, args.out)
        out = args.out
    if _is_main():
        val = f", validation NLL {result.val_nll:.4f} nats" if result.val_nll is not None else ""
        print(f"trained {result.steps} steps in {result.seconds:.1f}s{val}; run saved in {out}")
    return 0


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
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument(
        "--solver",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="continuous models: a solver option, e.g. --solver method=rk4 --solver steps=8, "
        "--solver divergence=hutchinson (repeatable; default: adaptive dopri5, exact)",
    )


def _load_run(args: argparse.Namespace):
    from ..train import load

    return load(args.run_dir, ema=not args.no_ema, device=args.device, weights=args.weights)


def register_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Draw samples from a trained run, in the data's own units.",
    )
    p.add_argument("run_dir", metavar="RUN", help="the run directory")
    p.add_argument("-n", type=int, default=10_000, help="number of samples (default 10000)")
    p.add_argument("--out", help="write the samples to this .npy or .csv file")
    p.add_argument("--plot", help="write a figure of the samples beside the data (.png/.pdf)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    _add_loading_flags(p)
    p.set_defaults(handler=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import viz
    from ..train import load_dataset
    from ..train.checkpoint import write_atomic

    if args.n < 1:
        raise ValueError(f"-n must be a positive number of samples, got {args.n}")
    if args.out and Path(args.out).suffix not in (".npy", ".csv"):
        raise ValueError(f"--out must end with .npy or .csv, got {args.out}")
    model, config = _load_run(args)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        x = model.sample(args.n, **parse_assignments(args.solver, "--solver")).cpu()
    if args.out:
        out = Path(args.out)
        if out.suffix == ".npy":
            import io

            buf = io.BytesIO()
            np.save(buf, x.numpy())
            write_atomic(out, buf.getvalue())
        else:
            import io

            buf = io.StringIO()
            np.savetxt(buf, x.reshape(x.shape[0], -1).numpy(), delimiter=",", fmt="%.7g")
            write_atomic(out, buf.getvalue().encode())
        print(f"wrote {args.n} samples of shape {tuple(x.shape[1:])} to {out}")
    if args.plot:
        dataset = load_dataset(config)
        fig = viz.plot_samples(
            x,
            dataset.test,
            title=f"{config['model']['name']} samples",
            image_shape=dataset.image_shape,
        )
        print(f"wrote the figure to {viz.save_figure(fig, args.plot)}")
    if not args.out and not args.plot:
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
    from ..train.checkpoint import write_json_atomic
    from .report import evaluate_model

    model, config = _load_run(args)
    result = evaluate_model(
        model,
        config,
        source=args.data,
        split=args.split,
        n_samples=args.samples,
        solver=parse_assignments(args.solver, "--solver"),
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        write_json_atomic(Path(args.out), result)
    return 0


# -- compare -----------------------------------------------------------------------------------


def register_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train several models on the same data and budget, write a report",
        description="Train each model with the same data, steps and batch size, evaluate "
        "them alike and write report.md, results.json and figures to --out. A model whose "
        "recipe has training defaults (see `flowforge models`) trains with them unless a "
        "flag or the [train] table sets the option for all.",
    )
    p.add_argument(
        "--data",
        default="checkerboard",
        help="a built-in dataset or a .npy/.npz/.csv file (default checkerboard)",
    )
    p.add_argument("--models", help="comma-separated model names (default: every registered one)")
    p.add_argument("--out", required=True, help="the report directory to create")
    p.add_argument("--config", help="a TOML file with [data] and [train] tables")
    p.add_argument(
        "--samples",
        type=int,
        default=5000,
        help="samples per model for the distances and timing (default 5000)",
    )
    p.add_argument("--no-standardize", action="store_true", help="train on the raw data")
    _add_train_flags(p, steps_default="2000")
    p.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from .. import models
    from .report import compare

    config = load_toml(args.config) if args.config else {}
    names = args.models.split(",") if args.models else models.available()
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        models.recipe(n)  # fail on a typo before anything trains
    train_cfg = {"steps": 2000, **config.get("train", {})}
    data_cfg = dict(config.get("data", {}))
    source = data_cfg.pop("source", None) or args.data
    standardize = bool(data_cfg.pop("standardize", True)) and not args.no_standardize
    report = compare(
        names,
        source,
        data_cfg,
        {n: train_options(train_cfg, args, n) for n in names},
        Path(args.out),
        standardize=standardize,
        n_samples=args.samples,
    )
    print(f"report written to {report}")
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
        print(f"{name}\n    {r.summary}\n    options: {options}")
        if r.train_defaults:
            train = ", ".join(f"{k}={v!r}" for k, v in r.train_defaults.items())
            print(f"    training defaults (flags and [train] override them): {train}")
    return 0


SUBCOMMANDS = (
    register_train,
    register_sample,
    register_evaluate,
    register_compare,
    register_datasets,
    register_models,
)
