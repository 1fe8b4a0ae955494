"""Small tabular files: ``flowforge compare`` with its defaults against zuko with early stopping.

A user's CSV of a few hundred rows overfits within a hundred steps. This benchmark takes small
real tables that ship with scikit-learn (none of them is in this repository or used to choose
flowforge's defaults elsewhere), writes each as a CSV with a header, and:

* runs ``flowforge compare --data FILE.csv --out DIR`` exactly as a user would, with its
  defaults (every registered model), and reads each model's test NLL from ``results.json``;
* trains zuko's ``NSF`` and ``MAF`` on the *same* train/validation/test split (flowforge's own
  :func:`flowforge.data.load`: rows shuffled with seed 0, 80/10/10 %) and the same
  standardisation, in a plain Adam loop that validates every ``--zuko-eval-every`` steps, stops
  after ``--zuko-patience`` validations without improvement and keeps the best weights: the
  baseline a careful user writes by hand.

Test NLLs are in nats in the data's own units (the standardisation's log-determinant is
counted for zuko exactly as flowforge's ``Standardize`` counts it). The check from the issue:
every flowforge model's test NLL is finite and sane, and flowforge's best is no worse than
zuko's best.

The tables (columns, rows):

* ``wine`` (13, 178): chemical analysis of wines; several columns are integer-valued;
* ``breast_cancer`` (30, 569): cell-nucleus measurements;
* ``diabetes`` (10, 442): the raw (unscaled) diabetes table without its binary ``sex`` column
  (a two-valued column has no density; any flow would spike on it), plus the target.

Reproduce (zuko is a benchmark-only extra, see docs/benchmarks.md)::

    python benchmarks/small_tabular_vs_zuko.py                  # 3 tables x 3 seeds
    python benchmarks/small_tabular_vs_zuko.py --tables wine --seeds 0 --quick

Results: ``benchmarks/results/small_tabular_vs_zuko.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import zuko
except ImportError:
    sys.exit('zuko is not installed; install the benchmark extra: pip install -e ".[bench]"')

import flowforge as ff
from _common import environment, write_report


def _table(name: str) -> tuple[np.ndarray, list[str]]:
    from sklearn import datasets

    if name == "wine":
        d = datasets.load_wine()
        return d.data, [c.replace(" ", "_") for c in d.feature_names]
    if name == "breast_cancer":
        d = datasets.load_breast_cancer()
        return d.data, [c.replace(" ", "_") for c in d.feature_names]
    if name == "diabetes":
        d = datasets.load_diabetes(scaled=False)
        keep = [i for i, c in enumerate(d.feature_names) if c != "sex"]
        x = np.concatenate([d.data[:, keep], d.target[:, None]], axis=1)
        return x, [d.feature_names[i] for i in keep] + ["target"]
    raise ValueError(f"unknown table {name!r}; choose wine, breast_cancer or diabetes")


def write_csv(path: Path, x: np.ndarray, columns: list[str]) -> None:
    np.savetxt(path, x, delimiter=",", header=",".join(columns), comments="", fmt="%.10g")


def zuko_run(kind: str, dataset: ff.data.Dataset, seed: int, args: argparse.Namespace) -> dict:
    """Train zuko's ``kind`` flow with validation-based early stopping; test NLL in nats."""
    torch.manual_seed(seed)
    mean, std = ff.data.fit_standardization(dataset.train)
    log_std = float(torch.log(std).sum())

    def z(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).float()

    train, val, test = z(dataset.train), z(dataset.val), z(dataset.test)
    d = train.shape[1]
    flow_cls = {"NSF": zuko.flows.NSF, "MAF": zuko.flows.MAF}[kind]
    flow = flow_cls(d, transforms=args.zuko_transforms, hidden_features=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    batch = min(args.zuko_batch, train.shape[0])
    best, best_state, best_step, bad, step = math.inf, None, 0, 0, 0
    start = time.perf_counter()
    while step < args.zuko_max_steps:
        step += 1
        idx = torch.randint(train.shape[0], (batch,), generator=g)
        loss = -flow().log_prob(train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.zuko_eval_every == 0:
            with torch.no_grad():
                v = -flow().log_prob(val).mean().item()
            if math.isfinite(v) and v < best:
                best, best_state, best_step, bad = v, copy.deepcopy(flow.state_dict()), step, 0
            else:
                bad += 1
                if bad >= args.zuko_patience:
                    break
    if best_state is not None:
        flow.load_state_dict(best_state)
    with torch.no_grad():
        nll = -flow().log_prob(test).double() + log_std
    return {
        "model": f"zuko {kind}",
        "test_nll": nll.mean().item(),
        "test_nll_stderr": (nll.std() / math.sqrt(len(nll))).item(),
        "best_step": best_step,
        "steps": step,
        "seconds": time.perf_counter() - start,
    }


def flowforge_run(csv: Path, seed: int, out: Path, args: argparse.Namespace) -> list[dict]:
    """``flowforge compare`` with its defaults on ``csv``; one row per model."""
    cmd = [sys.executable, "-m", "flowforge", "compare", "--data", str(csv), "--out", str(out)]
    cmd += ["--seed", str(seed), "--no-progress", *args.compare_args]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())["results"]
    return [
        {
            "model": f"flowforge {r['model']}",
            "test_nll": r["nll_nats"],
            "test_nll_stderr": r["nll_stderr"],
            "best_step": (r.get("weights") or {}).get("step"),
            "steps": r.get("steps"),
            "stop_reason": r.get("stop_reason"),
            "compare_seconds": seconds,
        }
        for r in results
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tables", default="wine,breast_cancer,diabetes")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--zuko-transforms", type=int, default=3)
    p.add_argument("--zuko-batch", type=int, default=256)
    p.add_argument("--zuko-eval-every", type=int, default=50)
    p.add_argument("--zuko-patience", type=int, default=10)
    p.add_argument("--zuko-max-steps", type=int, default=5000)
    p.add_argument(
        "--compare-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="extra flags passed to flowforge compare (default: none, its defaults)",
    )
    p.add_argument("--quick", action="store_true", help="zuko at most 500 steps (smoke test)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "small_tabular_vs_zuko.json"
    )
    args = p.parse_args()
    if args.quick:
        args.zuko_max_steps = 500
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for table in args.tables.split(","):
            x, columns = _table(table)
            csv = Path(tmp) / f"{table}.csv"
            write_csv(csv, x, columns)
            for seed in (int(s) for s in args.seeds.split(",")):
                dataset = ff.data.load(str(csv), seed=seed)
                rows = [zuko_run(k, dataset, seed, args) for k in ("NSF", "MAF")]
                rows += flowforge_run(csv, seed, Path(tmp) / f"cmp_{table}_{seed}", args)
                for r in rows:
                    r.update(table=table, seed=seed, shape=list(x.shape))
                    print(f"{table} seed {seed}: {r['model']:22s} test NLL {r['test_nll']:.3f}")
                runs.extend(rows)
    summary = {}
    for table in args.tables.split(","):
        mine = [r for r in runs if r["table"] == table]
        models = dict.fromkeys(r["model"] for r in mine)
        med = {m: statistics.median(r["test_nll"] for r in mine if r["model"] == m) for m in models}
        ours = {m: v for m, v in med.items() if m.startswith("flowforge")}
        theirs = {m: v for m, v in med.items() if m.startswith("zuko")}
        best_ours, best_theirs = min(ours, key=ours.get), min(theirs, key=theirs.get)
        summary[table] = {
            "median_test_nll": med,
            "best_flowforge": [best_ours, ours[best_ours]],
            "best_zuko": [best_theirs, theirs[best_theirs]],
            "all_flowforge_finite": all(math.isfinite(v) for v in ours.values()),
            "flowforge_best_no_worse": ours[best_ours] <= theirs[best_theirs],
        }
        print(f"\n{table}: medians over seeds")
        for m, v in sorted(med.items(), key=lambda kv: kv[1]):
            print(f"  {m:24s} {v:10.3f}")
    write_report(
        args.out,
        {
            "environment": environment({"zuko": zuko.__version__}, load_start),
            "runs": runs,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
