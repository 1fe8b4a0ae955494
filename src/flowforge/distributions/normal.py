"""Base distributions of the flows: Gaussian densities over an event shape."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from .._checks import check_positive


class BaseDistribution(Protocol):
    """What a flow needs of its base distribution: an event shape, a log-density and samples
    (e.g. :class:`StandardNormal`, an ``nn.Module`` so that it follows ``.to()``)."""

    event_shape: tuple[int, ...]

    def log_prob(self, z: Tensor) -> Tensor: ...

    def sample(self, n: int) -> Tensor: ...


class StandardNormal(nn.Module):
    r"""Standard normal :math:`\mathcal{N}(0, I)` over events of shape ``event_shape``.

    :math:`\log p(z) = -\tfrac12 \lVert z \rVert^2 - \tfrac{D}{2} \log 2\pi`, with ``D`` the
    number of elements of one event.

    Args:
        event_shape: shape of one sample, e.g. ``(D,)``.
    """

    _anchor: Tensor  # a buffer

    def __init__(self, event_shape: Sequence[int]):
        super().__init__()
        self.event_shape = tuple(int(d) for d in event_shape)
        self.numel = math.prod(self.event_shape)
        # A buffer that follows .to(device, dtype), so samples come out where the model lives.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of ``z (B, *event_shape)``, shape ``(B,)``."""
        sq = z.reshape(z.shape[0], -1).pow(2).sum(dim=1)
        return -0.5 * sq - 0.5 * self.numel * math.log(2 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *event_shape)``."""
        a = self._anchor
        return torch.randn(
            (n, *self.event_shape), generator=generator, dtype=a.dtype, device=a.device
        )


class DiagNormal(StandardNormal):
    r"""Diagonal normal :math:`\mathcal{N}(\mu, \mathrm{diag}(\sigma^2))`, learned mean, scale.

    Args:
        event_shape: shape of one sample.
        loc: initial mean (default 0).
        scale: initial standard deviation (default 1).
    """

    def __init__(self, event_shape: Sequence[int], loc: float = 0.0, scale: float = 1.0):
        super().__init__(event_shape)
        check_positive(scale, "scale")
        self.loc = nn.Parameter(torch.full(self.event_shape, float(loc)))
        self.log_scale = nn.Parameter(torch.full(self.event_shape, math.log(scale)))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return super().log_prob(u) - self.log_scale.sum()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = super().sample(n, generator)
        return self.loc + torch.exp(self.log_scale) * eps
