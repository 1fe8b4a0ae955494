"""Counting the function evaluations (NFE) of a vector field: the cost of continuous models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn


class NFEBlock:
    """The number of evaluations made inside one ``with counter.counting()`` block.

    ``nfe`` counts up while the block runs and is fixed once it exits.
    """

    def __init__(self, counter: NFECounter):
        self._counter = counter
        self._start = counter.nfe
        self._end: int | None = None

    @property
    def nfe(self) -> int:
        """Evaluations since the block began (until it ended)."""
        end = self._counter.nfe if self._end is None else self._end
        return end - self._start

    def _close(self) -> None:
        self._end = self._counter.nfe

    def __repr__(self) -> str:
        return f"NFEBlock(nfe={self.nfe})"


class NFECounter(nn.Module):
    r"""A vector field :math:`v(t, x, c)` that counts its calls: the number of function evaluations.

    Wraps ``field`` (any callable ``v(t, x, context=None)``, usually an ``nn.Module``) and adds 1
    to :attr:`nfe` on each call, whatever the batch size: one call evaluates the field on the
    whole batch, which is what an ODE solver's cost is measured in. A fixed-step solver with
    ``steps`` steps costs ``steps`` (Euler) or ``4 * steps`` (RK4) evaluations; an adaptive one
    costs what its tolerances ask for, and its backward pass (adjoint) evaluates the field too.

    The counter is itself an ``nn.Module`` with ``field`` as a submodule, so it can stand in for
    the field anywhere, including where a solver collects the field's parameters
    (``torchdiffeq.odeint_adjoint``); it calls ``field(t, x)`` when no context is given, as
    torchdiffeq does with its two-argument ``func(t, y)``. The count is a plain Python
    attribute, not part of the ``state_dict``.

    Args:
        field: the vector field ``v(t, x, context=None) -> (B, *)``.

    Attributes:
        nfe: evaluations since creation or the last :meth:`reset`.

    Example:
        >>> import torch
        >>> from flowforge.metrics import NFECounter
        >>> counter = NFECounter(lambda t, x, context=None: -x)
        >>> x = torch.ones(4, 2)
        >>> with counter.counting() as block:
        ...     for k in range(8):  # Euler steps from t = 0 to 1
        ...         x = x + counter(torch.tensor(k / 8), x) / 8
        >>> block.nfe, counter.nfe
        (8, 8)
    """

    def __init__(self, field: Callable[..., Tensor]):
        super().__init__()
        if not callable(field):
            raise TypeError(
                f"field must be a callable vector field v(t, x, context=None), "
                f"got {type(field).__name__}"
            )
        self.field = field
        self.nfe = 0

    def forward(self, t: Tensor, x: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Evaluate :math:`v(t, x, c)` and count the call; shapes are the field's own."""
        # Straight into the instance dict: nn.Module.__setattr__ checks parameters, buffers
        # and submodules first, which costs more than a small field's evaluation overheads.
        self.__dict__["nfe"] = self.nfe + 1
        if context is None:
            return self.field(t, x)
        return self.field(t, x, context)

    def reset(self) -> None:
        """Set :attr:`nfe` back to 0."""
        self.nfe = 0

    @contextmanager
    def counting(self) -> Iterator[NFEBlock]:
        """Count the evaluations of one block: ``with counter.counting() as block: ...``.

        Yields an :class:`NFEBlock` whose ``nfe`` is the number of calls made inside the block.
        :attr:`nfe` keeps its running total (blocks neither reset it nor nest badly).
        """
        block = NFEBlock(self)
        try:
            yield block
        finally:
            block._close()

    def extra_repr(self) -> str:
        return f"nfe={self.nfe}"


def total_nfe(module: nn.Module) -> int | None:
    """Evaluations counted so far by every :class:`NFECounter` inside ``module`` (a model, or
    a wrapper around one); ``None`` when it has none, i.e. it is not a continuous-time model.

    Take the difference of two readings to count what happened between them.
    """
    found = [m.nfe for m in module.modules() if isinstance(m, NFECounter)]
    return sum(found) if found else None
