"""What travels from the trainer to a model's loss, and what comes back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import Tensor


@dataclass(frozen=True)
class Batch:
    r"""One training batch: data, their conditioning, and optionally the noise paired with them.

    Attributes:
        x1: ``(B, *event_shape)`` data (the end :math:`t = 1` of a flow-matching path).
        context: ``(B, C)`` float features, ``(B,)`` integer class labels for a model built with
            ``num_classes=K``, or ``None`` for an unconditional model.
        x0: ``(B, *event_shape)`` base points paired with ``x1`` (the start :math:`t = 0`), or
            ``None`` to let the model draw them. Flow matching regresses along the path from
            ``x0`` to ``x1`` when given: the way in for training on a model's own
            (noise, sample) pairs (reflow, distillation). Maximum-likelihood families ignore it.

    Example:
        >>> import torch, flowforge as ff
        >>> model = ff.models.create("rectified", dim=2)
        >>> x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
        >>> model.objective(ff.Batch(x1, x0=x0)).loss.shape
        torch.Size([])
    """

    x1: Tensor
    context: Tensor | None = None
    x0: Tensor | None = None


@dataclass(frozen=True)
class LossResult:
    """A model's training objective on a batch, with its named parts.

    Attributes:
        loss: the scalar to minimise (with its graph).
        terms: named, detached scalar parts for the training log (e.g. ``{"nll": ...,
            "kinetic": ...}`` for a regularised CNF, ``{"cfm": ...}`` for flow matching); empty
            when the loss is one term (the negative log-likelihood of a discrete flow).
    """

    loss: Tensor
    terms: Mapping[str, Tensor] = field(default_factory=lambda: MappingProxyType({}))
