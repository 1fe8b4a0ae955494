"""Discrete normalizing flows: a base distribution pushed through a transform."""

from __future__ import annotations

import warnings

from torch import Tensor

from ..transforms.base import Transform
from .model import Model
from .normal import BaseDistribution


class Flow(Model):
    r"""A normalizing flow :math:`x = f^{-1}(z)`, :math:`z \sim p_Z`, with the exact density

    .. math:: \log p(x) = \log p_Z(f(x)) + \log |\det \partial f(x) / \partial x|.

    ``transform`` is :math:`f`, the data-to-base (normalizing) direction: ``encode`` applies it
    and ``decode`` its inverse.

    Args:
        transform: the bijection :math:`f`, data to base.
        base: the base distribution, with ``log_prob``, ``sample`` and ``event_shape``.
        context_dim: ``C``, the size of the conditioning vector that reaches the
            transform's conditioners (0 for an unconditional flow).
        num_classes: ``K`` for a flow conditioned on class labels (then the conditioners take
            the label embedding's :func:`~flowforge.distributions.conditioning_features`
            features); 0 for none.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.models.create("nsf", dim=2)
        >>> x = torch.randn(64, 2)
        >>> flow.log_prob(x).shape
        torch.Size([64])
        >>> flow.sample(10).shape
        torch.Size([10, 2])
    """

    transform: Transform
    base: BaseDistribution

    def __init__(
        self,
        transform: Transform,
        base: BaseDistribution,
        context_dim: int = 0,
        num_classes: int = 0,
    ):
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transform must be a flowforge Transform, got {type(transform).__name__}"
            )
        self.transform = transform
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self._setup_conditioning(context_dim, num_classes)

    @property
    def log_prob_is_exact(self) -> bool:
        """Whether ``log_prob`` in the current mode (train/eval) is exact: False when a
        transform inside (a residual block) estimates its log-det stochastically."""
        return all(getattr(t, "ladj_is_exact", True) for t in self.transform.modules())

    # A discrete flow takes no solver options (Model refuses any), so ``solver`` is empty here.
    def _log_prob(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        if not self.training and not self.log_prob_is_exact:
            warnings.warn(
                "this flow's log_prob is an unbiased stochastic estimate, not the exact "
                "log-density: its residual blocks estimate their log-determinants (exact "
                "evaluation is the default up to 64 features; see the eval_estimator option)",
                RuntimeWarning,
                stacklevel=3,
            )
        z, ladj = self.transform.forward_and_ladj(x, self._condition(context))
        return self.base.log_prob(z) + ladj

    def _encode(self, x: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        return self.transform(x, self._condition(context))

    def _decode(self, z: Tensor, context: Tensor | None, **solver: object) -> Tensor:
        return self.transform.inverse(z, self._condition(context))

    def _base_sample(self, n: int) -> Tensor:
        return self.base.sample(n)

    def _sample_and_log_prob(
        self, z: Tensor, context: Tensor | None, **solver: object
    ) -> tuple[Tensor, Tensor]:
        # One pass: log p(x) = log p_Z(z) - log |det d f^{-1}(z) / dz|.
        x, ladj = self.transform.inverse_and_ladj(z, self._condition(context))
        return x, self.base.log_prob(z) - ladj
