"""Plain multilayer perceptrons, and the MLP conditioner of coupling layers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_int


def _check_sizes(hidden: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(hidden)
    if not sizes:
        raise ValueError(
            f"hidden must be a non-empty sequence of positive integers, got {hidden!r}"
        )
    return tuple(check_int(h, f"hidden[{i}]", 1, "a positive int") for i, h in enumerate(sizes))


class MLP(nn.Sequential):
    r"""A fully connected network :math:`\mathbb{R}^{m} \to \mathbb{R}^{n}`: ``(B, m) -> (B, n)``.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: activation module class placed after every hidden layer.
        zero_last: start the last layer at zero, so the network first outputs zeros (a coupling
            layer conditioned by it then starts as the identity).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128, 128),
        activation: type[nn.Module] = nn.ReLU,
        zero_last: bool = True,
    ):
        sizes = (in_features, *_check_sizes(hidden))
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), activation()]
        last = nn.Linear(sizes[-1], out_features)
        super().__init__(*layers, last)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


class MLPConditioner(MLP):
    r"""Coupling conditioner :math:`\theta = \mathrm{MLP}([x_A, c])` on the entries a mask keeps.

    The event is flattened (row-major), the identity entries :math:`x_A` (``mask`` False) are
    gathered and concatenated with the context, and the MLP returns ``P`` parameters for each
    transformed entry (``mask`` True), in row-major order. It is an :class:`MLP` itself, so its
    layers are ``0, 1, ...`` of the module (``conditioner.0.weight`` inside a coupling).

    Args:
        mask: event-shaped booleans, ``True`` for the entries the coupling transforms.
        params_per_entry: ``P``, parameters per transformed entry.
        hidden: sizes of the hidden layers.
        context_features: ``E``, size of the conditioning vector (0 for none).
        activation: activation module class.

    Shapes: ``x (B, *mask.shape)``, ``context (B, E)`` -> ``(B, n_transformed, P)``.
    """

    identity_idx: Tensor

    def __init__(
        self,
        mask: Tensor,
        params_per_entry: int,
        hidden: Sequence[int] = (128, 128),
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ):
        flat = torch.as_tensor(mask, dtype=torch.bool).flatten()
        identity_idx = torch.nonzero(~flat).squeeze(1)
        n_transformed = int(flat.sum())
        super().__init__(
            identity_idx.numel() + context_features,
            n_transformed * params_per_entry,
            hidden,
            activation,
        )
        self.params_per_entry = params_per_entry
        # Derived from the mask, which the coupling stores: not part of the state dict.
        self.register_buffer("identity_idx", identity_idx, persistent=False)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # flatten(1) returns a (B, D) input itself: vectors pay no reshape.
        x_id = x.flatten(1)[:, self.identity_idx]
        h = x_id if context is None else torch.cat([x_id, context], dim=-1)
        return nn.Sequential.forward(self, h).view(x.shape[0], -1, self.params_per_entry)
