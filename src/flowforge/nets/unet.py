"""A small U-Net vector field ``v(t, x, context=None)`` for image events ``(C, H, W)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._checks import check_int, check_number
from .vector_field import SinusoidalEmbedding, _event_shape, _per_sample


class UNet(nn.Module):
    r"""A U-Net vector field :math:`v_\theta(t, x, c)` on images: residual blocks at a ladder of
    resolutions, joined by skip connections.

    The image goes through a 3x3 convolution to ``channels`` channels, then down a ladder of
    ``len(multipliers)`` levels (level ``i`` at resolution ``(H / 2^i, W / 2^i)`` with
    ``channels * multipliers[i]`` channels, ``blocks`` residual blocks each, halved by a strided
    convolution between levels), through a middle of two blocks, and back up with ``blocks + 1``
    blocks per level, each taking the matching activation of the way down concatenated to its
    input (the skip connections), doubled by nearest-neighbour upsampling and a convolution.
    A GroupNorm, SiLU and a 3x3 convolution to ``C`` channels give the velocity.

    Each residual block is ``skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))) + e)))`` (Ho et al., 2020;
    ``skip`` a 1x1 convolution where the width changes, dropout before the second conv), where
    ``e`` is the embedding of time and conditioning projected to one bias per channel: sinusoidal
    features of :math:`t` through a two-layer MLP, plus a linear map of the conditioning
    features ``context (B, E)`` (a label model's learned label embedding, the null label's
    included, or float features, as the models pass them). Single-head self-attention follows
    the blocks of the levels listed in ``attention``, and sits in the middle when the lowest
    level is listed (none by default: at 8x8 the stacked 3x3 convolutions of the lowest level
    already span the image; attention's gain there is unmeasured).

    The last convolution of every block and the output convolution start at zero (Dhariwal &
    Nichol, 2021): the field starts at :math:`v = 0` (the identity flow, what maximum-likelihood
    training wants) and every block at the identity.

    GroupNorm and attention act within one sample, so the field of a batch is the field of
    each sample: exact divergences and batched guidance stay per sample.

    With ``times=2`` the network is a field of two times, :math:`u_\theta(x, r, t, c)`
    (MeanFlow), like :class:`~flowforge.nets.TimeMLP`'s: it takes ``r`` as a keyword and
    embeds :math:`t` and :math:`r - t` alike (the second 0 without ``r``).

    Args:
        shape: the event shape ``(C, H, W)``; ``H`` and ``W`` must be divisible by
            ``2^(len(multipliers) - 1)``.
        channels: width of the first level.
        multipliers: width of each level as a multiple of ``channels``; one entry per level.
        blocks: residual blocks per level on the way down (``blocks + 1`` on the way up).
        attention: the levels (0 is full resolution) whose blocks are followed by
            self-attention; the middle has it when the lowest level is listed.
        context_features: ``E``, size of the conditioning vector (0 for none).
        dropout: dropout probability inside the residual blocks.
        groups: GroupNorm groups; must divide ``channels``.
        times: 1 for a vector field; 2 for a field of two times that also takes ``r``.

    Shapes: ``t ()`` or ``(B,)``, ``x (B, C, H, W)``, ``context (B, E)``, ``r ()`` or ``(B,)``
    -> ``(B, C, H, W)``.

    References:
        U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al.,
        2015) https://arxiv.org/abs/1505.04597

        Denoising Diffusion Probabilistic Models (Ho et al., 2020)
        https://arxiv.org/abs/2006.11239

        Diffusion Models Beat GANs on Image Synthesis (Dhariwal & Nichol, 2021)
        https://arxiv.org/abs/2105.05233

    Example:
        >>> import torch
        >>> from flowforge.nets import UNet
        >>> v = UNet((1, 8, 8), channels=16, context_features=4)
        >>> v(0.5, torch.randn(3, 1, 8, 8), torch.randn(3, 4)).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: int = 32,
        multipliers: Sequence[int] = (1, 2),
        blocks: int = 1,
        attention: Sequence[int] = (),
        context_features: int = 0,
        dropout: float = 0.0,
        groups: int = 8,
        times: int = 1,
    ):
        super().__init__()
        self.event_shape = _image_shape(shape)
        self.channels = check_int(channels, "channels", 1, "a positive int")
        self.multipliers = _levels(multipliers)
        self.blocks = check_int(blocks, "blocks", 1, "a positive int")
        levels = len(self.multipliers)
        self.attention = _attention(attention, levels)
        self.context_features = check_int(context_features, "context_features", 0)
        dropout = check_number(dropout, "dropout", 0.0, below=1.0)
        self.groups = check_int(groups, "groups", 1, "a positive int")
        self.times = check_int(times, "times", 1, "1 (a vector field) or 2 (two times)", maximum=2)
        if channels % groups:
            raise ValueError(
                f"groups must divide channels (GroupNorm splits every level's channels into "
                f"groups), got channels={channels}, groups={groups}; pick e.g. groups=1"
            )
        c, h, w = self.event_shape
        factor = 2 ** (levels - 1)
        if h % factor or w % factor:
            raise ValueError(
                f"a U-Net with {levels} levels halves the image {levels - 1} time(s), so H and W "
                f"must be divisible by {factor}; got shape {self.event_shape}. Use fewer "
                f"multipliers (levels) or pad the images"
            )
        emb = 4 * channels  # the embedding width of Ho et al.'s U-Net: four times the base
        # ODE solvers pay for every wiggle of the field in t: the frequencies of TimeMLP (10 down
        # to 0.1 radians per unit time) keep an untrained field smooth in time.
        self.embed = SinusoidalEmbedding(channels, max_period=100.0, scale=10.0)
        self.time_mlp = nn.Sequential(
            nn.Linear(self.times * channels, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.context_proj = nn.Linear(context_features, emb) if context_features else None

        self.stem = nn.Conv2d(c, channels, 3, padding=1)
        widths = [channels]  # the width of every activation kept for a skip connection
        self.down = nn.ModuleList()
        now = channels
        for i, m in enumerate(self.multipliers):
            for _ in range(self.blocks):
                self.down.append(
                    _Stage(now, channels * m, emb, groups, dropout, i in self.attention)
                )
                now = channels * m
                widths.append(now)
            if i < levels - 1:
                self.down.append(_Down(now))
                widths.append(now)
        lowest = levels - 1 in self.attention
        self.middle = nn.ModuleList(
            [
                _Stage(now, now, emb, groups, dropout, lowest),
                _Stage(now, now, emb, groups, dropout, False),
            ]
        )
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            m = self.multipliers[i]
            for _ in range(self.blocks + 1):
                skip = widths.pop()
                stage = _Stage(now + skip, channels * m, emb, groups, dropout, i in self.attention)
                self.up.append(stage)
                now = channels * m
            if i > 0:
                self.up.append(_Up(now))
        self.head = nn.Sequential(_GroupNorm(groups, now), nn.SiLU())
        self.out = nn.Conv2d(now, c, 3, padding=1)
        _zero(self.out)

    def forward(
        self,
        t: Tensor | float,
        x: Tensor,
        context: Tensor | None = None,
        r: Tensor | float | None = None,
    ) -> Tensor:
        if r is not None and self.times == 1:
            raise ValueError("r is the second time of a field built with times=2; this has one")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x must have shape (B, {', '.join(map(str, self.event_shape))}), got "
                f"{tuple(x.shape)}"
            )
        e = self._embedding(t, x, context, r)
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, e)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, e)
        for layer in self.up:
            h = layer(h, e) if isinstance(layer, _Up) else layer(torch.cat([h, skips.pop()], 1), e)
        return self.out(self.head(h))

    def _embedding(
        self, t: Tensor | float, x: Tensor, context: Tensor | None, r: Tensor | float | None
    ) -> Tensor:
        """The time (and conditioning) embedding ``(B, 4 * channels)``."""
        t = _per_sample(t, x)
        feats = self.embed(t)
        if self.times == 2:  # the second time as the interval r - t (0 without r)
            gap = torch.zeros_like(t) if r is None else _per_sample(r, x) - t
            feats = torch.cat([feats, self.embed(gap)], 1)
        e = self.time_mlp(feats.to(x.dtype))
        if self.context_proj is None:
            if context is not None:
                raise ValueError(
                    "context was given to a U-Net built without conditioning; build it with "
                    "context_features=E"
                )
            return e
        if context is None or context.shape != (x.shape[0], self.context_features):
            got = None if context is None else tuple(context.shape)
            raise ValueError(
                f"context must have shape ({x.shape[0]}, {self.context_features}) for a U-Net "
                f"built with context_features={self.context_features}, got {got}"
            )
        return e + self.context_proj(context)


class _GroupNorm(nn.GroupNorm):
    """GroupNorm written in elementary operations (same parameters, same numbers to rounding).

    The fused kernel's double backward breaks under batched gradients (``is_grads_batched``
    with ``create_graph``, torch 2.13: a shape error), which the exact divergence of a CNF
    takes whenever its graph is kept (``log_prob`` with gradients on, FFJORD's training).
    """

    def forward(self, x: Tensor) -> Tensor:
        g = x.reshape(x.shape[0], self.num_groups, -1)
        mean = g.mean(dim=-1, keepdim=True)
        var = g.var(dim=-1, unbiased=False, keepdim=True)
        h = ((g - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        return h * self.weight[:, None, None] + self.bias[:, None, None]


class _Block(nn.Module):
    """A residual block with the embedding added as one bias per channel between its convs."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2 = _GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        _zero(self.conv2)  # each block starts as the identity (its skip)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(e))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the ``H W`` positions of each image, residual.

    Written out (softmax of scaled dot products) rather than by a fused kernel, so that double
    backward (the divergence of a field inside a trained CNF) works in every dtype.
    """

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = _GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        _zero(self.proj)  # starts as the identity

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, HW, HW)
        out = (v @ weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(out)


class _Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float, attend: bool):
        super().__init__()
        self.block = _Block(cin, cout, emb, groups, dropout)
        self.attn = _Attention(cout, groups) if attend else None

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.block(x, e)
        return h if self.attn is None else self.attn(h)


class _Down(nn.Module):
    """Halves the resolution by a strided 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    """Doubles the resolution: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _zero(conv: nn.Conv2d) -> None:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    event = _event_shape(shape)
    if len(event) != 3:
        raise ValueError(
            f"a U-Net field takes image events (C, H, W), got shape {event}; use TimeMLP "
            f"(field='mlp') for vectors"
        )
    return event[0], event[1], event[2]


def _levels(multipliers: Sequence[int]) -> tuple[int, ...]:
    if isinstance(multipliers, str | bytes) or not isinstance(multipliers, Sequence):
        raise TypeError(f"multipliers must be a sequence of positive ints, got {multipliers!r}")
    if not multipliers:
        raise ValueError("multipliers must have at least one entry (one per level), got ()")
    return tuple(
        check_int(m, f"multipliers[{i}]", 1, "a positive int") for i, m in enumerate(multipliers)
    )


def _attention(attention: Sequence[int], levels: int) -> frozenset[int]:
    if isinstance(attention, str | bytes) or not isinstance(attention, Sequence):
        raise TypeError(f"attention must be a sequence of level indices, got {attention!r}")
    return frozenset(
        check_int(a, f"attention[{i}]", 0, f"a level index in 0..{levels - 1}", maximum=levels - 1)
        for i, a in enumerate(attention)
    )
