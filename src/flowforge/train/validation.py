"""When the training loop validates, on how many samples, and what that costs.

An integer ``eval_every`` validates at its multiples and at the last step, on at most
``max_val_samples`` samples: deterministic, as it always was. ``eval_every="auto"`` adapts:

- about once per epoch (:meth:`TrainConfig.eval_interval`), and with a ``time_limit`` also every
  tenth of the budget, so a slow model on a short budget still sees several validations;
- a due validation waits while validating has taken more than a tenth of the run's time so far.
  The log-density of a continuous model (FFJORD, flow matching) solves an ODE and can cost more
  than hundreds of its training steps; this keeps it from crowding out training;
- with a ``time_limit`` the first validation times a small probe and uses the number of samples
  one validation can score in 2 % of the budget (between the probe's size and
  ``max_val_samples``). Every validation of the run then scores the same samples, so their
  values compare.

Validation draws are seeded by ``(seed, rank, step)`` apart from the training stream, so when
(and whether) a validation runs never changes the trained weights; under ``"auto"`` it can
change which step's weights are kept as the best.

A continuous model on images (events ``(C, H, W)``) is validated with Hutchinson's divergence
instead of the exact one (:func:`validation_solver`): the exact divergence costs ``C H W``
backward passes of the field per evaluation (on the 8x8 digits 17x the cost of one probe with
the MLP field, 60x with the U-Net, per sample; docs/training.md). The probes are fixed, the
same at every validation of a run (the global stream reseeded by the run's seed alone), so the
values still compare across steps. The estimate is unbiased for the log-density; test NLLs
(``flowforge evaluate``, ``compare``) stay exact. Vectors validate exactly, as before.
"""

from __future__ import annotations

import time
from typing import cast

import torch
from torch import Tensor

from ..distributions.model import Model
from ..metrics import nll
from .config import TrainConfig
from .distributed import DistInfo

# eval_every="auto": validation may take at most this share of the run's time so far.
AUTO_SHARE = 0.1
# ... and with a time limit it is also due every tenth of the budget.
AUTO_TIME_EVERY = 0.1
# One validation of a time-limited run should cost at most this share of the budget.
AUTO_EACH_SHARE = 0.02
# Samples of the probe that times the first validation of a time-limited run: enough to rank
# checkpoints (a standard error of about a tenth of a nat on typical data), and cheap where one
# sample costs an ODE solve with an exact divergence (64-D flow matching on the digits: ~20 ms).
PROBE_SAMPLES = 64
# Offsets the seed of the fixed validation probes from the run's other streams.
PROBE_STREAM = 0x5EED_F1D5


def validation_solver(model: Model, event_shape: tuple[int, ...]) -> dict[str, object]:
    """The solver options of ``model``'s validation NLL on events of ``event_shape``:
    ``{"divergence": "hutchinson"}`` for a continuous model (one whose ``log_prob`` takes
    ``divergence``) on images (an event of rank above 1), whose exact divergence costs
    ``C H W`` backward passes of the field per evaluation; ``{}`` (the model's own exact
    default) for every other model and for vectors."""
    if len(event_shape) < 2 or "divergence" not in model.solver_keys:
        return {}
    return {"divergence": "hutchinson"}


class Validation:
    """The validation schedule and its bookkeeping for one call of the training loop.

    Args:
        config: the training options.
        n_train: number of training samples (the epoch of ``"auto"``).
        x: ``(N_val, *event_shape)`` held-out data, or ``None`` (never validate).
        context: ``(N_val, C)`` conditioning rows of ``x``, or ``None``.
        start_step: the step the loop starts after.
        elapsed: seconds the run had spent before this call (a resumed run's).
    """

    def __init__(
        self,
        config: TrainConfig,
        n_train: int,
        x: Tensor | None,
        context: Tensor | None,
        start_step: int,
        elapsed: float,
    ):
        self.config = config
        self.x, self.context = x, context
        self.every = config.eval_interval(n_train)
        self.auto = config.eval_every == "auto"
        self.size = 0 if x is None else min(x.shape[0], config.max_val_samples)
        self.sized = not (self.auto and config.time_limit is not None)
        self.last_step, self.last_time, self.begin = start_step, elapsed, elapsed
        self.spent = 0.0  # seconds spent validating in this call
        self.cost = 0.0  # seconds of the latest validation: the reserve for a final one

    @property
    def enabled(self) -> bool:
        return self.x is not None

    def due(self, step: int, elapsed: float) -> bool:
        """Whether to validate after ``step``, ``elapsed`` seconds into the run (the last step's
        validation is the loop's decision)."""
        if self.x is None:
            return False
        if not self.auto:
            return bool(self.every) and step % self.every == 0
        by_steps = step - self.last_step >= self.every
        limit = self.config.time_limit
        by_time = limit is not None and elapsed - self.last_time >= AUTO_TIME_EVERY * limit
        return (by_steps or by_time) and self.spent <= AUTO_SHARE * (elapsed - self.begin)

    def run(self, model: Model, info: DistInfo, step: int, elapsed: float) -> float:
        """The validation NLL of ``model`` (nats), with the time it took booked."""
        t = time.perf_counter()
        value = None
        if not self.sized:
            probe = min(PROBE_SAMPLES, self.size)
            value = self._nll(model, probe, info)
            per_sample = (time.perf_counter() - t) / probe
            limit = cast(float, self.config.time_limit)  # not sized: only with a time_limit
            allowed = AUTO_EACH_SHARE * limit
            self.size = int(min(max(allowed / max(per_sample, 1e-12), probe), self.size))
            self.sized = True
            if self.size != probe:  # else the probe scored exactly the validation samples
                value = None
        t_main = time.perf_counter() if value is None else t
        if value is None:
            value = self._nll(model, self.size, info)
        now = time.perf_counter()
        self.cost = now - t_main
        self.spent += now - t
        self.last_step, self.last_time = step, elapsed + (now - t)
        return value

    def _nll(self, model: Model, n: int, info: DistInfo) -> float:
        if self.x is None:
            raise RuntimeError("Validation.run needs held-out data; call it only when enabled")
        x = self.x[:n].to(info.device)
        context = None if self.context is None else self.context[:n].to(info.device)
        solver = validation_solver(model, tuple(x.shape[1:]))
        was_training = model.training
        model.eval()
        try:
            if not solver:
                return nll(model, x, context=context, batch_size=self.config.eval_batch_size).mean
            # Fixed probes: the global stream reseeded by the run's seed alone, the same draws
            # at every validation (the loop's stream is restored afterwards).
            with torch.random.fork_rng(devices=[] if x.device.type == "cpu" else [x.device]):
                torch.manual_seed(self.config.seed + PROBE_STREAM)
                batch = self.config.eval_batch_size
                return nll(model, x, context=context, batch_size=batch, **solver).mean
        finally:
            model.train(was_training)
