"""The 8x8 digits at equal wall clock: every flowforge family, flat and image-shaped, against zuko.

The check of the images issue: at equal training time (``--budgets 120,600`` seconds, measured
side by side in one run) flowforge's best model on the digits reaches a lower test bits/dim than
zuko's NSF on the flattened digits. This script

* runs ``flowforge compare --data digits --time-limit T`` (the digits as 64-D vectors) and
  ``flowforge compare --data digits --data-option image=true --time-limit T`` (as ``(1, 8, 8)``
  images) exactly as a user would, one model per call, every registered model on the vectors
  and every image-capable one on the images at the first budget, and the ``--top`` best of each
  at the later budgets (or ``--later-models``);
* trains zuko's ``NSF`` and ``MAF`` on the flattened digits with the *same* split and
  dequantised values (``flowforge.data.load("digits")``), the same per-pixel standardisation
  (its log-determinant counted), the same dequantisation of the training batches (redrawn per
  batch where flowforge's training loop redraws it), and the same bits/dim formula
  (``flowforge.metrics.bits_per_dim``, 17 levels): a plain Adam loop that validates every
  ``--zuko-eval-every`` steps, stops after ``--zuko-patience`` validations without improvement
  (flowforge's defaults: every 10 steps here, patience 20) or at the time limit, validation
  included, and keeps the best weights; its samples are scored by the same energy distance
  against the same test points and data-to-data floor as flowforge's report;
* with ``--guided`` (default on), runs ``flowforge compare --conditional --guidance-scales 1``
  on the image digits for the ``--guided-models`` and compares each model's label accuracy at
  w = 1 (a logistic classifier fit on the real training digits scores the samples) with that
  classifier's accuracy on the real test digits.

Jobs (one compare call or one zuko run each) run ``--jobs`` at a time, each with
``OMP_NUM_THREADS = cores // jobs`` (2 jobs on a 2-core machine: one core each, and every
library gets the same one core); the output says so. Timings on a shared machine are not
comparable; the load average is recorded.

Reproduce (zuko is a benchmark-only extra, see docs/benchmarks.md)::

    python benchmarks/images_vs_zuko.py                            # 120 s all, 600 s the top 3
    python benchmarks/images_vs_zuko.py --budgets 5 --models glow,nsf --zuko NSF \\
        --guided-models glow --out /tmp/images_vs_zuko_smoke.json  # a smoke test, ~2 min

Results: ``benchmarks/results/images_vs_zuko.json`` and ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

try:
    import zuko
except ImportError:
    sys.exit('zuko is not installed; install the benchmark extra: pip install -e ".[bench]"')

import flowforge as ff
from _common import environment, write_report

# The digits' grey levels (0..16) and their pixels per image: the bits/dim formula's L and D.
LEVELS = 17
DIM = 64
SHAPES = ("flat", "image")


def _redraws() -> bool:
    """Whether flowforge's training loop redraws the dequantisation noise of every batch (its
    ``train(..., levels=)`` argument); zuko's loop then does the same."""
    config = ff.train.TrainConfig()
    if hasattr(config, "dequantization"):
        return config.dequantization == "redraw"
    return "levels" in inspect.signature(ff.train.train).parameters


def _levels(x: torch.Tensor) -> torch.Tensor:
    # floor(L x) recovers the levels of dequantised values exactly (flowforge.data.quantize).
    return torch.floor(x.double() * LEVELS)


# --------------------------------------------------------------------------- zuko worker


def zuko_worker(args: argparse.Namespace) -> dict:
    """Train zuko's ``args.zuko_worker`` flow on the flat digits for ``args.budget`` seconds."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    kind, transforms, hidden = _zuko_spec(args.zuko_worker)
    seed, budget = args.seed, args.budget
    torch.manual_seed(seed)
    dataset = ff.data.load("digits")
    mean, std = ff.data.fit_standardization(dataset.train)
    log_std = float(torch.log(std).sum())
    redraw = {"auto": _redraws(), "redraw": True, "fixed": False}[args.zuko_dequantization]

    def z(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).float()

    train_levels = _levels(dataset.train)
    train, val, test = z(dataset.train), z(dataset.val), z(dataset.test)
    flow_cls = {"NSF": zuko.flows.NSF, "MAF": zuko.flows.MAF}[kind]
    flow = flow_cls(DIM, transforms=transforms, hidden_features=hidden)
    opt = torch.optim.Adam(flow.parameters(), lr=args.zuko_lr)
    g = torch.Generator().manual_seed(seed)
    batch = min(args.zuko_batch, train.shape[0])
    best, best_state, best_step, bad, step, stop = math.inf, None, 0, 0, 0, "time"

    def validate() -> bool:
        """The validation NLL of the current weights; keeps them if they are the best yet."""
        nonlocal best, best_state, best_step
        with torch.no_grad():
            v = -flow().log_prob(val).mean().item()
        if math.isfinite(v) and v < best:
            best, best_state, best_step = v, copy.deepcopy(flow.state_dict()), step
            return True
        return False

    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        step += 1
        idx = torch.randint(train.shape[0], (batch,), generator=g)
        if redraw:
            u = torch.rand(train_levels[idx].shape, generator=g, dtype=torch.float64)
            x = z(((train_levels[idx] + u) / LEVELS).float())
        else:
            x = train[idx]
        loss = -flow().log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.zuko_eval_every == 0:
            if validate():
                bad = 0
            else:
                bad += 1
                if bad >= args.zuko_patience:
                    stop = "early_stop"
                    break
    if step % args.zuko_eval_every != 0:
        validate()  # the last step, as flowforge's loop validates its last step
    train_seconds = time.perf_counter() - start
    if best_state is not None:
        flow.load_state_dict(best_state)
    with torch.no_grad():
        nll = -flow().log_prob(test).double() + log_std
        t0 = time.perf_counter()
        samples = flow().sample((args.samples,)).double() * std.double() + mean.double()
        sample_seconds = time.perf_counter() - t0
    mean_nll = nll.mean().item()
    distances = _distances(dataset, samples.float(), args.samples)
    params = sum(p.numel() for p in flow.parameters())
    return {
        "library": "zuko",
        "model": _zuko_name(args.zuko_worker),
        "kind": kind,
        "shape": "flat",
        "budget": budget,
        "seed": seed,
        "test_nll": mean_nll,
        "test_nll_stderr": (nll.std() / math.sqrt(len(nll))).item(),
        "bits_per_dim": ff.metrics.bits_per_dim(mean_nll, DIM, levels=LEVELS),
        "energy_distance": distances["energy_distance"],
        "energy_floor": distances["floor"],
        "steps": step,
        "best_step": best_step,
        "stop_reason": stop,
        "train_seconds": train_seconds,
        "sample_seconds": sample_seconds,
        "parameters": params,
        "training_noise": "redraw" if redraw else "fixed",
        "config": {
            "transforms": transforms,
            "hidden_features": list(hidden),
            "lr": args.zuko_lr,
            "batch_size": batch,
            "eval_every": args.zuko_eval_every,
            "patience": args.zuko_patience,
        },
    }


def _zuko_spec(spec: str) -> tuple[str, int, tuple[int, ...]]:
    """``NSF`` (zuko's defaults: 3 transforms, hidden (64, 64)) or ``NSF:5x256x256`` (5
    transforms, hidden (256, 256)): ``(kind, transforms, hidden)``."""
    kind, _, sizes = spec.partition(":")
    if kind not in ("NSF", "MAF"):
        raise SystemExit(f"--zuko: each entry must be NSF or MAF[:TxHxH...], got {spec!r}")
    if not sizes:
        return kind, 3, (64, 64)
    t, *hidden = (int(n) for n in sizes.split("x"))
    return kind, t, tuple(hidden)


def _zuko_name(spec: str) -> str:
    kind, t, hidden = _zuko_spec(spec)
    return f"zuko {kind} ({t}x{'x'.join(str(h) for h in hidden)})"


def _distances(dataset: ff.data.Dataset, samples: torch.Tensor, n: int) -> dict:
    """The energy distance of ``samples`` to the test digits and its data-to-data floor,
    computed as ``flowforge compare`` computes them (same subset, sizes and statistic)."""
    from flowforge.compare.evaluation import Evaluation, distance_reference

    evaluation = Evaluation(samples=n, exact_w2=False)
    reference = distance_reference(dataset, "test", evaluation)
    finite = torch.isfinite(samples).all(dim=1)
    d = ff.metrics.sample_distances(
        samples[finite][: reference["size"]],
        reference["target"],
        max_w2=reference["size"],
        unbiased=False,
        bandwidths=reference["bandwidths"],
        exact_w2=False,
        stderr=True,
    )
    return {"energy_distance": d["energy_distance"], "floor": reference["floor"]["energy_distance"]}


# --------------------------------------------------------------------------- jobs


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def compare_job(
    model: str, shape: str, budget: float, seed: int, out: Path, args: argparse.Namespace
) -> list[dict]:
    """``flowforge compare`` of one model on the flat or image digits; its result rows."""
    cmd = [sys.executable, "-m", "flowforge", "compare", "--data", "digits", "--models", model]
    if shape == "image":
        cmd += ["--data-option", "image=true"]
    cmd += ["--time-limit", f"{budget:g}", "--seed", str(seed), "--samples", str(args.samples)]
    cmd += ["--out", str(out), "--no-progress"]
    if args.guided_run:
        cmd += ["--conditional", "--guidance-scales", args.guidance_scales]
    cmd += args.compare_args
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    base = {"library": "flowforge", "model": f"flowforge {model}", "shape": shape}
    base.update(budget=budget, seed=seed, compare_seconds=seconds, report=str(out))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  FAILED: {' '.join(cmd)}\n    " + "\n    ".join(tail), flush=True)
        return [{**base, "error": "\n".join(tail), "command": cmd}]
    report = json.loads((out / "results.json").read_text())
    rows = []
    for r in report["results"]:
        row = {
            **base,
            "test_nll": r["nll_nats"],
            "test_nll_stderr": r["nll_stderr"],
            "bits_per_dim": r.get("bits_per_dim"),
            "energy_distance": (r.get("distances") or {}).get("energy_distance"),
            "energy_floor": (r.get("distance_floor") or {}).get("energy_distance"),
            "steps": r.get("steps"),
            "best_step": (r.get("weights") or {}).get("step"),
            "stop_reason": r.get("stop_reason"),
            "train_seconds": r.get("train_seconds"),
            "eval_seconds": r.get("eval_seconds"),
            "lr": (r.get("train") or {}).get("lr"),
            "training_noise": _training_noise(out / "runs" / r["model"] / "config.json"),
        }
        if args.guided_run:
            labels = report.get("labels") or {}
            row["real_test_accuracy"] = labels.get("test_accuracy")
            row["label_accuracy"] = {
                f"{g['guidance']:g}": g.get("label_accuracy") for g in r.get("guidance") or []
            }
        rows.append(row)
    return rows


def _training_noise(config_path: Path) -> str | None:
    """The run's dequantisation of its training batches, from its ``config.json``: "redraw",
    "fixed" (the setting absent: before the redraw existed), or None (no run config)."""
    if not config_path.exists():
        return None
    train = json.loads(config_path.read_text()).get("train") or {}
    return str(train.get("dequantization", "fixed"))


def zuko_job(spec: str, budget: float, seed: int, out: Path, args: argparse.Namespace) -> list:
    """One zuko run in its own process (so that ``OMP_NUM_THREADS`` applies to it alone)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--zuko-worker", spec]
    cmd += ["--budget", f"{budget:g}", "--seed", str(seed), "--worker-out", str(out)]
    for flag in ("zuko_lr", "zuko_batch", "zuko_eval_every"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    cmd += ["--zuko-patience", str(args.zuko_patience), "--samples", str(args.samples)]
    cmd += ["--zuko-dequantization", args.zuko_dequantization]
    proc = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  FAILED: zuko {spec}\n    " + "\n    ".join(tail), flush=True)
        row = {"library": "zuko", "model": _zuko_name(spec), "shape": "flat", "budget": budget}
        return [{**row, "seed": seed, "error": "\n".join(tail)}]
    return [json.loads(out.read_text())]


def run_jobs(jobs: list, n_parallel: int) -> list[dict]:
    """Run the ``(label, fn)`` jobs ``n_parallel`` at a time, in order; their rows."""
    rows: list[dict] = []

    def one(job: tuple) -> list[dict]:
        label, fn = job
        print(f"  start {label}", flush=True)
        result = fn()
        for r in result:
            if "error" not in r:
                print(
                    f"  done  {label}: {r['bits_per_dim']:.3f} bits/dim, {r['steps']} steps"
                    f" ({r['stop_reason']}; best @ {r['best_step']})",
                    flush=True,
                )
        return result

    with ThreadPoolExecutor(max_workers=n_parallel) as pool:
        for result in pool.map(one, jobs):
            rows.extend(result)
    return rows


def _top(rows: list[dict], shape: str, n: int) -> list[str]:
    ok = [r for r in rows if r["library"] == "flowforge" and r["shape"] == shape and _finite(r)]
    ok.sort(key=lambda r: r["bits_per_dim"])
    names = dict.fromkeys(r["model"].removeprefix("flowforge ") for r in ok)
    return list(names)[:n]


def _finite(r: dict) -> bool:
    return (
        "error" not in r and r.get("bits_per_dim") is not None and math.isfinite(r["bits_per_dim"])
    )


def _model_list(spec: str, shape: str) -> list[str]:
    every = ff.models.available() if shape == "flat" else ff.models.image_models()
    if spec == "all":
        return every
    names = [m for m in spec.split(",") if m]
    return [m for m in names if m in every]


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _markdown(runs: list[dict], summary: dict, guided: list[dict], header: str) -> str:
    lines = [header, ""]
    for budget, s in summary.items():
        lines += [f"### {budget} s of training per model", ""]
        lines += [
            "| model | shape | seed | test bits/dim | test NLL (nats) | energy dist. (× floor) |"
        ]
        lines[-1] += " steps | stopped by | best step |"
        lines += ["|---|---|---|---|---|---|---|---|---|"]
        mine = [r for r in runs if f"{r['budget']:g}" == budget and _finite(r)]
        for r in sorted(mine, key=lambda r: r["bits_per_dim"]):
            ed, floor = r.get("energy_distance"), r.get("energy_floor")
            ratio = f" ({ed / floor:.1f}×)" if ed is not None and floor else ""
            lines.append(
                f"| {r['model']} | {r['shape']} | {r['seed']} | {_fmt(r['bits_per_dim'])} | "
                f"{_fmt(r['test_nll'], 1)} ± {_fmt(r['test_nll_stderr'], 1)} | "
                f"{_fmt(ed, 4)}{ratio} | {r['steps']} | {r['stop_reason']} | {r['best_step']} |"
            )
        for r in runs:
            if f"{r['budget']:g}" == budget and not _finite(r):
                lines.append(
                    f"| {r['model']} | {r['shape']} | {r.get('seed')} | failed or non-finite "
                    "| | | | | |"
                )
        lines += [""]
        for key, text in (
            ("best_flowforge", "flowforge's best"),
            ("best_flowforge_image", "flowforge's best image-shaped model"),
            ("zuko_NSF", "zuko's best NSF"),
            ("zuko_MAF", "zuko's best MAF"),
        ):
            if s.get(key):
                lines.append(f"- {text}: {s[key][0]} at {_fmt(s[key][1])} bits/dim")
        for key in ("flowforge_best_below_zuko_nsf", "flowforge_best_image_below_zuko_nsf"):
            if key in s:
                lines.append(f"- check `{key}`: **{s[key]}**")
        lines += [""]
    if guided:
        lines += ["### Guided: label accuracy of class-conditional image models at w = 1", ""]
        lines += ["| model | budget (s) | label accuracy, w = 1 | real test digits | difference |"]
        lines += ["|---|---|---|---|---|"]
        for r in guided:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['budget']:g} | failed | | |")
                continue
            acc, real = (r.get("label_accuracy") or {}).get("1"), r.get("real_test_accuracy")
            diff = None if acc is None or real is None else acc - real
            lines.append(
                f"| {r['model']} | {r['budget']:g} | {_fmt(acc)} | {_fmt(real)} | {_fmt(diff)} |"
            )
        lines += [""]
    return "\n".join(lines) + "\n"


def _medians(rows: list[dict]) -> list[dict]:
    """One row per (model, shape): its median bits/dim over the seeds."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["shape"]), []).append(r["bits_per_dim"])
    return [
        {"model": m, "shape": shape, "bits_per_dim": statistics.median(v), "seeds": len(v)}
        for (m, shape), v in groups.items()
    ]


def _summary(runs: list[dict], budgets: list[float]) -> dict:
    """Per budget: the best flowforge model (any shape, and image-shaped), zuko's best NSF and
    MAF (over the sizes tried), by median bits/dim over seeds, and the issue's checks."""
    summary = {}
    for budget in budgets:
        mine = [r for r in runs if r["budget"] == budget and _finite(r)]
        ours = _medians([r for r in mine if r["library"] == "flowforge"])
        ours_image = [r for r in ours if r["shape"] == "image"]
        s: dict = {}
        if ours:
            b = min(ours, key=lambda r: r["bits_per_dim"])
            s["best_flowforge"] = [f"{b['model']} ({b['shape']})", b["bits_per_dim"]]
        if ours_image:
            b = min(ours_image, key=lambda r: r["bits_per_dim"])
            s["best_flowforge_image"] = [b["model"], b["bits_per_dim"]]
        for kind in ("NSF", "MAF"):
            # The best of every size of zuko's flow tried: the check is against the strongest.
            z = _medians([r for r in mine if r["library"] == "zuko" and r.get("kind") == kind])
            if z:
                best = min(z, key=lambda r: r["bits_per_dim"])
                s[f"zuko_{kind}"] = [best["model"], best["bits_per_dim"]]
        if s.get("zuko_NSF"):
            if s.get("best_flowforge"):
                s["flowforge_best_below_zuko_nsf"] = s["best_flowforge"][1] < s["zuko_NSF"][1]
            if s.get("best_flowforge_image"):
                s["flowforge_best_image_below_zuko_nsf"] = (
                    s["best_flowforge_image"][1] < s["zuko_NSF"][1]
                )
        summary[f"{budget:g}"] = s
    return summary


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budgets", default="120,600", help="training seconds per model, ascending")
    p.add_argument("--seeds", default="0", help="training seeds (the data are the same for all)")
    p.add_argument(
        "--models",
        default="all",
        help="flowforge models at the first budget (default all: every registered model on the "
        "vectors, every image-capable one on the images)",
    )
    p.add_argument("--shapes", default="flat,image", help="flat, image or both")
    p.add_argument(
        "--top",
        type=int,
        default=3,
        help="at the later budgets, the N best models of each shape at the first (default 3; "
        "0: the same models as the first)",
    )
    p.add_argument("--later-models", default=None, help="the later budgets' models (not --top)")
    p.add_argument(
        "--zuko",
        default="NSF,MAF,NSF:5x256x256",
        help="zuko flows: NSF or MAF (zuko's defaults: 3 transforms, hidden 64x64) or e.g. "
        "NSF:5x256x256 (5 transforms, hidden 256x256); '' for none",
    )
    p.add_argument("--zuko-lr", type=float, default=1e-3)
    p.add_argument("--zuko-batch", type=int, default=256)
    p.add_argument("--zuko-eval-every", type=int, default=10)
    p.add_argument("--zuko-patience", type=int, default=20)
    p.add_argument(
        "--zuko-dequantization",
        choices=("auto", "redraw", "fixed"),
        default="auto",
        help="the training batches' noise: auto (as flowforge's loop does it), redrawn per "
        "batch, or the dataset's fixed values",
    )
    p.add_argument("--samples", type=int, default=1000, help="samples per model (distances)")
    p.add_argument("--jobs", type=int, default=2, help="jobs at once (default 2)")
    p.add_argument(
        "--guided",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the conditional image models' label accuracy (default on)",
    )
    p.add_argument(
        "--guided-models",
        default="top:3",
        help="top:N (the N best image models at the first budget) or a list (default top:3)",
    )
    p.add_argument("--guided-budget", type=float, default=None, help="default: the first budget")
    p.add_argument("--guidance-scales", default="1", help="passed to compare (default 1)")
    p.add_argument("--keep", type=Path, default=None, help="keep the compare reports here")
    p.add_argument("--compare-args", nargs=argparse.REMAINDER, default=[])
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "images_vs_zuko.json"
    )
    # Internal: one zuko run (a job of the main process).
    p.add_argument("--zuko-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = _parser().parse_args()
    if args.zuko_worker:
        args.worker_out.write_text(json.dumps(zuko_worker(args)) + "\n")
        return
    budgets = sorted(float(b) for b in args.budgets.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    shapes = [s for s in args.shapes.split(",") if s]
    if any(s not in SHAPES for s in shapes):
        sys.exit(f"--shapes must name flat and/or image, got {args.shapes!r}")
    cores = os.cpu_count() or 1
    args.threads = max(1, cores // max(1, args.jobs))
    args.guided_run = False
    load_start = os.getloadavg()
    redraw = {"auto": _redraws(), "redraw": True, "fixed": False}[args.zuko_dequantization]
    note = (
        f"{args.jobs} jobs at once, OMP_NUM_THREADS={args.threads} each, on {cores} cores; "
        f"load average at the start {load_start[0]:.2f}; zuko's training noise: "
        f"{'redrawn every batch' if redraw else 'the fixed dequantised values'}"
    )
    print(note, flush=True)
    start = time.perf_counter()
    runs: list[dict] = []
    guided: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for i, budget in enumerate(budgets):
            jobs = []
            for shape in shapes:
                if i == 0 or args.top == 0:
                    names = _model_list(args.models, shape)
                elif args.later_models is not None:
                    names = _model_list(args.later_models, shape)
                else:
                    names = _top([r for r in runs if r["budget"] == budgets[0]], shape, args.top)
                for seed in seeds:
                    for m in names:
                        out = work / f"{shape}_{m}_{budget:g}s_seed{seed}"
                        jobs.append(
                            (
                                f"flowforge {m} ({shape}, {budget:g} s, seed {seed})",
                                lambda m=m, shape=shape, b=budget, s=seed, o=out: compare_job(
                                    m, shape, b, s, o, args
                                ),
                            )
                        )
            for seed in seeds:
                for spec in (k for k in args.zuko.split(",") if k):
                    tag = spec.replace(":", "_")
                    out = work / f"zuko_{tag}_{budget:g}s_seed{seed}.json"
                    jobs.append(
                        (
                            f"{_zuko_name(spec)} ({budget:g} s, seed {seed})",
                            lambda k=spec, b=budget, s=seed, o=out: zuko_job(k, b, s, o, args),
                        )
                    )
            print(f"\nbudget {budget:g} s: {len(jobs)} jobs", flush=True)
            runs.extend(run_jobs(jobs, args.jobs))
        if args.guided and "image" in shapes:
            budget = args.guided_budget or budgets[0]
            spec = args.guided_models
            if spec.startswith("top:"):
                names = _top([r for r in runs if r["budget"] == budgets[0]], "image", int(spec[4:]))
            else:
                names = _model_list(spec, "image")
            args.guided_run = True
            jobs = [
                (
                    f"guided flowforge {m} ({budget:g} s)",
                    lambda m=m: compare_job(
                        m, "image", budget, seeds[0], work / f"guided_{m}_{budget:g}s", args
                    ),
                )
                for m in names
            ]
            print(f"\nguided, {budget:g} s: {len(jobs)} jobs", flush=True)
            guided = run_jobs(jobs, args.jobs)
    summary = _summary(runs, budgets)
    seconds = time.perf_counter() - start
    noise = {
        lib: sorted({str(r.get("training_noise")) for r in runs if r.get("library") == lib})
        for lib in ("flowforge", "zuko")
    }
    header = (
        f"Digits, test bits/dim at equal wall clock ({args.budgets} s per model; seeds "
        f"{args.seeds}); {note}; the training batches' dequantisation noise: flowforge "
        f"{'/'.join(noise['flowforge']) or '-'}, zuko {'/'.join(noise['zuko']) or '-'}; "
        f"the whole run took {seconds / 60:.1f} min."
    )
    md = _markdown(runs, summary, guided, header)
    print("\n" + md)
    write_report(
        args.out,
        {
            "environment": environment({"zuko": zuko.__version__}, load_start),
            "parallel": note,
            "seconds": seconds,
            "runs": runs,
            "summary": summary,
            "guided": guided,
        },
    )
    args.out.with_suffix(".md").write_text(md)
    print(f"wrote {args.out.with_suffix('.md')}")
    print("reproduce: " + shlex.join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
