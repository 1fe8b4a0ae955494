"""Recipes for the discrete normalizing flows: coupling and autoregressive families."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .. import transforms as T
from .._checks import check_choice, check_int
from ..distributions import Flow, StandardNormal
from .registry import register

Hidden = Sequence[int]


def _hidden_option(hidden: object) -> tuple[int, ...]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, Sequence) or not hidden:
        raise ValueError(f"hidden must be a non-empty list of layer sizes, got {hidden!r}")
    return tuple(check_int(h, "hidden sizes", 1) for h in hidden)


def _flow(dim: int, context_dim: int, layers: list[T.Transform]) -> Flow:
    return Flow(T.Compose(layers), StandardNormal((dim,)), context_dim)


def _coupling_flow(
    dim: int,
    layers: int,
    context_dim: int,
    mixing: str,
    make_coupling: Callable[[bool], T.Transform],
    actnorm: bool = False,
) -> Flow:
    check_int(layers, "layers", 1)
    check_int(context_dim, "context_dim", 0)
    if dim < 2:
        raise ValueError(f"coupling flows split the features in two and need dim >= 2, got {dim}")
    check_choice(mixing, "mixing", ("auto", "alternate", "permutation", "lu"))
    if mixing == "auto":
        mixing = "alternate" if dim == 2 else "permutation"
    parts: list[T.Transform] = []
    for i in range(layers):
        if actnorm:
            parts.append(T.ActNorm(dim))
        if i > 0 and mixing == "permutation":
            parts.append(T.RandomPermutation(dim, seed=i))
        elif i > 0 and mixing == "lu":
            parts.append(T.LULinear(dim, seed=i))
        # Alternating halves: every feature is transformed in every other layer.
        parts.append(make_coupling(i % 2 == 1))
    return _flow(dim, context_dim, parts)


@register("nice", "NICE: additive (volume-preserving) couplings and a final diagonal scaling")
def nice(
    dim: int,
    layers: int = 4,
    hidden: Hidden = (128, 128),
    mixing: str = "auto",
    context_dim: int = 0,
) -> Flow:
    """NICE (Dinh et al., 2014): ``layers`` additive couplings, then an elementwise scaling.

    ``mixing`` between couplings: ``"alternate"`` halves only, a random ``"permutation"``, or a
    learned ``"lu"`` linear layer; ``"auto"`` alternates for ``dim == 2`` and permutes above.
    """
    h = _hidden_option(hidden)
    flow = _coupling_flow(
        dim,
        layers,
        context_dim,
        mixing,
        lambda flip: T.AdditiveCoupling(dim, flip=flip, hidden=h, context_features=context_dim),
    )
    flow.transform.transforms.append(T.ElementwiseAffine(dim))
    return flow


@register("realnvp", "RealNVP: affine couplings with a soft-bounded scale, with ActNorm")
def realnvp(
    dim: int,
    layers: int = 6,
    hidden: Hidden = (128, 128),
    scale_bound: float = 3.0,
    actnorm: bool = True,
    mixing: str = "auto",
    context_dim: int = 0,
) -> Flow:
    """RealNVP (Dinh et al., 2016): ``layers`` affine couplings, each after an ActNorm.

    ``scale_bound`` softly bounds each layer's log-scale; ``mixing`` as for ``nice``.
    """
    h = _hidden_option(hidden)
    return _coupling_flow(
        dim,
        layers,
        context_dim,
        mixing,
        lambda flip: T.AffineCoupling(
            dim, scale_bound, flip=flip, hidden=h, context_features=context_dim
        ),
        actnorm=actnorm,
    )


@register("nsf", "Neural spline flow: rational-quadratic spline couplings with linear tails")
def nsf(
    dim: int,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    bins: int = 8,
    bound: float = 5.0,
    mixing: str = "auto",
    context_dim: int = 0,
) -> Flow:
    """Neural spline flow (Durkan et al., 2019) with coupling layers.

    Each layer is a monotone rational-quadratic spline with ``bins`` bins on
    ``[-bound, bound]`` and the identity outside; ``mixing`` as for ``nice``.
    """
    h = _hidden_option(hidden)
    return _coupling_flow(
        dim,
        layers,
        context_dim,
        mixing,
        lambda flip: T.SplineCoupling(
            dim, bins, bound, flip=flip, hidden=h, context_features=context_dim
        ),
    )


def _autoregressive_flow(
    dim: int,
    layers: int,
    context_dim: int,
    make_layer: Callable[[], T.Transform],
    inverse: bool = False,
) -> Flow:
    check_int(layers, "layers", 1)
    check_int(context_dim, "context_dim", 0)
    parts: list[T.Transform] = []
    for i in range(layers):
        if i > 0:
            # Reversing the order between layers lets each feature condition on all others.
            parts.append(T.Reverse(dim))
        layer = make_layer()
        parts.append(T.Inverse(layer) if inverse else layer)
    return _flow(dim, context_dim, parts)


@register("maf", "MAF: masked affine autoregressive layers (one pass for density)")
def maf(
    dim: int,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    scale_bound: float = 3.0,
    context_dim: int = 0,
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al., 2017), orders reversed between layers.

    Density costs one MADE pass per layer; sampling costs ``dim`` passes per layer.
    """
    h = _hidden_option(hidden)
    return _autoregressive_flow(
        dim,
        layers,
        context_dim,
        lambda: T.MaskedAffineAutoregressive(
            dim, scale_bound, hidden=h, context_features=context_dim
        ),
    )


@register("iaf", "IAF: inverse autoregressive layers (one pass for sampling)")
def iaf(
    dim: int,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    scale_bound: float = 3.0,
    context_dim: int = 0,
) -> Flow:
    """Inverse autoregressive flow (Kingma et al., 2016): MAF layers used in reverse.

    Sampling costs one MADE pass per layer; exact density costs ``dim`` passes per layer, so
    training by maximum likelihood on data is slow in high dimension.

    References:
        Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
        https://arxiv.org/abs/1606.04934
    """
    h = _hidden_option(hidden)
    return _autoregressive_flow(
        dim,
        layers,
        context_dim,
        lambda: T.MaskedAffineAutoregressive(
            dim, scale_bound, hidden=h, context_features=context_dim
        ),
        inverse=True,
    )


@register("nsf-ar", "Autoregressive neural spline flow: masked rational-quadratic splines")
def nsf_ar(
    dim: int,
    layers: int = 5,
    hidden: Hidden = (128, 128),
    bins: int = 8,
    bound: float = 5.0,
    context_dim: int = 0,
) -> Flow:
    """Neural spline flow (Durkan et al., 2019) with masked autoregressive spline layers."""
    h = _hidden_option(hidden)
    return _autoregressive_flow(
        dim,
        layers,
        context_dim,
        lambda: T.MaskedSplineAutoregressive(
            dim, bins, bound, hidden=h, context_features=context_dim
        ),
    )
