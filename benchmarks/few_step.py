"""Few-step generation: reflow, distillation and MeanFlow against the peers, at NFE 1, 2 and 4.

On each of ``checkerboard``, ``8gaussians`` and ``moons`` (fresh training data per seed, a
fresh test set and a fresh reference set, both from seeds no training run uses), one run trains

* ``ff rectified`` — the 1-rectified flow (``ff.models.create("rectified")``);
* ``ff 2-rectified``, ``ff 3-rectified`` — its reflows (``ff.train.reflow``, warm-started,
  ``--pairs`` pairs solved by dopri5 per round); ``--rounds K`` (default 2) reflows K times;
* ``ff distilled`` — the one-step distillation of the last reflowed model
  (``reflow(..., distill=True)`` on its own fresh pairs);
* ``ff meanflow`` and ``ff otfm`` — the recipes, from scratch;
* ``torchcfm OT-CFM`` — ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)``;
* ``flow_matching CondOT`` — ``AffineProbPath(CondOTScheduler())``, independent pairs;
* ``rfp MeanFlow`` — rectified-flow-pytorch's ``MeanFlow`` (its defaults: logit-normal times,
  adaptive weight p = 0.5, half the batches flow matching), when the package is installed.
  Its ``Reflow`` is not run: it wraps the package's ``RectifiedFlow``, whose module imports
  torchvision, x_unet and accelerate at import (an image library), which ``--no-deps`` on the
  CPU torch does not give.

Every model has the same field (flowforge's TimeMLP, 3 x 256, SiLU, time concatenated; two
times for the MeanFlows), the same ``--steps`` steps of batch ``--batch-size`` on the same data
and the same trainer: flowforge's (AdamW at the recipes' lr 1e-2, linear warm-up + cosine,
gradient clip 5, EMA 0.999), through ``ff.train.train`` for flowforge's models and the same
settings in a plain loop for the peers. A reflowed model's budget includes its teacher's.

Measured: the energy distance between ``--samples`` samples (the same noise for every model)
and ``--samples`` fresh data at NFE 1, 2 and 4 (Euler for the flow-matching fields; the
mean-velocity sampler for the MeanFlows: flowforge's ``sample(n, steps=k)``, the peer's
``sample(steps=1)`` / ``slow_sample(steps=k)``); path straightness
(``ff.metrics.straightness``, RK4 16 steps, 2,048 noise points) of every flowforge model and
per reflow round; the exact test NLL (dopri5, exact divergence, ``--nll-points`` test points)
of flowforge's models.

Reproduce (``pip install --no-deps torchcfm flow_matching rectified-flow-pytorch einops``)::

    OMP_NUM_THREADS=1 python benchmarks/few_step.py             # ~8 min on one core
    OMP_NUM_THREADS=1 python benchmarks/few_step.py --quick     # smoke test, ~1 min
    OMP_NUM_THREADS=1 python benchmarks/few_step.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import flow_matching
    import torchcfm
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler as MetaCondOT
except ImportError:
    sys.exit("torchcfm and flow_matching are needed: pip install --no-deps torchcfm flow_matching")

import flowforge as ff
from _common import environment, write_report
from flowforge.dynamics import CNF

DATASETS: dict[str, Callable[..., Tensor]] = {
    "checkerboard": ff.data.checkerboard,
    "8gaussians": ff.data.eight_gaussians,
    "moons": ff.data.moons,
}
HIDDEN = (256, 256, 256)  # the recipes' default field
NFES = (1, 2, 4)
# Fresh seeds: the test and reference sets come from seeds no training run draws with.
TEST_SEED, REFERENCE_SEED = 20_251_201, 20_251_202
SAMPLE_SEED = 4242  # the noise every model's samples start from
STRAIGHT_POINTS, STRAIGHT_STEPS = 2048, 16  # as flowforge.train.rectify reports per round
LR = float(ff.models.recipe("rectified").train_defaults["lr"])  # the recipes' lr, 1e-2


def load_rfp_meanflow() -> Any:
    """rectified-flow-pytorch's ``MeanFlow`` class, or ``None``: its module needs only einops,
    but the package's ``__init__`` imports torchvision, so the module is loaded on its own."""
    try:
        spec = importlib.util.find_spec("rectified_flow_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    if "rectified_flow_pytorch" not in sys.modules:
        stub = types.ModuleType("rectified_flow_pytorch")
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules["rectified_flow_pytorch"] = stub
    try:
        return importlib.import_module("rectified_flow_pytorch.mean_flow").MeanFlow
    except ImportError as e:
        print(f"rectified-flow-pytorch MeanFlow unavailable: {e}")
        return None


RFPMeanFlow = load_rfp_meanflow()


def version_of(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def config(args: Any, seed: int) -> ff.train.TrainConfig:
    return ff.train.TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=LR,
        seed=seed,
        eval_every=10**9,  # no validation: the same budget as the peers' loop
        progress=False,
    )


def peer_train(net: nn.Module, loss_fn: Callable[[Tensor], Tensor], data: Tensor, args, seed):
    """The flowforge trainer's settings in a plain loop: AdamW, warm-up + cosine, clip, EMA;
    batches drawn without replacement from ``data`` per epoch (as ``ff.train.train``)."""
    cfg = config(args, seed)
    params = list(net.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = ff.train.EMA(net, cfg.ema_decay)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    at = 0
    for step in range(1, cfg.steps + 1):
        if at + cfg.batch_size > len(data):
            order, at = torch.randperm(len(data), generator=g), 0
        x1 = data[order[at : at + cfg.batch_size]]
        at += cfg.batch_size
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x1)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        ema.update(net)
    return ema.model.eval()


def field_net(times: int = 1) -> nn.Module:
    options = {"times": 2} if times == 2 else {}
    return ff.nets.TimeMLP(2, HIDDEN, time_embedding="concat", activation=nn.SiLU, **options)


class _RFPField(nn.Module):
    """rectified-flow-pytorch calls ``model(x, t, delta_t)``; the field is TimeMLP(times=2)."""

    def __init__(self):
        super().__init__()
        self.net = field_net(times=2)

    def forward(self, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
        return self.net(t, x, None, r=dt)


def energies(sample: Callable[[int, Tensor], Tensor], z: Tensor, reference: Tensor) -> dict:
    """Energy distance to ``reference`` at each NFE, every sampler from the same noise ``z``."""
    out = {}
    with torch.no_grad():
        for k in NFES:
            out[str(k)] = ff.metrics.energy_distance(sample(k, z), reference)
    return out


def ff_sampler(model: Any, mean: bool = False) -> Callable[[int, Tensor], Tensor]:
    def sample(k: int, z: Tensor) -> Tensor:
        if mean:  # the mean-velocity sampler: steps without a method
            return model.decode(z, steps=k)
        return model.decode(z, method="euler", steps=k)

    return sample


def cnf_sampler(net: nn.Module) -> Callable[[int, Tensor], Tensor]:
    cnf = CNF(net, ff.distributions.StandardNormal((2,))).eval()
    return lambda k, z: cnf.decode(z, method="euler", steps=k)


def rfp_sampler(mf: Any) -> Callable[[int, Tensor], Tensor]:
    # Its time runs from data (0) to noise (1): the same noise, its own sampler.
    def sample(k: int, z: Tensor) -> Tensor:
        return mf.sample(noise=z, batch_size=len(z)) if k == 1 else mf.slow_sample(k, noise=z)

    return sample


def run_dataset(name: str, seed: int, args: Any, index: int) -> dict[str, Any]:
    gen = DATASETS[name]
    data = gen(args.steps * args.batch_size, seed=1000 * seed + index)
    test = gen(args.nll_points, seed=TEST_SEED + index)
    reference = gen(args.samples, seed=REFERENCE_SEED + index)
    z = torch.randn(args.samples, 2, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    z_straight = torch.randn(
        STRAIGHT_POINTS, 2, generator=torch.Generator().manual_seed(SAMPLE_SEED + 1)
    )
    again = gen(args.samples, seed=REFERENCE_SEED + 10 + index)
    floor = ff.metrics.energy_distance(again, reference)
    rows: dict[str, dict[str, Any]] = {}
    cfg = config(args, seed)

    def record(label, sampler, budget, wall, model=None):
        row: dict[str, Any] = {"budget": budget, "train_wall_s": wall}
        row["energy"] = energies(sampler, z, reference)
        if model is not None:
            row["straightness"] = ff.metrics.straightness(model, z_straight, steps=STRAIGHT_STEPS)
            start = time.perf_counter()
            row["nll"] = ff.metrics.nll(model, test, **args.nll_solver).mean
            row["nll_wall_s"] = time.perf_counter() - start
        rows[label] = row
        e = row["energy"]
        extra = f"  NLL {row['nll']:.3f}  S {row['straightness']:.4f}" if model is not None else ""
        print(
            f"  [{name} seed {seed}] {label:22s} ED@1 {e['1']:.4f} @2 {e['2']:.4f} @4 {e['4']:.4f}"
            f"{extra}  ({budget}; {wall:.0f}s)",
            flush=True,
        )

    def ff_train(recipe: str):
        torch.manual_seed(seed)
        model = ff.models.create(recipe, dim=2)
        start = time.perf_counter()
        ff.train.train(model, data, cfg)
        return model.eval(), time.perf_counter() - start

    steps = args.steps
    # 1-rectified, its reflows and the distillation.
    m1, w1 = ff_train("rectified")
    record("ff rectified", ff_sampler(m1), f"{steps} steps", w1, m1)
    current, wall, budget_steps, budget_pairs = m1, w1, steps, 0
    rounds = []
    for r in range(1, args.rounds + 1):
        start = time.perf_counter()
        res = ff.train.reflow(
            current, pairs=args.pairs, config=cfg, seed=1000 * seed + 10 * index + r, progress=False
        )
        wall += time.perf_counter() - start
        budget_steps += steps
        budget_pairs += args.pairs
        rounds.append({**res.rounds[0].to_dict(), "round": r, "source": res.source_straightness})
        current = res.model.eval()
        record(
            f"ff {r + 1}-rectified",
            ff_sampler(current),
            f"{budget_steps} steps + {budget_pairs} pairs",
            wall,
            current,
        )
    start = time.perf_counter()
    res = ff.train.reflow(
        current,
        pairs=args.pairs,
        config=cfg,
        distill=True,
        seed=1000 * seed + 10 * index + 9,
        progress=False,
    )
    wall += time.perf_counter() - start
    distilled = {**res.rounds[0].to_dict(), "round": "distill"}
    rounds.append({**distilled, "source": res.source_straightness})
    record(
        "ff distilled",
        ff_sampler(res.model.eval()),
        f"{budget_steps + steps} steps + {budget_pairs + args.pairs} pairs",
        wall,
        res.model,
    )
    for recipe in ("meanflow", "otfm"):
        model, w = ff_train(recipe)
        sampler = ff_sampler(model, mean=recipe == "meanflow")
        record(f"ff {recipe}", sampler, f"{steps} steps", w, model)

    # The peers, on the same field, data, steps and trainer.
    torch.manual_seed(seed)
    net = field_net()
    matcher = torchcfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)

    def otcfm_loss(x1: Tensor) -> Tensor:
        t, xt, ut = matcher.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
        return (net(t, xt) - ut).square().mean()

    start = time.perf_counter()
    trained = peer_train(net, otcfm_loss, data, args, seed)
    record("torchcfm OT-CFM", cnf_sampler(trained), f"{steps} steps", time.perf_counter() - start)

    torch.manual_seed(seed)
    net = field_net()
    path = AffineProbPath(scheduler=MetaCondOT())

    def condot_loss(x1: Tensor) -> Tensor:
        s = path.sample(t=torch.rand(x1.shape[0]), x_0=torch.randn_like(x1), x_1=x1)
        return (net(s.t, s.x_t) - s.dx_t).square().mean()

    start = time.perf_counter()
    trained = peer_train(net, condot_loss, data, args, seed)
    record(
        "flow_matching CondOT", cnf_sampler(trained), f"{steps} steps", time.perf_counter() - start
    )

    if RFPMeanFlow is not None:
        torch.manual_seed(seed)
        mf = RFPMeanFlow(_RFPField(), data_shape=(2,))
        start = time.perf_counter()
        # EMA of the whole wrapper: the sampler then uses the averaged field.
        trained = peer_train(mf, lambda x1: mf(x1), data, args, seed)
        record("rfp MeanFlow", rfp_sampler(trained), f"{steps} steps", time.perf_counter() - start)
    return {"dataset": name, "seed": seed, "floor": floor, "rows": rows, "rounds": rounds}


def noise_level(name: str, n: int, draws: int = 5) -> float:
    """The standard deviation of the energy distance between ``n`` fresh data points and the
    reference set over ``draws`` draws: how far from 0 a perfect sampler lands."""
    gen, index = DATASETS[name], list(DATASETS).index(name)
    reference = gen(n, seed=REFERENCE_SEED + index)
    values = [
        ff.metrics.energy_distance(gen(n, seed=REFERENCE_SEED + 100 + 10 * d + index), reference)
        for d in range(draws)
    ]
    return statistics.stdev(values)


FF = ("ff rectified", "ff distilled", "ff meanflow", "ff otfm")


def summarize(runs: list[dict[str, Any]], args: Any) -> tuple[dict, str, list[str]]:
    """Medians over seeds per (dataset, model), the markdown table and the goals' verdicts."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name in DATASETS:
        mine = [r for r in runs if r["dataset"] == name]
        if not mine:
            continue
        table[name] = {}
        for label in mine[0]["rows"]:
            rows = [r["rows"][label] for r in mine]
            out: dict[str, Any] = {"budget": rows[0]["budget"]}
            out["train_wall_s"] = statistics.median(r["train_wall_s"] for r in rows)
            for k in map(str, NFES):
                out[f"ed@{k}"] = statistics.median(r["energy"][k] for r in rows)
            for key in ("nll", "straightness"):
                if key in rows[0]:
                    out[key] = statistics.median(r[key] for r in rows)
            table[name][label] = out
        table[name]["_floor"] = {"floor": statistics.median(r["floor"] for r in mine)}
    lines = [
        "| dataset | model | training budget | wall s | ED @1 | ED @2 | ED @4 | straightness"
        " | NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, models in table.items():
        for label, m in models.items():
            if label == "_floor":
                continue
            s = f"{m['straightness']:.4f}" if "straightness" in m else ""
            nll = f"{m['nll']:.3f}" if "nll" in m else ""
            lines.append(
                f"| {name} | {label} | {m['budget']} | {m['train_wall_s']:.0f} | "
                + " | ".join(f"{m[f'ed@{k}']:.4f}" for k in NFES)
                + f" | {s} | {nll} |"
            )
        floor = models["_floor"]["floor"]
        lines.append(f"| {name} | data vs data (floor) | | | {floor:.4f} | | | | |")
    verdicts = []
    for name, models in table.items():
        # The estimator's noise at these sizes: the spread of data-vs-data energy distances.
        noise = noise_level(name, args.samples)
        models["_floor"]["noise_sd"] = noise
        one, two = models["ff rectified"]["ed@1"], models["ff 2-rectified"]["ed@1"]
        ratio = one / max(two, noise)
        at_floor = " (2-rectified within the noise: ratio against the noise sd)" * (two <= noise)
        verdicts.append(
            f"{name}: 2-rectified ED@1 {two:.4f} vs 1-rectified {one:.4f}: "
            f"{'>= ' * (two <= noise)}{ratio:.0f}x lower{at_floor} "
            f"({'holds' if ratio >= 5 else 'fails'}, goal >= 5x)"
        )
        s = [models["ff rectified"]["straightness"]] + [
            models[f"ff {r + 1}-rectified"]["straightness"] for r in range(1, args.rounds + 1)
        ]
        falls = all(b < a for a, b in itertools.pairwise(s))
        verdicts.append(
            f"{name}: straightness by round {' -> '.join(f'{x:.4f}' for x in s)} "
            f"({'holds' if falls else 'fails'}: falls each round)"
        )
        ours = [*FF, *(f"ff {r + 1}-rectified" for r in range(1, args.rounds + 1))]
        peers = [m for m in models if m != "_floor" and not m.startswith("ff ")]
        best_ff = min((models[m][f"ed@{k}"], m, k) for m in ours for k in (1, 2))
        best_peer = min((models[m][f"ed@{k}"], m, k) for m in peers for k in (1, 2))
        gap = best_peer[0] - best_ff[0]
        verdict = (
            "holds" if gap > 2 * noise else "tie within 2 noise sd" if gap > -2 * noise else "fails"
        )
        verdicts.append(
            f"{name}: best at NFE<=2, flowforge {best_ff[1]} @{best_ff[2]} {best_ff[0]:.4f} vs "
            f"peers' {best_peer[1]} @{best_peer[2]} {best_peer[0]:.4f} ({verdict})"
        )
        mf, ot = models["ff meanflow"]["ed@1"], models["ff otfm"]["ed@4"]
        verdict = "holds" if mf <= ot else "within 2 noise sd" if mf <= ot + 2 * noise else "fails"
        verdicts.append(f"{name}: meanflow ED@1 {mf:.4f} vs otfm ED@4 {ot:.4f} ({verdict})")
    verdicts.append(
        "noise sd of the energy distance at these sizes (5 data-vs-data draws): "
        + ", ".join(f"{n} {m['_floor']['noise_sd']:.4f}" for n, m in table.items())
    )
    return table, "\n".join(lines), verdicts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="training steps of every model")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pairs", type=int, default=10_000, help="reflow / distillation pairs")
    p.add_argument("--rounds", type=int, default=2, help="reflow rounds (2: up to 3-rectified)")
    p.add_argument("--samples", type=int, default=5000, help="samples for the energy distance")
    p.add_argument("--nll-points", type=int, default=2000, help="test points of the NLL")
    p.add_argument(
        "--nll-solver",
        choices=("dopri5", "rk4"),
        default="dopri5",
        help="dopri5 (adaptive, the default tolerance) or rk4 with 32 steps",
    )
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default="0", help="training seeds, one run per dataset each")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--table",
        type=Path,
        default=None,
        help="recompute the summary, table and goals of a result file (rewritten in place)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 200 steps, 1,000 pairs")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.pairs, args.samples, args.nll_points = 200, 1000, 1000, 500
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.dataset_list if d not in DATASETS]
    if unknown or not args.seed_list or args.rounds < 1:
        p.error(f"--datasets of {', '.join(DATASETS)}, --seeds non-empty, --rounds >= 1")
    args.nll_solver_name = args.nll_solver
    args.nll_solver = {} if args.nll_solver == "dopri5" else {"method": "rk4", "steps": 32}
    if args.out is None:
        args.out = Path("benchmarks/results/few_step") / (
            "few_step_quick.json" if args.quick else "few_step.json"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.table:
        report = json.loads(args.table.read_text())
        for key in ("rounds", "samples"):
            setattr(args, key, report["config"][key])
        table, markdown, verdicts = summarize(report["runs"], args)
        print(markdown + "\n\n" + "\n".join(verdicts))
        report.update(summary=table, markdown=markdown, goals=verdicts)
        args.table.write_text(json.dumps(report, indent=2) + "\n")
        return
    load_start = os.getloadavg()
    peers = {
        "torchcfm": torchcfm.__version__,
        "flow_matching": flow_matching.__version__,
        "rectified-flow-pytorch": version_of("rectified-flow-pytorch")
        if RFPMeanFlow is not None
        else "not run",
    }
    print(
        f"torch {torch.__version__}, {peers}, {torch.get_num_threads()} threads; {args.steps} "
        f"steps x batch {args.batch_size}, {args.pairs} pairs, {args.rounds} reflow round(s), "
        f"seeds {args.seed_list}, NLL by {args.nll_solver_name}",
        flush=True,
    )
    start = time.perf_counter()
    runs = []
    for seed in args.seed_list:
        for name in args.dataset_list:
            runs.append(run_dataset(name, seed, args, list(DATASETS).index(name)))
    table, markdown, verdicts = summarize(runs, args)
    print()
    print(markdown)
    print()
    print("\n".join(verdicts))
    write_report(
        args.out,
        {
            "config": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "pairs": args.pairs,
                "rounds": args.rounds,
                "samples": args.samples,
                "nll_points": args.nll_points,
                "nll_solver": args.nll_solver_name,
                "seeds": args.seed_list,
                "datasets": args.dataset_list,
                "hidden": list(HIDDEN),
                "lr": LR,
                "quick": args.quick,
            },
            "environment": environment(peers, load_start),
            "total_wall_s": time.perf_counter() - start,
            "runs": runs,
            "summary": table,
            "markdown": markdown,
            "goals": verdicts,
        },
    )


if __name__ == "__main__":
    main()
