"""Shared pieces of the benchmark scripts: timing, the machine's description, the JSON report."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import flowforge as ff


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time in seconds of ``repeats`` calls of ``fn``, and the first call's result."""
    times, first = [], None
    for i in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if i == 0:
            first = result
    return statistics.median(times), first


def environment(peers: dict[str, str], load_start: tuple[float, float, float]) -> dict[str, Any]:
    """Versions, the machine, and the load average at the start and end of the run."""
    return {
        "torch": torch.__version__,
        **peers,
        "flowforge": getattr(ff, "__version__", "unknown"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # Other processes on the machine inflate timings; the load average flags them.
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON, with the command line that produced it first."""
    report = {
        "command": shlex.join(["python", *sys.argv]),
        "python_executable": sys.executable,
        **report,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def interleaved_runs(
    seeds: list[int],
    steps: int,
    batch_size: int,
    libraries: tuple[str, ...],
    run: Callable[[str, int, torch.Tensor], dict[str, Any]],
) -> list[dict[str, Any]]:
    """For each seed, pre-generate ``steps`` checkerboard batches ``(steps, B, 2)`` and call
    ``run(library, seed, batches)`` for every library in turn: interleaved, so that machine
    noise hits all libraries alike, and the same batches for each."""
    runs = []
    for seed in seeds:
        batches = ff.data.checkerboard(steps * batch_size, seed=seed).view(steps, batch_size, 2)
        for library in libraries:
            runs.append(run(library, seed, batches))
    return runs


def prepare(args: Any, peer: str, test_seed: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Set the thread count, print what runs, and draw the test set: ``(test, load_start)``."""
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(
        f"torch {torch.__version__}, {peer}, {torch.get_num_threads()} threads;"
        f" {args.steps} steps x batch {args.batch_size}, lr {args.lr}, seeds {args.seed_list},"
        f" test set {args.test_size}"
    )
    return ff.data.checkerboard(args.test_size, seed=test_seed), load_start
