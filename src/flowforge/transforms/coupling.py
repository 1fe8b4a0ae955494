"""Coupling layers: the entries a mask leaves unchanged condition an elementwise map of the rest."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .._registry import Registry
from ..nets.conv import ConvConditioner, ResNetConditioner
from ..nets.mlp import MLPConditioner
from .base import Transform, check_event, event_shape_of, sum_except_batch
from .univariate import AdditiveTransformer, AffineTransformer, RQSplineTransformer, Transformer

# The built-in conditioners by name; each is called (mask, P, hidden, context_features,
# activation) and returns a network (x (B, *event), context (B, E) | None) -> (B, n, P).
CONDITIONERS: Registry[Callable[..., nn.Module]] = Registry("conditioner")
CONDITIONERS.register("mlp", MLPConditioner)
CONDITIONERS.register("conv", ConvConditioner)
CONDITIONERS.register("resnet", ResNetConditioner)


def channel_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """A coupling mask that transforms the last ``n // 2`` entries of dimension 1: features of
    a vector, channels of an image (every position of them); with ``flip`` the first ``n // 2``.

    Args:
        shape: the event shape, ``(D,)`` or ``(C, H, W)``, with ``D`` or ``C`` at least 2.
        flip: transform the first half instead of the last.

    Returns:
        ``shape`` booleans, ``True`` for the transformed entries.
    """
    shape = event_shape_of(tuple(shape), "shape")
    n = shape[0]
    if n < 2:
        raise ValueError(
            f"a channel mask splits dimension 1 in two and needs at least 2 entries there, "
            f"got shape {shape}; use checkerboard_mask for single-channel images"
        )
    split = torch.arange(n) >= n - n // 2
    if flip:
        split = split.flip(0)
    return split.view(n, *(1 for _ in shape[1:])).expand(shape).clone()


def checkerboard_mask(shape: Sequence[int], flip: bool = False) -> Tensor:
    """A coupling mask that alternates like a checkerboard over the positions: entry ``(c, i, j)``
    is transformed when ``i + j`` is odd (even with ``flip``), in every channel alike. For a
    vector ``(D,)`` the positions are the features themselves (odd indices, or even with
    ``flip``).

    Args:
        shape: the event shape, ``(D,)`` or ``(C, H, W)``, with at least 2 positions.
        flip: swap the two colours.

    Returns:
        ``shape`` booleans, ``True`` for the transformed entries.
    """
    shape = event_shape_of(tuple(shape), "shape")
    positions = shape if len(shape) == 1 else shape[1:]
    if math.prod(positions) < 2:
        raise ValueError(f"a checkerboard mask needs at least 2 positions, got shape {shape}")
    parity = sum(
        torch.arange(n).view(*(n if i == k else 1 for i in range(len(positions))))
        for k, n in enumerate(positions)
    )
    mask = torch.as_tensor(parity) % 2 == (0 if flip else 1)
    return mask.expand(shape).clone()


class Coupling(Transform):
    r"""Coupling layer: :math:`y_A = x_A`, :math:`y_B = \tau(x_B; \theta(x_A, c))`.

    A boolean ``mask`` of the event's shape splits the entries: ``True`` ones (set ``B``) are
    transformed by the elementwise map :math:`\tau`, whose parameters a *conditioner* computes
    from the others (set ``A``, passed through unchanged) and the context. The Jacobian is block
    triangular, so :math:`\log |\det J| = \sum_{i \in B} \log \tau'(x_i)`, and the inverse
    applies :math:`\tau^{-1}` with the same parameters, since :math:`x_A = y_A`.

    The conditioner is any module called ``conditioner(x, context)`` with ``x (B, *event)``
    (it must read only the entries where ``mask`` is False) and ``context (B, E)`` or None,
    returning ``(B, n_transformed, P)``: ``P = transformer.num_params`` parameters for each
    ``True`` entry of the mask, in row-major order. Built-in: ``"mlp"``
    (:class:`~flowforge.nets.MLPConditioner`: flattens the event, any shape) and ``"conv"``
    (:class:`~flowforge.nets.ConvConditioner`: 3x3 convolutions, images ``(C, H, W)`` only) and
    ``"resnet"`` (:class:`~flowforge.nets.ResNetConditioner`: residual blocks, images only).

    Args:
        features: the event shape: ``D`` (or ``(D,)``) for vectors, ``(C, H, W)`` for images;
            at least 2 entries.
        transformer: the elementwise map :math:`\tau`.
        mask: event-shaped booleans, ``True`` for the entries that are transformed, with both
            values present. Default: for vectors the last ``D // 2`` features (the first with
            ``flip``), :func:`channel_mask`; for other shapes :func:`checkerboard_mask`.
        flip: with the default mask, transform the other half.
        hidden: hidden sizes of the conditioner (layer sizes of the MLP, channel widths of the
            convolutional one).
        context_features: ``E``, size of the conditioning vector (0 for none).
        activation: activation module class of the conditioner.
        conditioner: ``"mlp"`` (default), ``"conv"``, ``"resnet"``, or a ready module as
            described above (then ``hidden``, ``context_features`` and ``activation`` are not
            used).

    Shapes: ``x (B, *event_shape)``, ``context (B, E)``.
    """

    identity_idx: Tensor
    transformed_idx: Tensor
    mask: Tensor

    def __init__(
        self,
        features: int | Sequence[int],
        transformer: Transformer,
        mask: Tensor | None = None,
        flip: bool = False,
        hidden: Sequence[int] = (128, 128),
        context_features: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        conditioner: str | nn.Module = "mlp",
    ):
        super().__init__()
        self.event_shape = event_shape_of(features)
        numel = math.prod(self.event_shape)
        if numel < 2:
            raise ValueError(f"a coupling layer needs at least 2 features, got {numel}")
        if mask is None:
            if len(self.event_shape) == 1:
                mask = channel_mask(self.event_shape, flip)
            else:
                mask = checkerboard_mask(self.event_shape, flip)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != self.event_shape or mask.all() or not mask.any():
            raise ValueError(
                f"mask must be booleans of the event shape {self.event_shape} with both True and "
                f"False entries, got shape {tuple(mask.shape)} with {int(mask.sum())} True"
            )
        self.features = self.event_shape[0]
        self.transformer = transformer
        flat = mask.flatten()
        identity_idx = torch.nonzero(~flat).squeeze(1)
        transformed_idx = torch.nonzero(flat).squeeze(1)
        # Indices into the flattened event. `_unsplit` is no longer used; it stays a buffer so
        # state dicts saved before event shapes existed load unchanged (the mask itself is
        # derived, outside the state dict).
        self.register_buffer("identity_idx", identity_idx)
        self.register_buffer("transformed_idx", transformed_idx)
        self.register_buffer("_unsplit", torch.argsort(torch.cat([identity_idx, transformed_idx])))
        self.register_buffer("mask", mask, persistent=False)
        if isinstance(conditioner, nn.Module):
            self.conditioner = conditioner
        else:
            self.conditioner = CONDITIONERS.get(conditioner)(
                mask, transformer.num_params, hidden, context_features, activation
            )

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        # flatten(1) returns a (B, D) input itself: vectors pay no reshape.
        flat = x.flatten(1)
        x_tr = flat[:, self.transformed_idx]
        params = self.conditioner(x, context)
        if inverse:
            y_tr, log_deriv = self.transformer.inverse_and_log_deriv(x_tr, params)
        else:
            y_tr, log_deriv = self.transformer.forward_and_log_deriv(x_tr, params)
        # The identity entries are copied through; y_B lands at its indices.
        y = flat.index_copy(1, self.transformed_idx, y_tr)
        return (y if x.ndim == 2 else y.view(x.shape)), sum_except_batch(log_deriv)

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.event_shape)
        return self._couple(x, context, inverse=False)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(y, self.event_shape, "y")
        return self._couple(y, context, inverse=True)


class AdditiveCoupling(Coupling):
    r"""NICE's additive coupling, :math:`y_B = x_B + t(x_A)`; volume preserving.

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014)
        https://arxiv.org/abs/1410.8516
    """

    def __init__(self, features: int | Sequence[int], **kwargs):
        super().__init__(features, AdditiveTransformer(), **kwargs)


class AffineCoupling(Coupling):
    r"""RealNVP's affine coupling, :math:`y_B = x_B \exp(s(x_A)) + t(x_A)`, with :math:`|s| < b`.

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.
        scale_bound: ``b``, the soft bound on the log-scale (see :class:`AffineTransformer`).
        **kwargs: as :class:`Coupling`.

    References:
        Density estimation using Real NVP (Dinh et al., 2016) https://arxiv.org/abs/1605.08803
    """

    def __init__(self, features: int | Sequence[int], scale_bound: float = 3.0, **kwargs):
        super().__init__(features, AffineTransformer(scale_bound), **kwargs)


class SplineCoupling(Coupling):
    r"""Rational-quadratic spline coupling: :math:`y_B = \mathrm{RQS}(x_B; \theta(x_A))`.

    Args:
        features: the event shape, ``D`` or ``(C, H, W)``.
        bins: number of spline bins.
        bound: the spline acts on :math:`[-B, B]` and is the identity outside.
        **kwargs: as :class:`Coupling`.

    References:
        Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
    """

    def __init__(self, features: int | Sequence[int], bins: int = 8, bound: float = 5.0, **kwargs):
        super().__init__(features, RQSplineTransformer(bins, bound), **kwargs)
