"""Benchmark flowforge's ``nsf`` model against zuko's NSF on the 2-D checkerboard, same budget.

Both flows get 5 spline transforms (8 bins, bound 5) with 2x128 hidden conditioners and are
trained with Adam (lr 1e-3) for 5,000 steps of batch 256 on the *same* pre-generated training
batches per seed; each library's model is built right after ``torch.manual_seed(seed)``. Runs are
interleaved per seed (flowforge seed 0, zuko seed 0, flowforge seed 1, ...) so that machine noise
hits both libraries alike.

Measured per run:

* test NLL (nats) on a fresh test set (100,000 points, a seed distinct from the training seeds),
  evaluated in chunks under ``torch.no_grad()``; the floor is ln 32 = 3.466 nats;
* the median wall time of one training step (forward + backward + optimizer step), timed with
  ``time.perf_counter`` after 50 warm-up steps, and the total training wall time;
* the median time of ``log_prob`` over the whole test set and of sampling 10,000 points.

The acceptance bar (from the issue): flowforge's test NLL <= 3.53 nats and its training step not
slower than zuko's.

Reproduce (zuko is a benchmark-only extra: ``pip install -e ".[bench]"``)::

    python benchmarks/nsf_vs_zuko.py            # full run, 3 seeds, several minutes on CPU
    python benchmarks/nsf_vs_zuko.py --quick    # smoke test: 200 steps, 1 seed

Raw per-seed numbers and the summary are written to ``benchmarks/results/nsf_vs_zuko.json``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import zuko
except ImportError:
    sys.exit('zuko is not installed; install the benchmark extra: pip install -e ".[bench]"')

import flowforge as ff
from _common import environment, interleaved_runs, median_time, prepare, write_report

LIBRARIES = ("flowforge", "zuko")
NLL_TARGET = 3.53
TRANSFORMS = 5
HIDDEN = (128, 128)
WARMUP_STEPS = 50
TEST_SEED = 20_240_601
EVAL_CHUNK = 10_000
SAMPLE_SIZE = 10_000
TIMING_REPEATS = 5
LOG_EVERY = 1000


class ZukoNSF(nn.Module):
    """zuko's NSF behind flowforge's ``loss`` / ``log_prob`` / ``sample`` interface."""

    def __init__(self) -> None:
        """Build ``zuko.flows.NSF`` with the benchmark's budget."""
        super().__init__()
        self.flow = zuko.flows.NSF(
            features=2, context=0, transforms=TRANSFORMS, hidden_features=HIDDEN
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x (B, 2)``, shape ``(B,)``."""
        return self.flow().log_prob(x)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood of the batch ``x``."""
        return -self.flow().log_prob(x).mean()

    def sample(self, n: int) -> Tensor:
        """``n`` samples, shape ``(n, 2)``."""
        return self.flow().sample((n,))


def build_model(library: str) -> nn.Module:
    """A fresh, untrained NSF of ``library`` with the benchmark's budget."""
    if library == "flowforge":
        return ff.models.create("nsf", dim=2, layers=TRANSFORMS, hidden=HIDDEN)
    if library == "zuko":
        return ZukoNSF()
    raise ValueError(f"unknown library {library!r}")


@torch.no_grad()
def test_nll(model: nn.Module, test: Tensor) -> float:
    """Mean negative log-likelihood of ``test``, in chunks of ``EVAL_CHUNK`` points."""
    total = 0.0
    for chunk in test.split(EVAL_CHUNK):
        total += model.log_prob(chunk).double().sum().item()
    return -total / len(test)


@torch.no_grad()
def draw(model: nn.Module, n: int) -> Tensor:
    """``n`` samples of ``model`` without autograd."""
    return model.sample(n)


def train_and_evaluate(
    library: str, seed: int, batches: Tensor, test: Tensor, lr: float
) -> dict[str, Any]:
    """Train one model on ``batches (steps, B, 2)``, then time and score it on ``test``."""
    torch.manual_seed(seed)
    model = build_model(library)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = len(batches)
    step_times: list[float] = []
    losses: list[float] = []
    curve: list[dict[str, float]] = []
    log_every = min(LOG_EVERY, steps)

    wall_start = time.perf_counter()
    for step in range(steps):
        x = batches[step]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            window = losses[-log_every:]
            running = sum(window) / len(window)
            curve.append({"step": step + 1, "running_loss": running})
            print(f"  {library:9s} seed {seed}  step {step + 1:5d}  running loss {running:.4f}")
            sys.stdout.flush()
    train_wall = time.perf_counter() - wall_start

    model.eval()
    timed = step_times[WARMUP_STEPS:] if steps > WARMUP_STEPS else step_times
    log_prob_s, nll = median_time(lambda: test_nll(model, test), TIMING_REPEATS)
    sample_s, samples = median_time(lambda: draw(model, SAMPLE_SIZE), TIMING_REPEATS)
    result = {
        "library": library,
        "seed": seed,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_nll": nll,
        "final_running_loss": curve[-1]["running_loss"],
        "loss_finite": all(math.isfinite(v) for v in losses),
        "median_step_ms": 1e3 * statistics.median(timed),
        "mean_step_ms": 1e3 * statistics.fmean(timed),
        "p10_step_ms": 1e3 * statistics.quantiles(timed, n=10)[0],
        "p90_step_ms": 1e3 * statistics.quantiles(timed, n=10)[-1],
        "warmup_s": sum(step_times[:WARMUP_STEPS]),
        "train_wall_s": train_wall,
        "log_prob_ms": 1e3 * log_prob_s,
        "sample_ms": 1e3 * sample_s,
        "samples_finite": bool(torch.isfinite(samples).all()),
        "curve": curve,
    }
    print(
        f"  {library:9s} seed {seed}  test NLL {nll:.4f}  step {result['median_step_ms']:.2f} ms"
        f"  train {train_wall:.1f} s  log_prob {result['log_prob_ms']:.0f} ms"
        f"  sample {result['sample_ms']:.1f} ms"
    )
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-library medians over seeds, flowforge/zuko ratios and the pass/fail verdicts."""
    keys = ("test_nll", "median_step_ms", "train_wall_s", "log_prob_ms", "sample_ms")
    per_lib = {
        lib: {k: statistics.median(r[k] for r in runs if r["library"] == lib) for k in keys}
        for lib in LIBRARIES
    }
    ours, theirs = per_lib["flowforge"], per_lib["zuko"]
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["library"], r["seed"]): r for r in runs}
    step_ratios = [
        by["flowforge", s]["median_step_ms"] / by["zuko", s]["median_step_ms"] for s in seeds
    ]
    return {
        "per_library": per_lib,
        "step_time_ratio": ours["median_step_ms"] / theirs["median_step_ms"],
        "step_time_ratio_per_seed": step_ratios,
        "sample_time_ratio": ours["sample_ms"] / theirs["sample_ms"],
        "log_prob_time_ratio": ours["log_prob_ms"] / theirs["log_prob_ms"],
        "nll_difference": ours["test_nll"] - theirs["test_nll"],
        "entropy_floor": ff.data.CHECKERBOARD_ENTROPY,
        "nll_target": NLL_TARGET,
        "flowforge_meets_nll_target": ours["test_nll"] <= NLL_TARGET,
        "flowforge_step_not_slower": ours["median_step_ms"] <= theirs["median_step_ms"],
    }


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (medians over seeds) with ratio lines below."""
    rows = [
        "| library | test NLL (nats) | step (ms) | train wall (s) | log_prob (ms)"
        " | sample 10k (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for lib, m in summary["per_library"].items():
        rows.append(
            f"| {lib} | {m['test_nll']:.4f} | {m['median_step_ms']:.2f} | {m['train_wall_s']:.1f}"
            f" | {m['log_prob_ms']:.1f} | {m['sample_ms']:.1f} |"
        )
    per_seed = ", ".join(f"{r:.3f}" for r in summary["step_time_ratio_per_seed"])
    rows += [
        "",
        f"- step time flowforge/zuko: {summary['step_time_ratio']:.3f} (per seed: {per_seed})",
        f"- sample time flowforge/zuko: {summary['sample_time_ratio']:.3f}",
        f"- log_prob time flowforge/zuko: {summary['log_prob_time_ratio']:.3f}",
        f"- test NLL flowforge - zuko: {summary['nll_difference']:+.4f} nats"
        f" (floor ln 32 = {summary['entropy_floor']:.4f})",
        f"- flowforge NLL <= {summary['nll_target']}: {summary['flowforge_meets_nll_target']}",
        f"- flowforge step not slower than zuko: {summary['flowforge_step_not_slower']}",
    ]
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides steps and seeds for a smoke test."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5000, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--test-size", type=int, default=100_000)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output (default benchmarks/results/nsf_vs_zuko.json, _quick with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 200 steps, 1 seed")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 200, "0"
    if args.out is None:
        name = "nsf_vs_zuko_quick.json" if args.quick else "nsf_vs_zuko.json"
        args.out = Path("benchmarks/results") / name
    if args.steps < 2 or args.batch_size < 1 or args.test_size < 1:
        p.error("--steps must be >= 2, --batch-size and --test-size >= 1")
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.seed_list:
        p.error("--seeds must name at least one seed")
    if TEST_SEED in args.seed_list:
        p.error(f"seed {TEST_SEED} is reserved for the test set")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON report."""
    args = parse_args(argv)
    test, load_start = prepare(args, f"zuko {zuko.__version__}", TEST_SEED)
    bench_start = time.perf_counter()
    runs = interleaved_runs(
        args.seed_list,
        args.steps,
        args.batch_size,
        LIBRARIES,
        lambda library, seed, batches: train_and_evaluate(library, seed, batches, test, args.lr),
    )
    summary = summarize(runs)
    table = markdown_table(summary)
    print()
    print(table)

    report = {
        "config": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seeds": args.seed_list,
            "test_size": args.test_size,
            "test_seed": TEST_SEED,
            "transforms": TRANSFORMS,
            "hidden": list(HIDDEN),
            "warmup_steps": WARMUP_STEPS,
            "sample_size": SAMPLE_SIZE,
            "timing_repeats": TIMING_REPEATS,
            "quick": args.quick,
        },
        "environment": environment({"zuko": zuko.__version__}, load_start),
        "total_wall_s": time.perf_counter() - bench_start,
        "runs": runs,
        "summary": summary,
        "markdown": table,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
