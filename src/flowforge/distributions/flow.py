"""Discrete normalizing flows: a base distribution pushed through a transform."""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from .._checks import check_count
from ..transforms.base import Transform
from .model import Model


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

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.models.create("nsf", dim=2)
        >>> x = torch.randn(64, 2)
        >>> flow.log_prob(x).shape
        torch.Size([64])
        >>> flow.sample(10).shape
        torch.Size([10, 2])
    """

    def __init__(self, transform: Transform, base: nn.Module, context_dim: int = 0):
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(
                f"transform must be a flowforge Transform, got {type(transform).__name__}"
            )
        self.transform = transform
        self.base = base
        self.event_shape = tuple(base.event_shape)
        self.context_dim = int(context_dim)

    @property
    def log_prob_is_exact(self) -> bool:
        """Whether ``log_prob`` in the current mode (train/eval) is exact: False when a
        transform inside (a residual block) estimates its log-det stochastically."""
        return all(getattr(t, "ladj_is_exact", True) for t in self.transform.modules())

    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        if not self.training and not self.log_prob_is_exact:
            warnings.warn(
                "this flow's log_prob is an unbiased stochastic estimate, not the exact "
                "log-density: its residual blocks estimate their log-determinants (exact "
                "evaluation is the default up to 64 features; see the eval_estimator option)",
                RuntimeWarning,
                stacklevel=3,
            )
        z, ladj = self.transform.forward_and_ladj(x, context)
        return self.base.log_prob(z) + ladj

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.transform(x, context)

    def _decode(self, z: Tensor, context: Tensor | None) -> Tensor:
        return self.transform.inverse(z, context)

    def _base_sample(self, n: int) -> Tensor:
        return self.base.sample(n)

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Draw ``n`` samples, their log-densities in one pass: ``(n, *event_shape)``, ``(n,)``.

        :math:`\log p(x) = \log p_Z(z) - \log |\det \partial f^{-1}(z) / \partial z|`.
        """
        n = check_count(n)
        context = self._sample_context(n, context)
        z = self.base.sample(n)
        x, ladj = self.transform.inverse_and_ladj(z, context)
        return x, self.base.log_prob(z) - ladj
