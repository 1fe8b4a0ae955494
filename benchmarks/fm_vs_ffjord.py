"""Flow matching against FFJORD on the checkerboard: training wall time to reach a test NLL.

Both train the *same* vector-field network (flowforge's ``TimeMLP``: 3 hidden layers of 64,
tanh, time concatenated; FFJORD's output layer starts at zero, as its recipe does) with Adam
(lr 1e-3, batch 256) on the same batches. FFJORD is trained by maximum likelihood (Hutchinson
trace, dopri5 at 1e-5, backpropagation through the solver) for ``--ffjord-steps``; flow matching
(``rectified``: linear path, independent pairs) by regression for up to ``--fm-steps``. Every
``--eval-every`` seconds of *training* time (evaluation excluded from the clock) both are scored on
the same held-out points with the exact log-density (dopri5 at 1e-5, exact divergence).

The target is the best test NLL FFJORD reaches in its budget; the result is the training time each
method needs to first reach it, and their ratio. The curves (test NLL against training seconds)
go to ``fm_vs_ffjord.png`` beside the JSON.

Reproduce::

    python benchmarks/fm_vs_ffjord.py            # about 6 minutes on 2 cores
    python benchmarks/fm_vs_ffjord.py --quick
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import Tensor

import flowforge as ff
from _common import environment, write_report

HIDDEN = (64, 64, 64)
TEST_SEED = 20_240_601
NET = {"hidden": HIDDEN, "time_embedding": "concat", "activation": "tanh"}


def build(method: str) -> ff.Model:
    if method == "ffjord":
        return ff.models.create("ffjord", dim=2, **NET)
    return ff.models.create("rectified", dim=2, **NET)


def curve(
    method: str, data: Tensor, test: Tensor, steps: int, eval_every: float, seed: int, lr: float
) -> list[dict[str, float]]:
    """(training seconds, step, test NLL) points, the clock stopped while evaluating."""
    torch.manual_seed(seed)
    model = build(method)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    points: list[dict[str, float]] = []
    clock, next_eval = 0.0, eval_every
    for step in range(1, steps + 1):
        start = time.perf_counter()
        model.train()
        loss = model.loss(data[step - 1])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock += time.perf_counter() - start
        if clock >= next_eval or step == steps:
            model.eval()
            nll = ff.metrics.nll(model, test, batch_size=len(test)).mean
            points.append({"seconds": clock, "step": step, "test_nll": nll})
            print(f"  {method:9s} {clock:7.1f} s  step {step:6d}  test NLL {nll:.4f}", flush=True)
            next_eval = clock + eval_every
    return points


def first_reach(points: list[dict[str, float]], target: float) -> float | None:
    for p in points:
        if p["test_nll"] <= target:
            return p["seconds"]
    return None


def plot(curves: dict[str, list[dict[str, float]]], target: float, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for name, pts in curves.items():
        ax.plot([p["seconds"] for p in pts], [p["test_nll"] for p in pts], marker=".", label=name)
    ax.axhline(target, color="gray", ls="--", label=f"target {target:.3f}")
    ax.axhline(ff.data.CHECKERBOARD_ENTROPY, color="black", ls=":", label="entropy (floor)")
    ax.set(xscale="log", xlabel="training wall time (s)", ylabel="test NLL (nats)")
    ax.set_ylim(ff.data.CHECKERBOARD_ENTROPY - 0.05, 4.6)
    ax.grid(alpha=0.3)
    ax.legend()
    ff.viz.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ffjord-steps", type=int, default=1500)
    p.add_argument("--fm-steps", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=float, default=10.0, help="training seconds")
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.ffjord_steps, args.fm_steps, args.eval_every, args.test_size = 40, 400, 1.0, 1000
    args.out = args.out or Path("benchmarks/results") / (
        "fm_vs_ffjord_quick.json" if args.quick else "fm_vs_ffjord.json"
    )
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    test = ff.data.checkerboard(args.test_size, seed=TEST_SEED)
    longest = max(args.ffjord_steps, args.fm_steps)
    data = ff.data.checkerboard(longest * args.batch_size, seed=args.seed)
    data = data.view(longest, args.batch_size, 2)
    start = time.perf_counter()
    curves = {
        "ffjord": curve(
            "ffjord", data, test, args.ffjord_steps, args.eval_every, args.seed, args.lr
        ),
        "flow matching": curve(
            "rectified", data, test, args.fm_steps, args.eval_every / 10, args.seed, args.lr
        ),
    }
    target = min(pt["test_nll"] for pt in curves["ffjord"])
    reach = {name: first_reach(pts, target) for name, pts in curves.items()}
    speedup = (
        reach["ffjord"] / reach["flow matching"]
        if reach["ffjord"] and reach["flow matching"]
        else None
    )
    lines = [
        f"- target (FFJORD's best test NLL in {args.ffjord_steps} steps): {target:.4f} nats",
        *(
            f"- {name} reaches it after {sec:.1f} s of training" if sec else f"- {name}: never"
            for name, sec in reach.items()
        ),
        f"- speed-up of flow matching: {speedup:.1f}x" if speedup else "- speed-up: n/a",
        f"- best test NLL: FFJORD {target:.4f}, flow matching "
        f"{min(pt['test_nll'] for pt in curves['flow matching']):.4f}",
    ]
    print("\n".join(lines))
    figure = args.out.with_suffix(".png")
    plot(curves, target, figure)
    write_report(
        args.out,
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "network": {k: list(v) if isinstance(v, tuple) else v for k, v in NET.items()},
            "environment": environment({}, load_start),
            "total_wall_s": time.perf_counter() - start,
            "target_nll": target,
            "seconds_to_target": reach,
            "speedup": speedup,
            "curves": curves,
            "figure": figure.name,
            "markdown": "\n".join(lines),
        },
    )


if __name__ == "__main__":
    main()
