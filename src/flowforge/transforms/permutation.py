"""Fixed permutations of the features: volume preserving, log-determinant zero."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Transform, check_features, zeros_ladj


class Permutation(Transform):
    r""":math:`y_i = x_{\pi(i)}` for a fixed permutation :math:`\pi`; :math:`\log |\det J| = 0`.

    Args:
        permutation: ``(D,)`` integer tensor holding each index ``0..D-1`` once.
    """

    def __init__(self, permutation: Tensor):
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        d = permutation.numel()
        if permutation.ndim != 1 or not torch.equal(permutation.sort().values, torch.arange(d)):
            raise ValueError(f"permutation must hold each index 0..{d - 1} exactly once")
        self.features = d
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(x, self.features)
        return x[:, self.permutation], zeros_ladj(x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_features(y, self.features, "y")
        return y[:, self.inverse_permutation], zeros_ladj(y)


class Reverse(Permutation):
    """Reverse the order of the ``D`` features, :math:`y_i = x_{D-1-i}`."""

    def __init__(self, features: int):
        super().__init__(torch.arange(features - 1, -1, -1))


class RandomPermutation(Permutation):
    """A permutation of ``D`` features drawn once from a seeded generator.

    Args:
        features: ``D``.
        seed: seed of the draw, so that the same arguments always build the same layer.
    """

    def __init__(self, features: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        super().__init__(torch.randperm(features, generator=generator))
