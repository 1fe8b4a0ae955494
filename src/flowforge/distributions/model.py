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

    Continuous-time models integrate an ODE in ``log_prob``, ``encode``, ``decode`` and
    ``sample``, and take solver choices there as keyword options
    (``model.sample(n, method="euler", steps=8)``); :attr:`solver_keys` names the ones a model
    accepts. A discrete flow accepts none and says so.

    Attributes:
        event_shape: shape of one sample, e.g. ``(D,)``.
        context_dim: ``C``, size of the conditioning vector (0 for an unconditional model).
        solver_keys: the keyword options the public methods accept (empty for discrete flows).
    """

    event_shape: tuple[int, ...]
    context_dim: int
    solver_keys: tuple[str, ...] = ()

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

    def log_prob(self, x: Tensor, context: Tensor | None = None, **solver: object) -> Tensor:
        """Log-density of ``x (B, *event_shape)`` in nats, shape ``(B,)``.

        ``solver``: solver options of a continuous-time model (see :attr:`solver_keys`).
        """
        x, context = self._check(x, context)
        return self._log_prob(x, context, **self._check_solver(solver))

    def encode(self, x: Tensor, context: Tensor | None = None, **solver: object) -> Tensor:
        """Map data ``x`` to its base point ``z`` (compression), both ``(B, *event_shape)``."""
        x, context = self._check(x, context)
        return self._encode(x, context, **self._check_solver(solver))

    def decode(self, z: Tensor, context: Tensor | None = None, **solver: object) -> Tensor:
        """Map base points ``z`` to data ``x`` (sampling), both ``(B, *event_shape)``."""
        z, context = self._check(z, context, "z")
        return self._decode(z, context, **self._check_solver(solver))

    def sample(self, n: int, context: Tensor | None = None, **solver: object) -> Tensor:
        """Draw ``n`` samples, shape ``(n, *event_shape)``, as plain tensors without gradient.

        ``context`` is ``(n, C)`` (one row per sample) or ``(C,)`` / ``(1, C)`` (shared by all).

        Sampling runs under ``torch.no_grad()``, like ``torch.distributions``' ``sample``: the
        result can go straight to ``.numpy()`` or a plot, and no graph is kept (residual blocks
        skip their implicit gradients). For samples to differentiate through (a reparameterised
        draw), call ``decode(z)`` on base noise, or :meth:`sample_and_log_prob` where a family
        has it; both keep autograd, as :meth:`log_prob`, :meth:`encode` and :meth:`loss` do.
        """
        n = check_count(n)
        solver = self._check_solver(solver)
        context = self._sample_context(n, context)
        with torch.no_grad():
            return self._decode(self._base_sample(n), context, **solver)

    # -- helpers ------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model's parameters (or buffers, if it has none)."""
        found = _first(self, "_parameters", floating=True)
        if found is None:
            found = _first(self, "_buffers", floating=True)
        return found.dtype if found is not None else torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (or buffers, if it has none)."""
        found = _first(self, "_parameters")
        if found is None:
            found = _first(self, "_buffers")
        return found.device if found is not None else torch.device("cpu")

    def _described(self) -> str:
        """What an error message calls this model: its class; a wrapper names what it wraps."""
        return type(self).__name__

    def _check_solver(self, solver: dict[str, object]) -> dict[str, object]:
        unknown = sorted(set(solver) - set(self.solver_keys))
        if unknown and not self.solver_keys:
            raise TypeError(
                f"{self._described()} is not a continuous-time model and takes no solver "
                f"options (got {', '.join(unknown)})"
            )
        if unknown:
            raise TypeError(
                f"unknown solver option {', '.join(map(repr, unknown))}; "
                f"{self._described()} takes {', '.join(self.solver_keys)}"
            )
        return solver

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


def _first(module: nn.Module, kind: str, floating: bool = False) -> Tensor | None:
    """The first parameter (``kind="_parameters"``) or buffer (``"_buffers"``) of ``module``
    in ``module.parameters()`` order, optionally the first floating-point one.

    A direct walk of the module tree: ``next(module.parameters())`` builds generators over every
    submodule and costs more than the rest of a small model's input checks.
    """
    for t in getattr(module, kind).values():
        if t is not None and (not floating or t.is_floating_point()):
            return t
    for child in module._modules.values():
        if child is not None:
            found = _first(child, kind, floating)
            if found is not None:
                return found
    return None
