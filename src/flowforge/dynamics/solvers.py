r"""The solver registry: named ways to carry a state along a vector field (:data:`SOLVERS`).

A solver takes :math:`x(t_0)` to :math:`x(t_1)` along :math:`\dot x = v(t, x, c)`. Each one is
an object registered under its name; it declares which keyword options it takes, validates
them, and solves. The ODE solvers here are torchdiffeq's (Euler, midpoint, Heun, RK4 on a fixed
grid of times, uniform or one of :data:`~flowforge.dynamics.grids.GRIDS`; Dormand–Prince 5(4)
with adaptive steps); a stochastic sampler joins the same table (:class:`Solver` says how).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_int, check_positive
from .._registry import Registry
from .grids import GRIDS, Grid, grid_options

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

    **A stochastic sampler** (Euler–Maruyama, DDPM, DDIM: ``flowforge.diffusion``) subclasses
    :class:`StochasticSolver`, which sets :attr:`stochastic`, steps along a time grid like the
    fixed-step methods and declares its own options in ``own`` (e.g. ``{"eta": 0.0}``); it
    checks them in :meth:`check` (after ``super().check(options)``, which refuses options of
    other solvers) reading them with :meth:`SolverOptions.get
    <flowforge.dynamics.SolverOptions.get>`, draws its noise inside
    :meth:`StochasticSolver.sample`, which gets the model's Gaussian path besides the field,
    and is registered as an instance: ``SOLVERS.register("ddim", DDIM())``. Users then write
    ``model.sample(n, method="ddim", steps=50, eta=0.0)``; its own options travel in
    ``SolverOptions.extra``, and a continuous model accepts them as keywords
    (:func:`solver_keywords` reads the registry). A stochastic solve has no inverse and no
    exact density along it: models read :attr:`stochastic` and refuse it in ``log_prob`` and
    ``encode``.

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

    def inherits(
        self, defaults: Mapping[str, object], given: Mapping[str, object]
    ) -> dict[str, object]:
        """Of a model's default options of this solver's own (``defaults``, those it takes),
        the ones that still apply once a user gave ``given``: all of them, unless a subclass
        says otherwise (a fixed-step solver drops the defaults' grid options when a grid is
        given). Used by :meth:`SolverOptions.merged
        <flowforge.dynamics.SolverOptions.merged>`."""
        return dict(defaults)

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


class GridSolver(Solver):
    """A solver that steps along a time grid: ``steps`` steps over the interval along a grid of
    :data:`~flowforge.dynamics.grids.GRIDS` (``grid="uniform"``, equal steps, by default).
    Takes ``steps`` (required), ``grid`` and the grids' options (``shift`` of
    ``grid="shift"``, ``rho`` of ``grid="edm"``; an option of a grid other than the chosen one
    is refused), plus :attr:`step_options` and its :attr:`own` options with their defaults.
    """

    #: Common options it takes besides ``steps``.
    step_options: tuple[str, ...] = ()
    #: Its own options beyond the grid's, with their defaults.
    own: Mapping[str, object] = MappingProxyType({})

    # Read from the grid registry when asked, so that a grid registered later counts.
    @property
    def takes(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("steps", *self.step_options, *self.own, "grid", *grid_options())

    @property
    def defaults(self) -> Mapping[str, object]:  # type: ignore[override]
        params = {k: v for g in reversed(list(GRIDS.values())) for k, v in g.params.items()}
        return MappingProxyType({**self.own, "grid": "uniform", **params})

    def check(self, options: SolverOptions) -> None:
        steps = f"an int >= 1 for method {self.name!r}, which takes steps along a time grid"
        grid = GRIDS.get(options.get("grid"), "grid")
        if options.steps is None:  # missing rather than of a wrong type
            spaced = (
                f" (grid={grid.name!r} places steps + 1 points)" if "grid" in options.extra else ""
            )
            raise ValueError(f"steps must be {steps}, got None{spaced}")
        check_int(options.steps, "steps", 1, steps)
        super().check(options)
        foreign = [k for k in options.extra if k in grid_options() and k not in grid.params]
        if foreign:
            owners = [g.name for g in GRIDS.values() if foreign[0] in g.params]
            raise ValueError(
                f"{foreign[0]} is an option of grid={owners[0]!r}, not of grid={grid.name!r} "
                f"(it would be ignored); add grid={owners[0]!r}, or leave {foreign[0]} out"
            )
        grid.check({**grid.params, **self.grid_params(options, grid)})

    @staticmethod
    def grid_params(options: SolverOptions, grid: Grid) -> dict[str, object]:
        """The options of ``grid`` that ``options`` set."""
        return {k: v for k, v in options.extra.items() if k in grid.params}

    def inherits(
        self, defaults: Mapping[str, object], given: Mapping[str, object]
    ) -> dict[str, object]:
        # A grid chosen now replaces the defaults' grid with the defaults' options of it.
        if given.get("grid") is None:
            return dict(defaults)
        return {k: v for k, v in defaults.items() if k not in grid_options()}

    def times(self, t0: float, t1: float, options: SolverOptions, like: Tensor) -> Tensor:
        """The ``steps + 1`` times of the grid from ``t0`` to ``t1``, with ``like``'s dtype and
        device."""
        grid = GRIDS[options.get("grid")]
        steps = cast(int, options.steps)  # check() refused a missing one
        params = self.grid_params(options, grid)
        return grid(steps, t0, t1, device=like.device, dtype=like.dtype, **params)


class FixedStepSolver(GridSolver, TorchdiffeqSolver):
    """A fixed-step Runge–Kutta method of torchdiffeq's along a time grid (:class:`GridSolver`),
    each step costing :attr:`evaluations` field evaluations. Takes ``steps`` (required),
    ``adjoint``, ``grid`` and the grids' options."""

    step_options = ("adjoint",)

    def __init__(self, name: str, torchdiffeq: str, evaluations: int):
        super().__init__(name, torchdiffeq)
        self.evaluations = evaluations

    def _grid(self, t0, t1, options, kw):
        # Fixed-step solvers step along the given grid: steps + 1 points.
        return self.times(t0, t1, options, torch.empty((), **kw))


class StochasticSolver(GridSolver):
    r"""A sampler that draws noise on its way along an affine Gaussian path
    :math:`x_t = \alpha_t x_1 + \sigma_t \varepsilon` (DDPM, DDIM, Euler–Maruyama): ``steps``
    steps along a time grid (:class:`GridSolver`), from the noise at ``t0`` to the data at ``t1``.

    It needs the path besides the velocity: a model hands it over
    (:meth:`CNF.gaussian_path <flowforge.dynamics.CNF.gaussian_path>`) and
    :func:`~flowforge.dynamics.integrate` calls :meth:`sample` with it; :meth:`solve` alone
    refuses. It has no inverse and no density along it, so models refuse it in ``log_prob``
    and ``encode``.
    """

    stochastic = True

    def solve(self, field, x, t0, t1, options, context=None):
        raise ValueError(
            f"method {self.name!r} samples along an affine Gaussian probability path and needs "
            "that path: call it through a model on one (model.sample(n, method=...)), or "
            "integrate(..., path=model.gaussian_path())"
        )

    def sample(
        self,
        field: Callable[..., Tensor],
        x: Tensor,
        t0: float,
        t1: float,
        options: SolverOptions,
        context: Tensor | None,
        path: object,
    ) -> Tensor:
        r"""The sample at ``t1`` from the noise ``x (B, *event)`` at ``t0``.

        Args:
            field: the velocity ``v(t, x, context)`` (``t`` a 0-d tensor); the caller counts
                its evaluations.
            x: ``(B, *event)``, the state at ``t0``.
            t0, t1: the interval, ``t0 < t1`` (noise to data).
            options: validated options of this solver.
            context: conditioning passed to the field unchanged.
            path: the model's :class:`~flowforge.matching.AffinePath` (``path.scheduler(t)``
                gives :math:`\alpha_t, \sigma_t` and their derivatives, ``path.convert``
                turns the velocity into :math:`\hat x_1` or :math:`\hat\varepsilon`).
        """
        raise NotImplementedError


class AdaptiveSolver(TorchdiffeqSolver):
    """An adaptive embedded Runge–Kutta method: it chooses its steps so that the local error
    estimate stays below ``atol + rtol * |x|``. Takes ``rtol``, ``atol`` and ``adjoint``."""

    takes = ("rtol", "atol", "adjoint")
    notes = MappingProxyType(
        {
            "steps": "it chooses its own steps from rtol/atol",
            "grid": "it places its own steps from rtol/atol; a grid needs steps=N as well",
        }
    )

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
