"""Learned invertible linear maps in LU form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Transform, check_features


class LULinear(Transform):
    r""":math:`y = W x + b` with :math:`W = P L U` and :math:`\log |\det J| = \sum_i \log |U_{ii}|`.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular and ``U`` upper-triangular with a
    positive diagonal :math:`\exp(u)`, so the determinant costs ``O(D)`` and inversion two
    triangular solves. This is the vector form of Glow's invertible 1x1 convolution. It starts as
    the permutation ``P`` (``L = U = I``).

    Args:
        features: ``D``.
        seed: seed of the fixed random permutation ``P``.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018)
        https://arxiv.org/abs/1807.03039
    """

    def __init__(self, features: int, seed: int = 0):
        super().__init__()
        self.features = features
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("permutation", torch.randperm(features, generator=generator))
        self.lower = nn.Parameter(torch.zeros(features, features))
        self.upper = nn.Parameter(torch.zeros(features, features))
        self.log_diag = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("_strict_lower", torch.tril(torch.ones(features, features), -1))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self._strict_lower + eye
        upper = self.upper * self._strict_lower.T + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W = P L U``, shape ``(D, D)``."""
        lower, upper = self._factors()
        return (lower @ upper)[self.permutation]

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(x, self.features)
        y = F.linear(x, self.weight(), self.bias)
        return y, self.log_diag.sum().expand(x.shape[0])

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(y, self.features, "y")
        lower, upper = self._factors()
        # Undo the row permutation, then solve L U x = y - b by two triangular solves.
        rhs = (y - self.bias)[:, torch.argsort(self.permutation)].T
        z = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, z, upper=True).T
        return x, -self.log_diag.sum().expand(y.shape[0])
