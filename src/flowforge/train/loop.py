"""The training loop: AdamW, warm-up + cosine, clipping, EMA, validation, checkpoints, DDP."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..distributions.model import Model
from ..dynamics.nfe import total_nfe
from ..metrics import nll
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo, any_true, barrier, mean_across, setup
from .ema import EMA

METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, step: int, what: str, last_checkpoint: int | None):
        kept = (
            f"the last good checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        super().__init__(
            f"training diverged at step {step}: {what}; {kept}. "
            "Try a lower learning rate, gradient clipping, or standardised data."
        )
        self.step = step


@dataclass(frozen=True)
class TrainResult:
    """What a run ended with."""

    steps: int
    loss: float
    val_nll: float | None
    seconds: float


class _Objective(nn.Module):
    # DDP synchronises gradients of what its forward() computes, so the loss must be a forward.
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.model.loss(x, context)


def _mix(*values: int) -> int:
    """A 63-bit seed from integers, so each (seed, rank, step) gets its own random stream."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (v & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> Tensor:
    """Indices of step ``step``'s global batch: drawn with replacement, a pure function of its
    arguments, so resumed and distributed runs see exactly the batches an uninterrupted
    single-process run sees."""
    g = torch.Generator().manual_seed(_mix(seed, step, 0xDA7A))
    return torch.randint(n, (batch_size,), generator=g)


def train(
    model: Model,
    train_x: Tensor,
    config: TrainConfig,
    *,
    val_x: Tensor | None = None,
    run_dir: str | Path | None = None,
    train_context: Tensor | None = None,
    val_context: Tensor | None = None,
    resume: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``model`` by minimising ``model.loss`` on minibatches of ``train_x``.

    AdamW with linear warm-up and cosine decay (:meth:`TrainConfig.lr_at`), gradient-norm
    clipping, an EMA of the weights, validation NLL every ``eval_every`` steps, a line of
    ``metrics.jsonl`` every ``log_every`` steps and a checkpoint every ``checkpoint_every``
    steps in ``run_dir``. Deterministic given ``config.seed``: each step's batch and random
    draws depend only on (seed, rank, step), so ``resume=True`` continues an interrupted run to
    the same weights as an uninterrupted one.

    Under ``torchrun`` the model is wrapped in DDP and every process takes its slice of the
    global batch (``batch_size`` must divide by the number of processes); rank 0 alone writes.

    Args:
        model: any model of the registry (the protocol of :class:`flowforge.Model`).
        train_x: ``(N, *event_shape)`` training data.
        config: the training options.
        val_x: held-out data for the validation NLL (optional).
        run_dir: where checkpoints and ``metrics.jsonl`` go (optional for library use).
        train_context, val_context: ``(N, C)`` conditioning rows for conditional models.
        resume: continue from the checkpoint in ``run_dir``.
        stop_at: end this call after step ``stop_at`` with a checkpoint, as an interruption
            would, keeping the schedule of ``config.steps``; resume later (time-boxed jobs).

    Raises:
        TrainingDiverged: the loss or the weights became non-finite.
        ValueError: bad data shapes, or nothing to resume.
    """
    info = setup(config.device)
    if config.batch_size % info.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} must divide evenly across {info.world_size} processes"
        )
    run_dir = Path(run_dir) if run_dir is not None else None
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir to resume from")
    model.train().to(info.device)
    n = train_x.shape[0]
    local = config.batch_size // info.world_size

    def batch(step: int) -> tuple[Tensor, Tensor | None]:
        idx = batch_indices(config.seed, step, n, config.batch_size)
        idx = idx[info.rank * local : (info.rank + 1) * local]
        c = None if train_context is None else train_context[idx].to(info.device)
        return train_x[idx].to(info.device), c

    start = 0
    if not resume:
        # Data-dependent initialisation (ActNorm) on the whole first global batch, the same on
        # every process, before DDP copies rank 0's weights to the others.
        torch.manual_seed(_mix(config.seed, 0, 0))
        g_idx = batch_indices(config.seed, 1, n, config.batch_size)
        with torch.no_grad():
            ctx = None if train_context is None else train_context[g_idx].to(info.device)
            model.loss(train_x[g_idx].to(info.device), ctx)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    elapsed, best = 0.0, (math.inf, 0)
    if resume:
        start, elapsed, best = _restore(run_dir, model, optimizer, ema, config)
    last_checkpoint = start if resume else None
    objective: nn.Module = _Objective(model)
    if info.distributed:
        objective = DistributedDataParallel(objective)

    log_file = run_dir / METRICS_FILE if run_dir is not None and info.is_main else None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_file, start)
    bar = _progress(config, info, start)
    window: list[float] = []
    # Continuous models: function evaluations of each step's forward and backward pass, and
    # the named terms of the loss (e.g. NLL and regularisers), averaged over the log window.
    counting = total_nfe(model) is not None
    nfe_window: list[tuple[int, int]] = []
    terms_window: list[dict[str, float]] = []
    tick, tick_step = time.perf_counter(), start
    t0 = time.perf_counter() - elapsed
    loss_value, val_value = math.nan, None
    step = start
    last = config.steps if stop_at is None else min(stop_at, config.steps)
    for step in range(start + 1, last + 1):
        torch.manual_seed(_mix(config.seed, info.rank, step))
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        x, c = batch(step)
        nfe_start = total_nfe(model)
        loss = objective(x, c)
        nfe_forward = total_nfe(model)
        if any_true(not bool(torch.isfinite(loss)), info):
            _close(bar)
            raise TrainingDiverged(step, f"the loss is {loss.item()}", last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if counting:
            nfe_window.append((nfe_forward - nfe_start, total_nfe(model) - nfe_forward))
        terms = _loss_terms(model)
        if terms:
            terms_window.append(terms)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update(model)
        loss_value = loss.item()
        window.append(loss_value)
        if bar is not None:
            bar.update(1)

        record: dict[str, float | int] = {}
        if step % config.log_every == 0 or step == config.steps:
            now = time.perf_counter()
            record = {
                "step": step,
                "loss": mean_across(sum(window) / len(window), info),
                "lr": config.lr_at(step),
                "steps_per_s": (step - tick_step) / max(now - tick, 1e-9),
                "time_s": now - t0,
                **_window_stats(nfe_window, terms_window),
            }
            window, tick, tick_step = [], now, step
            nfe_window, terms_window = [], []
        evaluate = val_x is not None and (
            step == config.steps or (config.eval_every and step % config.eval_every == 0)
        )
        if evaluate:
            torch.manual_seed(_mix(config.seed, info.rank, step, 0xE7A1))
            evaluated = ema.model if ema else model
            val_value = _validate(evaluated, val_x, val_context, config, info)
            record = {**record, "step": step, "val_nll": val_value}
            if val_value < best[0]:
                best = (val_value, step)
                if config.keep_best and run_dir is not None and info.is_main:
                    ckpt.save_best(run_dir, step, val_value, evaluated.state_dict())
        if record and log_file is not None:
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        if bar is not None and record:
            bar.set_postfix(_postfix(record, val_value))
        if run_dir is not None and (
            step == last or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            if any_true(not _all_finite(model), info):
                _close(bar)
                raise TrainingDiverged(step, "the weights are not finite", last_checkpoint)
            if info.is_main:
                _save(run_dir, step, model, optimizer, ema, time.perf_counter() - t0, best)
            barrier(info)
            last_checkpoint = step
    _close(bar)
    return TrainResult(step, loss_value, val_value, time.perf_counter() - t0)


def _validate(
    model: Model, x: Tensor, context: Tensor | None, config: TrainConfig, info: DistInfo
) -> float:
    x = x[: config.max_val_samples].to(info.device)
    if context is not None:
        context = context[: config.max_val_samples].to(info.device)
    was_training = model.training
    model.eval()
    try:
        return nll(model, x, context=context, batch_size=config.eval_batch_size).mean
    finally:
        model.train(was_training)


def _loss_terms(model: nn.Module) -> dict[str, float]:
    terms: dict[str, float] = {}
    for m in model.modules():
        found = getattr(m, "loss_terms", None)
        if isinstance(found, dict):
            terms.update(found)
    return terms


def _window_stats(
    nfe: list[tuple[int, int]], terms: list[dict[str, float]]
) -> dict[str, float | int]:
    """Per-step means over a log window: ``nfe`` (forward solve), ``nfe_max``, ``nfe_backward``
    (the adjoint's backward solves; 0 when backpropagating through the solver) and each loss
    term as ``loss_NAME``."""
    out: dict[str, float | int] = {}
    if nfe:
        out["nfe"] = sum(f for f, _ in nfe) / len(nfe)
        out["nfe_max"] = max(f for f, _ in nfe)
        out["nfe_backward"] = sum(b for _, b in nfe) / len(nfe)
    for key in dict.fromkeys(k for t in terms for k in t):
        values = [t[key] for t in terms if key in t]
        out[f"loss_{key}"] = sum(values) / len(values)
    return out


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _save(
    run_dir: Path,
    step: int,
    model: Model,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    elapsed: float,
    best: tuple[float, int],
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
    }
    ckpt.save_checkpoint(run_dir, step, weights, tensors, state)


def split_weights(weights: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a ``model.safetensors`` dict under ``prefix.`` (``model`` or ``ema``)."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in weights.items() if k.startswith(prefix + ".")}


def _restore(
    run_dir: Path,
    model: Model,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    config: TrainConfig,
) -> tuple[int, float, tuple[float, int]]:
    weights, tensors, state = ckpt.load_checkpoint(run_dir)
    model.load_state_dict(split_weights(weights, "model"))
    if ema is not None:
        saved = split_weights(weights, "ema")
        ema.model.load_state_dict(saved if saved else model.state_dict())
        ema.updates = int(state.get("ema_updates", 0))
    ckpt.load_optimizer_state(optimizer, tensors, state["optimizer"])
    step = int(state["step"])
    if step >= config.steps:
        raise ValueError(
            f"the run in {run_dir} already finished its {step} steps; raise --steps to go on"
        )
    best_val = state.get("best_val_nll")
    best = (math.inf if best_val is None else float(best_val), int(state.get("best_step", 0)))
    return step, float(state.get("elapsed_s", 0.0)), best


def _truncate_log(path: Path, step: int) -> None:
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
            kept.append(line)
    ckpt.write_atomic(path, "".join(k + "\n" for k in kept).encode())


def _progress(config: TrainConfig, info: DistInfo, start: int):
    if not (config.progress and info.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _postfix(record: dict, val: float | None) -> dict[str, str]:
    out = {}
    if "loss" in record:
        out["loss"] = f"{record['loss']:.4f}"
    if "nfe" in record:
        out["nfe"] = f"{record['nfe']:.0f}"
    if val is not None:
        out["val_nll"] = f"{val:.4f}"
    return out


def _close(bar) -> None:
    if bar is not None:
        bar.close()
