"""Dequantisation noise (fixed at load or redrawn every batch) and the logit preprocessing.

On the 8x8 digits (17 levels), each case trains one model for ``--seconds`` seconds with the
library's own loop (:func:`flowforge.train.train`, the recipe's training defaults, early
stopping and best weights as ``flowforge train`` does) and reports the test bits/dim of the best
validation weights:

* ``std``: per-pixel standardisation (:class:`flowforge.data.Standardize`), today's default;
* ``logitA``: no standardisation, ``create(..., logit=A)`` (RealNVP's logit first);

each with ``fixed`` (the noise drawn at load) or ``redraw`` (new noise every batch,
``TrainConfig.dequantization``). Cases run two at a time (``--jobs``), each with one thread, so
that the two halves of a pair see the same machine load. The numbers of docs/data.md
("Dequantisation noise and preprocessing of images") came from this script's default cases.

Reproduce::

    python benchmarks/dequantization.py                       # the docs' cases, 60 s each
    python benchmarks/dequantization.py --cases glow:image:redraw:logit0.01 --seconds 10

Writes ``benchmarks/results/dequantization.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = [
    "nsf:flat:fixed:std",
    "nsf:flat:redraw:std",
    "fm:flat:fixed:std",
    "fm:flat:redraw:std",
    "fm:image:fixed:std",
    "fm:image:redraw:std",
    "glow:image:fixed:std",
    "glow:image:redraw:std",
    "glow:image:redraw:logit0.05",
    "glow:image:redraw:logit0.01",
    "realnvp:image:redraw:std",
    "realnvp:image:redraw:logit0.05",
]


def one(case: str, seconds: float, seed: int, run_dir: str) -> dict:
    """Train and score one case (run in its own process by :func:`main`)."""
    import torch

    import flowforge as ff
    from flowforge.train import TrainConfig, train

    name, kind, noise, pre = case.split(":")
    ds = ff.data.load("digits", image=kind == "image")
    shape = {"shape": ds.event_shape} if kind == "image" else {"dim": ds.dim}
    logit = float(pre[len("logit") :]) if pre.startswith("logit") else None
    torch.manual_seed(seed)
    model = ff.models.create(name, **shape, **({"logit": logit} if logit else {}))
    if logit is None:
        model = ff.data.Standardize(model, *ff.data.fit_standardization(ds.train))
    defaults = dict(ff.models.recipe(name).training())
    options = {"steps": None, "time_limit": seconds, "progress": False, "device": "cpu"}
    config = TrainConfig(**{**defaults, **options, "dequantization": noise, "seed": seed})
    result = train(model, ds.train, config, val_x=ds.val, run_dir=run_dir, levels=ds.levels)
    model.load_state_dict(ff.train.load_state_dict(run_dir, "best")[0])
    with torch.enable_grad():  # continuous models: the exact divergence needs autograd
        scored = ff.metrics.nll(model.eval(), ds.test, batch_size=512)
    per_dim = ds.dim * 0.6931471805599453
    return {
        "case": case,
        "seed": seed,
        "seconds": seconds,
        "steps": result.steps,
        "best_step": result.best_step,
        "test_bpd": ff.metrics.bits_per_dim(scored.mean, ds.dim, levels=ds.levels),
        "stderr_bpd": scored.stderr / per_dim,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="MODEL:flat|image:NOISE:PRE,...")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once, 1 thread each")
    parser.add_argument("--out", default="benchmarks/results/dequantization.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker: one case, JSON to stdout
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.seconds, args.seed, args.run_dir)))
        return
    cases = [c for c in args.cases.split(",") if c]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(cases), args.jobs):
            jobs = []
            for case in cases[start : start + args.jobs]:
                command = [sys.executable, __file__, "--one", case, "--seed", str(args.seed)]
                command += ["--seconds", str(args.seconds), "--run-dir", str(Path(tmp) / case)]
                jobs.append(subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True))
            for job in jobs:
                out, _ = job.communicate()
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    note = f"{args.jobs} cases at a time, OMP_NUM_THREADS=1 each, {args.seconds:g} s each"
    Path(args.out).write_text(json.dumps({"setting": note, "rows": rows}, indent=2) + "\n")
    print("\n| case | steps | best step | test bits/dim |\n|---|---|---|---|")
    for r in rows:
        bpd = f"{r['test_bpd']:.3f} ± {r['stderr_bpd']:.3f}"
        print(f"| {r['case']} | {r['steps']} | {r['best_step']} | {bpd} |")
    print(f"\n{note}; reproduce: python benchmarks/dequantization.py --seconds {args.seconds:g}")


if __name__ == "__main__":
    main()
