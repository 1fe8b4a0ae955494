"""What your own images cost: a synthetic 3x32x32 image set through ``train``, ``sample`` and
``evaluate`` on the command line.

Writes a synthetic set of colour images (coloured discs, squares, triangles and crosses on
shaded backgrounds, one class sub-folder per shape, ``--images`` 8-bit PNG files drawn with a
seed) into a temporary folder, then for each of ``--models`` (default ``glow,fm``) runs the real
command-line tools as subprocesses, as a user would:

* ``flowforge train --model M --data FOLDER --steps S --batch-size B`` (one validation, at the
  last step, on ``--val-samples`` held-out images, so the step time is the training step's),
  reporting the median step time over the logged windows, the training wall time and the
  peak memory (the maximum resident set size of the subprocess, from ``os.wait4``);
* ``flowforge sample RUN -n N --out DIR --format png``: the sampling time and its peak memory;
* ``flowforge evaluate RUN``: the test bits/dim (256 levels, the dequantisation stated), its
  time and peak memory. Continuous models (``fm``) evaluate with ``--eval-solver`` (default a
  Hutchinson divergence: the exact one needs 3,072 backward passes per function evaluation
  at this size; the bits/dim are then an unbiased estimate of the exact ones, and the JSON says
  so).

Every command runs under ``--timeout`` seconds; one that runs past it is stopped and marked
in the JSON (``sample_timed_out``, ``evaluate_timed_out``). The default sizes fit a few
minutes on 2 CPU cores: the numbers are per-step costs and what a short run reaches, not
converged bits/dim. Reproduce::

    python benchmarks/images_32.py                          # 2,000 images, 100 steps of 64
    python benchmarks/images_32.py --steps 3 --images 200 --samples 8 \\
        --out /tmp/images_32_smoke.json                     # a smoke test, about a minute

Results: ``benchmarks/results/images_32.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import environment, write_report

SIZE = 32  # pixels per side of the synthetic images
SHAPES = ("disc", "square", "triangle", "cross")  # one class sub-folder per shape
CONTINUOUS = ("ffjord", "fm", "rectified", "otfm", "sbfm", "meanflow", "diffusion")


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 32, 32, 3)`` uint8 and their shape labels ``(n,)``.

    A vertical colour gradient between two random colours as background, one shape of a
    random colour, size and position on it, and a little pixel noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    labels = rng.integers(len(SHAPES), size=n)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        top, bottom = rng.uniform(0, 255, size=(2, 3))
        t = (yy / (SIZE - 1))[..., None]
        img = (1 - t) * top + t * bottom
        colour = rng.uniform(0, 255, size=3)
        r = rng.uniform(5, 11)
        cy, cx = rng.uniform(r, SIZE - r, size=2)
        dy, dx = yy - cy, xx - cx
        if SHAPES[label] == "disc":
            mask = dy**2 + dx**2 <= r**2
        elif SHAPES[label] == "square":
            mask = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
        elif SHAPES[label] == "triangle":
            mask = (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        else:
            mask = ((np.abs(dy) <= r) & (np.abs(dx) <= r * 0.3)) | (
                (np.abs(dx) <= r) & (np.abs(dy) <= r * 0.3)
            )
        img[mask] = colour
        img += rng.normal(0, 4, size=img.shape)
        images[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return images, labels


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One PNG per image under ``root/SHAPE/``, the ImageFolder convention."""
    from PIL import Image

    for name in SHAPES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img, mode="RGB").save(root / SHAPES[label] / f"{i:05d}.png")


def run(cmd: list[str], threads: int, timeout: float) -> dict:
    """Run ``cmd`` for at most ``timeout`` seconds: its wall time, peak memory (max RSS, MiB),
    output and whether it timed out (then it is killed); raise if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("+", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        timed_out = False
        while True:
            # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                timed_out = True
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().decode(errors="replace")
    seconds = time.perf_counter() - start
    if timed_out:
        print(f"  timed out after {timeout:g} s: {shlex.join(cmd[2:5])} ...", flush=True)
    elif proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}")
    return {
        "seconds": seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "output": out,
        "timed_out": timed_out,
    }


def step_times(run_dir: Path) -> list[float]:
    """Seconds per step of each logged window of ``metrics.jsonl``."""
    times = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("steps_per_s"):
            times.append(1.0 / rec["steps_per_s"])
    return times


def bench_model(model: str, data: Path, work: Path, args: argparse.Namespace) -> dict:
    run_dir = work / f"run_{model}"
    cfg = work / f"{model}.toml"
    # A log line every few steps gives the step-time median enough windows.
    # The one validation (at the last step) on a few held-out images bounds its cost: with an
    # MLP field, a continuous model's validation NLL takes the exact 3,072-D divergence.
    log_every = max(1, min(10, args.steps))
    cfg.write_text(f"[train]\nlog_every = {log_every}\nmax_val_samples = {args.val_samples}\n")
    cmd = [sys.executable, "-m", "flowforge", "train", "--model", model, "--data", str(data)]
    cmd += ["--steps", str(args.steps), "--eval-every", str(args.steps), "--patience", "0"]
    cmd += ["--batch-size", str(args.batch_size)]
    cmd += ["--config", str(cfg), "--out", str(run_dir), "--no-progress", "--seed", str(args.seed)]
    for spec in args.option:
        name, _, option = spec.partition(":")
        if name == model:
            cmd += ["-o", option]
    cmd += args.train_args
    train = run(cmd, args.threads, args.timeout)
    if train["timed_out"]:
        return {"model": model, "error": f"train timed out after {args.timeout:g} s"}
    times = step_times(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    samples_dir = work / f"samples_{model}"
    cmd = [sys.executable, "-m", "flowforge", "sample", str(run_dir), "-n", str(args.samples)]
    cmd += ["--out", str(samples_dir), "--format", "png", "--no-progress"]
    continuous = model in CONTINUOUS
    solver = args.sample_solver.split() if continuous else []
    for s in solver:
        cmd += ["--solver", s]
    sample = run(cmd, args.threads, args.timeout)
    pngs = sorted(samples_dir.glob("*.png"))
    eval_json = work / f"eval_{model}.json"
    cmd = [sys.executable, "-m", "flowforge", "evaluate", str(run_dir), "--out", str(eval_json)]
    cmd += ["--samples", str(args.eval_samples)]
    eval_solver = args.eval_solver.split() if continuous else []
    for s in eval_solver:
        cmd += ["--solver", s]
    evaluate = run(cmd, args.threads, args.timeout)
    ev = {} if evaluate["timed_out"] else json.loads(eval_json.read_text())
    return {
        "model": model,
        "options": (config.get("model") or {}).get("options"),
        "event_shape": config.get("event_shape"),
        "levels": config.get("levels"),
        "dequantization": config.get("dequantization"),
        "steps": args.steps,
        "batch_size": (config.get("train") or {}).get("batch_size"),
        "lr": (config.get("train") or {}).get("lr"),
        "step_seconds_median": statistics.median(times) if times else None,
        "step_seconds_windows": times,
        "train_seconds": train["seconds"],
        "train_peak_rss_mib": train["peak_rss_mib"],
        "samples": len(pngs),
        "sample_seconds": sample["seconds"],
        "sample_timed_out": sample["timed_out"],
        "sample_peak_rss_mib": sample["peak_rss_mib"],
        "sample_solver": solver,
        "evaluate_seconds": evaluate["seconds"],
        "evaluate_timed_out": evaluate["timed_out"],
        "evaluate_peak_rss_mib": evaluate["peak_rss_mib"],
        "evaluate_solver": eval_solver,
        "bits_per_dim": ev.get("bits_per_dim"),
        "test_nll_nats": ev.get("nll_nats"),
        "evaluate": {k: v for k, v in ev.items() if not isinstance(v, (list, dict)) or k == "nfe"},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="glow,fm")
    p.add_argument("--images", type=int, default=2000, help="synthetic images (default 2000)")
    p.add_argument("--steps", type=int, default=100, help="training steps per model")
    p.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    p.add_argument(
        "--val-samples", type=int, default=8, help="held-out images of the one validation"
    )
    p.add_argument("--samples", type=int, default=64, help="PNG samples per model")
    p.add_argument("--eval-samples", type=int, default=100, help="evaluate's --samples")
    p.add_argument(
        "--eval-solver",
        default="divergence=hutchinson",
        help="continuous models: evaluate's --solver options, space-separated "
        "(default divergence=hutchinson; '' for the exact default)",
    )
    p.add_argument("--sample-solver", default="", help="continuous models: sample's --solver")
    p.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="seconds each command may run before it is stopped and marked (default 900)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--keep", type=Path, default=None, help="keep the images and runs here")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="a model option for one model's train, e.g. fm:field=unet (repeatable)",
    )
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "images_32.json")
    args = p.parse_args()
    load_start = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "shapes32"
        t0 = time.perf_counter()
        images, labels = synthetic_images(args.images, args.seed)
        write_folder(data, images, labels)
        print(f"wrote {args.images} images 3x32x32 to {data} in {time.perf_counter() - t0:.1f} s")
        rows = [bench_model(m, data, work, args) for m in args.models.split(",") if m]
    print(f"\n{args.images} synthetic 3x32x32 images, {args.threads} threads, {args.steps} steps")
    print(
        "| model | step (ms, median) | train (s) | train peak RSS (MiB) | PNG samples (s) |"
        " evaluate (s) | evaluate peak RSS (MiB) | bits/dim |"
    )
    print("|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['error']} | | | | | | |")
            continue
        step = r["step_seconds_median"]
        print(
            f"| {r['model']} | {step * 1000 if step else nan:.0f} | {r['train_seconds']:.1f} | "
            f"{r['train_peak_rss_mib']:.0f} | {r['samples']} in {r['sample_seconds']:.1f} | "
            f"{r['evaluate_seconds']:.1f} | {r['evaluate_peak_rss_mib']:.0f} | "
            f"{r['bits_per_dim'] if r['bits_per_dim'] is not None else nan:.3f} |"
        )
    import torch

    torch.set_num_threads(args.threads)
    write_report(
        args.out,
        {
            "environment": environment({}, load_start),
            "images": args.images,
            "classes": list(SHAPES),
            "seconds": time.perf_counter() - start,
            "runs": rows,
        },
    )
    print("reproduce: " + shlex.join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
