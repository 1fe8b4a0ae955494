"""Classic 2-D densities used to test and compare flows."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def checkerboard(
    n: int, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""``n`` samples of the 2-D checkerboard: uniform on 8 of the 16 squares of :math:`[-4, 4]^2`.

    The squares have side 2 and the support has area 32, so the density is :math:`1/32` on it
    and the entropy, the lowest NLL any model can reach, is :math:`\ln 32 \approx 3.466` nats.

    Args:
        n: number of samples.
        seed: seed of a private generator (ignored when ``generator`` is given).
        generator: the random generator to draw from.

    Returns:
        ``(n, 2)`` float32 samples.

    References:
        FFJORD (Grathwohl et al., 2018) https://arxiv.org/abs/1810.01367, its toy data.
    """
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else seed)
    x1 = torch.rand(n, generator=generator) * 4 - 2
    x2 = torch.rand(n, generator=generator) - 2 * torch.randint(0, 2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1) * 2


def checkerboard_log_prob(x: Tensor) -> Tensor:
    """Exact log-density of the checkerboard: ``-ln 32`` on its support, else ``-inf``."""
    cell = torch.floor(x / 2)
    inside = (x.abs() <= 4).all(dim=1) & ((cell[:, 0] + cell[:, 1]) % 2 == 0)
    value = torch.full_like(x[:, 0], -math.log(32.0))
    return torch.where(inside, value, torch.full_like(value, -math.inf))


CHECKERBOARD_ENTROPY = math.log(32.0)
"""Entropy of the checkerboard in nats, the floor of any model's test NLL."""
