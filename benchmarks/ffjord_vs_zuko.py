"""Benchmark flowforge's ``ffjord`` against zuko's CNF on the 2-D checkerboard, same budget.

Both continuous flows get the same vector-field MLP (3 hidden layers of 64, tanh) and are
trained by maximum likelihood with Hutchinson's trace estimator (Rademacher probes for
flowforge, Gaussian for zuko, each library's own), adaptive Dormand–Prince at rtol = atol = 1e-5,
Adam (lr 1e-3), on the *same* pre-generated batches per seed, interleaved per seed so machine
noise hits both alike. The only difference in the network is how time enters: flowforge's
FFJORD concatenates ``t`` to the input, zuko appends ``cos/sin(k pi t)``, k = 1..3. Gradients:
flowforge backpropagates through the solver; zuko uses its adaptive checkpoint adjoint.

Measured per run:

* test NLL (nats) on a fresh test set with the *exact* divergence for both, under
  ``torch.no_grad()``; the floor is ln 32 = 3.466 nats;
* the median wall time of one training step (forward + backward + optimizer step), after 20
  warm-up steps, and the training wall time;
* how the cost grows as the dynamics are learned: per window of steps, the median step time and
  the mean number of function evaluations (NFE) of the forward solve and of the backward pass
  (zuko's adjoint re-evaluates the field; backpropagation does not), counted by a hook on each
  library's field network.

The acceptance bar (from the issue): flowforge's test NLL no worse than zuko's and its step not
slower.

Reproduce (zuko is a benchmark-only extra: ``pip install -e ".[bench]"``)::

    python benchmarks/ffjord_vs_zuko.py            # 3 seeds x 1,000 steps: ~25 min on 2 cores
    python benchmarks/ffjord_vs_zuko.py --quick    # smoke test: 60 steps, 1 seed
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
HIDDEN = (64, 64, 64)
TOL = 1e-5
WARMUP_STEPS = 20
TEST_SEED = 20_240_601
EVAL_CHUNK = 10_000
SAMPLE_SIZE = 10_000
TIMING_REPEATS = 3


class Counted:
    """Counts the calls of a network through a forward hook: the NFE of a solve."""

    def __init__(self, net: nn.Module):
        self.calls = 0
        net.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.calls += 1


class Zuko(nn.Module):
    """zuko's CNF behind the ``loss`` / ``log_prob`` / ``sample`` interface."""

    def __init__(self) -> None:
        super().__init__()
        self.flow = zuko.flows.CNF(
            2, hidden_features=HIDDEN, activation=nn.Tanh, exact=False, atol=TOL, rtol=TOL
        )
        self.counter = Counted(self.flow.transform.ode)

    def loss(self, x: Tensor) -> Tensor:
        self.flow.transform.exact = False
        return -self.flow().log_prob(x).mean()

    def log_prob(self, x: Tensor) -> Tensor:
        self.flow.transform.exact = True
        return self.flow().log_prob(x)

    def sample(self, n: int) -> Tensor:
        return self.flow().sample((n,))


class Flowforge(nn.Module):
    """flowforge's ``ffjord`` recipe with the benchmark's network and tolerances."""

    def __init__(self) -> None:
        super().__init__()
        self.model = ff.models.create(
            "ffjord", dim=2, hidden=HIDDEN, activation="tanh", rtol=TOL, atol=TOL
        )
        self.counter = Counted(self.model.field.field)

    def loss(self, x: Tensor) -> Tensor:
        return self.model.loss(x)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.model.log_prob(x)

    def sample(self, n: int) -> Tensor:
        return self.model.sample(n)


@torch.no_grad()
def test_nll(model: nn.Module, test: Tensor) -> float:
    total = 0.0
    for chunk in test.split(EVAL_CHUNK):
        total += model.log_prob(chunk).double().sum().item()
    return -total / len(test)


def train_and_evaluate(
    library: str, seed: int, batches: Tensor, test: Tensor, lr: float, window: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = Flowforge() if library == "flowforge" else Zuko()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = len(batches)
    times: list[float] = []
    nfe_fwd: list[int] = []
    nfe_bwd: list[int] = []
    losses: list[float] = []
    curve: list[dict[str, float]] = []
    wall = time.perf_counter()
    for step in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        c0 = model.counter.calls
        loss = model.loss(batches[step])
        c1 = model.counter.calls
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        nfe_fwd.append(c1 - c0)
        nfe_bwd.append(model.counter.calls - c1)
        losses.append(loss.item())
        if (step + 1) % window == 0 or step + 1 == steps:
            lo = step + 1 - window if (step + 1) % window == 0 else step + 1 - (step + 1) % window
            point = {
                "step": step + 1,
                "running_loss": statistics.fmean(losses[lo:]),
                "median_step_ms": 1e3 * statistics.median(times[lo:]),
                "nfe_forward": statistics.fmean(nfe_fwd[lo:]),
                "nfe_backward": statistics.fmean(nfe_bwd[lo:]),
            }
            curve.append(point)
            print(
                f"  {library:9s} seed {seed}  step {step + 1:5d}  loss {point['running_loss']:.4f}"
                f"  step {point['median_step_ms']:.0f} ms  NFE {point['nfe_forward']:.1f}"
                f" + {point['nfe_backward']:.1f}",
                flush=True,
            )
    train_wall = time.perf_counter() - wall
    model.eval()
    timed = times[WARMUP_STEPS:] if steps > WARMUP_STEPS else times
    c0 = model.counter.calls
    log_prob_s, nll = median_time(lambda: test_nll(model, test), TIMING_REPEATS)
    chunks = math.ceil(len(test) / EVAL_CHUNK)
    log_prob_nfe = (model.counter.calls - c0) / (TIMING_REPEATS * chunks)
    c0 = model.counter.calls
    with torch.no_grad():
        sample_s, samples = median_time(lambda: model.sample(SAMPLE_SIZE), TIMING_REPEATS)
    sample_nfe = (model.counter.calls - c0) / TIMING_REPEATS
    result = {
        "library": library,
        "seed": seed,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_nll": nll,
        "loss_finite": all(math.isfinite(v) for v in losses),
        "median_step_ms": 1e3 * statistics.median(timed),
        "train_wall_s": train_wall,
        "log_prob_ms": 1e3 * log_prob_s,
        "log_prob_nfe": log_prob_nfe,
        "sample_ms": 1e3 * sample_s,
        "sample_nfe": sample_nfe,
        "samples_finite": bool(torch.isfinite(samples).all()),
        "curve": curve,
    }
    print(
        f"  {library:9s} seed {seed}  test NLL {nll:.4f}  step {result['median_step_ms']:.1f} ms"
        f"  train {train_wall:.0f} s  log_prob {log_prob_s:.2f} s (NFE {log_prob_nfe:.0f})"
        f"  sample {sample_s:.2f} s (NFE {sample_nfe:.0f})",
        flush=True,
    )
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("test_nll", "median_step_ms", "train_wall_s", "log_prob_ms", "sample_ms")
    per_lib = {
        lib: {k: statistics.median(r[k] for r in runs if r["library"] == lib) for k in keys}
        for lib in LIBRARIES
    }
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["library"], r["seed"]): r for r in runs}
    ours, theirs = per_lib["flowforge"], per_lib["zuko"]
    growth = {
        lib: {
            "first_window": by[lib, seeds[0]]["curve"][0],
            "last_window": by[lib, seeds[0]]["curve"][-1],
        }
        for lib in LIBRARIES
    }
    return {
        "per_library": per_lib,
        "step_time_ratio": ours["median_step_ms"] / theirs["median_step_ms"],
        "step_time_ratio_per_seed": [
            by["flowforge", s]["median_step_ms"] / by["zuko", s]["median_step_ms"] for s in seeds
        ],
        "nll_difference": ours["test_nll"] - theirs["test_nll"],
        "nll_difference_per_seed": [
            by["flowforge", s]["test_nll"] - by["zuko", s]["test_nll"] for s in seeds
        ],
        "log_prob_time_ratio": ours["log_prob_ms"] / theirs["log_prob_ms"],
        "sample_time_ratio": ours["sample_ms"] / theirs["sample_ms"],
        "cost_growth_seed_0": growth,
        "entropy_floor": ff.data.CHECKERBOARD_ENTROPY,
        "flowforge_nll_not_worse": ours["test_nll"] <= theirs["test_nll"],
        "flowforge_step_not_slower": ours["median_step_ms"] <= theirs["median_step_ms"],
    }


def markdown_table(summary: dict[str, Any]) -> str:
    rows = [
        "| library | test NLL (nats) | step (ms) | train wall (s) | log_prob (ms)"
        " | sample 10k (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for lib, m in summary["per_library"].items():
        rows.append(
            f"| {lib} | {m['test_nll']:.4f} | {m['median_step_ms']:.1f} | {m['train_wall_s']:.0f}"
            f" | {m['log_prob_ms']:.0f} | {m['sample_ms']:.0f} |"
        )
    fmt = ", ".join
    rows += [
        "",
        f"- step time flowforge/zuko: {summary['step_time_ratio']:.3f} (per seed: "
        f"{fmt(f'{r:.3f}' for r in summary['step_time_ratio_per_seed'])})",
        f"- test NLL flowforge - zuko: {summary['nll_difference']:+.4f} nats (per seed: "
        f"{fmt(f'{d:+.4f}' for d in summary['nll_difference_per_seed'])}; floor ln 32 = "
        f"{summary['entropy_floor']:.4f})",
        f"- log_prob time flowforge/zuko: {summary['log_prob_time_ratio']:.3f}; sample time: "
        f"{summary['sample_time_ratio']:.3f}",
    ]
    for lib, g in summary["cost_growth_seed_0"].items():
        a, b = g["first_window"], g["last_window"]
        rows.append(
            f"- {lib} cost growth (seed 0): NFE forward {a['nfe_forward']:.1f} -> "
            f"{b['nfe_forward']:.1f}, backward {a['nfe_backward']:.1f} -> {b['nfe_backward']:.1f},"
            f" step {a['median_step_ms']:.0f} -> {b['median_step_ms']:.0f} ms"
        )
    rows += [
        f"- flowforge NLL not worse: {summary['flowforge_nll_not_worse']}; "
        f"step not slower: {summary['flowforge_step_not_slower']}",
    ]
    return "\n".join(rows)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """NFE per step and step time against training step, one line per library and seed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_nfe, ax_ms = fig.subplots(1, 2)
    for r in runs:
        steps = [p["step"] for p in r["curve"]]
        style = "-" if r["library"] == "flowforge" else "--"
        label = f"{r['library']} seed {r['seed']}"
        ax_nfe.plot(
            steps, [p["nfe_forward"] + p["nfe_backward"] for p in r["curve"]], style, label=label
        )
        ax_ms.plot(steps, [p["median_step_ms"] for p in r["curve"]], style, label=label)
    ax_nfe.set(title="NFE per training step (forward + backward)", xlabel="step", ylabel="NFE")
    ax_ms.set(title="wall time per training step", xlabel="step", ylabel="ms")
    for ax in (ax_nfe, ax_ms):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ff.viz.save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000, help="training steps per run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--test-size", type=int, default=20_000)
    p.add_argument("--window", type=int, default=100, help="steps per point of the cost curve")
    p.add_argument("--out", type=Path, default=None, help="JSON output")
    p.add_argument("--quick", action="store_true", help="smoke test: 60 steps, 1 seed")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.test_size, args.window = 60, "0", 2000, 20
    if args.out is None:
        name = "ffjord_vs_zuko_quick.json" if args.quick else "ffjord_vs_zuko.json"
        args.out = Path("benchmarks/results") / name
    if args.steps < 2 or args.batch_size < 1 or args.test_size < 1 or args.window < 1:
        p.error("--steps must be >= 2; --batch-size, --test-size and --window >= 1")
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.seed_list or TEST_SEED in args.seed_list:
        p.error(f"--seeds must name at least one seed other than {TEST_SEED}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    test, load_start = prepare(args, f"zuko {zuko.__version__}", TEST_SEED)
    start = time.perf_counter()
    runs = interleaved_runs(
        args.seed_list,
        args.steps,
        args.batch_size,
        LIBRARIES,
        lambda library, seed, batches: train_and_evaluate(
            library, seed, batches, test, args.lr, args.window
        ),
    )
    summary = summarize(runs)
    table = markdown_table(summary)
    print()
    print(table)
    figure = args.out.with_suffix(".png")
    plot(runs, figure)
    write_report(
        args.out,
        {
            "config": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "seeds": args.seed_list,
                "test_size": args.test_size,
                "test_seed": TEST_SEED,
                "hidden": list(HIDDEN),
                "rtol": TOL,
                "atol": TOL,
                "window": args.window,
                "quick": args.quick,
            },
            "environment": environment({"zuko": zuko.__version__}, load_start),
            "total_wall_s": time.perf_counter() - start,
            "figure": figure.name,
            "runs": runs,
            "summary": summary,
            "markdown": table,
        },
    )


if __name__ == "__main__":
    main()
