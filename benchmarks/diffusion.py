"""Diffusion against flow matching under one protocol (issue 16): sample quality per NFE, test
NLL, the NFE each path needs for the same error, and a check against diffusers' schedulers.

On ``checkerboard``, ``8gaussians`` (fresh training data per seed, a fresh test set and a
fresh reference set from seeds no training run uses) and the 8x8 ``digits`` (flat 64-D, the
1,000 training images standardised per pixel; energy distances in standardised units against
the 447 test digits), one run trains

* ``fm`` — the linear ("OT") path with independent pairs; ``otfm`` — the same path with
  minibatch-OT pairs;
* ``diffusion`` — the recipe's VP diffusion model with its defaults; ``diffusion-ddpm`` —
  Ho et al.'s DDPM, the epsilon-network on the linear beta schedule (``--models`` also takes
  ``diffusion-eps`` / ``diffusion-v``: the recipe's schedule with that prediction, and
  ``diffusion-linear-v``: the linear schedule with v-prediction);

with the same field network (the recipes' TimeMLP, 3 x 256, SiLU, time concatenated), the same
``--steps`` steps of batch ``--batch-size`` on the same data, and the same trainer
(``ff.train.train``: AdamW at the recipes' lr, warm-up + cosine, gradient clip 5, EMA 0.999;
no validation).

Every model is sampled from the same noise (and, for the stochastic samplers, the same torch
seed) at NFE 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48 and 64 by

* ``ode euler`` / ``ode heun`` — the model's ODE (for diffusion its probability-flow ODE);
  Heun costs 2 NFE a step, so it runs at the even NFEs;
* ``ddim`` (eta = 0), ``ddpm`` (ancestral) and ``sde em`` (Euler–Maruyama on the reverse SDE
  with the sampler's defaults, recorded in the report) — for the diffusion models and ``fm``
  (whose Gaussian path gives the score); ``otfm`` refuses them (its pairs make x_t | x_1
  non-Gaussian; the refusal is recorded);
* adaptive ``dopri5`` at rtol = atol = 1e-3 and 1e-5 (its NFE as it comes).

Measured: the energy distance (ED) of ``--samples`` samples (``--digits-samples`` on digits)
to the reference set, and the ED's noise (the spread over 5 sets of real points); the ODE
samplers' solution error (RMS over coordinates against the dopri5 1e-5 solution from the same
noise); on digits the labels a logistic regression fit on the real training digits
(``ff.metrics.fit_classifier``) gives the samples: the total-variation distance of their label
histogram from the real test digits' (``label TV``); the exact test NLL of each model
(dopri5 1e-5, exact divergence; ``--nll-points`` test points, on digits the first
``--digits-nll-points`` of the 447 test digits, in data units). From the curves: the NFE each
sampler needs to reach an ED of 16, 8, 4 and 2 times L (L: fm's dopri5 ED, at least the ED's
noise) and an ODE error of 0.1, 0.03 and 0.01 times the data's RMS std (the first crossing,
interpolated linearly in the metric against log NFE), and the ratios fm / diffusion (Lipman et
al. 2022 report that the OT path needs about 60% of the diffusion path's NFE).

The diffusers check: diffusers' ``DDPMScheduler`` and ``DDIMScheduler`` drive the trained
network of each diffusion model on flowforge's grid (:func:`diffusers_ddpm`,
:func:`diffusers_ddim`), from the same noise and seed as ``model.decode(z, method="ddpm" |
"ddim", steps=k)``; the report gives the largest absolute difference of the samples.

Reproduce (``pip install --no-deps diffusers huggingface-hub httpx2 httpcore2 anyio truststore
h11``; see docs/benchmarks.md)::

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py            # ~12 min on one core
    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --quick    # smoke test, ~1 min
    python benchmarks/diffusion.py --table benchmarks/results/diffusion/diffusion.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

try:
    import diffusers
    from diffusers import DDIMScheduler, DDPMScheduler
except ImportError:
    sys.exit(
        "diffusers is needed: pip install --no-deps diffusers huggingface-hub httpx2 httpcore2 "
        "anyio truststore h11"
    )

import flowforge as ff
from _common import environment, write_report
from flowforge.dynamics.grids import GRIDS

TOY = {"checkerboard": ff.data.checkerboard, "8gaussians": ff.data.eight_gaussians}
DATASETS = (*TOY, "digits")
# label -> (recipe, options): the recipes' defaults, and the diffusion variants.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "fm": ("fm", {}),
    "otfm": ("otfm", {}),
    "diffusion": ("diffusion", {}),
    # Ho et al.'s DDPM: the epsilon-network on the linear beta schedule (diffusers' default).
    "diffusion-ddpm": ("diffusion", {"schedule": "linear", "prediction": "epsilon"}),
    "diffusion-eps": ("diffusion", {"prediction": "epsilon"}),
    "diffusion-v": ("diffusion", {"prediction": "v"}),
    "diffusion-linear-v": ("diffusion", {"schedule": "linear", "prediction": "v"}),
}
DIFFUSIONS = ("diffusion", "diffusion-ddpm", "diffusion-eps", "diffusion-v", "diffusion-linear-v")
# The recipe's own schedule and prediction (read from its signature): the default run adds
# diffusion-ddpm unless that is the recipe's default.
DEFAULTS = {
    k: v.default
    for k, v in inspect.signature(ff.models.recipe("diffusion").build).parameters.items()
    if k in ("schedule", "prediction")
}
CLASSIC = MODELS["diffusion-ddpm"][1]
DEFAULT_MODELS = ("fm", "otfm", "diffusion") + ("diffusion-ddpm",) * (DEFAULTS != CLASSIC)
NFES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
QUICK_NFES = (1, 2, 4, 8, 16)
SHOWN_NFES = (1, 2, 4, 8, 16, 32, 64)  # the columns of the markdown table
# label -> (method, field evaluations per step, options)
SAMPLERS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "ode euler": ("euler", 1, {}),
    "ode midpoint": ("midpoint", 2, {}),
    "ode heun": ("heun", 2, {}),
    "ddim": ("ddim", 1, {}),
    "ddpm": ("ddpm", 1, {}),
    "sde em": ("euler-maruyama", 1, {}),
}
ADAPTIVE = {"dopri5 1e-3": 1e-3, "dopri5 1e-5": 1e-5}
REFERENCE_ODE = "dopri5 1e-5"  # the solution the ODE samplers' error is measured against
# ED targets: multiples of fm's dopri5 ED (its ODE's limit) or of the ED's noise if larger.
ED_MULTIPLES = (16.0, 8.0, 4.0, 2.0)
NOISE_DRAWS = 5  # sets of real points whose EDs' spread is the ED's noise
# ODE solution-error targets: fractions of the data's RMS standard deviation.
ERROR_FRACTIONS = (0.1, 0.03, 0.01)
DIFFUSERS_NFES = (1, 4, 16, 64)
# float32 roundoff of the same arithmetic done in a different order, relative to the samples.
DIFFUSERS_TOLERANCE = 1e-4
DIFFUSERS_POINTS = 1000  # samples of the diffusers check (the first of the shared noise)
# Fresh seeds: the test and reference sets come from seeds no training run draws with.
TEST_SEED, REFERENCE_SEED = 20_251_201, 20_251_202
SAMPLE_SEED = 4242  # the noise every model's samples start from
NOISE_SEED = 777  # torch's global seed before every stochastic sampler (and diffusers)
LR = {k: float(ff.models.recipe(r).train_defaults["lr"]) for k, (r, _) in MODELS.items()}


# -- diffusers, driven on flowforge's grid -------------------------------------------------------
#
# flowforge steps from t_0 = 0 (noise) to t_S = T = 1 - truncation on the grid
# t_i = i T / S, evaluating the network at t_0 .. t_{S-1}. diffusers counts a discrete index k
# the other way (k = 0 the least noisy) with alphas_cumprod[k] = alpha-bar = alpha(t)^2 (a VP
# path: sigma^2 = 1 - alpha^2). The two drivers below map the grid onto a table of
# alphas_cumprod (through ``trained_betas``: betas[k] = 1 - abar[k] / abar[k - 1], abar[-1] = 1,
# so that diffusers' cumprod returns the table) and call the network at the flowforge time of
# each index. Both schedulers end their chain at alpha-bar = 1 (the clean data) by default;
# flowforge's ends at alpha-bar(T) < 1, which each driver sets as said there.


def _abar(path: Any, times: Tensor) -> Tensor:
    """``alpha_t^2`` on ``times``, in float64 (as flowforge's samplers compute coefficients)."""
    return path.scheduler(times.double()).alpha_t ** 2


def _betas(abar: Tensor) -> list[float]:
    """``trained_betas`` whose cumulative product of ``1 - beta`` is ``abar`` (decreasing)."""
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return (1.0 - abar / prev).tolist()


#: flowforge's ``prediction`` -> diffusers' ``prediction_type`` (flowforge's v is Salimans &
#: Ho's alpha eps - sigma x1, diffusers' x0 = sqrt(abar) x - sqrt(1 - abar) v: the same).
PREDICTION_TYPES = {"epsilon": "epsilon", "v": "v_prediction", "x1": "sample"}


def _eps(model: Any, t: Tensor, x: Tensor) -> Tensor:
    """The raw network of a ``diffusion`` model (its ``prediction``) at flowforge time ``t``."""
    return model.network(t, x)


def _set_table(sched: Any, table: Tensor, exact: bool) -> float:
    """With ``exact``, replace the scheduler's ``alphas_cumprod`` by ``table`` rounded once to
    float32; return the largest relative error of what it then holds against ``table``.

    ``trained_betas`` go in as float32 and diffusers multiplies ``1 - beta`` up in float32:
    near the noise, where alpha-bar ~ 4e-5, ``1 - beta`` keeps only ~3 digits, so the rebuilt
    table is off by ~1e-3 relative there (and x1-hat = (x - sigma eps) / alpha with it).
    """
    if exact:
        sched.alphas_cumprod = table.float()
    return float(((sched.alphas_cumprod.double() - table) / table).abs().max())


def diffusers_ddpm(model: Any, z: Tensor, steps: int, exact: bool = True) -> tuple[Tensor, float]:
    """diffusers' ``DDPMScheduler`` from ``z`` in ``steps`` steps on flowforge's grid; the
    global torch generator supplies its noise. Returns the sample and the largest relative
    error of the scheduler's ``alphas_cumprod`` against the table (``exact``: the table set
    directly, else as rebuilt from ``trained_betas``, see :func:`_set_table`).

    ``num_train_timesteps = S``, index ``k`` <-> ``t_{S-1-k}`` (k = 0 is the last time the
    network sees), custom timesteps ``S-1, ..., 0``: one step each, from ``k`` to ``k - 1``. The
    last step (k = 0 -> -1) goes to ``scheduler.one``, alpha-bar = 1 in diffusers; it is set to
    alpha-bar(T), the end of flowforge's chain (the one attribute set outside the config). At
    k = 0 diffusers adds no noise (its ``t > 0`` test), as flowforge's last step; the other
    S - 1 steps draw one ``randn`` of the state's shape each, in order, as flowforge's do.
    """
    path, end = model.gaussian_path(), model.span[1]
    times = GRIDS["uniform"](steps, 0.0, end, dtype=z.dtype)
    abar = _abar(path, times)
    table = abar[:-1].flip(0)  # k = 0 .. S-1 <-> t_{S-1} .. t_0
    sched = DDPMScheduler(
        num_train_timesteps=steps,
        trained_betas=_betas(table),
        variance_type="fixed_small",
        clip_sample=False,
        prediction_type=PREDICTION_TYPES[model.prediction],
    )
    sched.one = torch.tensor(float(abar[-1]))
    err = _set_table(sched, table, exact)
    sched.set_timesteps(timesteps=list(range(steps - 1, -1, -1)))
    x = z
    for k in sched.timesteps.tolist():
        x = sched.step(_eps(model, times[steps - 1 - k], x), k, x).prev_sample
    return x, err


def diffusers_ddim(
    model: Any, z: Tensor, steps: int, eta: float = 0.0, exact: bool = True
) -> tuple[Tensor, float]:
    """diffusers' ``DDIMScheduler`` from ``z`` in ``steps`` steps on flowforge's grid, through
    its config alone (``exact``: and the table set as in :func:`diffusers_ddpm`). Returns the
    sample and the table's largest relative error.

    ``num_train_timesteps = S + 1``, index ``k`` <-> ``t_{S-k}`` (k = 0 is T), ``"leading"``
    spacing with ``steps_offset=1``: timesteps ``S, ..., 1``, each step from ``k`` to
    ``k - (S + 1) // S`` (= k - 1; for S = 1 to -1); ``set_alpha_to_one=False`` makes the
    chain's end alpha-bar[0] = alpha-bar(T). With ``eta > 0`` DDIM would add noise on its last
    step too; flowforge's last step adds none, so the noise goes in as ``variance_noise``: a
    ``randn`` of the state's shape from the global generator each step, zeros on the last.
    """
    path, end = model.gaussian_path(), model.span[1]
    times = GRIDS["uniform"](steps, 0.0, end, dtype=z.dtype)
    table = _abar(path, times).flip(0)  # k = 0 .. S <-> t_S .. t_0
    sched = DDIMScheduler(
        num_train_timesteps=steps + 1,
        trained_betas=_betas(table),
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=PREDICTION_TYPES[model.prediction],
    )
    err = _set_table(sched, table, exact)
    if exact:  # set_alpha_to_one=False read it from the table at construction
        sched.final_alpha_cumprod = sched.alphas_cumprod[0]
    sched.set_timesteps(steps)
    if sched.timesteps.tolist() != list(range(steps, 0, -1)):
        raise RuntimeError(f"unexpected DDIM timesteps {sched.timesteps.tolist()}")
    x = z
    for i, k in enumerate(sched.timesteps.tolist()):
        noise = None
        if eta > 0:
            noise = torch.zeros_like(x) if i == steps - 1 else torch.randn_like(x)
        eps = _eps(model, times[steps - k], x)
        x = sched.step(eps, k, x, eta=eta, variance_noise=noise).prev_sample
    return x, err


def diffusers_check(model: Any, z: Tensor, nfes: tuple[int, ...]) -> dict[str, Any]:
    """Largest absolute difference between flowforge's and diffusers' samples per sampler and
    NFE (the same network, noise and seed), and the scale of the samples."""
    out: dict[str, Any] = {"points": len(z), "nfe": list(nfes), "rows": {}}
    cases = {}
    for exact in (True, False):
        tag = "" if exact else " (trained_betas)"
        cases.update(
            {
                f"ddpm{tag}": (
                    dict(method="ddpm"),
                    lambda k, e=exact: diffusers_ddpm(model, z, k, exact=e),
                ),
                f"ddim{tag}": (
                    dict(method="ddim"),
                    lambda k, e=exact: diffusers_ddim(model, z, k, exact=e),
                ),
                f"ddim eta=1{tag}": (
                    dict(method="ddim", eta=1.0),
                    lambda k, e=exact: diffusers_ddim(model, z, k, 1.0, exact=e),
                ),
            }
        )
    with torch.no_grad():
        for label, (options, theirs) in cases.items():
            diffs, table_err = {}, 0.0
            for k in nfes:
                torch.manual_seed(NOISE_SEED)
                ours = model.decode(z, steps=k, **options)
                torch.manual_seed(NOISE_SEED)
                other, err = theirs(k)
                diff = float((ours - other).abs().max())
                # None: diffusers' sample is not finite (see docs/benchmarks.md: DDIM eta=1 in
                # one step takes the square root of a float32 difference rounded below 0).
                diffs[str(k)] = diff if math.isfinite(diff) else None
                table_err = max(table_err, err)
            out["rows"][label] = {"max_abs_diff": diffs, "table_rel_err": table_err}
        out["sample_abs_max"] = float(model.decode(z, method="ddim", steps=max(nfes)).abs().max())
    return out


# -- data, training, sampling -------------------------------------------------------------------


def load(name: str, seed: int, args: Any, index: int) -> dict[str, Any]:
    """Training data, the NLL's test points, the ED's reference set and its floor, the noise."""
    if name in TOY:
        gen = TOY[name]
        data = {
            "train": gen(args.steps * args.batch_size, seed=1000 * seed + index),
            "test": gen(args.nll_points, seed=TEST_SEED + index),
            "reference": gen(args.samples, seed=REFERENCE_SEED + index),
            "again": gen(args.samples, seed=REFERENCE_SEED + 10 + index),
            "log_scale": 0.0,
            "n": args.samples,
        }
    else:
        ds = ff.data.load("digits", seed=seed)
        mean, std = ff.data.fit_standardization(ds.train)

        def u(x: Tensor) -> Tensor:
            return (x - mean) / std

        data = {
            "train": u(ds.train),
            "test": u(ds.test[: args.digits_nll_points]),
            "reference": u(ds.test),
            "again": u(ds.val),  # the floor: unseen real digits against the test digits
            # NLL in data units: log p_x(x) = log p_u(u) - sum log std.
            "log_scale": float(std.log().sum()),
            "n": args.digits_samples,
            "classifier": ff.metrics.fit_classifier(ds.train, ds.labels["train"]),
            "to_data": lambda v: v * std + mean,
            "test_labels": ds.labels["test"],
        }
        clf = data["classifier"]
        data["classifier_test_accuracy"] = clf.accuracy(ds.test, ds.labels["test"])
        data["test_histogram"] = histogram(clf.predict(ds.test))
        g = torch.Generator().manual_seed(SAMPLE_SEED)
        noise = torch.randn(args.digits_samples, 64, generator=g)
        data["noise_label_tv"] = float(
            0.5 * (histogram(clf.predict(noise * std + mean)) - data["test_histogram"]).abs().sum()
        )
        pick = torch.randint(1000, (args.digits_samples,), generator=g)
        data["train_label_tv"] = float(
            0.5 * (histogram(clf.predict(ds.train[pick])) - data["test_histogram"]).abs().sum()
        )
    dim = data["train"].shape[1]
    g = torch.Generator().manual_seed(SAMPLE_SEED)
    data["z"] = torch.randn(data["n"], dim, generator=g)
    data["floor"] = ff.metrics.energy_distance(data["again"], data["reference"])
    point = data["train"].mean(0, keepdim=True).expand(data["n"], dim)
    data["point_mass"] = ff.metrics.energy_distance(point, data["reference"])
    data["noise_ed"] = ff.metrics.energy_distance(data["z"], data["reference"])
    # The ED's own noise at these sizes: its spread over NOISE_DRAWS sets of real points
    # (fresh ones for the toys; for digits bootstrap draws of the training digits, with fresh
    # dequantisation, whose mean is the ED of "copy the training set").
    draws = []
    for d in range(NOISE_DRAWS):
        if name in TOY:
            real = TOY[name](data["n"], seed=REFERENCE_SEED + 100 + 10 * d + index)
        else:
            train_d = u(ff.data.load("digits", seed=100 + d).train)
            pick = torch.randint(
                len(train_d), (data["n"],), generator=torch.Generator().manual_seed(d)
            )
            real = train_d[pick]
        draws.append(ff.metrics.energy_distance(real, data["reference"]))
    data["noise_sd"] = statistics.stdev(draws)
    data["real_ed"] = statistics.mean(draws)
    data["data_scale"] = float(data["reference"].var(0).mean().sqrt())
    return data


def histogram(labels: Tensor) -> Tensor:
    return torch.bincount(labels.long(), minlength=10).double() / len(labels)


def train(name: str, data: Tensor, args: Any, seed: int) -> tuple[Any, float]:
    cfg = ff.train.TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=LR[name],
        seed=seed,
        eval_every=10**9,  # no validation: the same fixed budget for every model
        progress=False,
    )
    torch.manual_seed(seed)
    recipe, options = MODELS[name]
    model = ff.models.create(recipe, dim=data.shape[1], **options)
    start = time.perf_counter()
    ff.train.train(model, data, cfg)
    return model.eval(), time.perf_counter() - start


def draw(model: Any, z: Tensor, **solver: Any) -> tuple[Tensor, int]:
    """``model.decode(z, **solver)`` from torch's seed ``NOISE_SEED``, and its NFE."""
    torch.manual_seed(NOISE_SEED)
    with torch.no_grad():
        x = model.decode(z, **solver)
    return x, int(model.last_nfe)


def evaluate(model: Any, data: dict[str, Any], args: Any) -> dict[str, Any]:
    """ED (and on digits label TV) per sampler and NFE, the ODE error, dopri5, the NLL."""
    z, reference = data["z"], data["reference"]
    out: dict[str, Any] = {"samplers": {}, "adaptive": {}}

    def score(x: Tensor) -> dict[str, float]:
        row = {"ed": ff.metrics.energy_distance(x, reference)}
        if "classifier" in data:
            labels = data["classifier"].predict(data["to_data"](x))
            tv = 0.5 * (histogram(labels) - data["test_histogram"]).abs().sum()
            row["label_tv"] = float(tv)
        return row

    exact = None
    for label, tol in ADAPTIVE.items():
        x, nfe = draw(model, z, method="dopri5", rtol=tol, atol=tol)
        out["adaptive"][label] = {"nfe": nfe, **score(x)}
        if label == REFERENCE_ODE:
            exact = x
    assert exact is not None
    for label, (method, per_step, options) in SAMPLERS.items():
        rows: dict[str, Any] = {}
        for nfe in args.nfes:
            if nfe % per_step:
                continue
            try:
                x, used = draw(model, z, method=method, steps=nfe // per_step, **options)
            except ValueError as e:  # otfm on the stochastic samplers: the reason, recorded
                out["samplers"][label] = {"refused": str(e)}
                break
            row = {"nfe": used, **score(x)}
            if method in ("euler", "midpoint", "heun"):
                row["ode_error"] = float((x - exact).square().mean().sqrt())
            rows[str(nfe)] = row
        else:
            out["samplers"][label] = {"by_nfe": rows}
    start = time.perf_counter()
    result = ff.metrics.nll(model, data["test"])  # dopri5 1e-5, exact divergence
    out["nll"] = result.mean + data["log_scale"]
    out["nll_points"] = len(data["test"])
    out["nll_wall_s"] = time.perf_counter() - start
    return out


def run_dataset(name: str, seed: int, args: Any) -> dict[str, Any]:
    index = DATASETS.index(name)
    data = load(name, seed, args, index)
    run: dict[str, Any] = {
        "dataset": name,
        "seed": seed,
        "floor": data["floor"],
        "point_mass": data["point_mass"],
        "noise_ed": data["noise_ed"],
        "noise_sd": data["noise_sd"],
        "real_ed": data["real_ed"],
        "data_scale": data["data_scale"],
        "samples": data["n"],
        "models": {},
    }
    if "classifier" in data:
        run["classifier_test_accuracy"] = data["classifier_test_accuracy"]
        run["noise_label_tv"] = data["noise_label_tv"]
        run["train_label_tv"] = data["train_label_tv"]
    for model_name in args.model_list:
        model, wall = train(model_name, data["train"], args, seed)
        start = time.perf_counter()
        res = evaluate(model, data, args)
        res["train_wall_s"], res["eval_wall_s"] = wall, time.perf_counter() - start
        run["models"][model_name] = res
        euler = res["samplers"]["ode euler"]["by_nfe"]
        some = ", ".join(f"@{k} {euler[str(k)]['ed']:.4f}" for k in (1, 4, 16) if str(k) in euler)
        print(
            f"  [{name} seed {seed}] {model_name:9s} NLL {res['nll']:.3f}  euler ED {some}  "
            f"dopri5 ED {res['adaptive'][REFERENCE_ODE]['ed']:.4f} "
            f"({res['adaptive'][REFERENCE_ODE]['nfe']} NFE)  (train {wall:.0f}s, "
            f"eval {res['eval_wall_s']:.0f}s)",
            flush=True,
        )
        if model_name in DIFFUSIONS and not args.no_diffusers:
            nfes = tuple(k for k in DIFFUSERS_NFES if k <= max(args.nfes))
            check = diffusers_check(model, data["z"][:DIFFUSERS_POINTS], nfes)
            run.setdefault("diffusers", {})[model_name] = check
            print(f"  [{name} seed {seed}] diffusers check: {worst_diff(check)}", flush=True)
    return run


def worst_diff(check: dict[str, Any]) -> str:
    """The verdict of a diffusers check: the largest difference with the exact table."""
    rows = {k: r for k, r in check["rows"].items() if "trained_betas" not in k}
    values = [v for r in rows.values() for v in r["max_abs_diff"].values()]
    worst = max(v for v in values if v is not None)
    missing = sum(v is None for v in values)
    skipped = f"; {missing} case(s) where diffusers' sample is not finite" * bool(missing)
    verdict = "holds" if worst < DIFFUSERS_TOLERANCE * check["sample_abs_max"] else "fails"
    return (
        f"diffusers' DDPM/DDIM (exact table) match flowforge's samples to {worst:.1e} "
        f"({verdict}: goal < {DIFFUSERS_TOLERANCE:g} x max |sample| "
        f"{check['sample_abs_max']:.2f}){skipped}"
    )


# -- the summary ----------------------------------------------------------------------------------


def nfe_to_reach(curve: dict[str, dict[str, float]], level: float, key: str = "ed") -> float:
    """The NFE at which ``curve`` (NFE -> row) first reaches ``level``: linear in the metric
    against log NFE between the grid points around the first crossing; ``inf`` if it never
    does, the smallest NFE if it starts below."""
    points = sorted((int(k), row[key]) for k, row in curve.items())
    for i, (n, value) in enumerate(points):
        if value <= level:
            if i == 0:
                return float(n)
            n0, v0 = points[i - 1]
            frac = (v0 - level) / (v0 - value)
            return math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))
    return math.inf


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-seed runs of one dataset merged: the median of every number over the seeds."""

    def merge(items: list[Any]) -> Any:
        first = items[0]
        if isinstance(first, dict):
            keys = [k for k in first if all(isinstance(i, dict) and k in i for i in items)]
            return {k: merge([i[k] for i in items]) for k in keys}
        if isinstance(first, bool) or not isinstance(first, int | float):
            return first
        return statistics.median(items)

    return merge(runs)


def curves(models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``"model sampler" -> {nfe: row}`` for every sampler that ran."""
    out = {}
    for m, res in models.items():
        for s, rows in res["samplers"].items():
            if "by_nfe" in rows:
                out[f"{m} {s}"] = rows["by_nfe"]
    return out


PAIRS: dict[str, tuple[str, str]] = {}
for _d in DIFFUSIONS:
    PAIRS.update(
        {
            f"fm / {_d}, Euler": ("fm ode euler", f"{_d} ode euler"),
            f"fm / {_d}, Heun": ("fm ode heun", f"{_d} ode heun"),
            f"fm / {_d}, midpoint": ("fm ode midpoint", f"{_d} ode midpoint"),
            f"otfm / {_d}, Euler": ("otfm ode euler", f"{_d} ode euler"),
            f"fm Euler / {_d} DDIM": ("fm ode euler", f"{_d} ddim"),
            f"fm SDE / {_d} DDPM": ("fm sde em", f"{_d} ddpm"),
            f"fm SDE / {_d} SDE": ("fm sde em", f"{_d} sde em"),
        }
    )


def reach_table(
    by: dict[str, dict[str, Any]], levels: dict[str, float], key: str
) -> tuple[dict[str, Any], list[str]]:
    """NFE to reach each level of ``key`` per curve, the ratios of :data:`PAIRS`, markdown."""
    reach = {
        name: {
            label: nfe_to_reach(curve, level, key)
            for label, curve in by.items()
            if all(key in row for row in curve.values())
        }
        for name, level in levels.items()
    }
    ratios: dict[str, dict[str, float | None]] = {}
    for label, (a, b) in PAIRS.items():
        if a not in reach[next(iter(levels))] or b not in reach[next(iter(levels))]:
            continue
        ratios[label] = {}
        for name in levels:
            n_a, n_b = reach[name][a], reach[name][b]
            ratios[label][name] = n_a / n_b if math.isfinite(n_a) and math.isfinite(n_b) else None
    head = " | ".join(f"{name} ({lv:.4g})" for name, lv in levels.items())
    lines = ["", f"| model sampler | {head} |", "|---|" + "---|" * len(levels)]
    for label in reach[next(iter(levels))]:
        first = min(int(k) for k in by[label])  # reached there: at most that many NFE

        def cell(c: float, first: int = first) -> str:
            return "> 64" if not math.isfinite(c) else f"<= {first}" if c == first else f"{c:.1f}"

        lines.append(f"| {label} | " + " | ".join(cell(reach[n][label]) for n in levels) + " |")
    for label, r in ratios.items():
        cells = [f"{r[n]:.2f}" if r[n] is not None else "—" for n in levels]
        lines.append(f"| ratio {label} | " + " | ".join(f"**{c}**" for c in cells) + " |")
    return {"levels": levels, "nfe": reach, "ratios": ratios}, lines


def summarize(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], str, list[str]]:
    summary: dict[str, Any] = {}
    lines: list[str] = []
    verdicts: list[str] = []
    for name in DATASETS:
        mine = [r for r in runs if r["dataset"] == name]
        if not mine:
            continue
        run = median_runs(mine)
        models = run["models"]
        by = curves(models)
        digits = "classifier_test_accuracy" in run
        unit = "standardised units" if digits else "data units"
        lines += [
            "",
            f"**{name}** ({run['samples']} samples, {unit}; ED of real points"
            f" {run['real_ed']:.4f} ± {run['noise_sd']:.4f}{' (train digits resampled)' * digits},"
            f" of the Gaussian noise {run['noise_ed']:.3f}, of a point mass at the data mean"
            f" {run['point_mass']:.3f}; NLL on {models['fm']['nll_points']} test points)",
            "",
            "| model | sampler | "
            + " | ".join(f"ED @{k}" for k in SHOWN_NFES)
            + " | dopri5 1e-3 (NFE) | dopri5 1e-5 (NFE) | NLL |",
            "|---|---|" + "---|" * (len(SHOWN_NFES) + 3),
        ]
        for m, res in models.items():
            a = res["adaptive"]
            dopri = [f"{a[k]['ed']:.4f} ({a[k]['nfe']:.0f})" for k in ADAPTIVE]
            for s, rows in res["samplers"].items():
                if "refused" in rows:
                    lines.append(f"| {m} | {s} | refused: needs a Gaussian path |" + " |" * 9)
                    continue
                cells = [
                    f"{rows['by_nfe'][str(k)]['ed']:.4f}" if str(k) in rows["by_nfe"] else ""
                    for k in SHOWN_NFES
                ]
                tail = [*dopri, f"{res['nll']:.3f}"] if s == "ode euler" else ["", "", ""]
                lines.append(f"| {m} | {s} | " + " | ".join(cells + tail) + " |")
        # ED levels both fm and diffusion reach with their ODE: multiples of the worse one's
        # dopri5 ED (the ODE's own limit; below it no ODE sampler of that model gets).
        # fm's ODE limit (its dopri5 ED), at least the ED's noise: the levels the OT path's
        # ODE reaches; a diffusion sampler that does not is reported as "> 64".
        limit = max(models["fm"]["adaptive"][REFERENCE_ODE]["ed"], run["noise_sd"])
        # Only levels below the ED of the Gaussian noise itself: a sampler that barely moves
        # the noise (one Euler step of a VP ODE) would "reach" a higher one at NFE 1.
        ed_levels = {f"{c:g}x": c * limit for c in ED_MULTIPLES if c * limit < run["noise_ed"]} or {
            "1x": limit
        }
        ed, ed_lines = reach_table(by, ed_levels, "ed")
        err_levels = {f"{c:g}": c * run["data_scale"] for c in ERROR_FRACTIONS}
        odes = {k: v for k, v in by.items() if " ode " in k}
        err, err_lines = reach_table(odes, err_levels, "ode_error")
        dopri = {m: models[m]["adaptive"][REFERENCE_ODE]["nfe"] for m in models}
        summary[name] = {"ed": ed, "ode_error": err, "dopri5_nfe": dopri}
        lines += [
            "",
            f"NFE to reach an ED of {', '.join(ed_levels)} L = {limit:.4f}, the larger of fm's"
            " dopri5 (1e-5) ED and the ED's noise sd (first crossing, interpolated in log NFE):",
            *ed_lines,
            "",
            "NFE to reach an ODE solution error (RMS against dopri5 1e-5 from the same noise) of"
            f" {', '.join(err_levels)} x the data's RMS std ({run['data_scale']:.3f}):",
            *err_lines,
            "",
            "dopri5 1e-5 NFE: " + ", ".join(f"{m} {n:.0f}" for m, n in dopri.items()) + ".",
        ]
        if digits:
            lines += [
                "",
                f"Label TV of the samples (the classifier: {run['classifier_test_accuracy']:.3f}"
                f" on the real test digits; label TV of the noise {run['noise_label_tv']:.3f},"
                f" of resampled training digits {run['train_label_tv']:.3f}):",
                "",
                "| model sampler | " + " | ".join(f"@{k}" for k in SHOWN_NFES) + " | dopri5 1e-5 |",
                "|---|" + "---|" * (len(SHOWN_NFES) + 1),
            ]
            for label, curve in by.items():
                tv = models[label.split()[0]]["adaptive"][REFERENCE_ODE]["label_tv"]
                cells = [
                    f"{curve[str(k)]['label_tv']:.3f}" if str(k) in curve else ""
                    for k in SHOWN_NFES
                ]
                lines.append(f"| {label} | " + " | ".join(cells) + f" | {tv:.3f} |")
        for variant, check in run.get("diffusers", {}).items():
            lines += [
                "",
                f"diffusers check, {variant} ({check['points']} samples, max |sample| "
                f"{check['sample_abs_max']:.2f}): max |flowforge - diffusers|",
                "",
                "| sampler | " + " | ".join(f"NFE {k}" for k in check["nfe"]) + " |",
                "|---|" + "---|" * len(check["nfe"]),
            ]
            for label, row in check["rows"].items():
                diffs = [row["max_abs_diff"][str(k)] for k in check["nfe"]]
                cells = [f"{d:.1e}" if d is not None else "nan (diffusers)" for d in diffs]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            verdicts.append(f"{name}, {variant}: {worst_diff(check)}")

        def shown(ratios: dict[str, float | None]) -> str:
            return ", ".join(
                f"{k}: {v:.2f}" if v is not None else f"{k}: —" for k, v in ratios.items()
            )

        for what, table in (("ED", ed), ("ODE error", err)):
            for label in [
                f"fm / {d}, {m}" for d in DIFFUSIONS for m in ("Euler", "midpoint", "Heun")
            ]:
                if label in table["ratios"]:
                    verdicts.append(
                        f"{name}: NFE ratio {label}, same {what}: {shown(table['ratios'][label])}"
                    )
        verdicts.append(
            f"{name}: dopri5 1e-5 NFE ratio "
            + ", ".join(f"fm / {d} {dopri['fm'] / dopri[d]:.2f}" for d in DIFFUSIONS if d in dopri)
            + " (Lipman et al. 2022: the OT path needs ~0.6 of the diffusion path's NFE)"
        )
    return summary, "\n".join(lines), verdicts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="training steps of every model")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--samples", type=int, default=3000, help="samples for the ED (2-D)")
    p.add_argument("--digits-samples", type=int, default=2000, help="samples for the ED (digits)")
    p.add_argument("--nll-points", type=int, default=2000, help="test points of the NLL (2-D)")
    p.add_argument(
        "--digits-nll-points", type=int, default=100, help="test digits of the NLL (of 447)"
    )
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"of {', '.join(MODELS)} (diffusion: the recipe's defaults, {DEFAULTS})",
    )
    p.add_argument("--seeds", default="0", help="training seeds, one run per dataset each")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-diffusers", action="store_true", help="skip the diffusers check")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--table", type=Path, default=None, help="recompute the summary of a result file"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 300 steps, small sets")
    args = p.parse_args(argv)
    args.nfes = NFES
    if args.quick:
        args.steps, args.samples, args.digits_samples = 300, 1000, 500
        args.nll_points, args.digits_nll_points, args.nfes = 300, 20, QUICK_NFES
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [d for d in args.dataset_list if d not in DATASETS]
    unknown += [m for m in args.model_list if m not in MODELS]
    if unknown or not args.seed_list or not {"fm", "diffusion"} <= set(args.model_list):
        p.error(
            f"--datasets of {', '.join(DATASETS)}; --models of {', '.join(MODELS)} with fm and "
            "diffusion; --seeds non-empty"
        )
    if args.out is None:
        stem = "diffusion_quick.json" if args.quick else "diffusion.json"
        args.out = Path("benchmarks/results/diffusion") / stem
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.table:
        report = json.loads(args.table.read_text())
        summary, markdown, verdicts = summarize(report["runs"])
        print(markdown + "\n\n" + "\n".join(verdicts))
        report.update(summary=summary, markdown=markdown, goals=verdicts)
        args.table.write_text(json.dumps(report, indent=2) + "\n")
        return
    load_start = os.getloadavg()
    peers = {"diffusers": diffusers.__version__}
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"{torch.get_num_threads()} threads; {args.steps} steps x batch {args.batch_size}, "
        f"lr {LR}, seeds {args.seed_list}",
        flush=True,
    )
    start = time.perf_counter()
    runs = [run_dataset(n, s, args) for s in args.seed_list for n in args.dataset_list]
    summary, markdown, verdicts = summarize(runs)
    print(markdown + "\n\n" + "\n".join(verdicts))
    write_report(
        args.out,
        {
            "config": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": LR,
                "samples": args.samples,
                "digits_samples": args.digits_samples,
                "nll_points": args.nll_points,
                "digits_nll_points": args.digits_nll_points,
                "nfes": list(args.nfes),
                "seeds": args.seed_list,
                "datasets": args.dataset_list,
                "models": {m: MODELS[m] for m in args.model_list},
                "sampler_defaults": {
                    method: dict(ff.dynamics.SOLVERS[method].defaults)
                    for method, _, _ in SAMPLERS.values()
                },
                "quick": args.quick,
            },
            "environment": environment(peers, load_start),
            "total_wall_s": time.perf_counter() - start,
            "runs": runs,
            "summary": summary,
            "markdown": markdown,
            "goals": verdicts,
        },
    )


if __name__ == "__main__":
    main()
