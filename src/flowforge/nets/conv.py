"""Convolutional networks on image events: the convolutional coupling conditioner."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import _check_sizes

# 3x3 kernels with padding 1 keep the image size and see each pixel's neighbours.
KERNEL_SIZE = 3


def _conv(a: int, b: int, kernel: int = KERNEL_SIZE) -> nn.Conv2d:
    return nn.Conv2d(a, b, kernel, padding=kernel // 2)


def _zero(layer: nn.Conv2d) -> nn.Conv2d:
    """``layer`` with its weights and bias set to zero (a coupling's network starts there)."""
    for p in layer.parameters():
        nn.init.zeros_(p)
    return layer


class ConvConditioner(nn.Module):
    r"""Coupling conditioner :math:`\theta = \mathrm{CNN}([x \odot (1 - m), 1 - m, c])` on images.

    The identity entries of ``x`` (``mask`` False) are kept and the transformed ones zeroed;
    the indicator of the kept entries joins them as ``C`` more channels (so the network can tell
    a zero pixel from a masked one), and the context, when given, is broadcast over the image as
    ``E`` more channels. A stack of 3x3 convolutions (padding 1, so every layer keeps ``H x W``)
    with widths ``hidden`` ends in a convolution to ``C * P`` channels, started at zero so the
    coupling starts as the identity; its output holds ``P`` parameters per entry, and those of
    the transformed entries are returned in row-major order.

    Args:
        mask: ``(C, H, W)`` booleans, ``True`` for the entries the coupling transforms.
        params_per_entry: ``P``, parameters per transformed entry.
        hidden: channel widths of the hidden convolutions.
        context_features: ``E``, size of the conditioning vector (0 for none).
        activation: activation module class placed after every hidden convolution.

    Shapes: ``x (B, C, H, W)``, ``context (B, E)`` -> ``(B, n_transformed, P)``.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803
    """

    keep: Tensor
    transformed_idx: Tensor

    def __init__(
        self,
        mask: Tensor,
        params_per_entry: int,
        hidden: Sequence[int] = (64, 64),
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.ndim != 3:
            raise ValueError(
                f"a convolutional conditioner takes image events (C, H, W), got a mask of shape "
                f"{tuple(mask.shape)}; use the MLP conditioner for other shapes"
            )
        channels = mask.shape[0]
        self.params_per_entry = params_per_entry
        sizes = (2 * channels + context_features, *_check_sizes(hidden))
        self.net = self._network(sizes, channels * params_per_entry, activation)
        # Derived from the mask, which the coupling stores: not part of the state dict.
        self.register_buffer("keep", (~mask).float(), persistent=False)
        self.register_buffer(
            "transformed_idx", torch.nonzero(mask.flatten()).squeeze(1), persistent=False
        )

    def _network(
        self, sizes: tuple[int, ...], out_channels: int, activation: type[nn.Module]
    ) -> nn.Module:
        """3x3 convolutions ``sizes[0] -> sizes[1] -> ... -> out_channels``, the last at zero."""
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [_conv(a, b), activation()]
        return nn.Sequential(*layers, _zero(_conv(sizes[-1], out_channels)))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        keep = self.keep
        parts = [x * keep, keep.expand(b, -1, -1, -1)]
        if context is not None:
            parts.append(context[:, :, None, None].expand(-1, -1, h, w))
        out = self.net(torch.cat(parts, dim=1))
        # (B, C * P, H, W) -> (B, C * H * W, P): the P parameters of each entry, row-major.
        out = out.view(b, c, self.params_per_entry, h, w).movedim(2, -1)
        return out.reshape(b, c * h * w, self.params_per_entry)[:, self.transformed_idx]


class _ResidualBlock(nn.Module):
    """``x + conv(act(conv(act(x))))`` (3x3 then 1x1), with a 1x1 projection of the skip when
    the width changes."""

    def __init__(self, a: int, b: int, activation: type[nn.Module]):
        super().__init__()
        self.branch = nn.Sequential(activation(), _conv(a, b), activation(), _conv(b, b, 1))
        self.skip = nn.Identity() if a == b else _conv(a, b, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.branch(x)


class ResNetConditioner(ConvConditioner):
    r"""Coupling conditioner of residual blocks: :math:`\theta = \mathrm{ResNet}([x \odot (1 - m),
    1 - m, c])` on images.

    The inputs and the output are those of :class:`ConvConditioner` (masked image, indicator
    of the kept entries and broadcast context in; ``P`` parameters per transformed entry out,
    the last convolution started at zero); in between, a 3x3 convolution to ``hidden[0]``
    channels and one residual block per entry of ``hidden`` (activation, 3x3 convolution,
    activation, 1x1 convolution, added to its input; a 1x1 projection where the width changes),
    as the coupling networks of RealNVP's multi-scale architecture, without their batch
    normalisation (which would make one sample's density depend on the batch).

    Args:
        mask: ``(C, H, W)`` booleans, ``True`` for the entries the coupling transforms.
        params_per_entry: ``P``, parameters per transformed entry.
        hidden: the widths of the residual blocks, one block each.
        context_features: ``E``, size of the conditioning vector (0 for none).
        activation: activation module class inside the blocks and before the last convolution.

    Shapes: ``x (B, C, H, W)``, ``context (B, E)`` -> ``(B, n_transformed, P)``.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803

        Deep Residual Learning for Image Recognition (He et al., 2016)
        https://arxiv.org/abs/1512.03385
    """

    def _network(
        self, sizes: tuple[int, ...], out_channels: int, activation: type[nn.Module]
    ) -> nn.Module:
        blocks = [_ResidualBlock(a, b, activation) for a, b in itertools.pairwise(sizes[1:])]
        return nn.Sequential(
            _conv(sizes[0], sizes[1]),
            _ResidualBlock(sizes[1], sizes[1], activation),
            *blocks,
            activation(),
            _zero(_conv(sizes[-1], out_channels)),
        )
