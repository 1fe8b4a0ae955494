"""Learned invertible linear maps in LU form along dimension 1 (on images: 1x1 convolutions)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Transform, check_event, event_shape_of


class LULinear(Transform):
    r""":math:`y = W x + b` with :math:`W = P L U` and :math:`\log |\det J| = \sum_i \log |U_{ii}|`.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular and ``U`` upper-triangular with a
    positive diagonal :math:`\exp(u)`, so the determinant costs ``O(D)`` and inversion two
    triangular solves. It starts as the permutation ``P`` (``L = U = I``).

    On vectors ``(D,)`` it mixes the features. On an event ``(C, *spatial)`` (an image
    ``(C, H, W)``) ``W`` is ``C x C`` and mixes the channels at every position: Glow's invertible
    1x1 convolution, with :math:`\log |\det J| = H W \sum_c \log |U_{cc}|`.

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.
        seed: seed of the fixed random permutation ``P``.

    Shapes: ``x (B, *event_shape)``.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018)
        https://arxiv.org/abs/1807.03039
    """

    permutation: Tensor
    _strict_lower: Tensor

    def __init__(self, features: int | Sequence[int], seed: int = 0):
        super().__init__()
        self.event_shape = event_shape_of(features)
        channels, *spatial = self.event_shape
        self.features = channels
        # Positions sharing one channel mixing (1 for vectors, H * W for images).
        self.positions = math.prod(spatial)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("permutation", torch.randperm(channels, generator=generator))
        self.lower = nn.Parameter(torch.zeros(channels, channels))
        self.upper = nn.Parameter(torch.zeros(channels, channels))
        self.log_diag = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("_strict_lower", torch.tril(torch.ones(channels, channels), -1))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self._strict_lower + eye
        upper = self.upper * self._strict_lower.T + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W = P L U``, shape ``(D, D)`` (``(C, C)`` for images)."""
        lower, upper = self._factors()
        return (lower @ upper)[self.permutation]

    def _ladj(self) -> Tensor:
        ladj = self.log_diag.sum()
        return ladj if self.positions == 1 else ladj * self.positions

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        if x.ndim == 2:
            y = F.linear(x, self.weight(), self.bias)
        else:
            # Channels last, mix, channels back: a 1x1 convolution for any number of positions.
            y = F.linear(x.movedim(1, -1), self.weight(), self.bias).movedim(-1, 1)
        return y, self._ladj().expand(x.shape[0])

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        if y.ndim == 2:
            return self._solve(y), -self._ladj().expand(y.shape[0])
        # Every position of an image is one more right-hand side: (B * H * W, C) rows.
        channels_last = y.movedim(1, -1)
        x = self._solve(channels_last.reshape(-1, self.features))
        return x.reshape(channels_last.shape).movedim(-1, 1), -self._ladj().expand(y.shape[0])

    def _solve(self, y: Tensor) -> Tensor:
        """``x`` with ``W x + b = y`` for rows ``y (N, D)``."""
        lower, upper = self._factors()
        # Undo the row permutation, then solve L U x = y - b by two triangular solves.
        rhs = (y - self.bias)[:, torch.argsort(self.permutation)].T
        z = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, z, upper=True).T
