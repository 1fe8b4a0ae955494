"""Flow matching against FFJORD on the checkerboard: training wall time to reach a test NLL.

Both train the *same* vector-field network (flowforge's ``TimeMLP``: 3 hidden layers of 64,
tanh, time concatenated; FFJORD's output layer starts at zero, as its recipe does) with Adam on the
same data stream. FFJORD is trained by maximum likelihood (Hutchinson trace, dopri5 at 1e-5,
backpropagation through the solver; batch ``--ffjord-batch-size``), once for each learning rate
of ``--ffjord-lr`` (the faster run counts at each level), for
``--ffjord-steps``; flow matching (``rectified``: linear path, independent pairs, stratified times)
by regression for up to ``--fm-steps`` at its own learning rate and batch size (``--fm-lr``,
``--fm-batch-size``): a regression step costs one field evaluation, so a larger batch is nearly
free and buys a less noisy gradient. Each method's batch and learning rate are the best of a
small sweep (docs/benchmarks.md). Every ``--eval-every`` seconds of *training* time (evaluation
excluded from the clock; flow matching is evaluated ten times as often) both are scored on the
same held-out points with the exact log-density (dopri5 at 1e-5, exact divergence).

The result is the training time each method needs to first reach a test NLL, for the levels in
``--targets`` and for the best test NLL FFJORD reaches in its budget, and their ratios. The
curves (test NLL against training seconds) go to ``fm_vs_ffjord.png`` beside the JSON.

Reproduce::

    python benchmarks/fm_vs_ffjord.py            # about 15 minutes on 2 cores
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
    method: str,
    seed: int,
    test: Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: float,
) -> list[dict[str, float]]:
    """(training seconds, step, test NLL) points, the clock stopped while evaluating. The
    batches are consecutive slices of one stream drawn from ``seed``, whatever the batch size."""
    data = ff.data.checkerboard(steps * batch_size, seed=seed).view(steps, batch_size, 2)
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
    ax.axhline(target, color="gray", ls="--", label=f"FFJORD's best {target:.3f}")
    ax.axhline(ff.data.CHECKERBOARD_ENTROPY, color="black", ls=":", label="entropy (floor)")
    ax.set(xscale="log", xlabel="training wall time (s)", ylabel="test NLL (nats)")
    ax.set_ylim(ff.data.CHECKERBOARD_ENTROPY - 0.05, 4.6)
    ax.grid(alpha=0.3)
    ax.legend()
    ff.viz.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ffjord-steps", type=int, default=1500)
    p.add_argument("--ffjord-batch-size", type=int, default=256)
    p.add_argument(
        "--ffjord-lr",
        default="1e-3,3e-3",
        help="one FFJORD run per learning rate; the faster counts",
    )
    p.add_argument("--fm-steps", type=int, default=12_000)
    p.add_argument("--fm-batch-size", type=int, default=1024)
    p.add_argument("--fm-lr", type=float, default=5e-3)
    p.add_argument("--targets", default="3.9,3.8,3.75", help="test NLL levels to time")
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
    start = time.perf_counter()
    ffjord_lrs = [float(v) for v in args.ffjord_lr.split(",") if v.strip()]
    curves = {
        f"ffjord (lr {lr:g})": curve(
            "ffjord",
            args.seed,
            test,
            args.ffjord_steps,
            args.ffjord_batch_size,
            lr,
            args.eval_every,
        )
        for lr in ffjord_lrs
    }
    curves["flow matching"] = curve(
        "rectified",
        args.seed,
        test,
        args.fm_steps,
        args.fm_batch_size,
        args.fm_lr,
        args.eval_every / 10,
    )
    ffjord_names = [name for name in curves if name.startswith("ffjord")]
    best = {name: min(pt["test_nll"] for pt in pts) for name, pts in curves.items()}
    ffjord_best = min(best[name] for name in ffjord_names)
    levels = [float(v) for v in args.targets.split(",") if v.strip()] + [ffjord_best]
    rows = []
    for level in levels:
        reach = {name: first_reach(pts, level) for name, pts in curves.items()}
        # FFJORD's time is that of its faster learning rate at this level.
        times = [reach[name] for name in ffjord_names if reach[name] is not None]
        reach["ffjord"] = min(times) if times else None
        ratio = (
            reach["ffjord"] / reach["flow matching"]
            if reach["ffjord"] and reach["flow matching"]
            else None
        )
        rows.append({"test_nll": level, "seconds": reach, "speedup": ratio})
    cell = lambda sec: f"{sec:.1f} s" if sec else "not reached"  # noqa: E731
    lines = [
        "| test NLL | "
        + " | ".join(ffjord_names)
        + " | flow matching | speed-up (vs the faster FFJORD) |",
        "|---|" + "---|" * (len(ffjord_names) + 2),
        *(
            f"| {r['test_nll']:.3f}{' (FFJORD best)' if i == len(rows) - 1 else ''} | "
            + " | ".join(cell(r["seconds"][name]) for name in ffjord_names)
            + f" | {cell(r['seconds']['flow matching'])} | "
            + (f"{r['speedup']:.1f}x |" if r["speedup"] else "— |")
            for i, r in enumerate(rows)
        ),
        "",
        "- best test NLL: "
        + ", ".join(f"{name} {value:.4f}" for name, value in best.items())
        + f" (FFJORD {args.ffjord_steps} steps)",
    ]
    print("\n".join(lines))
    figure = args.out.with_suffix(".png")
    plot(curves, ffjord_best, figure)
    write_report(
        args.out,
        {
            "config": {k: v for k, v in vars(args).items() if k != "out"},
            "network": {k: list(v) if isinstance(v, tuple) else v for k, v in NET.items()},
            "environment": environment({}, load_start),
            "total_wall_s": time.perf_counter() - start,
            "targets": rows,
            "best": best,
            "curves": curves,
            "figure": figure.name,
            "markdown": "\n".join(lines),
        },
    )


if __name__ == "__main__":
    main()
