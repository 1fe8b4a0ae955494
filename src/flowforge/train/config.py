"""Training options: one typed, validated, JSON-serialisable dataclass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

from .._checks import check_bool, check_choice, check_int, check_number, check_positive

# The default warm-up is at most this many steps (5 % of the steps when fewer), as before.
_WARMUP_CAP = 100
# With a time limit the default warm-up also ends by this share of the budget.
_WARMUP_TIME_SHARE = 0.05
# eval_every="auto": once per epoch, but at least every 500 steps (today's interval, so long
# runs on large data still see the curve) and at most every 10 (a validation costs about as much
# as a few steps on small data, so more often would mostly measure noise).
_AUTO_EVAL_MIN, _AUTO_EVAL_MAX = 10, 500
# How the dequantisation noise of discrete training data is drawn (TrainConfig.dequantization),
# and what a run's config.json says of it ("dequantization_noise"; held-out data keep theirs).
NOISE_NOTES = {
    "redraw": "uniform, redrawn every batch",
    "fixed": "uniform, drawn once at load",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides the model and the data.

    A run ends at ``steps`` optimiser steps, at ``time_limit`` seconds, or when the validation
    NLL has not improved for ``patience`` validations, whichever comes first.

    Attributes:
        steps: number of optimiser steps; ``None`` (open-ended) only with a ``time_limit``.
        time_limit: seconds of wall time for the run (validation included; time spent before
            a resume counts), or ``None``. The learning-rate schedule then runs over the share
            of the budget spent (:meth:`lr_at`), and training stops early enough for its last
            validation to end near the limit.
        batch_size: global batch size (split across processes under ``torchrun``).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: linear warm-up from 0 to ``lr``; ``None`` means ``min(100, steps // 20)``
            steps (100 for open-ended runs), ended sooner by 5 % of a ``time_limit``.
        min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio``.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        ema_decay: decay of the exponential moving average of the weights (0 disables EMA);
            validation, sampling and evaluation use the EMA weights when it is on.
        eval_every: steps between validation NLL evaluations (0: only at the end), or
            ``"auto"``: about once per epoch, ``ceil(N_train / batch_size)`` clamped to
            [10, 500] steps, and with a ``time_limit`` also every tenth of it, as long as
            validation has taken under a tenth of the time so far (see :meth:`eval_interval`).
        patience: stop after this many validations in a row without a better validation NLL
            (``None``: never stop early). The best weights are kept either way.
        keep_best: keep the weights of the best validation NLL in ``best.safetensors``
            (early stopping without stopping): ``sample``/``evaluate`` use them by default.
        checkpoint_every: steps between checkpoints (0: only at the end).
        log_every: steps between lines of ``metrics.jsonl``.
        eval_batch_size: batch size of validation passes.
        max_val_samples: validation uses at most this many held-out samples (cost control).
        seed: seed of the model initialisation, the batches and every random draw in training.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        progress: show a progress bar (on rank 0 only).
        dequantization: for training data dequantised from discrete levels (the digits, image
            files: :func:`~flowforge.train.train`'s ``levels``), ``"redraw"`` trains every
            batch on fresh noise, ``x = (floor(L x) + u) / L`` with ``u`` drawn
            from a generator seeded by (seed, step), so a model cannot fit the noise drawn at
            load; ``"fixed"`` trains on the values as loaded. Validation and test data keep
            their noise either way. Without levels (continuous data) it has no effect.
    """

    steps: int | None = 5000
    time_limit: float | None = None
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 5.0
    ema_decay: float = 0.999
    eval_every: int | str = "auto"
    patience: int | None = 20
    keep_best: bool = True
    checkpoint_every: int = 500
    log_every: int = 50
    eval_batch_size: int = 4096
    max_val_samples: int = 10_000
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    dequantization: str = "redraw"

    def __post_init__(self) -> None:
        if self.steps is not None:
            check_int(self.steps, "steps", 1, "an integer >= 1 (or None with a time_limit)")
        if self.time_limit is not None:
            check_positive(self.time_limit, "time_limit", "a positive number of seconds or None")
        if self.steps is None and self.time_limit is None:
            raise ValueError(
                "steps=None (open-ended) needs a time_limit: give steps, time_limit or both"
            )
        if self.eval_every != "auto":
            check_int(self.eval_every, "eval_every", 0, "an integer >= 0 or 'auto'")
        if self.patience is not None:
            check_int(self.patience, "patience", 1, "an integer >= 1 or None")
        check_int(self.batch_size, "batch_size", 1, "an integer >= 1")
        check_positive(self.lr, "lr")
        check_number(self.weight_decay, "weight_decay", 0)
        if self.warmup_steps is not None:
            check_int(self.warmup_steps, "warmup_steps", 0, "an integer >= 0 or None")
        check_number(self.min_lr_ratio, "min_lr_ratio", 0, 1)
        if self.grad_clip is not None:
            check_positive(self.grad_clip, "grad_clip", "a positive number or None")
        check_number(self.ema_decay, "ema_decay", 0, below=1)
        check_int(self.checkpoint_every, "checkpoint_every", 0, "an integer >= 0")
        for name in ("log_every", "eval_batch_size", "max_val_samples"):
            check_int(getattr(self, name), name, 1, "an integer >= 1")
        check_int(self.seed, "seed", 0, "an integer >= 0")
        if not (isinstance(self.device, str) and self.device):
            raise ValueError(f"device must be a device name, got {self.device!r}")
        check_bool(self.keep_best, "keep_best")
        check_bool(self.progress, "progress")
        check_choice(self.dequantization, "dequantization", NOISE_NOTES)

    @property
    def warmup(self) -> int:
        """The number of warm-up steps in effect."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return _WARMUP_CAP if self.steps is None else min(_WARMUP_CAP, self.steps // 20)

    def fraction_done(self, step: int, elapsed: float = 0.0) -> float:
        """The share of the run done after ``step`` steps and ``elapsed`` seconds, in [0, 1]:
        ``max(step / steps, elapsed / time_limit)`` over the limits that are set."""
        done = step / self.steps if self.steps is not None else 0.0
        if self.time_limit is not None:
            done = max(done, elapsed / self.time_limit)
        return min(done, 1.0)

    def lr_at(self, step: int, elapsed: float = 0.0) -> float:
        """Learning rate of optimiser step ``step`` (1-based), started ``elapsed`` seconds into
        the run: linear warm-up, then cosine decay to ``lr * min_lr_ratio``.

        Without a ``time_limit`` the cosine runs over steps ``warmup..steps``. With one it runs
        over :meth:`fraction_done` (the larger of the shares of steps and of seconds spent), and the
        default warm-up also ends once 5 % of the time is spent, so a slow model on a short
        budget is not held at a low learning rate for most of it.
        """
        if self.time_limit is None:
            steps = cast(int, self.steps)  # __post_init__: without a time_limit, steps is set
            if step <= self.warmup:
                return self.lr * step / max(self.warmup, 1)
            progress = (step - self.warmup) / max(steps - self.warmup, 1)
        else:
            share = elapsed / self.time_limit
            warm = step / max(self.warmup, 1)
            if self.warmup_steps is None:
                warm = max(warm, share / _WARMUP_TIME_SHARE)
            if warm < 1:
                return self.lr * warm
            progress = share
            if self.steps is not None:
                progress = max(progress, (step - self.warmup) / max(self.steps - self.warmup, 1))
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)

    def eval_interval(self, n_train: int) -> int:
        """Steps between validations for ``n_train`` training samples (0: only at the end).

        ``"auto"`` validates about once per epoch, ``ceil(n_train / batch_size)`` steps,
        clamped to [10, 500]: the 1,000 training digits or a CSV of a few hundred rows, which
        overfit within a hundred steps, are validated every 10 steps; the checkerboard's
        100,000 points every 391 (500 before).
        """
        if self.eval_every != "auto":
            return int(self.eval_every)
        epoch = -(-int(n_train) // self.batch_size)
        return min(max(epoch, _AUTO_EVAL_MIN), _AUTO_EVAL_MAX)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. JSON or TOML); unknown keys are an error naming them.

        The values may be of any type (they come from a file); ``__post_init__`` checks them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        return cls(**values)
