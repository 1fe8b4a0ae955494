"""Plain multilayer perceptrons, used as coupling conditioners."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

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
        sizes = (in_features, *_check_sizes(hidden), out_features)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), activation()]
        layers.pop()
        super().__init__(*layers)
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)
