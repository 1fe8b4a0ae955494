"""Fixed permutations along dimension 1 (the features of a vector, the channels of an image):
volume preserving, log-determinant zero."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Transform, check_event, event_shape_of, zeros_ladj


class Permutation(Transform):
    r""":math:`y_i = x_{\pi(i)}` along dimension 1, :math:`\pi` fixed; :math:`\log |\det J| = 0`.

    For vectors ``(D,)`` this permutes the features; for images ``(C, H, W)`` it permutes the
    channels, the same way at every position.

    Args:
        permutation: ``(D,)`` (or ``(C,)``) integer tensor holding each index ``0..D-1`` once.
        event_shape: the event shape, whose first entry is the permutation's length; default
            ``(D,)``.

    Shapes: ``x (B, *event_shape)``.
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Tensor, event_shape: Sequence[int] | None = None):
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        d = permutation.numel()
        if permutation.ndim != 1 or not torch.equal(permutation.sort().values, torch.arange(d)):
            raise ValueError(f"permutation must hold each index 0..{d - 1} exactly once")
        shape = (d,) if event_shape is None else event_shape_of(event_shape, "event_shape")
        if shape[0] != d:
            raise ValueError(
                f"event_shape {shape} must start with the permutation's length {d} (it permutes "
                f"dimension 1: features of a vector, channels of an image)"
            )
        self.features = d
        self.event_shape = shape
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        return x[:, self.permutation], zeros_ladj(x)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        return y[:, self.inverse_permutation], zeros_ladj(y)


class Reverse(Permutation):
    """Reverse the order along dimension 1: :math:`y_i = x_{D-1-i}` (features, or channels).

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.
    """

    def __init__(self, features: int | Sequence[int]):
        shape = event_shape_of(features)
        super().__init__(torch.arange(shape[0] - 1, -1, -1), shape)


class RandomPermutation(Permutation):
    """A permutation along dimension 1 (features, or channels) drawn once from a seeded generator.

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.
        seed: seed of the draw, so that the same arguments always build the same layer.
    """

    def __init__(self, features: int | Sequence[int], seed: int = 0):
        shape = event_shape_of(features)
        generator = torch.Generator().manual_seed(seed)
        super().__init__(torch.randperm(shape[0], generator=generator), shape)
