"""Learned elementwise affine maps: a free diagonal scaling and ActNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Transform, check_features


class ElementwiseAffine(Transform):
    r""":math:`y = x \odot \exp(s) + t` with learned ``s, t`` of shape ``(D,)``.

    :math:`\log |\det J| = \sum_i s_i`. NICE ends with such a diagonal scaling layer, since its
    additive couplings preserve volume.

    Args:
        features: ``D``.

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014)
        https://arxiv.org/abs/1410.8516
    """

    def __init__(self, features: int):
        super().__init__()
        self.features = features
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(x, self.features)
        ladj = self.log_scale.sum().expand(x.shape[0])
        return x * torch.exp(self.log_scale) + self.shift, ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(y, self.features, "y")
        ladj = -self.log_scale.sum().expand(y.shape[0])
        return (y - self.shift) * torch.exp(-self.log_scale), ladj


class ActNorm(Transform):
    r""":math:`y = (x - \mu) \odot \exp(-s)`, initialised so the first batch comes out standardised.

    On the first forward call in training mode with at least two samples, :math:`\mu` and
    :math:`s` are set to the batch mean and log standard deviation of ``x`` (data-dependent
    initialisation); afterwards both are ordinary parameters. The ``initialized`` buffer is part
    of the state dict, so a loaded model is never re-initialised.

    Args:
        features: ``D``.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018)
        https://arxiv.org/abs/1807.03039
    """

    def __init__(self, features: int):
        super().__init__()
        self.features = features
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set the parameters so that ``x (B, D)`` maps to zero mean and unit variance."""
        # The floor keeps a constant feature from giving an infinite scale.
        std = x.std(dim=0).clamp_min(1e-6)
        self.loc.copy_(x.mean(dim=0))
        self.log_scale.copy_(torch.log(std))
        self.initialized.fill_(True)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(x, self.features)
        if self.training and x.shape[0] > 1 and not bool(self.initialized):
            self.initialize(x.detach())
        ladj = -self.log_scale.sum().expand(x.shape[0])
        return (x - self.loc) * torch.exp(-self.log_scale), ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(y, self.features, "y")
        ladj = self.log_scale.sum().expand(y.shape[0])
        return y * torch.exp(self.log_scale) + self.loc, ladj
