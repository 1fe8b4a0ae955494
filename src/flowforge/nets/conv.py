"""Convolutional networks on image events: the convolutional coupling conditioner."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import _check_sizes

# 3x3 kernels with padding 1 keep the image size and see each pixel's neighbours.
KERNEL_SIZE = 3


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
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Conv2d(a, b, KERNEL_SIZE, padding=KERNEL_SIZE // 2), activation()]
        last = nn.Conv2d(
            sizes[-1], channels * params_per_entry, KERNEL_SIZE, padding=KERNEL_SIZE // 2
        )
        for p in last.parameters():
            nn.init.zeros_(p)
        self.net = nn.Sequential(*layers, last)
        # Derived from the mask, which the coupling stores: not part of the state dict.
        self.register_buffer("keep", (~mask).float(), persistent=False)
        self.register_buffer(
            "transformed_idx", torch.nonzero(mask.flatten()).squeeze(1), persistent=False
        )

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
