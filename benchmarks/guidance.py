"""Classifier-free guidance, measured: label accuracy of guided samples on 8gaussians and digits.

Two parts, each training class-conditional models with condition (label) dropout and sampling
them at several guidance scales ``w`` (``w = 0``: the unconditional model; ``w = 1``: the plain
conditional model; ``w > 1``: guided, ``v_w = v(t, x, null) + w (v(t, x, y) - v(t, x, null))``):

* **8gaussians**, the label being the mixture component. ``fm`` (``num_classes=8``,
  ``label_dropout=0.1``) is trained for ``--steps`` on standardised data, once per seed of
  ``--seeds``. For each ``w`` in ``--scales`` it draws ``--per-label`` samples for each label
  (default solver: dopri5, adaptive) and reports the fraction that land nearest the centre of
  their own component (centres at radius ``ff.data.EIGHT_GAUSSIANS_RADIUS``, angles
  ``k pi / 4``; the Bayes rate of the data itself is 0.998), the smallest such fraction over
  the labels, and the energy distance between each label's samples and that component's test
  points (averaged over labels). Unconditional samples (``context=model.null_label``) report
  how many of the eight components they cover (a component is covered when at least 2 % of
  the samples land nearest it; a perfect sampler puts 12.5 % at each). Medians over seeds.
  The checks of the issue: the fraction is >= 0.99 at every ``w >= 1``; it grows from
  ``w = 0`` to ``w = 1`` to ``w = 3``; the unconditional samples cover all eight components.

* **digits** (8x8, 17 levels, 1000 training images), the label being the digit.
  ``fm`` and ``otfm`` (``label_dropout=0.1``) and the discrete flow ``nsf`` (guidance is for
  continuous models, so ``w = 1`` only: it samples ``p(x | y)`` exactly) are trained on
  standardised pixels. The continuous models train ``--digits-steps`` and use the EMA of their
  weights (their validation NLL, an ODE solve with a 64-dimensional exact divergence, is too
  costly to early-stop on); ``nsf`` overfits the 1000 images within a few hundred steps, so it
  validates every ``--eval-every`` steps, stops after ``--patience`` validations without a
  better NLL (at most ``--nsf-steps``) and keeps the best weights (``--nsf-final``: the whole
  budget and its EMA weights instead). A multinomial logistic regression
  (:func:`flowforge.metrics.fit_classifier`) fit on the real training digits scores
  ``--digits-per-label`` samples per digit at each ``w`` in ``--digits-scales`` (rk4, 16
  steps), beside its accuracy on the real test digits. The Bayes classifier
  ``model.classify(x)``, ``log p(y | x)`` from the ``K`` conditional log-densities, is scored
  on the test digits: the whole test set for ``nsf`` (exact log-densities, one pass each), and
  for the continuous models in ``--bayes-models`` on the first ``--bayes-subset`` test digits
  only (each point costs ``K = 10`` ODE solves with the exact 64-dimensional divergence; rk4
  with ``--bayes-steps`` steps).

Reproduce::

    python benchmarks/guidance.py            # 4-7 minutes on one core
    python benchmarks/guidance.py --quick    # a 30-second smoke run (numbers meaningless)
    python benchmarks/guidance.py --parts digits --digits-models nsf --nsf-final  # no early stop

(the last written with ``--out benchmarks/results/guidance/nsf_final.json``).

Results: ``benchmarks/results/guidance/guidance.json`` (``guidance_quick.json`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import flowforge as ff
from _common import environment, write_report

COVERED = 0.02
"""A component is covered by unconditional samples when at least this fraction land nearest it
(a perfect sampler puts 1/8 = 0.125 there; 0.02 is well above the noise of 2000 samples)."""

MAX_ED_POINTS = 2000
"""Test points of one class used by the energy distance: its cost is quadratic in the points."""


def centres() -> Tensor:
    """The ``(8, 2)`` centres of 8gaussians: radius ``EIGHT_GAUSSIANS_RADIUS``, angles k pi / 4."""
    angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return ff.data.EIGHT_GAUSSIANS_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)


def nearest_component(x: Tensor) -> Tensor:
    """``(N,)`` the index of the centre nearest each point of ``x (N, 2)``."""
    return torch.cdist(x.double(), centres()).argmin(dim=1)


def conditional(name: str, dim: int, num_classes: int, train: Tensor) -> ff.Model:
    """``name`` built for ``num_classes`` labels (with label dropout where the family has it),
    wrapped to fit standardised data."""
    options: dict[str, Any] = {"dim": dim, "num_classes": num_classes}
    if name in ("ffjord", "fm", "rectified", "otfm", "sbfm"):
        options["label_dropout"] = 0.1
    inner = ff.models.create(name, **options)
    return ff.data.Standardize(inner, *ff.data.fit_standardization(train))


def fit(
    model: ff.Model, data: ff.data.Dataset, steps: int, seed: int, args: Any, validate: bool
) -> dict[str, Any]:
    """Train ``model`` on ``data``'s training split for ``steps``, then load the weights that
    sampling would use: with ``validate``, those of the best validation NLL (every
    ``--eval-every`` steps, stopping after ``--patience`` validations without a better one);
    otherwise the EMA of the weights at the end."""
    assert data.labels is not None
    config = ff.train.TrainConfig(
        steps=steps, batch_size=args.batch_size, lr=args.lr, seed=seed, progress=False,
        eval_every=args.eval_every if validate else 0, patience=args.patience if validate else None,
        checkpoint_every=0,
    )  # fmt: skip
    val = {"val_x": data.val, "val_context": data.labels["val"]} if validate else {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = ff.train.train(
            model, data.train, config, run_dir=tmp, train_context=data.labels["train"], **val
        )
        best = ff.train.checkpoint.load_best(Path(tmp)) if validate else None
        if best is not None:
            model.load_state_dict(best[0])
        else:
            weights, _ = ff.train.checkpoint.load_weights(Path(tmp))
            model.load_state_dict(ff.train.saving.split_weights(weights, "ema"))
    model.eval()
    return {
        "steps": result.steps,
        "weights": f"best @ {best[1]}" if best is not None else f"EMA @ {result.steps}",
        "best_val_nll": result.best_val_nll,
        "train_seconds": time.perf_counter() - start,
    }


# -- part (a): 8gaussians ------------------------------------------------------------------------
def eight_gaussians_run(seed: int, args: Any) -> dict[str, Any]:
    data = ff.data.load("8gaussians", seed=seed, n_train=args.n_train, n_val=2, n_test=20_000)
    y_test = data.labels["test"]
    torch.manual_seed(seed)
    model = conditional("fm", 2, 8, data.train)
    trained = fit(model, data, args.steps, seed, args, validate=False)
    by_class = [data.test[y_test == k][:MAX_ED_POINTS] for k in range(8)]
    labels = torch.arange(8).repeat_interleave(args.per_label)
    rows = []
    for w in args.scales:
        torch.manual_seed(10_000 + seed)
        x = model.sample(len(labels), context=labels, guidance=w)
        hit = nearest_component(x) == labels
        per_label = [float(hit[labels == k].double().mean()) for k in range(8)]
        energy = [
            ff.metrics.energy_distance(x[labels == k], by_class[k]) for k in range(8)
        ]  # fmt: skip
        rows.append(
            {
                "guidance": w,
                "accuracy": float(hit.double().mean()),
                "min_label_accuracy": min(per_label),
                "energy_distance": statistics.mean(energy),
                # How guidance distorts a class: its spread (the standard deviation of its
                # samples per axis; the data's: EIGHT_GAUSSIANS_STD) and how far outward from
                # the circle it sits on average.
                "spread": statistics.mean(
                    float(x[labels == k].std(dim=0).mean()) for k in range(8)
                ),
                "radial_offset": float(x.norm(dim=1).mean() - ff.data.EIGHT_GAUSSIANS_RADIUS),
            }
        )
    torch.manual_seed(20_000 + seed)
    x = model.sample(8 * args.per_label, context=model.null_label)
    share = torch.bincount(nearest_component(x), minlength=8).double() / len(x)
    unconditional = {
        "share_per_component": share.tolist(),
        "covered": int((share >= COVERED).sum()),
        "energy_distance": ff.metrics.energy_distance(x, data.test[: 4 * MAX_ED_POINTS]),
    }
    # The data's own rate: the fraction of test points nearest their own component.
    bayes = float((nearest_component(data.test) == y_test).double().mean())
    return {
        "seed": seed,
        "train_seconds": trained["train_seconds"],
        "scales": rows,
        "unconditional": unconditional,
        "data_accuracy": bayes,
    }


def eight_gaussians_summary(runs: list[dict[str, Any]], scales: list[float]) -> dict[str, Any]:
    def med(key: str, i: int) -> float:
        return statistics.median(r["scales"][i][key] for r in runs)

    table = [
        {
            "guidance": w,
            "accuracy": med("accuracy", i),
            "min_label_accuracy": med("min_label_accuracy", i),
            "energy_distance": med("energy_distance", i),
            "spread": med("spread", i),
            "radial_offset": med("radial_offset", i),
        }
        for i, w in enumerate(scales)
    ]
    acc = {row["guidance"]: row["accuracy"] for row in table}
    covered = statistics.median(r["unconditional"]["covered"] for r in runs)
    checks: dict[str, Any] = {
        "accuracy_at_least_0.99_for_w_ge_1": all(a >= 0.99 for w, a in acc.items() if w >= 1),
        "unconditional_covers_all_8": all(r["unconditional"]["covered"] == 8 for r in runs),
    }
    if {0.0, 1.0, 3.0} <= set(acc):
        checks["grows_w0_w1_w3"] = acc[0.0] < acc[1.0] <= acc[3.0]
    return {
        "table": table,
        "unconditional_covered_median": covered,
        "unconditional_energy_distance_median": statistics.median(
            r["unconditional"]["energy_distance"] for r in runs
        ),
        "data_accuracy_median": statistics.median(r["data_accuracy"] for r in runs),
        "checks": checks,
    }


# -- part (b): digits ----------------------------------------------------------------------------
def nearest_train(x: Tensor, train: Tensor) -> float:
    """The median over ``x (N, D)`` of the Euclidean distance to the nearest training point."""
    return float(torch.cdist(x.double(), train.double()).min(dim=1).values.median())


def digits_run(seed: int, args: Any) -> dict[str, Any]:
    data = ff.data.load("digits", seed=seed)
    y_train, y_test = data.labels["train"], data.labels["test"]
    classifier = ff.metrics.fit_classifier(data.train, y_train, kind="logistic", seed=seed)
    real = classifier.accuracy(data.test, y_test)
    labels = torch.arange(10).repeat_interleave(args.digits_per_label)
    solver = {"method": "rk4", "steps": args.digits_solver_steps}
    out: dict[str, Any] = {
        "seed": seed,
        "classifier_test_accuracy": real,
        "classifier_train_accuracy": classifier.train_accuracy,
        # How far real unseen digits lie from the training set: samples much nearer than this
        # are copies of training digits (which the classifier has fit, at train accuracy).
        "test_nearest_train_median": nearest_train(data.test, data.train),
        "models": {},
    }
    print(f"digits seed {seed}: logistic regression, real test digits: {real:.3f}", flush=True)
    for name in args.digits_models:
        torch.manual_seed(seed)
        model = conditional(name, 64, 10, data.train)
        continuous = bool(model.solver_keys)
        steps = args.digits_steps if continuous else args.nsf_steps
        trained = fit(model, data, steps, seed, args, validate=not (continuous or args.nsf_final))
        rows = []
        for w in args.digits_scales if continuous else [1.0]:
            torch.manual_seed(10_000 + seed)
            options = {**solver, "guidance": w} if continuous else {}
            x = model.sample(len(labels), context=labels, **options)
            finite = bool(torch.isfinite(x).all())
            acc = ff.metrics.label_accuracy(classifier, x, labels) if finite else math.nan
            per = classifier.class_accuracies(x, labels) if finite else (math.nan,) * 10
            row = {"guidance": w, "label_accuracy": acc, "min_class_accuracy": min(per)}
            if finite:
                row["energy_distance"] = ff.metrics.energy_distance(x, data.test)
                row["nearest_train_median"] = nearest_train(x, data.train)
            rows.append(row)
            print(
                f"  {name:9s} w={w:g}: label accuracy {acc:.3f}, energy distance "
                f"{row.get('energy_distance', math.nan):.4f}, nearest training digit "
                f"{row.get('nearest_train_median', math.nan):.3f}",
                flush=True,
            )
        entry: dict[str, Any] = {**trained, "step_budget": steps, "scales": rows}
        if not continuous or name in args.bayes_models:
            n = len(data.test) if not continuous else min(args.bayes_subset, len(data.test))
            bayes_solver = {} if not continuous else {"method": "rk4", "steps": args.bayes_steps}
            start = time.perf_counter()
            with torch.no_grad() if not continuous else torch.enable_grad():
                log_post = model.classify(data.test[:n], **bayes_solver).detach()
            bayes = float((log_post.argmax(dim=1) == y_test[:n]).double().mean())
            entry["bayes"] = {
                "test_points": n,
                "accuracy": bayes,
                "logistic_accuracy_same_points": classifier.accuracy(data.test[:n], y_test[:n]),
                "seconds": time.perf_counter() - start,
                "solver": bayes_solver,
            }
            print(f"  {name:9s} Bayes classifier on {n} test digits: {bayes:.3f}", flush=True)
        out["models"][name] = entry
    return out


def digits_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "classifier_test_accuracy": statistics.median(r["classifier_test_accuracy"] for r in runs),
        "test_nearest_train_median": statistics.median(
            r["test_nearest_train_median"] for r in runs
        ),
    }
    for name in runs[0]["models"]:
        entries = [r["models"][name] for r in runs]
        scales = [row["guidance"] for row in entries[0]["scales"]]
        acc = {
            w: statistics.median(e["scales"][i]["label_accuracy"] for e in entries)
            for i, w in enumerate(scales)
        }
        model: dict[str, Any] = {"label_accuracy": acc, "best_scale": max(acc, key=acc.get)}
        for key in ("energy_distance", "nearest_train_median"):
            model[key] = {
                w: statistics.median(e["scales"][i].get(key, math.nan) for e in entries)
                for i, w in enumerate(scales)
            }
        if "bayes" in entries[0]:
            model["bayes_accuracy"] = statistics.median(e["bayes"]["accuracy"] for e in entries)
            model["bayes_test_points"] = entries[0]["bayes"]["test_points"]
            model["logistic_accuracy_same_points"] = statistics.median(
                e["bayes"]["logistic_accuracy_same_points"] for e in entries
            )
        summary[name] = model
    return summary


# -- report --------------------------------------------------------------------------------------
def markdown(a: dict[str, Any] | None, b: dict[str, Any] | None, args: Any) -> str:
    lines = []
    if a is not None:
        lines += [
            f"8gaussians, fm, {args.steps} steps, medians over seeds {args.seeds}",
            "",
            "| w | nearest own component | worst label | energy distance to its class | spread |"
            " outward shift |",
            "|---|---|---|---|---|---|",
        ]
        for row in a["table"]:
            lines.append(
                f"| {row['guidance']:g} | {row['accuracy']:.4f} | "
                f"{row['min_label_accuracy']:.4f} | {row['energy_distance']:.4f} | "
                f"{row['spread']:.3f} | {row['radial_offset']:.3f} |"
            )
        lines += [
            f"| unconditional | covers {a['unconditional_covered_median']:g} of 8 | | "
            f"{a['unconditional_energy_distance_median']:.4f} (all test points) | | |",
            f"| (test data) | {a['data_accuracy_median']:.4f} | | | "
            f"{ff.data.EIGHT_GAUSSIANS_STD:.3f} | 0 |",
            "",
            "checks: " + ", ".join(f"{k}: {v}" for k, v in a["checks"].items()),
            "",
        ]
    if b is not None:
        scales = args.digits_scales
        lines += [
            f"digits, logistic regression on real test digits: {b['classifier_test_accuracy']:.3f}",
            "",
            "| model | " + " | ".join(f"w = {w:g}" for w in scales) + " | Bayes classifier |",
            "|---|" + "---|" * (len(scales) + 1),
        ]
        for name in args.digits_models:
            m = b[name]
            cells = [m["label_accuracy"].get(w) for w in scales]
            if len(m["label_accuracy"]) == 1:  # a discrete flow: w = 1 only
                cells = [m["label_accuracy"][1.0] if w == 1 else None for w in scales]
            text = ["—" if c is None else f"{c:.3f}" for c in cells]
            bayes = (
                f"{m['bayes_accuracy']:.3f} on {m['bayes_test_points']} "
                f"(logistic {m['logistic_accuracy_same_points']:.3f})"
                if "bayes_accuracy" in m
                else "—"
            )
            lines.append(f"| {name} | " + " | ".join(text) + f" | {bayes} |")
        lines += [
            "",
            "| model | w | energy distance to test digits | median distance to nearest "
            "training digit |",
            "|---|---|---|---|",
            f"| (real test digits) | | | {b['test_nearest_train_median']:.3f} |",
        ]
        for name in args.digits_models:
            m = b[name]
            for w in m["energy_distance"]:
                lines.append(
                    f"| {name} | {w:g} | {m['energy_distance'][w]:.4f} | "
                    f"{m['nearest_train_median'][w]:.3f} |"
                )
    return "\n".join(lines)


def floats(text: str) -> list[float]:
    return [float(s) for s in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default="8gaussians,digits", help="which parts to run")
    p.add_argument("--seeds", default="0,1,2", help="8gaussians seeds")
    p.add_argument("--steps", type=int, default=3000, help="8gaussians training steps")
    p.add_argument("--n-train", type=int, default=100_000, help="8gaussians training points")
    p.add_argument("--scales", type=floats, default=floats("0,1,2,3,4"))
    p.add_argument("--per-label", type=int, default=250, help="8gaussians samples per label")
    p.add_argument("--digits-seeds", default="0")
    p.add_argument("--digits-models", default="fm,otfm,nsf")
    p.add_argument("--digits-steps", type=int, default=3000, help="continuous models' steps")
    p.add_argument("--nsf-steps", type=int, default=1000)
    p.add_argument("--digits-scales", type=floats, default=floats("0,1,2,4"))
    p.add_argument("--digits-per-label", type=int, default=100)
    p.add_argument("--digits-solver-steps", type=int, default=16, help="rk4 steps of sampling")
    p.add_argument("--bayes-models", default="fm", help="continuous models scored by classify")
    p.add_argument("--bayes-subset", type=int, default=100, help="test digits they classify")
    p.add_argument("--bayes-steps", type=int, default=8, help="rk4 steps of their log_prob")
    p.add_argument("--eval-every", type=int, default=25, help="discrete flows' validation")
    p.add_argument("--patience", type=int, default=8, help="discrete flows' early stopping")
    p.add_argument(
        "--nsf-final",
        action="store_true",
        help="discrete flows: train the whole --nsf-steps, EMA weights (no early stopping)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.steps, args.per_label, args.n_train = "0", 300, 50, 10_000
        args.digits_steps, args.nsf_steps, args.digits_per_label = 200, 30, 20
        args.bayes_subset, args.bayes_steps = 10, 2
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    args.digits_seed_list = [int(s) for s in args.digits_seeds.split(",")]
    args.digits_models = args.digits_models.split(",")
    args.bayes_models = args.bayes_models.split(",") if args.bayes_models else []
    parts = args.parts.split(",")
    if args.out is None:
        name = "guidance_quick.json" if args.quick else "guidance.json"
        args.out = Path(__file__).parent / "results" / "guidance" / name
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; parts {parts}")
    start = time.perf_counter()
    report: dict[str, Any] = {}
    a = b = None
    if "8gaussians" in parts:
        runs = []
        for seed in args.seed_list:
            runs.append(eight_gaussians_run(seed, args))
            acc = ", ".join(f"w={r['guidance']:g}: {r['accuracy']:.4f}" for r in runs[-1]["scales"])
            cov = runs[-1]["unconditional"]["covered"]
            print(f"8gaussians seed {seed}: {acc}; unconditional covers {cov}/8", flush=True)
        a = eight_gaussians_summary(runs, args.scales)
        report["8gaussians"] = {"runs": runs, "summary": a}
    if "digits" in parts:
        runs = [digits_run(seed, args) for seed in args.digits_seed_list]
        b = digits_summary(runs)
        report["digits"] = {"runs": runs, "summary": b}
    table = markdown(a, b, args)
    print("\n" + table)
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    write_report(
        args.out,
        {
            "environment": environment({}, load_start),
            "settings": settings,
            "seconds": time.perf_counter() - start,
            **report,
            "markdown": table,
        },
    )


if __name__ == "__main__":
    main()
