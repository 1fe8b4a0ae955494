"""ODE integration of a vector field, through torchdiffeq's solvers, counting evaluations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_int, check_positive
from .._registry import Registry
from .nfe import NFECounter

FIXED_STEP = ("euler", "midpoint", "heun", "rk4")
ADAPTIVE = ("dopri5",)
#: The solver methods by flowforge's name: torchdiffeq's name for each (they differ for
#: ``heun``, torchdiffeq's ``heun2``).
METHODS: Registry[str] = Registry("method")
for _name in FIXED_STEP + ADAPTIVE:
    METHODS.register(_name, {"heun": "heun2"}.get(_name, _name))
del _name

State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class SolverOptions:
    """How to integrate: a solver by name and its settings.

    Attributes:
        method: ``"euler"``, ``"midpoint"``, ``"heun"`` (Heun's second-order method), ``"rk4"``
            (fixed step) or ``"dopri5"`` (adaptive Dormand–Prince 5(4)).
        steps: number of equal steps over the interval; required by, and only used by, the
            fixed-step methods.
        rtol: relative tolerance of the adaptive method.
        atol: absolute tolerance of the adaptive method.
        adjoint: compute gradients by the adjoint method (memory independent of the number of
            steps, one more backward solve) instead of backpropagating through the solver.
    """

    method: str = "dopri5"
    steps: int | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    adjoint: bool = False

    def __post_init__(self) -> None:
        METHODS.check(self.method)
        if self.method in FIXED_STEP:
            steps = f"an int >= 1 for the fixed-step method {self.method!r}"
            if self.steps is None:  # missing rather than of a wrong type
                raise ValueError(f"steps must be {steps}, got None")
            check_int(self.steps, "steps", 1, steps)
        elif self.steps is not None:
            raise ValueError(
                f"method {self.method!r} chooses its own steps from rtol/atol; pass steps=None "
                "or a fixed-step method (euler, midpoint, heun, rk4)"
            )
        check_positive(self.rtol, "rtol")
        check_positive(self.atol, "atol")
        check_bool(self.adjoint, "adjoint")


@dataclass(frozen=True)
class ODESolution:
    """The state at the end of the interval and the number of field evaluations it took."""

    state: State
    nfe: int


class _Bound(nn.Module):
    # torchdiffeq calls func(t, y); the field is v(t, x, context). The context is bound here,
    # in a Module, so odeint_adjoint finds the field's parameters through it.
    def __init__(self, field: NFECounter, context: Tensor | None):
        super().__init__()
        self.field = field
        self.context = context

    def forward(self, t: Tensor, x: State) -> State:
        return self.field(t, x, self.context)


def integrate(
    field: Callable[..., State],
    x: State,
    t0: float = 0.0,
    t1: float = 1.0,
    options: SolverOptions | None = None,
    context: Tensor | None = None,
) -> ODESolution:
    r"""Solve :math:`\dot x = v(t, x, c)` from :math:`t_0` to :math:`t_1` (either direction).

    Args:
        field: the vector field ``v(t, x, context=None)``; ``x`` may be a tuple of tensors
            (e.g. the state and the log-density of a CNF), and ``v`` returns the same structure.
        x: the state at ``t0``: ``(B, *)`` or a tuple of such tensors.
        t0, t1: the interval.
        options: the solver (default: adaptive ``dopri5`` with rtol = atol = 1e-5).
        context: conditioning passed to the field unchanged.

    Returns:
        the state at ``t1`` and the number of field evaluations (forward solve only).

    References:
        Neural Ordinary Differential Equations (Chen et al., 2018) https://arxiv.org/abs/1806.07366
    """
    # torchdiffeq imports SciPy's integrators (most of a second): loaded on first solve.
    from torchdiffeq import odeint, odeint_adjoint

    options = options or SolverOptions()
    counter = field if isinstance(field, NFECounter) else NFECounter(field)
    func = _Bound(counter, context)
    first = x[0] if isinstance(x, tuple) else x
    kw = {"device": first.device, "dtype": first.dtype}
    if options.method in FIXED_STEP:
        # Fixed-step solvers step along the given grid: steps + 1 points.
        t = torch.linspace(t0, t1, options.steps + 1, **kw)
    else:
        t = torch.tensor([t0, t1], **kw)
    solve = odeint_adjoint if options.adjoint else odeint
    extra = {"adjoint_params": tuple(func.parameters())} if options.adjoint else {}
    with counter.counting() as block:
        path = solve(
            func,
            x,
            t,
            method=METHODS[options.method],
            rtol=options.rtol,
            atol=options.atol,
            **extra,
        )
    final = tuple(p[-1] for p in path) if isinstance(path, tuple) else path[-1]
    return ODESolution(final, block.nfe)
