"""Learned elementwise affine maps: a free diagonal scaling and ActNorm."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Transform, check_event, event_shape_of


class ElementwiseAffine(Transform):
    r""":math:`y = x \odot \exp(s) + t` with learned ``s, t`` of the event's shape.

    :math:`\log |\det J| = \sum_i s_i`, the sum over every entry of the event. NICE ends with
    such a diagonal scaling layer, since its additive couplings preserve volume.

    Args:
        features: the event shape: ``D`` (or ``(D,)``) for vectors, ``(C, H, W)`` for images;
            ``s`` and ``t`` have this shape (one scale per pixel and channel for an image).

    Shapes: ``x (B, *event_shape)``.

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014)
        https://arxiv.org/abs/1410.8516
    """

    def __init__(self, features: int | Sequence[int]):
        super().__init__()
        self.event_shape = event_shape_of(features)
        self.features = self.event_shape[0]
        self.shift = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        ladj = self.log_scale.sum().expand(x.shape[0])
        return x * torch.exp(self.log_scale) + self.shift, ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        ladj = -self.log_scale.sum().expand(y.shape[0])
        return (y - self.shift) * torch.exp(-self.log_scale), ladj


class ActNorm(Transform):
    r""":math:`y = (x - \mu) \odot \exp(-s)`, initialised so the first batch comes out standardised.

    For vectors ``(D,)`` there is one :math:`\mu, s` per feature. For an event ``(C, *spatial)``
    of rank 2 or more (an image ``(C, H, W)``) there is one per *channel*, shared by every
    position, as in Glow: the statistics are taken over the batch and the positions, and the
    log-determinant is :math:`-H W \sum_c s_c`.

    On the first forward call in training mode with at least two samples, :math:`\mu` and
    :math:`s` are set to the batch mean and log standard deviation of ``x`` (data-dependent
    initialisation); afterwards both are ordinary parameters. The ``initialized`` buffer is part
    of the state dict, so a loaded model is never re-initialised.

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.

    Shapes: ``x (B, *event_shape)``; parameters ``(D,)``, or ``(C, 1, 1)`` for images.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018)
        https://arxiv.org/abs/1807.03039
    """

    initialized: Tensor

    def __init__(self, features: int | Sequence[int]):
        super().__init__()
        self.event_shape = event_shape_of(features)
        self.features = self.event_shape[0]
        channels, *spatial = self.event_shape
        # Positions sharing one channel's statistics (1 for vectors, H * W for images).
        self.positions = math.prod(spatial)
        shape = (channels, *(1 for _ in spatial))
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set the parameters so that ``x (B, *event_shape)`` maps to zero mean and unit
        variance, per feature (vectors) or per channel (images)."""
        # Samples and positions both count as observations of a channel.
        flat = x if x.ndim == 2 else x.transpose(0, 1).reshape(x.shape[1], -1).T
        # The floor keeps a constant feature from giving an infinite scale.
        std = flat.std(dim=0).clamp_min(1e-6)
        self.loc.copy_(flat.mean(dim=0).view(self.loc.shape))
        self.log_scale.copy_(torch.log(std).view(self.log_scale.shape))
        self.initialized.fill_(True)

    def _ladj(self) -> Tensor:
        ladj = self.log_scale.sum()
        return ladj if self.positions == 1 else ladj * self.positions

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        if self.training and x.shape[0] > 1 and not bool(self.initialized):
            self.initialize(x.detach())
        ladj = -self._ladj().expand(x.shape[0])
        return (x - self.loc) * torch.exp(-self.log_scale), ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        ladj = self._ladj().expand(y.shape[0])
        return y * torch.exp(self.log_scale) + self.loc, ladj
