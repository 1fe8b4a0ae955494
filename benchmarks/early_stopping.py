"""Early stopping on small data: where ``patience=20`` stops, against no early stopping.

Each model trains with the defaults of :class:`flowforge.train.TrainConfig` (``eval_every``
``"auto"``: every 10 steps on this data) for ``--steps`` steps, once with ``patience=20`` and
once with ``patience=None``, on standardised data: the 8x8 digits (1,000 training images) and a
synthetic CSV of 200 rows and 12 columns (160 training rows; a 3-factor tanh model with noise).
It prints the step each run stopped at and its best validation NLL and step: with a good
patience the two runs keep the same best weights and the early-stopped one ends far sooner.
``--large`` checks the other side instead: a long run on large data (``nsf`` 3 x 32 on the
checkerboard's 100,000 points, 20,000 steps, validated every 391) must not be cut short; it
prints the longest stretch of validations without improvement.

Reproduce::

    python benchmarks/early_stopping.py          # about 10 minutes on one loaded core
    python benchmarks/early_stopping.py --large  # about 11 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
import torch

import flowforge as ff
from flowforge.train import TrainConfig, train


def small_csv(path: str, n: int = 200, d: int = 12, seed: int = 0) -> str:
    """``n`` rows of ``d`` columns: tanh of 3 Gaussian factors, plus noise."""
    rng = np.random.default_rng(seed)
    x = np.tanh(rng.normal(size=(n, 3)) @ rng.normal(size=(3, d))) + 0.1 * rng.normal(size=(n, d))
    header = ",".join(f"c{i}" for i in range(d))
    np.savetxt(path, x, delimiter=",", header=header, comments="")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--large", action="store_true", help="the large-data check instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.large:
        large()
        return
    with tempfile.TemporaryDirectory() as tmp:
        csv = small_csv(os.path.join(tmp, "small.csv"))
        jobs = [("digits", "nsf"), ("digits", "maf"), (csv, "maf"), (csv, "realnvp"), (csv, "nsf")]
        for source, name in jobs:
            ds = ff.data.load(source)
            mean, std = ff.data.fit_standardization(ds.train)
            cells = []
            for patience in (20, None):
                torch.manual_seed(0)
                model = ff.data.Standardize(ff.models.create(name, dim=ds.dim), mean, std)
                cfg = TrainConfig(steps=args.steps, patience=patience, progress=False)
                r = train(model, ds.train, cfg, val_x=ds.val)
                cells.append(
                    f"patience={patience}: {r.stop_reason} at step {r.steps}, best validation "
                    f"NLL {r.best_val_nll:.3f} at step {r.best_step}"
                )
            label = "digits" if source == "digits" else "csv"
            every = cfg.eval_interval(len(ds.train))
            print(f"{label} {ds.sizes} {name} (every {every}): " + " | ".join(cells), flush=True)


def large() -> None:
    ds = ff.data.load("checkerboard")
    torch.manual_seed(0)
    model = ff.models.create("nsf", dim=2, layers=3, hidden=(32, 32))
    with tempfile.TemporaryDirectory() as tmp:
        r = train(
            model, ds.train, TrainConfig(steps=20000, progress=False), val_x=ds.val, run_dir=tmp
        )
        lines = open(os.path.join(tmp, "metrics.jsonl")).read().splitlines()
    vals = [rec["val_nll"] for rec in map(json.loads, lines) if "val_nll" in rec]
    best, bad, longest = float("inf"), 0, 0
    for v in vals:
        best, bad = (v, 0) if v < best else (best, bad + 1)
        longest = max(longest, bad)
    print(
        f"checkerboard nsf: {r.stop_reason} at step {r.steps}, best {r.best_val_nll:.4f} at step "
        f"{r.best_step}; {len(vals)} validations, at most {longest} in a row without improvement"
    )


if __name__ == "__main__":
    main()
