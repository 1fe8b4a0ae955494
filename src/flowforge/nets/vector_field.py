"""Time-conditioned networks for vector fields ``v(t, x, context=None)``."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int
from .mlp import _check_sizes

TIME_EMBEDDINGS = ("concat", "sinusoidal", "film")


class SinusoidalEmbedding(nn.Module):
    r"""Sinusoidal time features :math:`[\sin(\omega_k t), \cos(\omega_k t)]_k`: ``(B,) -> (B, E)``.

    Frequencies :math:`\omega_k = P^{-k/(E/2)}` are geometric from 1 down to :math:`1/P`, so both
    fast and slow variation in :math:`t \in [0, 1]` is easy to express; ``t`` is scaled by
    ``scale`` first (1000 by default, so that :math:`t \in [0, 1]` spans many periods).

    Args:
        dim: ``E``, an even number of features.
        max_period: ``P``.
        scale: multiplier of ``t``.

    References:
        Attention Is All You Need (Vaswani et al., 2017) https://arxiv.org/abs/1706.03762
    """

    def __init__(self, dim: int = 32, max_period: float = 10_000.0, scale: float = 1000.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        self.freqs: Tensor
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        angles = self.scale * t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeMLP(nn.Module):
    r"""A vector field :math:`v_\theta(t, x, c)`: an MLP that takes time in one of three ways.

    - ``"concat"``: :math:`t` itself is appended to the input;
    - ``"sinusoidal"``: sinusoidal features of :math:`t` are appended to the input;
    - ``"film"``: every hidden layer is modulated, :math:`h \leftarrow h \odot (1 + \gamma(t))
      + \beta(t)`, with :math:`\gamma, \beta` linear in sinusoidal features of :math:`t`.

    ``t`` may be a scalar (as ODE solvers pass it) or one time per sample, ``(B,)``.

    With ``times=2`` the network is a field of two times, :math:`u_\theta(x, r, t, c)`
    (MeanFlow's average velocity, :class:`~flowforge.matching.MeanFlow`): it takes ``r`` as a
    keyword and sees :math:`t` and :math:`h = r - t` embedded alike (two concatenated times,
    two sets of sinusoidal features, or FiLM from both), the pair Geng et al. (2025) found to
    condition best. Called as ``v(t, x, context)``, without ``r``, it is the field at
    :math:`r = t` (:math:`h = 0`): an ordinary vector field.

    An event of any shape is flattened to its ``D = prod(event)`` entries on the way in and the
    output reshaped back: an MLP over whole images, which lets image-shaped continuous models
    run (a convolutional field suits images better). Vectors are used as they come.

    Args:
        features: ``D`` for vectors, or the event shape, e.g. ``(C, H, W)``.
        hidden: hidden layer sizes.
        time_embedding: ``"concat"``, ``"sinusoidal"`` or ``"film"``.
        context_features: ``C``, size of the conditioning vector (0 for none).
        embedding_dim: size of the sinusoidal time features.
        activation: activation module class (SiLU is smooth, which keeps ODEs cheap to solve).
        times: 1 for a vector field :math:`v(t, x, c)`; 2 for a field of two times that also
            takes ``r`` (above).

    Shapes: ``t ()`` or ``(B,)``, ``x (B, *event)``, ``context (B, C)``, ``r ()`` or ``(B,)``
    -> ``(B, *event)``.

    References:
        FiLM: Visual Reasoning with a General Conditioning Layer (Perez et al., 2017)
        https://arxiv.org/abs/1709.07871
    """

    def __init__(
        self,
        features: int | Sequence[int],
        hidden: Sequence[int] = (128, 128),
        time_embedding: str = "sinusoidal",
        context_features: int = 0,
        embedding_dim: int = 32,
        activation: type[nn.Module] = nn.SiLU,
        times: int = 1,
    ):
        super().__init__()
        check_choice(time_embedding, "time_embedding", TIME_EMBEDDINGS)
        self.times = check_int(times, "times", 1, "1 (a vector field) or 2 (two times)", maximum=2)
        sizes = _check_sizes(hidden)
        self.event_shape = _event_shape(features)
        #: ``D``, the number of entries of one event (the MLP's width at both ends).
        self.features = features = math.prod(self.event_shape)
        self._flatten = len(self.event_shape) > 1
        self.time_embedding = time_embedding
        # ODE solvers pay for every wiggle of the field in t: frequencies from 10 down to 0.1
        # radians per unit time (not the diffusion convention of t in [0, 1000]) keep an
        # untrained field smooth in time, so its first solves take tens of steps, not thousands.
        self.embed = (
            SinusoidalEmbedding(embedding_dim, max_period=100.0, scale=10.0)
            if time_embedding != "concat"
            else None
        )
        extra = self.times * (1 if time_embedding == "concat" else embedding_dim)
        in_features = features + context_features + (0 if time_embedding == "film" else extra)
        dims = (in_features, *sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.film = (
            nn.ModuleList(nn.Linear(self.times * embedding_dim, 2 * h) for h in sizes)
            if time_embedding == "film"
            else None
        )
        self.act = activation()
        self.out = nn.Linear(sizes[-1], features)

    def forward(
        self,
        t: Tensor | float,
        x: Tensor,
        context: Tensor | None = None,
        r: Tensor | float | None = None,
    ) -> Tensor:
        if r is not None and self.times == 1:
            raise ValueError("r is the second time of a field built with times=2; this has one")
        if self._flatten:
            return self._mlp(t, x.flatten(1), context, r).view(x.shape)
        return self._mlp(t, x, context, r)

    def _mlp(
        self, t: Tensor | float, x: Tensor, context: Tensor | None, r: Tensor | float | None
    ) -> Tensor:
        t = _per_sample(t, x)
        parts = [x] if context is None else [x, context]
        gap = None
        if self.times == 2:  # the second time as the interval h = r - t (0 without r)
            gap = torch.zeros_like(t) if r is None else _per_sample(r, x) - t
        if self.time_embedding == "concat":
            parts.append(t[:, None] if gap is None else torch.stack([t, gap], dim=1))
        emb = None
        if self.embed is not None:
            emb = self.embed(t) if gap is None else torch.cat([self.embed(t), self.embed(gap)], 1)
            emb = emb.to(x.dtype)
            if self.film is None:  # "sinusoidal": the features go in with x
                parts.append(emb)
        h = torch.cat(parts, dim=1)
        for i, layer in enumerate(self.layers):
            h = self.act(layer(h))
            if self.film is not None:
                scale, shift = self.film[i](emb).chunk(2, dim=1)
                h = h * (1 + scale) + shift
        return self.out(h)


def _per_sample(t: Tensor | float, x: Tensor) -> Tensor:
    """A time as one value per sample of ``x``: ``()`` or ``(B,)`` -> ``(B,)``."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])


def _event_shape(features: int | Sequence[int]) -> tuple[int, ...]:
    """``(D,)`` for an int ``D``, else the event shape itself, every entry a positive int."""
    if isinstance(features, numbers.Integral) and not isinstance(features, bool):
        return (check_int(features, "features", 1, "a positive int"),)
    if isinstance(features, Sequence) and not isinstance(features, str) and len(features):
        return tuple(
            check_int(d, f"features[{i}]", 1, "a positive int") for i, d in enumerate(features)
        )
    raise TypeError(
        f"features must be a positive int D (vectors) or a non-empty event shape such as "
        f"(C, H, W), got {features!r}"
    )
