"""MeanFlow against OT-CFM on the checkerboard: energy distance at NFE 1, 2 and 4, test NLL.

Trains one model (``--model meanflow`` or ``otfm``, recipe defaults overridden by
``--options`` as JSON) for ``--steps`` steps of batch 256 at the recipe's learning rate, then
draws 5,000 samples per NFE (the same noise for every model: ``torch.manual_seed(1)``) and
prints one JSON line: the energy distance to 5,000 fresh test points (drawn with seed 123) at
each NFE, for MeanFlow's mean-velocity sampler (``steps=k``) and for Euler on the instantaneous
field (``method="euler", steps=k``), and the exact test NLL (dopri5) on 2,000 of them. Quality
only: no timings (docs/matching.md, "MeanFlow").

    OMP_NUM_THREADS=1 python benchmarks/meanflow.py --model meanflow --options '{"p": 0}'
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

import flowforge as ff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="meanflow")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="{}", help="recipe options as JSON")
    args = parser.parse_args()
    options = json.loads(args.options)
    torch.manual_seed(args.seed)
    data = ff.data.load("checkerboard")
    model = ff.models.create(args.model, dim=2, **options)
    train: dict[str, Any] = dict(ff.models.recipe(args.model).train_defaults)
    config = ff.train.TrainConfig(
        steps=args.steps, batch_size=256, progress=False, seed=args.seed, eval_every=10**9, **train
    )
    ff.train.train(model, data.train, config)
    model.eval()
    fresh = ff.data.load("checkerboard", seed=123).test
    reference = fresh[:5000]
    out: dict[str, object] = {"model": args.model, "options": options, "seed": args.seed}
    methods = ["meanflow", "euler"] if isinstance(model, ff.matching.MeanFlow) else ["euler"]
    for k in (1, 2, 4):
        for method in methods:
            torch.manual_seed(1)
            x = model.sample(5000, method=method, steps=k)
            out[f"energy_{method}_{k}"] = round(ff.metrics.energy_distance(x, reference), 5)
    out["nll"] = round(ff.metrics.nll(model, fresh[:2000]).mean, 4)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
