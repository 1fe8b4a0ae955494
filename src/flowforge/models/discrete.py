"""Recipes for the discrete normalizing flows: coupling and autoregressive families."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

from .. import transforms as T
from .._checks import check_choice, check_int
from ..distributions import Flow, StandardNormal, conditioning_features
from ..transforms.base import event_shape_of
from .registry import register

Hidden = Sequence[int]
Shape = int | Sequence[int]


def _hidden_option(hidden: object) -> tuple[int, ...]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, Sequence) or not hidden:
        raise ValueError(f"hidden must be a non-empty list of layer sizes, got {hidden!r}")
    return tuple(check_int(h, "hidden sizes", 1) for h in hidden)


def _flow(
    shape: tuple[int, ...], context_dim: int, layers: list[T.Transform], num_classes: int = 0
) -> Flow:
    return Flow(T.Compose(layers), StandardNormal(shape), context_dim, num_classes)


def _vector_shape(name: str, shape: Shape) -> tuple[int, ...]:
    """``shape`` as a tuple, refused unless it is a vector ``(D,)`` (the registry refuses first;
    this covers a recipe function called directly)."""
    event = event_shape_of(shape, "shape")
    if len(event) != 1:
        raise ValueError(f"{name} takes flat vectors (D,), got shape {event}")
    return event


def _image_masks(shape: tuple[int, ...], layers: int) -> list[Tensor]:
    """The masks of ``layers`` couplings on an image ``(C, H, W)``: checkerboard, flipped
    checkerboard, then (with at least 2 channels) channel halves and flipped channel halves,
    in turn, so that every entry is transformed in every other layer."""
    kinds: list[Callable[[Sequence[int], bool], Tensor]] = []
    if math.prod(shape[1:]) >= 2:
        kinds.append(T.checkerboard_mask)
    if shape[0] >= 2:
        kinds.append(T.channel_mask)
    if not kinds:
        raise ValueError(
            f"coupling flows split the entries of an event in two and need at least 2 of them, "
            f"got shape {shape}"
        )
    cycle = [(kind, flip) for kind in kinds for flip in (False, True)]
    return [kind(shape, flip) for kind, flip in (cycle[i % len(cycle)] for i in range(layers))]


def _coupling_flow(
    shape: Shape,
    layers: int,
    context_dim: int,
    num_classes: int,
    mixing: str,
    conditioner: str,
    make_coupling: Callable[..., T.Transform],
    actnorm: bool = False,
    final: Callable[[tuple[int, ...]], T.Transform] | None = None,
) -> Flow:
    """Couplings ``make_coupling(event, mask=..., flip=..., context_features=...,
    conditioner=...)`` with mixing (and ActNorm) between them, then ``final(event)``."""
    check_int(layers, "layers", 1)
    features = conditioning_features(context_dim, num_classes)
    event = event_shape_of(shape, "shape")
    check_choice(mixing, "mixing", ("auto", "alternate", "permutation", "lu"))
    conditioner = T.CONDITIONERS.check(conditioner)
    masks: list[Tensor | None]
    if len(event) == 1:
        dim = event[0]
        if dim < 2:
            raise ValueError(
                f"coupling flows split the features in two and need dim >= 2, got {dim}"
            )
        if conditioner == "conv":
            raise ValueError(
                f"conditioner='conv' takes image shapes (C, H, W), got shape {event}; use "
                f"conditioner='mlp' for vectors"
            )
        if mixing == "auto":
            mixing = "alternate" if dim == 2 else "permutation"
        # Alternating halves: every feature is transformed in every other layer.
        masks = [None] * layers
    else:
        if mixing == "auto":
            # One channel has nothing to mix; with more, Glow's 1x1 convolution.
            mixing = "alternate" if event[0] == 1 else "lu"
        masks = list(_image_masks(event, layers))
    parts: list[T.Transform] = []
    for i in range(layers):
        if actnorm:
            parts.append(T.ActNorm(event))
        if i > 0 and mixing == "permutation":
            parts.append(T.RandomPermutation(event, seed=i))
        elif i > 0 and mixing == "lu":
            parts.append(T.LULinear(event, seed=i))
        parts.append(
            make_coupling(
                event,
                mask=masks[i],
                flip=i % 2 == 1,
                context_features=features,
                conditioner=conditioner,
            )
        )
    if final is not None:
        parts.append(final(event))
    return _flow(event, context_dim, parts, num_classes)


@register(
    "nice",
    "NICE: additive (volume-preserving) couplings and a final diagonal scaling",
    images=True,
)
def nice(
    shape: Shape,
    layers: int = 4,
    hidden: Hidden = (128, 128),
    mixing: str = "auto",
    context_dim: int = 0,
    num_classes: int = 0,
    conditioner: str = "mlp",
) -> Flow:
    """NICE (Dinh et al., 2014): ``layers`` additive couplings, then an elementwise scaling.

    ``mixing`` between couplings: ``"alternate"`` halves only, a random ``"permutation"``, or a
    learned ``"lu"`` linear layer; ``"auto"`` alternates for ``dim == 2`` and permutes above.

    ``shape`` is the event shape: ``(D,)`` for vectors (an int ``D`` means ``(D,)``) or an image
    ``(C, H, W)``. On images the couplings' masks cycle through the checkerboard, the flipped
    checkerboard and, with ``C >= 2``, the channel halves both ways; ``mixing`` acts along the
    channels (``"lu"`` is Glow's invertible 1x1 convolution) and ``"auto"`` is ``"alternate"``
    for one channel and ``"lu"`` for more. ``conditioner`` picks the coupling networks:
    ``"mlp"`` (default) flattens the event, ``"conv"`` (images only) is a stack of 3x3
    convolutions with ``hidden`` as channel widths. ``context_dim`` conditions on float
    features, ``num_classes`` on class labels ``0..K-1``.
    """
    h = _hidden_option(hidden)
    return _coupling_flow(
        shape,
        layers,
        context_dim,
        num_classes,
        mixing,
        conditioner,
        lambda event, **kw: T.AdditiveCoupling(event, hidden=h, **kw),
        final=T.ElementwiseAffine,
    )


@register(
    "realnvp",
    "RealNVP: affine couplings with a soft-bounded scale, with ActNorm",
    images=True,
)
def realnvp(
    shape: Shape,
    layers: int = 6,
    hidden: Hidden = (128, 128),
    scale_bound: float = 3.0,
    actnorm: bool = True,
    mixing: str = "auto",
    context_dim: int = 0,
    num_classes: int = 0,
    conditioner: str = "mlp",
) -> Flow:
    """RealNVP (Dinh et al., 2016): ``layers`` affine couplings, each after an ActNorm.

    ``scale_bound`` softly bounds each layer's log-scale; ``mixing``, ``conditioner``, image
    shapes and conditioning as for ``nice``. On images ActNorm is per channel.
    """
    h = _hidden_option(hidden)
    return _coupling_flow(
        shape,
        layers,
        context_dim,
        num_classes,
        mixing,
        conditioner,
        lambda event, **kw: T.AffineCoupling(event, scale_bound, hidden=h, **kw),
        actnorm=actnorm,
    )


@register(
    "nsf",
    "Neural spline flow: rational-quadratic spline couplings with linear tails",
    images=True,
)
def nsf(
    shape: Shape,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    bins: int = 8,
    bound: float = 5.0,
    mixing: str = "auto",
    context_dim: int = 0,
    num_classes: int = 0,
    conditioner: str = "mlp",
) -> Flow:
    """Neural spline flow (Durkan et al., 2019) with coupling layers.

    Each layer is a monotone rational-quadratic spline with ``bins`` bins on
    ``[-bound, bound]`` and the identity outside; ``mixing``, ``conditioner``, image shapes
    and conditioning as for ``nice``.
    """
    h = _hidden_option(hidden)
    return _coupling_flow(
        shape,
        layers,
        context_dim,
        num_classes,
        mixing,
        conditioner,
        lambda event, **kw: T.SplineCoupling(event, bins, bound, hidden=h, **kw),
    )


def _autoregressive_flow(
    name: str,
    shape: Shape,
    layers: int,
    context_dim: int,
    num_classes: int,
    make_layer: Callable[[int, int], T.Transform],
    inverse: bool = False,
) -> Flow:
    """``layers`` autoregressive layers ``make_layer(dim, context_features)``, orders reversed
    between them."""
    check_int(layers, "layers", 1)
    features = conditioning_features(context_dim, num_classes)
    event = _vector_shape(name, shape)
    dim = event[0]
    parts: list[T.Transform] = []
    for i in range(layers):
        if i > 0:
            # Reversing the order between layers lets each feature condition on all others.
            parts.append(T.Reverse(dim))
        layer = make_layer(dim, features)
        parts.append(T.Inverse(layer) if inverse else layer)
    return _flow(event, context_dim, parts, num_classes)


@register("maf", "MAF: masked affine autoregressive layers (one pass for density)")
def maf(
    shape: Shape,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    scale_bound: float = 3.0,
    context_dim: int = 0,
    num_classes: int = 0,
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al., 2017), orders reversed between layers.

    Density costs one MADE pass per layer; sampling costs ``dim`` passes per layer. Vectors
    ``(D,)`` only. ``context_dim`` conditions on float features, ``num_classes`` on class
    labels (both reach every MADE).
    """
    h = _hidden_option(hidden)
    return _autoregressive_flow(
        "maf",
        shape,
        layers,
        context_dim,
        num_classes,
        lambda dim, c: T.MaskedAffineAutoregressive(dim, scale_bound, hidden=h, context_features=c),
    )


@register("iaf", "IAF: inverse autoregressive layers (one pass for sampling)")
def iaf(
    shape: Shape,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    scale_bound: float = 3.0,
    context_dim: int = 0,
    num_classes: int = 0,
) -> Flow:
    """Inverse autoregressive flow (Kingma et al., 2016): MAF layers used in reverse.

    Sampling costs one MADE pass per layer; exact density costs ``dim`` passes per layer, so
    training by maximum likelihood on data is slow in high dimension. Vectors ``(D,)`` only;
    conditioning as for ``maf``.

    References:
        Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
        https://arxiv.org/abs/1606.04934
    """
    h = _hidden_option(hidden)
    return _autoregressive_flow(
        "iaf",
        shape,
        layers,
        context_dim,
        num_classes,
        lambda dim, c: T.MaskedAffineAutoregressive(dim, scale_bound, hidden=h, context_features=c),
        inverse=True,
    )


@register("nsf-ar", "Autoregressive neural spline flow: masked rational-quadratic splines")
def nsf_ar(
    shape: Shape,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    bins: int = 8,
    bound: float = 5.0,
    context_dim: int = 0,
    num_classes: int = 0,
) -> Flow:
    """Neural spline flow (Durkan et al., 2019) with masked autoregressive spline layers.

    Vectors ``(D,)`` only; conditioning as for ``maf``.
    """
    h = _hidden_option(hidden)
    return _autoregressive_flow(
        "nsf-ar",
        shape,
        layers,
        context_dim,
        num_classes,
        lambda dim, c: T.MaskedSplineAutoregressive(dim, bins, bound, hidden=h, context_features=c),
    )
