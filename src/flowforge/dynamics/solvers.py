r"""The solver registry: named ways to carry a state along a vector field (:data:`SOLVERS`).

A solver takes :math:`x(t_0)` to :math:`x(t_1)` along :math:`\dot x = v(t, x, c)`. Each one is
an object registered under its name; it declares which keyword options it takes, validates
them, and solves. The ODE solvers here are torchdiffeq's (Euler, midpoint, Heun, RK4 on a fixed
grid; Dormand–Prince 5(4) with adaptive steps); a stochastic sampler joins the same table
(:class:`Solver` says how).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_int, check_positive
from .._registry import Registry

if TYPE_CHECKING:
    from .ode import SolverOptions

State = Tensor | tuple[Tensor, ...]

#: The options every :class:`~flowforge.dynamics.SolverOptions` has as fields, in their order;
#: a solver's own options beyond these travel in ``SolverOptions.extra``.
COMMON_OPTIONS = ("steps", "rtol", "atol", "adjoint")


class Solver:
    r"""A named solver: the options it takes, their validation, and the solve.

    A solver declares

    - :attr:`name`, its name in :data:`SOLVERS` (what ``method=`` selects);
    - :attr:`takes`, the keyword options it reads: some of the common ones
      (:data:`COMMON_OPTIONS`: ``steps``, ``rtol``, ``atol``, ``adjoint``) and its own;
    - :attr:`defaults`, its own options (those beyond the common ones) with their defaults;
    - :attr:`notes`, an optional reason per option it refuses, added to the error;

    and implements :meth:`check` (raise for a bad value of an option it takes; called when a
    :class:`~flowforge.dynamics.SolverOptions` is built, so options are always valid for their
    method) and :meth:`solve`. :func:`~flowforge.dynamics.integrate` looks the solver up by
    ``options.method`` and counts the field evaluations around :meth:`solve`.

    A user's keyword options are checked against the solver they belong to
    (:meth:`SolverOptions.merged <flowforge.dynamics.SolverOptions.merged>`): an option the
    chosen solver does not take is an error naming the ones it does, and a model's defaults that
    belong to another solver fall back silently when only the method changes.

    **A stochastic sampler** (Euler–Maruyama, DDPM, DDIM) joins the registry the same way:
    subclass :class:`Solver`, set :attr:`stochastic` to ``True``, declare its options, e.g.
    ``takes = ("steps", "eta", "noise")`` with
    ``defaults = MappingProxyType({"eta": 1.0, "noise": None})``,
    check them in :meth:`check` (after ``super().check(options)``, which refuses options of
    other solvers) reading them with :meth:`SolverOptions.get
    <flowforge.dynamics.SolverOptions.get>`, draw its noise inside :meth:`solve`, and register
    an instance: ``SOLVERS.register("ddim", DDIM())``. Users then write
    ``model.sample(n, method="ddim", steps=50, eta=0.0)``; its own options travel in
    ``SolverOptions.extra``, and a continuous model accepts them as keywords
    (:func:`solver_keywords` reads the registry). A stochastic solve has no inverse and no
    exact density along it: :attr:`stochastic` is how models are to tell, and refuse it where
    they need one (``log_prob``, ``encode``).

    Attributes:
        name: the registered name.
        takes: the keyword options it reads (besides ``method``).
        defaults: its own options beyond :data:`COMMON_OPTIONS`, with their defaults.
        notes: for an option it refuses, why (e.g. dopri5 chooses its own steps).
        stochastic: whether it draws noise (no inverse, no exact log-density).
    """

    name: str = ""
    takes: tuple[str, ...] = ()
    defaults: Mapping[str, object] = MappingProxyType({})
    notes: Mapping[str, str] = MappingProxyType({})
    stochastic: bool = False

    def check(self, options: SolverOptions) -> None:
        """Raise ``ValueError``/``TypeError`` naming an option that is wrong for this solver.

        The base class refuses a ``steps`` (it is ``None`` unless set) or an extra option this
        solver does not take, and checks the kind of every common option (an unused ``rtol``
        is still a positive number: it may become used when the method changes). Subclasses
        add their requirements and call ``super().check(options)``.
        """
        refused = [name for name in options.extra if name not in self.takes]
        if options.steps is not None and "steps" not in self.takes:
            refused.insert(0, "steps")
        if refused:
            raise ValueError(refusal(self, refused))
        if options.steps is not None:
            check_int(options.steps, "steps", 1)
        check_positive(options.rtol, "rtol")
        check_positive(options.atol, "atol")
        check_bool(options.adjoint, "adjoint")

    def solve(
        self,
        field: Callable[..., State],
        x: State,
        t0: float,
        t1: float,
        options: SolverOptions,
        context: Tensor | None = None,
    ) -> State:
        """The state at ``t1`` from ``x`` at ``t0`` (the same structure: ``(B, *)`` or a tuple).

        ``field`` is ``v(t, x, context)`` (already wrapped in an NFE counter by
        :func:`~flowforge.dynamics.integrate`).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, takes={', '.join(self.takes)})"


#: Every solver by name; an unknown name raises "method must be one of ...".
SOLVERS: Registry[Solver] = Registry("method")


def refusal(solver: Solver, names: Iterable[str]) -> str:
    """The error for options ``names`` given to ``solver``, which does not take them: what it
    takes, why not (its note, if any), and the registered solvers that do take them."""
    names = list(names)
    shown = ", ".join(names)
    note = "".join(f" ({solver.notes[n]})" for n in names if n in solver.notes)
    others = [s.name for s in SOLVERS.values() if all(n in s.takes for n in names)]
    fix = f"choose a method that takes {'it' if len(names) == 1 else 'them'}"
    fix = f"{fix} ({', '.join(others)})" if others else "no registered method takes " + shown
    takes = ", ".join(solver.takes) or "no options"
    return f"method {solver.name!r} takes {takes}, not {shown}{note}; leave {shown} out, or {fix}"


def solver_keywords() -> tuple[str, ...]:
    """Every keyword option some registered solver takes, with ``method`` first: the common
    ones in :data:`COMMON_OPTIONS` order, then the solvers' own in registration order."""
    own = [k for s in SOLVERS.values() for k in s.takes if k not in COMMON_OPTIONS]
    return ("method", *COMMON_OPTIONS, *dict.fromkeys(own))


class _Bound(nn.Module):
    # torchdiffeq calls func(t, y); the field is v(t, x, context). The context is bound here,
    # in a Module, so odeint_adjoint finds the field's parameters through it.
    def __init__(self, field: Callable[..., State], context: Tensor | None):
        super().__init__()
        self.field = field
        self.context = context

    def forward(self, t: Tensor, x: State) -> State:
        return self.field(t, x, self.context)


class TorchdiffeqSolver(Solver):
    """An ODE solver of torchdiffeq's, by its torchdiffeq name; ``adjoint=True`` computes
    gradients by the adjoint method (memory independent of the number of steps, one more
    backward solve) instead of backpropagating through the solver.

    References:
        Neural Ordinary Differential Equations (Chen et al., 2018) https://arxiv.org/abs/1806.07366
    """

    def __init__(self, name: str, torchdiffeq: str):
        self.name = name
        self.torchdiffeq = torchdiffeq

    def _grid(self, t0: float, t1: float, options: SolverOptions, kw: dict) -> Tensor:
        return torch.tensor([t0, t1], **kw)

    def _tolerances(self, options: SolverOptions) -> dict[str, float]:
        return {}

    def solve(self, field, x, t0, t1, options, context=None):
        # torchdiffeq imports SciPy's integrators (most of a second): loaded on first solve.
        from torchdiffeq import odeint, odeint_adjoint

        func = _Bound(field, context)
        first = x[0] if isinstance(x, tuple) else x
        t = self._grid(t0, t1, options, {"device": first.device, "dtype": first.dtype})
        solve = odeint_adjoint if options.adjoint else odeint
        extra = {"adjoint_params": tuple(func.parameters())} if options.adjoint else {}
        path = solve(func, x, t, method=self.torchdiffeq, **self._tolerances(options), **extra)
        return tuple(p[-1] for p in path) if isinstance(path, tuple) else path[-1]


class FixedStepSolver(TorchdiffeqSolver):
    """A fixed-step Runge–Kutta method: ``steps`` equal steps over the interval, each costing
    :attr:`evaluations` field evaluations. Takes ``steps`` (required) and ``adjoint``."""

    takes = ("steps", "adjoint")

    def __init__(self, name: str, torchdiffeq: str, evaluations: int):
        super().__init__(name, torchdiffeq)
        self.evaluations = evaluations

    def check(self, options: SolverOptions) -> None:
        steps = f"an int >= 1 for the fixed-step method {self.name!r}"
        if options.steps is None:  # missing rather than of a wrong type
            raise ValueError(f"steps must be {steps}, got None")
        check_int(options.steps, "steps", 1, steps)
        super().check(options)

    def _grid(self, t0, t1, options, kw):
        # Fixed-step solvers step along the given grid: steps + 1 points.
        return torch.linspace(t0, t1, options.steps + 1, **kw)


class AdaptiveSolver(TorchdiffeqSolver):
    """An adaptive embedded Runge–Kutta method: it chooses its steps so that the local error
    estimate stays below ``atol + rtol * |x|``. Takes ``rtol``, ``atol`` and ``adjoint``."""

    takes = ("rtol", "atol", "adjoint")
    notes = MappingProxyType({"steps": "it chooses its own steps from rtol/atol"})

    def _tolerances(self, options):
        return {"rtol": options.rtol, "atol": options.atol}


# Field evaluations per step: Euler 1, midpoint and Heun 2 (second order), RK4 4.
for _solver in (
    FixedStepSolver("euler", "euler", 1),
    FixedStepSolver("midpoint", "midpoint", 2),
    FixedStepSolver("heun", "heun2", 2),  # torchdiffeq's name for Heun's method
    FixedStepSolver("rk4", "rk4", 4),
    AdaptiveSolver("dopri5", "dopri5"),
):
    SOLVERS.register(_solver.name, _solver)
del _solver
