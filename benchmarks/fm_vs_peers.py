"""Benchmark flowforge's flow matching against torchcfm and Meta's flow_matching, same budget.

Five trainings per seed on the 2-D checkerboard, all with the *same* vector-field network (an MLP
of ``[x, t]``, 3 hidden layers of 256, SiLU, built fresh after ``torch.manual_seed(seed)``), the
same pre-generated data batches, Adam (lr 1e-3) and the same number of steps:

* ``flowforge rectified`` — independent pairs, linear path, stratified times
  (``ff.models.create("rectified")``);
* ``flowforge otfm`` — exact minibatch OT pairs, linear path, stratified times (``"otfm"``);
* ``torchcfm I-CFM`` — ``ConditionalFlowMatcher(sigma=0)``;
* ``torchcfm OT-CFM`` — ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)``;
* ``flow_matching CondOT`` — ``AffineProbPath(CondOTScheduler())``, independent pairs.

Each library's own training step builds the regression target (noise draw, pairing, times, path);
the network, optimiser and batches are shared. Every trained field is then evaluated the same way,
through flowforge's CNF machinery (so the comparison is of what training learned): test NLL with
the exact divergence and sample quality (energy distance to fresh data) after fixed-step Euler
solves of NFE 1, 2, 4, 8, 16, 32, and with adaptive dopri5 (rtol = atol = 1e-5). Also timed:
the median training step, and log-likelihood evaluation of the same trained network by
flowforge's ``log_prob`` and by flow_matching's ``ODESolver.compute_likelihood`` (exact
divergence, midpoint with 32 steps for both).

Reproduce (peers are a benchmark-only extra: ``pip install -e ".[bench]"``; torchcfm's and
flow_matching's training code needs only torch, numpy and POT, so
``pip install --no-deps torchcfm flow_matching`` keeps the CPU torch)::

    python benchmarks/fm_vs_peers.py             # 3 seeds x 5 trainings x 5,000 steps; ~20 min
    python benchmarks/fm_vs_peers.py --quick     # smoke test
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import flow_matching
    import torchcfm
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler as MetaCondOT
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper
except ImportError:
    sys.exit(
        "torchcfm and flow_matching are needed: pip install --no-deps torchcfm flow_matching "
        '(or pip install -e ".[bench]")'
    )

import flowforge as ff
from _common import environment, interleaved_runs, median_time, prepare, write_report
from flowforge.dynamics import CNF

LIBRARIES = (
    "flowforge rectified",
    "flowforge otfm",
    "torchcfm I-CFM",
    "torchcfm OT-CFM",
    "flow_matching CondOT",
)
HIDDEN = (256, 256, 256)
NFES = (1, 2, 4, 8, 16, 32)
TEST_SEED = 20_240_601
WARMUP_STEPS = 50


def network() -> nn.Module:
    """The shared field: an MLP of [x, t] (flowforge's TimeMLP with concatenated time)."""
    return ff.nets.TimeMLP(2, HIDDEN, time_embedding="concat", activation=nn.SiLU)


class Trainer:
    """One library's flow-matching step around the shared network: ``loss(x1) -> scalar``."""

    def __init__(self, library: str):
        self.library = library
        if library.startswith("flowforge"):
            recipe = library.split()[1]
            self.model = ff.models.create(
                recipe, dim=2, hidden=HIDDEN, time_embedding="concat", activation="silu"
            )
            self.net = self.model.field.field
        else:
            self.net = network()
            if library == "torchcfm I-CFM":
                self.matcher = torchcfm.ConditionalFlowMatcher(sigma=0.0)
            elif library == "torchcfm OT-CFM":
                self.matcher = torchcfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)
            else:
                self.path = AffineProbPath(scheduler=MetaCondOT())

    def loss(self, x1: Tensor) -> Tensor:
        if self.library.startswith("flowforge"):
            return self.model.loss(x1)
        x0 = torch.randn_like(x1)
        if self.library.startswith("torchcfm"):
            t, xt, ut = self.matcher.sample_location_and_conditional_flow(x0, x1)
            return (self.net(t, xt) - ut).square().mean()
        t = torch.rand(x1.shape[0])
        sample = self.path.sample(t=t, x_0=x0, x_1=x1)
        return (self.net(sample.t, sample.x_t) - sample.dx_t).square().mean()


class _MetaField(ModelWrapper):
    def forward(self, x: Tensor, t: Tensor, **extras) -> Tensor:
        return self.model(t, x)


def evaluate(net: nn.Module, test: Tensor, fresh: Tensor, n_samples: int) -> dict[str, Any]:
    """Test NLL (exact divergence) and energy distance at each NFE, through one CNF."""
    cnf = CNF(net, ff.distributions.StandardNormal((2,))).eval()
    out: dict[str, Any] = {}
    for nfe in (*NFES, "adaptive"):
        solver = {} if nfe == "adaptive" else {"method": "euler", "steps": nfe}
        nll = ff.metrics.nll(cnf, test, batch_size=10_000, **solver).mean
        nfe_nll = cnf.last_nfe
        torch.manual_seed(0)
        with torch.no_grad():
            samples = cnf.sample(n_samples, **solver)
        energy = ff.metrics.energy_distance(samples, fresh[:n_samples])
        out[str(nfe)] = {"nll": nll, "energy": energy, "nfe": nfe_nll, "nfe_sample": cnf.last_nfe}
    return out


def likelihood_speed(net: nn.Module, test: Tensor) -> dict[str, float]:
    """The same trained field's log-likelihood by flowforge and by flow_matching's solver:
    midpoint, 32 steps, exact divergence, same points."""
    cnf = CNF(net, ff.distributions.StandardNormal((2,))).eval()
    ours_s, ours = median_time(
        lambda: ff.metrics.nll(cnf, test, batch_size=len(test), method="midpoint", steps=32).mean,
        3,
    )
    solver = ODESolver(velocity_model=_MetaField(net))
    normal = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1
    )

    def theirs_nll() -> float:
        _, log_p = solver.compute_likelihood(
            x_1=test,
            log_p0=normal.log_prob,
            step_size=1 / 32,
            method="midpoint",
            exact_divergence=True,
        )
        return -log_p.mean().item()

    theirs_s, theirs = median_time(theirs_nll, 3)
    return {
        "flowforge_s": ours_s,
        "flow_matching_s": theirs_s,
        "flowforge_nll": ours,
        "flow_matching_nll": theirs,
    }


def train_and_evaluate(
    library: str, seed: int, batches: Tensor, test: Tensor, fresh: Tensor, args: Any
) -> dict[str, Any]:
    torch.manual_seed(seed)
    trainer = Trainer(library)
    optimizer = torch.optim.Adam(trainer.net.parameters(), lr=args.lr)
    times = []
    wall = time.perf_counter()
    for x1 in batches:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = trainer.loss(x1)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    train_wall = time.perf_counter() - wall
    trainer.net.eval()
    scores = evaluate(trainer.net, test, fresh, args.samples)
    result = {
        "library": library,
        "seed": seed,
        "steps": len(batches),
        "final_loss": loss.item(),
        "median_step_ms": 1e3 * statistics.median(times[WARMUP_STEPS:]),
        "train_wall_s": train_wall,
        "scores": scores,
    }
    if library == "flowforge rectified":
        result["likelihood_speed"] = likelihood_speed(trainer.net, test[: args.speed_points])
    line = "  ".join(f"{k}: {v['nll']:.3f}/{v['energy']:.4f}" for k, v in scores.items())
    print(
        f"  {library:21s} seed {seed}  step {result['median_step_ms']:.2f} ms  "
        f"NLL/energy by NFE  {line}",
        flush=True,
    )
    return result


def step_timing(batch: Tensor, rounds: int, steps: int, lr: float) -> dict[str, Any]:
    """Median training-step time per library, measured round-robin: ``rounds`` rounds, each
    timing ``steps`` steps of every library in turn (in a random order per round) on fresh
    models, so that slow spells of a shared machine and the order of the runs hit all libraries
    alike."""
    trainers = {}
    for lib in LIBRARIES:
        torch.manual_seed(0)
        trainer = Trainer(lib)
        trainers[lib] = (trainer, torch.optim.Adam(trainer.net.parameters(), lr=lr))
    times: dict[str, list[float]] = {lib: [] for lib in LIBRARIES}
    order = random.Random(0)
    for r in range(rounds + 1):  # round 0 warms up
        # A fresh order each round: no library always follows the same one.
        for lib in order.sample(LIBRARIES, len(LIBRARIES)):
            trainer, optimizer = trainers[lib]
            for _ in range(steps):
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                trainer.loss(batch).backward()
                optimizer.step()
                if r:
                    times[lib].append(time.perf_counter() - start)
    medians = {lib: 1e3 * statistics.median(t) for lib, t in times.items()}
    ratios = {
        "rectified / torchcfm I-CFM": medians["flowforge rectified"] / medians["torchcfm I-CFM"],
        "rectified / flow_matching CondOT": medians["flowforge rectified"]
        / medians["flow_matching CondOT"],
        "otfm / torchcfm OT-CFM": medians["flowforge otfm"] / medians["torchcfm OT-CFM"],
    }
    print(
        "  round-robin step medians (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
    )
    print("  ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()), flush=True)
    return {"rounds": rounds, "steps_per_round": steps, "median_step_ms": medians, "ratios": ratios}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [str(n) for n in (*NFES, "adaptive")]
    table = {}
    for lib in LIBRARIES:
        mine = [r for r in runs if r["library"] == lib]
        table[lib] = {
            "median_step_ms": statistics.median(r["median_step_ms"] for r in mine),
            **{f"nll@{k}": statistics.median(r["scores"][k]["nll"] for r in mine) for k in keys},
            **{
                f"energy@{k}": statistics.median(r["scores"][k]["energy"] for r in mine)
                for k in keys
            },
        }
    peers = [lib for lib in LIBRARIES if not lib.startswith("flowforge")]
    best_peer = {f"nll@{k}": min(table[p][f"nll@{k}"] for p in peers) for k in keys} | {
        f"energy@{k}": min(table[p][f"energy@{k}"] for p in peers) for k in keys
    }
    ours = ("flowforge rectified", "flowforge otfm")
    speed = [r["likelihood_speed"] for r in runs if "likelihood_speed" in r]
    return {
        "per_library": table,
        "best_peer": best_peer,
        "flowforge_best_matches_best_peer_nll": {
            k: min(table[o][f"nll@{k}"] for o in ours) <= best_peer[f"nll@{k}"] + 0.005
            for k in keys
        },
        "step_time_ratio_vs_fastest_peer": min(table[o]["median_step_ms"] for o in ours[:1])
        / min(table[p]["median_step_ms"] for p in peers if "OT" not in p),
        "ot_step_time_ratio_vs_torchcfm_ot": table["flowforge otfm"]["median_step_ms"]
        / table["torchcfm OT-CFM"]["median_step_ms"],
        "likelihood_time_ratio_vs_flow_matching": statistics.median(
            s["flowforge_s"] / s["flow_matching_s"] for s in speed
        )
        if speed
        else None,
        "likelihood_speed": speed,
    }


def markdown_table(summary: dict[str, Any]) -> str:
    keys = [str(n) for n in (*NFES, "adaptive")]
    head = "| library | step (ms) | " + " | ".join(f"NLL @{k}" for k in keys) + " |"
    rows = [head, "|---|---|" + "---|" * len(keys)]
    for lib, m in summary["per_library"].items():
        rows.append(
            f"| {lib} | {m['median_step_ms']:.2f} | "
            + " | ".join(f"{m[f'nll@{k}']:.3f}" for k in keys)
            + " |"
        )
    rows += ["", "| library | " + " | ".join(f"energy @{k}" for k in keys) + " |"]
    rows.append("|---|" + "---|" * len(keys))
    for lib, m in summary["per_library"].items():
        rows.append(f"| {lib} | " + " | ".join(f"{m[f'energy@{k}']:.4f}" for k in keys) + " |")
    ok = summary["flowforge_best_matches_best_peer_nll"]
    rows += [
        "",
        "- flowforge's best NLL within 0.005 nats of the best peer (or better), per NFE: "
        + ", ".join(f"{k}: {v}" for k, v in ok.items()),
        f"- step time, flowforge rectified / fastest independent-pair peer: "
        f"{summary['step_time_ratio_vs_fastest_peer']:.3f}",
        f"- step time, flowforge otfm / torchcfm OT-CFM: "
        f"{summary['ot_step_time_ratio_vs_torchcfm_ot']:.3f}",
    ]
    if summary["likelihood_time_ratio_vs_flow_matching"] is not None:
        rows.append(
            "- log-likelihood time (same field, midpoint 32 steps, exact divergence), "
            f"flowforge / flow_matching: {summary['likelihood_time_ratio_vs_flow_matching']:.3f}"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--samples", type=int, default=3000, help="samples for the energy distance")
    p.add_argument("--speed-points", type=int, default=5000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--timing-rounds", type=int, default=10, help="round-robin step timing")
    p.add_argument("--timing-steps", type=int, default=100, help="steps per library per round")
    p.add_argument(
        "--timing-only",
        action="store_true",
        help="only the round-robin step timing (writes fm_vs_peers_timing.json)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 200 steps, 1 seed")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.test_size, args.samples = 200, "0", 2000, 1000
        args.speed_points = 2000
    if args.quick:
        args.timing_rounds, args.timing_steps = 2, 20
    if args.out is None:
        name = "fm_vs_peers_timing" if args.timing_only else "fm_vs_peers"
        args.out = Path("benchmarks/results") / (
            f"{name}_quick.json" if args.quick else f"{name}.json"
        )
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.seed_list or TEST_SEED in args.seed_list or args.steps <= WARMUP_STEPS:
        p.error(f"need seeds other than {TEST_SEED} and more than {WARMUP_STEPS} steps")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    peers = f"torchcfm {torchcfm.__version__}, flow_matching {flow_matching.__version__}"
    test, load_start = prepare(args, peers, TEST_SEED)
    fresh = ff.data.checkerboard(args.samples, seed=TEST_SEED + 1)
    start = time.perf_counter()
    batch = ff.data.checkerboard(args.batch_size, seed=args.seed_list[0])
    if args.timing_only:
        timing = step_timing(batch, args.timing_rounds, args.timing_steps, args.lr)
        write_report(
            args.out,
            {
                "environment": environment(
                    {"torchcfm": torchcfm.__version__, "flow_matching": flow_matching.__version__},
                    load_start,
                ),
                "total_wall_s": time.perf_counter() - start,
                "timing": timing,
            },
        )
        return
    runs = interleaved_runs(
        args.seed_list,
        args.steps,
        args.batch_size,
        LIBRARIES,
        lambda library, seed, batches: train_and_evaluate(
            library, seed, batches, test, fresh, args
        ),
    )
    summary = summarize(runs)
    summary["round_robin_timing"] = step_timing(
        batch, args.timing_rounds, args.timing_steps, args.lr
    )
    table = markdown_table(summary)
    print()
    print(table)
    write_report(
        args.out,
        {
            "config": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "seeds": args.seed_list,
                "hidden": list(HIDDEN),
                "test_size": args.test_size,
                "samples": args.samples,
                "nfes": list(NFES),
                "quick": args.quick,
            },
            "environment": environment(
                {"torchcfm": torchcfm.__version__, "flow_matching": flow_matching.__version__},
                load_start,
            ),
            "total_wall_s": time.perf_counter() - start,
            "runs": runs,
            "summary": summary,
            "markdown": table,
        },
    )


if __name__ == "__main__":
    main()
