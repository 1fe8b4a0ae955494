"""The transform contract: bijections that return their log-absolute-determinant."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from .._checks import check_int
from ..estimators.reduce import sum_except_batch as sum_except_batch  # the one reduction


class Transform(nn.Module):
    r"""A bijection :math:`y = f(x)` that also returns :math:`\log |\det \partial y / \partial x|`.

    Subclasses implement :meth:`forward_and_ladj` and :meth:`inverse_and_ladj`; everything else
    is built on those two. ``x`` is ``(B, *event_shape)``: ``(B, D)`` for vectors, ``(B, C, H, W)``
    for images. The log-absolute-determinant of the Jacobian (``ladj``) has one value per sample,
    shape ``(B,)``, the sum over every entry of the event (:func:`sum_except_batch`).

    In a :class:`~flowforge.distributions.Flow` the forward direction is the *normalizing*
    direction, data :math:`x` to base :math:`z`, so density evaluation costs one forward call.
    """

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y = f(x)` and :math:`\log |\det \partial y / \partial x|`, ``(B,)``."""
        raise NotImplementedError

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f^{-1}(y)` and :math:`\log |\det \partial x / \partial y|`."""
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Return :math:`f(x)` only."""
        return self.forward_and_ladj(x, context)[0]

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Return :math:`f^{-1}(y)` only."""
        return self.inverse_and_ladj(y, context)[0]


class Compose(Transform):
    r"""The composition :math:`f = f_n \circ \cdots \circ f_1`; log-determinants add up.

    Args:
        transforms: the transforms :math:`f_1, \dots, f_n`, applied in that order in the forward
            direction and in reverse order in the inverse direction.

    Example:
        >>> import torch, flowforge as ff
        >>> T = ff.transforms
        >>> t = T.Compose([T.ElementwiseAffine(2), T.Reverse(2)])
        >>> y, ladj = t.forward_and_ladj(torch.randn(5, 2))
        >>> ladj.shape
        torch.Size([5])
    """

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        for i, t in enumerate(self.transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"transforms[{i}] must be a flowforge Transform, got {type(t).__name__}"
                )

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = x.new_zeros(x.shape[0])
        for t in cast("list[Transform]", self.transforms):
            x, step = t.forward_and_ladj(x, context)
            ladj = ladj + step
        return x, ladj

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = y.new_zeros(y.shape[0])
        for t in reversed(cast("list[Transform]", self.transforms)):
            y, step = t.inverse_and_ladj(y, context)
            ladj = ladj + step
        return y, ladj

    # Without log-dets: a part whose log-det is costly (a residual block) skips it.
    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        for t in cast("list[Transform]", self.transforms):
            x = t(x, context)
        return x

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        for t in reversed(cast("list[Transform]", self.transforms)):
            y = t.inverse(y, context)
        return y


class Inverse(Transform):
    r"""The inverse bijection :math:`f^{-1}`: swaps the two directions of ``transform``.

    Used to turn a masked autoregressive transform (one pass for density) into an inverse
    autoregressive one (one pass for sampling).
    """

    def __init__(self, transform: Transform):
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transform must be a flowforge Transform, got {type(transform).__name__}"
            )
        self.transform = transform

    def forward_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse_and_ladj(x, context)

    def inverse_and_ladj(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.forward_and_ladj(y, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> Tensor:
        return self.transform(y, context)


def event_shape_of(features: int | Sequence[int], name: str = "features") -> tuple[int, ...]:
    """The event shape a transform was given: an int ``D`` means ``(D,)``, a sequence is the
    shape itself (``(C, H, W)`` for images). Every entry must be a positive int."""
    if isinstance(features, numbers.Integral) and not isinstance(features, bool):
        return (check_int(features, name, 1, "a positive int"),)
    if isinstance(features, torch.Size | tuple | list) and len(features) > 0:
        return tuple(
            check_int(d, f"{name}[{i}]", 1, "a positive int") for i, d in enumerate(features)
        )
    raise TypeError(
        f"{name} must be a positive int D (vectors) or a non-empty shape such as (C, H, W), "
        f"got {features!r}"
    )


def check_event(x: Tensor, event_shape: tuple[int, ...], name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` has shape ``(B, *event_shape)`` (``event_shape`` a
    tuple, as :func:`event_shape_of` returns)."""
    # A torch.Size equals a tuple of the same entries; a different rank never compares equal.
    if x.shape[1:] != event_shape:
        shape = ", ".join(str(d) for d in event_shape)
        raise ValueError(f"{name} must have shape (B, {shape}), got {tuple(x.shape)}")


def check_features(x: Tensor, features: int, name: str = "x") -> None:
    """Raise ``ValueError`` unless ``x`` has shape ``(B, features)`` (:func:`check_event` for
    vectors)."""
    check_event(x, (features,), name)


def zeros_ladj(x: Tensor) -> Tensor:
    """A zero log-determinant for each sample of ``x``, shape ``(B,)``."""
    return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
