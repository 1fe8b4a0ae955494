"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy
from typing import Generic, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class EMA(Generic[M]):
    r"""Keeps :math:`\bar\theta \leftarrow \beta_n \bar\theta + (1 - \beta_n)\theta` each step.

    The decay ramps up as :math:`\beta_n = \min(\beta, (1 + n) / (10 + n))` so the average is not
    dominated by the random initialisation early in a run; buffers (e.g. ActNorm's flag) are
    copied, not averaged.

    Args:
        model: the model being trained; :attr:`model` is a copy of the same type.
        decay: :math:`\beta`, the asymptotic decay.
    """

    def __init__(self, model: M, decay: float):
        self.decay = decay
        self.updates = 0
        self.model: M = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: M) -> None:
        """Move the average towards ``model``'s current weights."""
        self.updates += 1
        beta = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.lerp_(p.detach(), 1 - beta)
        for avg_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg_b.copy_(b)
