"""The model protocol every flowforge family implements."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_batch, check_context, check_count


class Model(nn.Module):
    r"""A generative model with an exact (or stated) log-density: the protocol of the registry.

    Every family implements :meth:`log_prob`, :meth:`sample`, :meth:`encode` and :meth:`decode`;
    :meth:`loss` defaults to the negative log-likelihood. Inputs are validated here, at the
    public boundary, so families implement the underscored methods on checked tensors.

    Attributes:
        event_shape: shape of one sample, e.g. ``(D,)``.
        context_dim: ``C``, size of the conditioning vector (0 for an unconditional model).
    """

    event_shape: tuple[int, ...]
    context_dim: int

    # -- what a family implements -------------------------------------------------------------
    def _log_prob(self, x: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _encode(self, x: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _decode(self, z: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _base_sample(self, n: int) -> Tensor:
        raise NotImplementedError

    def _loss(self, x: Tensor, context: Tensor | None) -> Tensor:
        return -self._log_prob(x, context).mean()

    # -- the public protocol ------------------------------------------------------------------
    def loss(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The family's training objective on a batch ``x (B, *event_shape)``: a scalar."""
        x, context = self._check(x, context)
        return self._loss(x, context)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``x (B, *event_shape)`` in nats, shape ``(B,)``."""
        x, context = self._check(x, context)
        return self._log_prob(x, context)

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Map data ``x`` to its base point ``z`` (compression), both ``(B, *event_shape)``."""
        x, context = self._check(x, context)
        return self._encode(x, context)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Map base points ``z`` to data ``x`` (sampling), both ``(B, *event_shape)``."""
        z, context = self._check(z, context, "z")
        return self._decode(z, context)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *event_shape)``.

        ``context`` is ``(n, C)`` (one row per sample) or ``(C,)`` / ``(1, C)`` (shared by all).
        """
        n = check_count(n)
        context = self._sample_context(n, context)
        return self._decode(self._base_sample(n), context)

    # -- helpers ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model's parameters."""
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _check(
        self, x: Tensor, context: Tensor | None, name: str = "x"
    ) -> tuple[Tensor, Tensor | None]:
        x = check_batch(x, name, self.event_shape, self.dtype)
        return x, check_context(context, self.context_dim, x.shape[0], self.dtype)

    def _sample_context(self, n: int, context: Tensor | None) -> Tensor | None:
        if isinstance(context, Tensor) and self.context_dim:
            if context.ndim == 1:
                context = context.unsqueeze(0)
            if context.ndim == 2 and context.shape[0] == 1:
                context = context.expand(n, -1)
        return check_context(context, self.context_dim, n, self.dtype)
