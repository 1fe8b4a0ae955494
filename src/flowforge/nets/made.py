"""MADE: a feed-forward network whose outputs are autoregressive in its inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mlp import _check_sizes


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary ``mask (out, in)``."""

    mask: Tensor

    def __init__(self, mask: Tensor):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder: outputs for feature :math:`i` depend only on features before it.

    Output :math:`\theta_i = g_i(x_{<i}, c)` in the order given by ``order``: each unit gets a
    degree, and a connection is kept only from lower (input, hidden) to higher degree, strictly
    into the outputs. Context features, when given, reach every hidden unit.

    Args:
        features: ``D``.
        params_per_feature: ``P``, outputs per feature.
        hidden: hidden layer sizes.
        context_features: ``C``, size of the conditioning vector (0 for none).
        order: ``(D,)`` permutation of ``0..D-1``; feature ``order[k]`` is the ``k``-th in the
            autoregressive order. Default: ``0, 1, ..., D-1``.
        activation: activation module class.

    Shapes: ``x (B, D)``, ``context (B, C)`` -> ``(B, D, P)``.

    References:
        MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015)
        https://arxiv.org/abs/1502.03509
    """

    def __init__(
        self,
        features: int,
        params_per_feature: int,
        hidden: Sequence[int] = (128, 128),
        context_features: int = 0,
        order: Tensor | None = None,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        sizes = _check_sizes(hidden)
        self.features = features
        self.params_per_feature = params_per_feature
        self.context_features = context_features
        if order is None:
            order = torch.arange(features)
        order = torch.as_tensor(order, dtype=torch.long)
        # Degree of each input: its 1-based position in the autoregressive order.
        in_deg = torch.empty(features, dtype=torch.long)
        in_deg[order] = torch.arange(1, features + 1)
        self.register_buffer("order", order)

        layers: list[nn.Module] = []
        prev = torch.cat([in_deg, torch.zeros(context_features, dtype=torch.long)])
        # Hidden degrees cycle through 1..D-1 so every degree is represented. With a context,
        # degree 0 joins them: those units see the context alone, and they are the only path
        # by which the context reaches the first feature in the order.
        low = 0 if context_features else 1
        for h in sizes:
            deg = torch.arange(h) % max(features - low, 1) + low
            layers += [MaskedLinear((deg[:, None] >= prev[None, :]).float()), activation()]
            prev = deg
        out_deg = in_deg.repeat_interleave(params_per_feature)
        last = MaskedLinear((out_deg[:, None] > prev[None, :]).float())
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None:
            x = torch.cat([x, context], dim=-1)
        return self.net(x).view(x.shape[0], self.features, self.params_per_feature)
