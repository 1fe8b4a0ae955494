"""The training loop: AdamW, warm-up + cosine, clipping, EMA, validation, checkpoints, DDP."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..data import dequantize, quantize
from ..distributions.batch import Batch
from ..distributions.model import Model
from ..dynamics.nfe import total_nfe
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo, any_true, barrier, mean_across, setup
from .ema import EMA
from .interrupt import SigintFlag, TrainingInterrupted
from .saving import restore, save, split_weights, truncate_log
from .validation import Validation

METRICS_FILE = "metrics.jsonl"
__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "batch_indices",
    "batch_noise_generator",
    "split_weights",
    "train",
]
# How a run can end; the first that applies, in this order, is recorded.
STOP_REASONS = ("steps", "early_stop", "time", "interrupted")


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
    """What a run ended with.

    Attributes:
        steps: the step the run reached.
        loss: the training loss of the last step.
        val_nll: the last validation NLL of this call (nats), or ``None``.
        seconds: wall time of the whole run, time before a resume included.
        best_step: the step of the best validation NLL (the weights of ``best.safetensors``,
            which ``sample``/``evaluate``/:func:`load` use), or ``None`` without validation.
        best_val_nll: that best validation NLL, or ``None``.
        stop_reason: ``"steps"`` (reached ``steps``), ``"time"`` (reached ``time_limit``),
            ``"early_stop"`` (``patience`` validations without improvement) or
            ``"interrupted"`` (``stop_at``; Ctrl-C raises :class:`TrainingInterrupted`).
        resumed_from: the step this call resumed from, or ``None`` for a fresh start.
    """

    steps: int
    loss: float
    val_nll: float | None
    seconds: float
    best_step: int | None = None
    best_val_nll: float | None = None
    stop_reason: str = "steps"
    resumed_from: int | None = None


class _Objective(nn.Module):
    # DDP synchronises gradients of what its forward() computes, so the loss must be a forward.
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        result = self.model.objective(batch)
        return result.loss, dict(result.terms)


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


def batch_noise_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s dequantisation noise (``train(levels=...)``): drawn for
    the whole global batch and a pure function of its arguments, like :func:`batch_indices`, so
    resumed and distributed runs train on the same values as one uninterrupted process."""
    return torch.Generator().manual_seed(_mix(seed, step, 0xDE0A))


def train(
    model: Model,
    train_x: Tensor,
    config: TrainConfig,
    *,
    val_x: Tensor | None = None,
    run_dir: str | Path | None = None,
    train_context: Tensor | None = None,
    val_context: Tensor | None = None,
    train_noise: Tensor | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    desc: str = "train",
    levels: int | None = None,
) -> TrainResult:
    """Train ``model`` by minimising ``model.loss`` on minibatches of ``train_x``.

    AdamW with linear warm-up and cosine decay (:meth:`TrainConfig.lr_at`), gradient-norm
    clipping, an EMA of the weights, validation NLL (:class:`~flowforge.train.validation.
    Validation`), a line of ``metrics.jsonl`` every ``log_every`` steps and a checkpoint every
    ``checkpoint_every`` steps in ``run_dir``. The run ends at ``config.steps``, at
    ``config.time_limit`` seconds, or after ``config.patience`` validations without a better
    validation NLL; the last line of ``metrics.jsonl`` and ``state.json`` say which
    (``"stop"``/``"stop_reason"``). Deterministic given ``config.seed`` and step budgets: each
    step's batch and random draws depend only on (seed, rank, step), so ``resume=True``
    continues an interrupted run to the same weights as an uninterrupted one (a time budget
    makes the schedule, and so the weights, depend on the machine's speed).

    Ctrl-C finishes the current step, writes its checkpoint and raises
    :class:`TrainingInterrupted`; a second Ctrl-C interrupts at once.

    Under ``torchrun`` the model is wrapped in DDP and every process takes its slice of the
    global batch (``batch_size`` must divide by the number of processes); rank 0 alone writes.

    A run directory that has no ``config.json`` yet gets one when ``model`` was built by
    :func:`flowforge.models.create`, with the held-out data beside it (``data.safetensors``),
    so that :func:`load`, ``flowforge sample`` and ``flowforge evaluate`` can use the run.

    Args:
        model: any model of the registry (the protocol of :class:`flowforge.Model`).
        train_x: ``(N, *event_shape)`` training data.
        config: the training options.
        val_x: held-out data for the validation NLL (optional).
        run_dir: where checkpoints and ``metrics.jsonl`` go (optional for library use).
        train_context, val_context: the conditioning of each sample, for conditional models:
            ``(N, C)`` float features (``context_dim=C``) or ``(N,)`` integer class labels
            (``num_classes=K``).
        train_noise: ``(N, *event_shape)`` base points paired with ``train_x`` row by row,
            to train on (noise, sample) pairs (reflow, distillation): each batch is then
            ``Batch(x1=train_x[idx], x0=train_noise[idx])``, and flow matching regresses along
            the given pairs (:class:`~flowforge.Batch`).
        resume: continue from the checkpoint in ``run_dir``; a run directory without one (a
            run killed before its first checkpoint) starts again from step 0.
        stop_at: end this call after step ``stop_at`` with a checkpoint, as an interruption
            would, keeping the schedule of ``config.steps``; resume later (time-boxed jobs).
        desc: the progress bar's label.
        levels: ``L`` when ``train_x`` are values dequantised from ``L`` discrete levels
            (:func:`flowforge.data.dequantize`, ``Dataset.levels``; in ``[0, 1)``, not
            standardised: a :class:`~flowforge.data.Standardize` model standardises after).
            With ``config.dequantization="redraw"`` (the default) every batch then gets new
            noise, ``x = (floor(L x) + u) / L``, ``u`` from :func:`batch_noise_generator`;
            ``val_x`` keeps its noise, so validation NLLs compare across steps. ``None``
            (continuous data): train on ``train_x`` as given.

    Raises:
        TrainingDiverged: the loss or the weights became non-finite.
        TrainingInterrupted: Ctrl-C (after the checkpoint of the step it stopped at).
        ValueError: bad data shapes, or nothing to resume.
    """
    info = setup(config.device)
    if config.batch_size % info.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} must divide evenly across {info.world_size} processes"
        )
    run_dir = ckpt.check_run_dir(run_dir) if run_dir is not None else None
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir to resume from")
    if resume and run_dir is not None and not run_dir.is_dir():
        raise ckpt.CheckpointError(f"run directory {run_dir} does not exist")
    fresh = not resume or run_dir is None or not ckpt.has_checkpoint(run_dir)
    model.train().to(info.device)
    n = train_x.shape[0]
    local = config.batch_size // info.world_size

    _check_aligned(train_x, train_context, "train_context")
    _check_aligned(train_x, train_noise, "train_noise")
    if val_x is not None:
        _check_aligned(val_x, val_context, "val_context")
    # The levels of dequantised training data, once: each batch draws its own noise for them.
    quantized, redraw_levels = None, 0
    if levels is not None and config.dequantization == "redraw":
        quantized, redraw_levels = quantize(train_x, levels), levels

    def take(idx: Tensor, step: int, part: slice = slice(None)) -> Batch:
        """Step ``step``'s batch at the indices ``idx[part]`` of the global batch ``idx``."""
        if quantized is None:
            idx = idx[part]
            x = train_x[idx]
        else:  # noise for the global batch, then this process's part of it
            g = batch_noise_generator(config.seed, step)
            x = dequantize(quantized[idx], redraw_levels, g)[part].to(train_x.dtype)
            idx = idx[part]
        c = None if train_context is None else train_context[idx].to(info.device)
        x0 = None if train_noise is None else train_noise[idx].to(info.device)
        return Batch(x.to(info.device), c, x0)

    def batch(step: int) -> Batch:
        idx = batch_indices(config.seed, step, n, config.batch_size)
        return take(idx, step, slice(info.rank * local, (info.rank + 1) * local))

    start = 0
    if fresh:
        # Data-dependent initialisation (ActNorm) on the whole first global batch, the same on
        # every process, before DDP copies rank 0's weights to the others.
        torch.manual_seed(_mix(config.seed, 0, 0))
        g_idx = batch_indices(config.seed, 1, n, config.batch_size)
        with torch.no_grad():
            model.objective(take(g_idx, 1))
    if fresh and run_dir is not None and info.is_main:
        from .python_run import record_run

        record_run(run_dir, model, config, train_x, val_x, train_context, val_context, levels)
        # Best weights of an earlier attempt that never reached a checkpoint are stale.
        (run_dir / ckpt.BEST_FILE).unlink(missing_ok=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    elapsed, best, bad = 0.0, (math.inf, 0), 0
    if not fresh and run_dir is not None:
        start, elapsed, best, bad = restore(run_dir, model, optimizer, ema, config)
    last_checkpoint = None if fresh else start
    objective: nn.Module = _Objective(model)
    if info.distributed:
        objective = DistributedDataParallel(objective)

    log_file = run_dir / METRICS_FILE if run_dir is not None and info.is_main else None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        truncate_log(log_file, start)
    bar = _progress(config, info, start, elapsed, desc)
    validation = Validation(config, n, val_x, val_context, start, elapsed)
    window: list[float] = []
    # Continuous models: function evaluations of each step's forward and backward pass, and
    # the named terms of the loss (e.g. NLL and regularisers), averaged over the log window.
    counting = total_nfe(model) is not None
    nfe_window: list[tuple[int, int]] = []
    terms_window: list[dict[str, float]] = []
    tick, tick_step = time.perf_counter(), start
    t0 = time.perf_counter() - elapsed
    loss_value, val_value = math.nan, None
    step, reason = start, None
    if stop_at is not None and stop_at <= start:
        reason = "interrupted"
    with SigintFlag() as sigint:
        while reason is None:
            step += 1
            torch.manual_seed(_mix(config.seed, info.rank, step))
            lr = config.lr_at(step, time.perf_counter() - t0)
            for group in optimizer.param_groups:
                group["lr"] = lr
            nfe_start = total_nfe(model) or 0
            loss, terms = objective(batch(step))
            nfe_forward = total_nfe(model) or 0
            if any_true(not bool(torch.isfinite(loss)), info):
                _close(bar)
                raise TrainingDiverged(step, f"the loss is {loss.item()}", last_checkpoint)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if counting:
                nfe_window.append((nfe_forward - nfe_start, (total_nfe(model) or 0) - nfe_forward))
            if terms:
                terms_window.append({k: float(v) for k, v in terms.items()})
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            loss_value = loss.item()
            window.append(loss_value)

            now = time.perf_counter()
            reasons = set()
            if config.steps is not None and step == config.steps:
                reasons.add("steps")
            if config.time_limit is not None and any_true(
                now - t0 + validation.cost >= config.time_limit, info
            ):
                reasons.add("time")  # the reserve lets the last validation end near the limit
            signalled = any_true(sigint.hit, info)
            if signalled or (stop_at is not None and step == stop_at):
                reasons.add("interrupted")

            record: dict[str, float | int | str | None] = {}
            if step % config.log_every == 0 or "steps" in reasons:
                speed = (step - tick_step) / max(now - tick, 1e-9)
                record = _log_record(
                    step, window, nfe_window, terms_window, lr, speed, now - t0, info
                )
                window, tick, tick_step = [], now, step
                nfe_window, terms_window = [], []
            evaluate = validation.due(step, now - t0) or (
                validation.enabled and bool(reasons & {"steps", "time"})
            )
            if evaluate:
                torch.manual_seed(_mix(config.seed, info.rank, step, 0xE7A1))
                evaluated = ema.model if ema else model
                val_value = validation.run(evaluated, info, step, now - t0)
                record = {**record, "step": step, "val_nll": val_value}
                if val_value < best[0]:
                    best, bad = (val_value, step), 0
                    if config.keep_best and run_dir is not None and info.is_main:
                        ckpt.save_best(run_dir, step, val_value, evaluated.state_dict())
                else:
                    bad += 1
            # ``bad`` changes only at a validation, so only then is the collective worth it.
            if evaluate and config.patience is not None and any_true(bad >= config.patience, info):
                reasons.add("early_stop")
            reason = next((r for r in STOP_REASONS if r in reasons), None)
            if reason is not None:
                if "loss" not in record and window:
                    speed = (step - tick_step) / max(now - tick, 1e-9)
                    logged = _log_record(
                        step, window, nfe_window, terms_window, lr, speed, now - t0, info
                    )
                    record = {**logged, **record}
                record.update(_stop_fields(step, reason, best, time.perf_counter() - t0))
            if record and log_file is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if bar is not None:
                _advance(bar, config, step, time.perf_counter() - t0)
                if record:
                    bar.set_postfix(_postfix(record, val_value, step, config))
            if run_dir is not None and (
                reason is not None
                or (config.checkpoint_every and step % config.checkpoint_every == 0)
            ):
                if any_true(not _all_finite(model), info):
                    _close(bar)
                    raise TrainingDiverged(step, "the weights are not finite", last_checkpoint)
                if info.is_main:
                    seconds = time.perf_counter() - t0
                    save(run_dir, step, model, optimizer, ema, seconds, best, bad, reason)
                barrier(info)
                last_checkpoint = step
            if signalled and reason == "interrupted":  # (a run that just ended has ended)
                _close(bar)
                raise TrainingInterrupted(step, run_dir)
    _close(bar)
    best_step = best[1] if math.isfinite(best[0]) else None
    return TrainResult(
        steps=step,
        loss=loss_value,
        val_nll=val_value,
        seconds=time.perf_counter() - t0,
        best_step=best_step,
        best_val_nll=best[0] if best_step is not None else None,
        stop_reason=reason,
        resumed_from=None if fresh else start,
    )


def _log_record(
    step: int,
    window: list[float],
    nfe_window: list[tuple[int, int]],
    terms_window: list[dict[str, float]],
    lr: float,
    speed: float,
    seconds: float,
    info: DistInfo,
) -> dict:
    """A line of ``metrics.jsonl`` for the log window that ends at ``step``."""
    return {
        "step": step,
        "loss": mean_across(sum(window) / len(window), info),
        "lr": lr,
        "steps_per_s": speed,
        "time_s": seconds,
        **_window_stats(nfe_window, terms_window),
    }


def _stop_fields(step: int, reason: str, best: tuple[float, int], seconds: float) -> dict:
    """The keys the last line of ``metrics.jsonl`` adds: how and when the run stopped."""
    found = math.isfinite(best[0])
    return {
        "stop": reason,
        "stop_step": step,
        "seconds": seconds,
        "best_step": best[1] if found else None,
        "best_val_nll": best[0] if found else None,
    }


def _check_aligned(x: Tensor, other: Tensor | None, name: str) -> None:
    """``other`` (conditioning or paired noise) must have one row per row of ``x``."""
    if other is None:
        return
    if not isinstance(other, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(other).__name__}")
    if other.ndim == 0 or other.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} must have one row per sample of the data ({x.shape[0]}), "
            f"got shape {tuple(other.shape)}"
        )


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


def _progress(config: TrainConfig, info: DistInfo, start: int, elapsed: float, desc: str):
    """A bar over the steps, or with a time limit over its seconds (the step in the postfix)."""
    if not (config.progress and info.is_main):
        return None
    from tqdm.auto import tqdm

    if config.time_limit is None:
        return tqdm(total=config.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True)
    return tqdm(
        total=config.time_limit,
        initial=min(elapsed, config.time_limit),
        desc=desc,
        unit="s",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]",
    )


def _advance(bar, config: TrainConfig, step: int, elapsed: float) -> None:
    if config.time_limit is None:
        bar.update(1)
    else:
        bar.update(max(min(elapsed, config.time_limit) - bar.n, 0.0))


def _postfix(record: dict, val: float | None, step: int, config: TrainConfig) -> dict[str, str]:
    out = {}
    if config.time_limit is not None:
        out["step"] = str(step)
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
