"""Training options: one typed, validated, JSON-serialisable dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides the model and the data.

    Attributes:
        steps: number of optimiser steps.
        batch_size: global batch size (split across processes under ``torchrun``).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: linear warm-up from 0 to ``lr``; ``None`` means ``min(100, steps // 20)``.
        min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio``.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
        ema_decay: decay of the exponential moving average of the weights (0 disables EMA);
            validation, sampling and evaluation use the EMA weights when it is on.
        eval_every: steps between validation NLL evaluations (0: only at the end).
        keep_best: keep the weights of the best validation NLL in ``best.safetensors``
            (early stopping without stopping): ``sample``/``evaluate`` use them by default.
        checkpoint_every: steps between checkpoints (0: only at the end).
        log_every: steps between lines of ``metrics.jsonl``.
        eval_batch_size: batch size of validation passes.
        max_val_samples: validation uses at most this many held-out samples (cost control).
        seed: seed of the model initialisation, the batches and every random draw in training.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        progress: show a progress bar (on rank 0 only).
    """

    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 5.0
    ema_decay: float = 0.999
    eval_every: int = 500
    keep_best: bool = True
    checkpoint_every: int = 500
    log_every: int = 50
    eval_batch_size: int = 4096
    max_val_samples: int = 10_000
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        need(is_int(self.steps) and self.steps >= 1, "steps", "an integer >= 1")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(is_num(self.lr) and self.lr > 0, "lr", "a positive number")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(
            self.warmup_steps is None or (is_int(self.warmup_steps) and self.warmup_steps >= 0),
            "warmup_steps",
            "an integer >= 0",
        )
        need(is_num(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]")
        need(
            self.grad_clip is None or (is_num(self.grad_clip) and self.grad_clip > 0),
            "grad_clip",
            "a positive number or None",
        )
        need(is_num(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        for name in ("eval_every", "checkpoint_every"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        for name in ("log_every", "eval_batch_size", "max_val_samples"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(isinstance(self.device, str) and bool(self.device), "device", "a device name")
        need(isinstance(self.keep_best, bool), "keep_best", "true or false")
        need(isinstance(self.progress, bool), "progress", "true or false")

    @property
    def warmup(self) -> int:
        """The number of warm-up steps in effect."""
        return min(100, self.steps // 20) if self.warmup_steps is None else self.warmup_steps

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (1-based): linear warm-up, then cosine decay."""
        if step <= self.warmup:
            return self.lr * step / max(self.warmup, 1)
        progress = (step - self.warmup) / max(self.steps - self.warmup, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> TrainConfig:
        """Build from a dict (e.g. JSON or TOML); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        return cls(**values)
