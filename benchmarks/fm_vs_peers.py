"""Benchmark flowforge's flow matching against torchcfm and Meta's flow_matching, same budget.

Trainings per seed on the 2-D checkerboard, all with the *same* vector-field network (an MLP of
``[x, t]``, 3 hidden layers of 256 by default, SiLU, built fresh after ``torch.manual_seed(seed)``),
the same pre-generated data batches and the same number of steps:

* ``flowforge fm`` — independent pairs, the linear path with sigma_min = 1e-4
  (``ff.models.create("fm")``), its recipe's time sampling;
* ``flowforge rectified`` — independent pairs, linear path (``"rectified"``);
* ``flowforge otfm`` — exact minibatch OT pairs, linear path (``"otfm"``);
* ``torchcfm I-CFM`` — ``ConditionalFlowMatcher(sigma=0)``;
* ``torchcfm OT-CFM`` — ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)``;
* ``flow_matching CondOT`` — ``AffineProbPath(CondOTScheduler())``, independent pairs.

Each library's own training step builds the regression target (noise draw, pairing, times, path);
the network, optimiser and batches are shared. Two trainers: ``--trainer plain`` (the default) is
the peers' plain recipe, Adam at a constant lr 1e-3 for every library; ``--trainer flowforge`` is
what ``flowforge train``/``compare`` do with a recipe: AdamW, linear warm-up and cosine decay
(:meth:`flowforge.train.TrainConfig.lr_at`), gradient clipping and an EMA of the weights
(:class:`flowforge.train.EMA`), at the recipe's training lr (1e-2) unless ``--lr`` says
otherwise. ``--ema``, ``--schedule`` and ``--clip`` override one part of either trainer;
``--stratified``/``--no-stratified`` override the recipes' time sampling.

Every trained field is then evaluated the same way, through flowforge's CNF machinery (so the
comparison is of what training learned): test NLL with the exact divergence under adaptive
dopri5 (rtol = atol = 1e-5; ``--euler-nll`` adds the few-step "NLLs") and sample quality, the
energy distance between ``--samples`` samples (the same noise for every model) and one fixed
reference set of fresh data, after fixed-step Euler solves of NFE 1, 2, 4, 8, 16, 32 and with
adaptive dopri5. The data-to-data energy distance at the same sizes is reported as the noise
floor. Also timed (``--no-timing`` skips it): the median training step, a round-robin step
timing, and log-likelihood evaluation of the same trained network by flowforge's ``log_prob`` and
by flow_matching's ``ODESolver.compute_likelihood`` (exact divergence, midpoint with 32 steps).

Reproduce (peers are a benchmark-only extra: ``pip install -e ".[bench]"``; torchcfm's and
flow_matching's training code needs only torch, numpy and POT, so
``pip install --no-deps torchcfm flow_matching`` keeps the CPU torch)::

    python benchmarks/fm_vs_peers.py             # 3 seeds x 6 trainings x 5,000 steps
    python benchmarks/fm_vs_peers.py --quick     # smoke test
    # the recipes as `flowforge train` trains them, on a 3x128 field:
    python benchmarks/fm_vs_peers.py --libraries fm,otfm --trainer flowforge --hidden 128,128,128
    # one table from several result files:
    python benchmarks/fm_vs_peers.py --table A.json B.json
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
    "flowforge fm",
    "flowforge rectified",
    "flowforge otfm",
    "torchcfm I-CFM",
    "torchcfm OT-CFM",
    "flow_matching CondOT",
)
# Short names for --libraries.
ALIASES = {
    "fm": "flowforge fm",
    "rectified": "flowforge rectified",
    "otfm": "flowforge otfm",
    "icfm": "torchcfm I-CFM",
    "otcfm": "torchcfm OT-CFM",
    "condot": "flow_matching CondOT",
}
HIDDEN = (256, 256, 256)
NFES = (1, 2, 4, 8, 16, 32)
TEST_SEED = 20_240_601
WARMUP_STEPS = 50
# The flowforge trainer's lr when --lr is not given: the flow-matching recipes' training default.
RECIPE_LR = float(ff.models.recipe("fm").train_defaults["lr"])


def network(hidden: tuple[int, ...]) -> nn.Module:
    """The shared field: an MLP of [x, t] (flowforge's TimeMLP with concatenated time)."""
    return ff.nets.TimeMLP(2, hidden, time_embedding="concat", activation=nn.SiLU)


class Trainer:
    """One library's flow-matching step around the shared network: ``loss(x1) -> scalar``."""

    def __init__(
        self,
        library: str,
        hidden: tuple[int, ...] = HIDDEN,
        stratified: bool | None = None,
    ):
        self.library = library
        if library.startswith("flowforge"):
            recipe = library.split()[1]
            options = {} if stratified is None else {"stratified": stratified}
            self.model = ff.models.create(
                recipe,
                dim=2,
                hidden=hidden,
                time_embedding="concat",
                activation="silu",
                **options,
            )
            self.net = self.model.field.field
        else:
            self.net = network(hidden)
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


def evaluate(
    net: nn.Module, test: Tensor, reference: Tensor, n_samples: int, euler_nll: bool
) -> dict[str, Any]:
    """Test NLL (exact divergence) and energy distance to ``reference`` at each NFE, through
    one CNF; the samples start from the same noise for every model (``torch.manual_seed(0)``)."""
    cnf = CNF(net, ff.distributions.StandardNormal((2,))).eval()
    out: dict[str, Any] = {}
    for nfe in (*NFES, "adaptive"):
        solver = {} if nfe == "adaptive" else {"method": "euler", "steps": nfe}
        row: dict[str, Any] = {}
        if euler_nll or nfe == "adaptive":
            row["nll"] = ff.metrics.nll(cnf, test, batch_size=10_000, **solver).mean
            row["nfe"] = cnf.last_nfe
        torch.manual_seed(0)
        with torch.no_grad():
            samples = cnf.sample(n_samples, **solver)
        row["energy"] = ff.metrics.energy_distance(samples, reference)
        row["nfe_sample"] = cnf.last_nfe
        out[str(nfe)] = row
    # How far the field at t = 0 is from the exact independent-pair field E[x1] - x = -x (the
    # checkerboard's mean is 0), per dimension: what NFE 1 of an independent-pair model tests.
    torch.manual_seed(0)
    x0 = torch.randn(n_samples, 2)
    with torch.no_grad():
        v0 = net(torch.zeros(n_samples), x0)
    out["field_error_t0"] = float((v0 + x0).square().mean())
    return out


def exact_field_energy(
    reference: Tensor, n_samples: int, n_data: int, nfes: tuple[int, ...]
) -> dict[str, float]:
    r"""Energy distance of Euler solves of the *exact* independent-pair marginal field.

    For the linear path :math:`x_t = t x_1 + (1 - t) x_0` with independent Gaussian noise,
    :math:`v(t, x) = (\mathbb E[x_1 \mid x_t = x] - x) / (1 - t)`, the posterior mean taken here
    by self-normalised weights :math:`\propto \mathcal N(x; t x_1, (1 - t)^2 I)` over ``n_data``
    fresh data points. The solve starts from the same noise as every model's
    (``torch.manual_seed(0)``): what a perfect field scores at each NFE, i.e. the Euler
    discretisation error alone."""
    data = ff.data.checkerboard(n_data, seed=TEST_SEED + 3)

    def field(t: float, x: Tensor) -> Tensor:
        out = torch.empty_like(x)
        for i in range(0, len(x), 500):  # rows per block: a (500, n_data) weight matrix
            xb = x[i : i + 500]
            w = torch.softmax(-torch.cdist(xb, t * data).square() / (2 * (1 - t) ** 2), dim=1)
            out[i : i + 500] = (w @ data - xb) / (1 - t)
        return out

    out = {}
    for nfe in nfes:
        torch.manual_seed(0)
        x = torch.randn(n_samples, 2)
        for k in range(nfe):
            x = x + field(k / nfe, x) / nfe
        out[str(nfe)] = ff.metrics.energy_distance(x, reference)
        print(f"  exact field, NFE {nfe}: energy distance {out[str(nfe)]:.4f}", flush=True)
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


def trainer_settings(args: Any) -> dict[str, Any]:
    """The optimiser settings every library of this run trains with."""
    defaults = ff.train.TrainConfig()
    if args.trainer == "flowforge":
        settings = {
            "optimizer": "adamw",
            "lr": RECIPE_LR,
            "weight_decay": defaults.weight_decay,
            "schedule": "cosine",
            "clip": defaults.grad_clip,
            "ema": defaults.ema_decay,
        }
    else:
        settings = {
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 0.0,
            "schedule": "constant",
            "clip": None,
            "ema": 0.0,
        }
    for key in ("lr", "schedule", "ema"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.clip is not None:
        settings["clip"] = args.clip if args.clip > 0 else None
    return settings


def train_and_evaluate(
    library: str,
    seed: int,
    batches: Tensor,
    test: Tensor,
    reference: Tensor,
    args: Any,
) -> dict[str, Any]:
    settings = args.settings
    torch.manual_seed(seed)
    trainer = Trainer(library, args.hidden, args.stratified)
    params = list(trainer.net.parameters())
    if settings["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(
            params, lr=settings["lr"], weight_decay=settings["weight_decay"]
        )
    else:
        optimizer = torch.optim.Adam(params, lr=settings["lr"])
    # The trainer's own warm-up + cosine schedule, over this run's steps.
    schedule = ff.train.TrainConfig(steps=len(batches), lr=settings["lr"])
    ema = ff.train.EMA(trainer.net, settings["ema"]) if settings["ema"] > 0 else None
    times = []
    wall = time.perf_counter()
    for step, x1 in enumerate(batches, start=1):
        start = time.perf_counter()
        if settings["schedule"] == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = trainer.loss(x1)
        loss.backward()
        if settings["clip"] is not None:
            nn.utils.clip_grad_norm_(params, settings["clip"])
        optimizer.step()
        if ema is not None:
            ema.update(trainer.net)
        times.append(time.perf_counter() - start)
    train_wall = time.perf_counter() - wall
    net = ema.model if ema is not None else trainer.net
    net.eval()
    scores = evaluate(net, test, reference, args.samples, args.euler_nll)
    result = {
        "library": library,
        "seed": seed,
        "steps": len(batches),
        "hidden": list(args.hidden),
        "settings": settings,
        "stratified": getattr(getattr(trainer, "model", None), "time_sampler", None)
        and trainer.model.time_sampler.stratified,
        "final_loss": loss.item(),
        "median_step_ms": 1e3 * statistics.median(times[WARMUP_STEPS:]),
        "train_wall_s": train_wall,
        "scores": scores,
    }
    if library == "flowforge rectified" and args.timing:
        result["likelihood_speed"] = likelihood_speed(net, test[: args.speed_points])
    nll = scores["adaptive"]["nll"]
    line = "  ".join(f"{k}: {scores[k]['energy']:.4f}" for k in KEYS)
    print(
        f"  {label(result):40s} seed {seed}  NLL {nll:.3f}  energy by NFE  {line}  "
        f"field error at t=0 {scores['field_error_t0']:.4f}",
        flush=True,
    )
    return result


def label(run: dict[str, Any]) -> str:
    """A row name: the library, its time sampling (flowforge) and how it was trained."""
    s = run["settings"]
    name = run["library"]
    if run.get("stratified") is not None:
        name += " strat" if run["stratified"] else " iid-t"
    parts = [f"{s['optimizer']} {s['lr']:g}", s["schedule"]]
    if s["ema"]:
        parts.append(f"EMA {s['ema']:g}")
    if s["clip"] is not None:
        parts.append(f"clip {s['clip']:g}")
    hidden = run.get("hidden")
    if hidden:  # e.g. 3x256: results of several field sizes stay apart in one table
        same = len(set(hidden)) == 1
        parts.insert(0, f"{len(hidden)}x{hidden[0]}" if same else "-".join(map(str, hidden)))
    return f"{name} ({', '.join(parts)})"


def step_timing(
    batch: Tensor, rounds: int, steps: int, lr: float, hidden: tuple[int, ...]
) -> dict[str, Any]:
    """Median training-step time per library, measured round-robin: ``rounds`` rounds, each
    timing ``steps`` steps of every library in turn (in a random order per round) on fresh
    models, so that slow spells of a shared machine and the order of the runs hit all libraries
    alike."""
    trainers = {}
    for lib in LIBRARIES:
        torch.manual_seed(0)
        trainer = Trainer(lib, hidden)
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


KEYS = [str(n) for n in (*NFES, "adaptive")]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over seeds per row (library + settings), for every NFE."""
    table: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(label(r) for r in runs):
        mine = [r for r in runs if label(r) == name]
        row: dict[str, Any] = {
            "library": mine[0]["library"],
            "seeds": [r["seed"] for r in mine],
            "median_step_ms": statistics.median(r["median_step_ms"] for r in mine),
        }
        for k in KEYS:
            for measure in ("nll", "energy"):
                values = [r["scores"][k][measure] for r in mine if measure in r["scores"][k]]
                if values:
                    row[f"{measure}@{k}"] = statistics.median(values)
                    row[f"{measure}@{k}/seeds"] = values
        errors = [r["scores"]["field_error_t0"] for r in mine if "field_error_t0" in r["scores"]]
        if errors:
            row["field_error_t0"] = statistics.median(errors)
        table[name] = row
    speed = [r["likelihood_speed"] for r in runs if "likelihood_speed" in r]
    return {
        "per_library": table,
        "likelihood_time_ratio_vs_flow_matching": statistics.median(
            s["flowforge_s"] / s["flow_matching_s"] for s in speed
        )
        if speed
        else None,
        "likelihood_speed": speed,
    }


def markdown_table(
    summary: dict[str, Any], floor: float | None = None, point_mass: float | None = None
) -> str:
    """Median test NLL (adaptive) and energy distance per NFE, one row per library + settings."""
    head = "| library (trainer) | NLL | " + " | ".join(f"ED @{k}" for k in KEYS)
    rows = [head + " | v(0) error |", "|---|---|" + "---|" * (len(KEYS) + 1)]
    for name, m in summary["per_library"].items():
        error = m.get("field_error_t0")
        independent = m["library"] not in ("flowforge otfm", "torchcfm OT-CFM")
        rows.append(
            f"| {name} | {m['nll@adaptive']:.3f} | "
            + " | ".join(f"{m[f'energy@{k}']:.4f}" for k in KEYS)
            + (f" | {error:.4f} |" if error is not None and independent else " | |")
        )
    exact = summary.get("exact_field")
    if exact:
        rows.append(
            "| exact independent-pair field (Monte Carlo) | | "
            + " | ".join(f"{exact[k]:.4f}" if k in exact else "" for k in KEYS)
            + " | 0 |"
        )
    if floor is not None:
        rows.append(f"\n- data-to-data energy distance at these sizes (the floor): {floor:.4f}")
    if point_mass is not None:
        rows.append(
            f"- a point mass at the data mean, the NFE-1 output of the exact independent-pair "
            f"field: {point_mass:.4f}"
        )
    if summary.get("likelihood_time_ratio_vs_flow_matching") is not None:
        rows.append(
            "- log-likelihood time (same field, midpoint 32 steps, exact divergence), "
            f"flowforge / flow_matching: {summary['likelihood_time_ratio_vs_flow_matching']:.3f}"
        )
    return "\n".join(rows)


def combined_table(paths: list[Path]) -> str:
    """One table from several result files (runs on the same seeds, data and reference set)."""
    import json

    runs, floors, configs, point_mass, exact = [], [], set(), None, None
    for path in paths:
        report = json.loads(path.read_text())
        for run in report["runs"]:
            run.setdefault("hidden", report["config"]["hidden"])
        runs += report["runs"]
        floors.append(report.get("energy_floor"))
        point_mass = report.get("energy_point_mass", point_mass)
        exact = report["summary"].get("exact_field") or exact
        c = report["config"]
        configs.add((c["steps"], c["batch_size"], tuple(c["hidden"]), c["samples"], c["test_size"]))
    if len({c[:2] + c[3:] for c in configs}) > 1:
        print(f"warning: the files differ in (steps, batch, hidden, samples, test): {configs}")
    floor = next((f for f in floors if f is not None), None)
    if point_mass is None:  # files written before it was recorded: the same reference set
        reference = ff.data.checkerboard(c["samples"], seed=TEST_SEED + 1)
        point_mass = ff.metrics.energy_distance(torch.zeros_like(reference), reference)
    summary = summarize(runs)
    summary["exact_field"] = exact
    return markdown_table(summary, floor, point_mass)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--libraries",
        default=",".join(ALIASES),
        help=f"comma-separated, of {', '.join(ALIASES)} (default: all), or none",
    )
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)), help="the field's hidden widths")
    p.add_argument(
        "--trainer",
        choices=("plain", "flowforge"),
        default="plain",
        help="plain: Adam, constant lr 1e-3 (the peers' recipe); flowforge: what `flowforge "
        f"train` does (AdamW, warm-up + cosine, clip, EMA, lr {RECIPE_LR:g})",
    )
    p.add_argument("--lr", type=float, default=None, help="override the trainer's lr")
    p.add_argument(
        "--schedule", choices=("constant", "cosine"), default=None, help="override the schedule"
    )
    p.add_argument("--ema", type=float, default=None, help="EMA decay (0: off); overrides")
    p.add_argument("--clip", type=float, default=None, help="gradient-norm clip (0: off)")
    p.add_argument(
        "--stratified",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stratified times for the flowforge recipes (default: the recipe's)",
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--samples", type=int, default=10_000, help="samples for the energy distance")
    p.add_argument("--euler-nll", action="store_true", help="also the NLL of each Euler solve")
    p.add_argument("--speed-points", type=int, default=5000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--timing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the step timings and the likelihood-speed comparison",
    )
    p.add_argument("--timing-rounds", type=int, default=10, help="round-robin step timing")
    p.add_argument("--timing-steps", type=int, default=100, help="steps per library per round")
    p.add_argument(
        "--timing-only",
        action="store_true",
        help="only the round-robin step timing (writes fm_vs_peers_timing.json)",
    )
    p.add_argument(
        "--exact-field",
        type=int,
        default=0,
        metavar="N",
        help="also Euler-solve the exact independent-pair field (posterior over N data points)",
    )
    p.add_argument("--exact-nfes", default="1,2,4,8", help="the NFEs of the exact-field solves")
    p.add_argument(
        "--table", type=Path, nargs="+", default=None, help="print one table from result files"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 200 steps, 1 seed")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.test_size, args.samples = 200, "0", 2000, 1000
        args.speed_points = 2000
        args.timing_rounds, args.timing_steps = 2, 20
    if args.out is None:
        name = "fm_vs_peers_timing" if args.timing_only else "fm_vs_peers"
        args.out = Path("benchmarks/results") / (
            f"{name}_quick.json" if args.quick else f"{name}.json"
        )
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.seed_list or TEST_SEED in args.seed_list or args.steps <= WARMUP_STEPS:
        p.error(f"need seeds other than {TEST_SEED} and more than {WARMUP_STEPS} steps")
    try:
        args.hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        p.error(f"--hidden must be comma-separated integers, got {args.hidden!r}")
    names = [n.strip() for n in args.libraries.split(",") if n.strip()]
    if names == ["none"]:  # only the exact field (--exact-field) and the reference figures
        names = []
    unknown = [n for n in names if n not in ALIASES]
    if unknown or (not names and not args.exact_field):
        p.error(f"--libraries must name some of {', '.join(ALIASES)}, got {args.libraries!r}")
    args.library_list = tuple(ALIASES[n] for n in names)
    args.settings = trainer_settings(args)
    try:
        args.exact_nfe_list = tuple(int(n) for n in args.exact_nfes.split(","))
    except ValueError:
        p.error(f"--exact-nfes must be comma-separated integers, got {args.exact_nfes!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        print(combined_table(args.table))
        return
    peers = f"torchcfm {torchcfm.__version__}, flow_matching {flow_matching.__version__}"
    test, load_start = prepare(args, peers, TEST_SEED)
    reference = ff.data.checkerboard(args.samples, seed=TEST_SEED + 1)
    floor = ff.metrics.energy_distance(
        ff.data.checkerboard(args.samples, seed=TEST_SEED + 2), reference
    )
    # With independent pairs the exact marginal field at t = 0 is E[x1] - x, so one Euler step
    # sends every noise point to the data mean (0 on the checkerboard): this is the NFE-1 energy
    # distance of a perfect field, and a lower NFE-1 value there means a less accurate field,
    # not better samples.
    point_mass = ff.metrics.energy_distance(torch.zeros_like(reference), reference)
    print(
        f"  settings {args.settings}; data-to-data energy distance {floor:.4f}; "
        f"point mass at the data mean {point_mass:.4f}",
        flush=True,
    )
    start = time.perf_counter()
    batch = ff.data.checkerboard(args.batch_size, seed=args.seed_list[0])
    peer_versions = {"torchcfm": torchcfm.__version__, "flow_matching": flow_matching.__version__}
    if args.timing_only:
        timing = step_timing(batch, args.timing_rounds, args.timing_steps, 1e-3, args.hidden)
        write_report(
            args.out,
            {
                "environment": environment(peer_versions, load_start),
                "total_wall_s": time.perf_counter() - start,
                "timing": timing,
            },
        )
        return
    exact = (
        exact_field_energy(reference, args.samples, args.exact_field, args.exact_nfe_list)
        if args.exact_field
        else None
    )
    runs = interleaved_runs(
        args.seed_list,
        args.steps,
        args.batch_size,
        args.library_list,
        lambda library, seed, batches: train_and_evaluate(
            library, seed, batches, test, reference, args
        ),
    )
    summary = summarize(runs)
    summary["exact_field"] = exact
    if args.timing:
        summary["round_robin_timing"] = step_timing(
            batch, args.timing_rounds, args.timing_steps, 1e-3, args.hidden
        )
    table = markdown_table(summary, floor, point_mass)
    print()
    print(table)
    write_report(
        args.out,
        {
            "config": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "libraries": list(args.library_list),
                "settings": args.settings,
                "stratified": args.stratified,
                "seeds": args.seed_list,
                "hidden": list(args.hidden),
                "test_size": args.test_size,
                "samples": args.samples,
                "nfes": list(NFES),
                "quick": args.quick,
            },
            "environment": environment(peer_versions, load_start),
            "total_wall_s": time.perf_counter() - start,
            "energy_floor": floor,
            "energy_point_mass": point_mass,
            "runs": runs,
            "summary": summary,
            "markdown": table,
        },
    )


if __name__ == "__main__":
    main()
