"""The one reduction over an event, shared by every layer that sums per-sample quantities."""

from __future__ import annotations

from torch import Tensor


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum every dimension but the first: ``(B, *) -> (B,)``; the one reduction of log-dets,
    divergences and per-sample energies.

    It lives at the bottom layer so that estimators, transforms and continuous-time models
    share it without importing upwards (``flowforge.transforms.base`` re-exports it).
    """
    # A (B, D) tensor is summed directly: the vector path pays no reshape.
    if x.ndim == 2:
        return x.sum(dim=1)
    return x.reshape(x.shape[0], -1).sum(dim=1)
