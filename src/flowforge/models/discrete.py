"""Recipes for the discrete normalizing flows: coupling and autoregressive families."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor

from .. import transforms as T
from .._checks import check_bool, check_choice, check_int, check_number
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
        if conditioner in ("conv", "resnet"):
            raise ValueError(
                f"conditioner={conditioner!r} takes image shapes (C, H, W), got shape {event}; "
                f"use conditioner='mlp' for vectors"
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
    convolutions with ``hidden`` as channel widths, ``"resnet"`` (images only) residual blocks
    of those widths. ``context_dim`` conditions on float
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


def with_logit(flow: Flow, logit: float | None) -> Flow:
    r"""``flow`` with RealNVP's logit preprocessing first, :math:`y = \operatorname{logit}(\alpha
    + (1 - 2\alpha) x)` (:class:`~flowforge.transforms.Logit`, its log-det counted), for
    ``logit`` :math:`= \alpha`; ``flow`` itself for ``None``. The flow then takes dequantised
    data in ``[0, 1)``, unstandardised (``flowforge train`` skips standardising it)."""
    if logit is None:
        return flow
    described = "a number in (0, 0.5) (RealNVP: 0.05) or None"
    alpha = check_number(logit, "logit", above=0, below=0.5, described=described)
    flow.transform = T.Compose([T.Logit(flow.event_shape, alpha), flow.transform])
    return flow


def halvings(event: tuple[int, ...], smallest: int) -> int:
    """How many times the height and width of an image ``event`` can be halved (squeezed)
    leaving at least ``smallest`` positions."""
    _, h, w = event
    n = 0
    while h % 2 == 0 and w % 2 == 0 and (h // 2) * (w // 2) >= smallest:
        h, w, n = h // 2, w // 2, n + 1
    return n


def check_levels(name: str, event: tuple[int, ...], levels: object, most: int) -> int:
    """``levels`` as an int in ``[1, most]``, the error naming the shape that limits it."""
    levels = check_int(levels, "levels", 1)
    if levels > most:
        raise ValueError(
            f"{name} with levels={levels} halves the height and width of the image more often "
            f"than shape {event} allows (odd sizes cannot be squeezed); use levels <= {most}"
        )
    return levels


def _multiscale_realnvp(
    event: tuple[int, ...],
    levels: int,
    steps: int,
    actnorm: bool,
    split_prior: bool,
    make_coupling: Callable[..., T.Transform],
    prior_hidden: tuple[int, ...],
    features: int,
) -> T.Transform:
    """RealNVP's multi-scale architecture on ``event``: at each scale ``steps`` checkerboard
    couplings, a squeeze, ``steps`` channel couplings and a factor-out of half the channels; at
    the last scale ``steps + 1`` checkerboard couplings."""

    def couplings(shape: tuple[int, ...], mask: Callable[..., Tensor], n: int) -> list[T.Transform]:
        parts: list[T.Transform] = []
        for i in range(n):
            if actnorm:
                parts.append(T.ActNorm(shape))
            parts.append(make_coupling(shape, mask=mask(shape, i % 2 == 1)))
        return parts

    def scale(shape: tuple[int, ...], level: int) -> T.Transform:
        if level == levels - 1:
            return T.Compose(couplings(shape, T.checkerboard_mask, steps + 1))
        squeezed = T.squeezed_shape(shape)
        channel = T.Compose(couplings(squeezed, T.channel_mask, steps))
        inner = scale(T.kept_shape(squeezed), level + 1)
        split = T.MultiScale(shape, channel, inner, split_prior, prior_hidden, features)
        return T.Compose([*couplings(shape, T.checkerboard_mask, steps), split])

    return scale(event, 0)


@register(
    "realnvp",
    "RealNVP: affine couplings with a soft-bounded scale, with ActNorm; multi-scale on images",
    images=True,
)
def realnvp(
    shape: Shape,
    layers: int = 6,
    hidden: Hidden | None = None,
    scale_bound: float = 3.0,
    actnorm: bool = True,
    mixing: str = "auto",
    context_dim: int = 0,
    num_classes: int = 0,
    conditioner: str = "auto",
    levels: int | None = None,
    steps: int = 3,
    split_prior: bool = False,
    logit: float | None = None,
) -> Flow:
    """RealNVP (Dinh et al., 2016): affine couplings, each after an ActNorm.

    ``scale_bound`` softly bounds each layer's log-scale. On vectors ``(D,)`` (and on images
    with ``levels=1``) the flow is ``layers`` couplings, ``mixing`` and image masks as for
    ``nice``; ``conditioner="auto"`` is ``"mlp"`` on vectors and ``"conv"`` on images, and
    ``hidden=None`` is ``(128, 128)`` on vectors and ``(64, 64)`` on images (a 3x3
    convolution of width 128 at every coupling makes an 8x8 step several times slower).

    On images ``(C, H, W)`` it is the multi-scale architecture of the paper with ``levels``
    scales (default ``None``: 2, or 1 where the image is too small to squeeze): at each scale
    but the last, ``steps`` checkerboard couplings, a squeeze to ``(4C, H/2, W/2)``, ``steps``
    channel couplings, and half the channels factored out to the base (with ``split_prior``
    through Glow's learned conditional Gaussian given the other half); at the last scale
    ``steps + 1`` checkerboard couplings (the paper's 3, 3 and 4). ``layers`` and ``mixing``
    apply to one scale only (``mixing`` must stay ``"auto"`` with ``levels >= 2``).

    ``logit`` :math:`= \alpha` puts the paper's logit preprocessing first (:func:`with_logit`),
    for dequantised data in ``[0, 1)`` trained without standardisation; ``None``: none.
    """
    event = event_shape_of(shape, "shape")
    # Image widths: the convolutions run at every position, an MLP once per sample.
    h = _hidden_option(
        hidden if hidden is not None else (128, 128) if len(event) == 1 else (64, 64)
    )
    if conditioner == "auto":
        conditioner = "mlp" if len(event) == 1 else "conv"
    check_bool(split_prior, "split_prior")
    check_int(steps, "steps", 1)
    if len(event) == 1:
        if levels not in (None, 1):
            raise ValueError(
                f"levels applies to images (C, H, W); vectors have one scale, got "
                f"levels={levels!r} for shape {event}"
            )
        levels = 1
    else:
        # The last scale's checkerboard needs 2 positions.
        most = halvings(event, 2) + 1
        levels = min(2, most) if levels is None else check_levels("realnvp", event, levels, most)
    if levels > 1:
        if mixing != "auto":
            raise ValueError(
                f"mixing applies to single-scale flows (levels=1), got mixing={mixing!r} with "
                f"levels={levels}; multi-scale RealNVP mixes by its masks and squeezes"
            )
        features = conditioning_features(context_dim, num_classes)
        conditioner = T.CONDITIONERS.check(conditioner)

        def make(s: tuple[int, ...], mask: Tensor) -> T.Transform:
            return T.AffineCoupling(
                s,
                scale_bound,
                mask=mask,
                hidden=h,
                context_features=features,
                conditioner=conditioner,
            )

        transform = _multiscale_realnvp(
            event, levels, steps, actnorm, split_prior, make, h[:1], features
        )
        return with_logit(Flow(transform, StandardNormal(event), context_dim, num_classes), logit)
    flow = _coupling_flow(
        shape,
        layers,
        context_dim,
        num_classes,
        mixing,
        conditioner,
        lambda event, **kw: T.AffineCoupling(event, scale_bound, hidden=h, **kw),
        actnorm=actnorm,
    )
    return with_logit(flow, logit)


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
