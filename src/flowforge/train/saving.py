"""A run's checkpoint as the training loop writes and restores it, and its log on resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from ..distributions.model import Model
from . import checkpoint as ckpt
from .config import TrainConfig
from .ema import EMA


def save(
    run_dir: Path,
    step: int,
    model: Model,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    elapsed: float,
    best: tuple[float, int],
    bad_evals: int,
    stop_reason: str | None,
) -> None:
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        weights.update({f"ema.{k}": v for k, v in ema.model.state_dict().items()})
    tensors, optim = ckpt.optimizer_state(optimizer)
    state = {
        "optimizer": optim,
        "ema_updates": ema.updates if ema is not None else 0,
        "elapsed_s": elapsed,
        # JSON has no infinity: no validation yet is written as null.
        "best_val_nll": best[0] if math.isfinite(best[0]) else None,
        "best_step": best[1],
        # Validations since the best one: patience continues across a resume.
        "bad_evals": bad_evals,
        # How the run ended (null: it was stopped from outside, by a kill).
        "stop_reason": stop_reason,
    }
    ckpt.save_checkpoint(run_dir, step, weights, tensors, state)


def split_weights(weights: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a ``model.safetensors`` dict under ``prefix.`` (``model`` or ``ema``)."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in weights.items() if k.startswith(prefix + ".")}


def restore(
    run_dir: Path,
    model: Model,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    config: TrainConfig,
) -> tuple[int, float, tuple[float, int], int]:
    """Load the checkpoint: ``(step, seconds spent, (best val NLL, its step), bad evals)``."""
    weights, tensors, state = ckpt.load_checkpoint(run_dir)
    step = int(state["step"])
    elapsed = float(state.get("elapsed_s", 0.0))
    best_val = state.get("best_val_nll")
    best = (math.inf if best_val is None else float(best_val), int(state.get("best_step", 0)))
    bad = int(state.get("bad_evals", 0))
    if config.steps is not None and step >= config.steps:
        raise ValueError(
            f"the run in {run_dir} already finished its {step} steps; raise --steps to go on"
        )
    if config.time_limit is not None and elapsed >= config.time_limit:
        raise ValueError(
            f"the run in {run_dir} already spent {elapsed:.1f}s of its time limit of "
            f"{config.time_limit:g}s; raise --time-limit to go on"
        )
    if config.patience is not None and bad >= config.patience:
        raise ValueError(
            f"the run in {run_dir} stopped early at step {step}: no better validation NLL in "
            f"{bad} validations since step {best[1]}; raise --patience (0 turns early stopping "
            "off) to go on"
        )
    model.load_state_dict(split_weights(weights, "model"))
    if ema is not None:
        saved = split_weights(weights, "ema")
        ema.model.load_state_dict(saved if saved else model.state_dict())
        ema.updates = int(state.get("ema_updates", 0))
    ckpt.load_optimizer_state(optimizer, tensors, state["optimizer"])
    return step, elapsed, best, bad


_STOP_KEYS = ("stop", "stop_step", "seconds", "best_step", "best_val_nll")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines after ``step`` (and a torn last line) so a resumed log reads straight."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            if "stop" in record:  # the run goes on: only its last line says how it stopped
                record = {k: v for k, v in record.items() if k not in _STOP_KEYS}
                line = json.dumps(record)
            kept.append(line)
    ckpt.write_atomic(path, "".join(k + "\n" for k in kept).encode())
