"""ODE integration of a vector field by a named solver of :data:`SOLVERS`, counting evaluations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

from torch import Tensor

from .._registry import Registry
from .nfe import NFECounter
from .solvers import (
    COMMON_OPTIONS,
    SOLVERS,
    Solver,
    State,
    StochasticSolver,
    TorchdiffeqSolver,
    refusal,
)

#: The built-in fixed-step and adaptive methods (:data:`SOLVERS` holds every solver).
FIXED_STEP = ("euler", "midpoint", "heun", "rk4")
ADAPTIVE = ("dopri5",)
#: The ODE methods by flowforge's name: torchdiffeq's name for each (they differ for
#: ``heun``, torchdiffeq's ``heun2``).
METHODS: Registry[str] = Registry("method")
for _solver in SOLVERS.values():
    if isinstance(_solver, TorchdiffeqSolver):
        METHODS.register(_solver.name, _solver.torchdiffeq)
del _solver


@dataclass(frozen=True)
class SolverOptions:
    """How to integrate: a solver of :data:`SOLVERS` by name and its settings, validated by
    that solver when built.

    Attributes:
        method: ``"euler"``, ``"midpoint"``, ``"heun"`` (Heun's second-order method), ``"rk4"``
            (fixed step) or ``"dopri5"`` (adaptive Dormand–Prince 5(4)); or any solver
            registered later.
        steps: number of steps over the interval; required by, and only allowed for, the
            solvers that take it (the fixed-step methods). They are equal steps unless the
            solver's ``grid`` option places them otherwise.
        rtol: relative tolerance of the adaptive method (unused by the others).
        atol: absolute tolerance of the adaptive method (unused by the others).
        adjoint: compute gradients by the adjoint method (memory independent of the number of
            steps, one more backward solve) instead of backpropagating through the solver.
        extra: options of a solver beyond these, by name; only options the method takes:
            the fixed-step methods' time grid (``grid``: ``"uniform"``, the default, ``"shift"``
            or ``"edm"`` of :data:`~flowforge.dynamics.grids.GRIDS`) and its options
            (``shift``, ``rho``), or e.g. a stochastic sampler's ``eta``.

    Example:
        >>> opts = SolverOptions("euler", 4, extra={"grid": "shift", "shift": 3.0})
        >>> opts.get("grid"), opts.get("shift")
        ('shift', 3.0)
    """

    method: str = "dopri5"
    steps: int | None = None
    rtol: float = 1e-5
    atol: float = 1e-5
    adjoint: bool = False
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.extra, Mapping):
            raise TypeError(f"extra must be a mapping of option names, got {self.extra!r}")
        # A copy, so the caller's dict is not shared (a plain dict: models holding options are
        # deep-copied and pickled, which a read-only mappingproxy refuses).
        object.__setattr__(self, "extra", dict(self.extra))
        self.solver.check(self)

    def __repr__(self) -> str:
        fields = [f"{k}={getattr(self, k)!r}" for k in ("method", *COMMON_OPTIONS)]
        fields += [f"{k}={v!r}" for k, v in self.extra.items()]
        return f"SolverOptions({', '.join(fields)})"

    @property
    def solver(self) -> Solver:
        """The :class:`~flowforge.dynamics.solvers.Solver` that ``method`` names."""
        return SOLVERS.get(self.method)

    def get(self, name: str) -> object:
        """The value of option ``name``: a field, or one of the solver's own options (its
        default when not set)."""
        if name in COMMON_OPTIONS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        return self.solver.defaults[name]

    def merged(self, **given: object) -> SolverOptions:
        """These options (a model's defaults) with the keyword options a user ``given``.

        The solver is ``given["method"]`` or this one's. Only what was given is checked against
        it: an option it does not take raises ``ValueError`` naming the ones it does (``None``
        counts as not given). Options of these defaults that it does not take fall back to
        their defaults (so a model's dopri5 tolerances merge in silently when only the method
        changes, and a fixed-step default's ``steps`` drops for an adaptive method); the
        combined options are then validated as usual.
        """
        given = dict(given)
        solver = SOLVERS.get(given.pop("method", self.method))
        refused = [k for k, v in given.items() if k not in solver.takes and v is not None]
        if refused:
            raise ValueError(refusal(solver, refused))
        values = {k: getattr(self, k) for k in COMMON_OPTIONS if k in solver.takes}
        extra = {k: v for k, v in self.extra.items() if k in solver.takes}
        extra = solver.inherits(extra, {k: v for k, v in given.items() if v is not None})
        for k, v in given.items():
            # None is "not given" for a solver's own option (a common one keeps its None).
            if k in solver.takes and (v is not None or k in COMMON_OPTIONS):
                (values if k in COMMON_OPTIONS else extra)[k] = v
        return SolverOptions(solver.name, **values, extra=extra)


@dataclass(frozen=True)
class ODESolution:
    """The state at the end of the interval and the number of field evaluations it took."""

    state: State
    nfe: int


def integrate(
    field: Callable[..., State],
    x: State,
    t0: float = 0.0,
    t1: float = 1.0,
    options: SolverOptions | None = None,
    context: Tensor | None = None,
    path: object | None = None,
) -> ODESolution:
    r"""Solve :math:`\dot x = v(t, x, c)` from :math:`t_0` to :math:`t_1` (either direction)
    with the solver ``options.method`` of :data:`SOLVERS`.

    Args:
        field: the vector field ``v(t, x, context=None)``; ``x`` may be a tuple of tensors
            (e.g. the state and the log-density of a CNF), and ``v`` returns the same structure.
        x: the state at ``t0``: ``(B, *)`` or a tuple of such tensors.
        t0, t1: the interval.
        options: the solver (default: adaptive ``dopri5`` with rtol = atol = 1e-5).
        context: conditioning passed to the field unchanged.
        path: the affine Gaussian path a stochastic sampler (:class:`StochasticSolver`) steps
            along, from the model (:meth:`CNF.gaussian_path
            <flowforge.dynamics.CNF.gaussian_path>`); unused by the ODE solvers.

    Returns:
        the state at ``t1`` and the number of field evaluations (forward solve only).

    References:
        Neural Ordinary Differential Equations (Chen et al., 2018) https://arxiv.org/abs/1806.07366
    """
    options = options or SolverOptions()
    # NFECounter is annotated for a tensor state; it passes any state through unchanged.
    counter = (
        field if isinstance(field, NFECounter) else NFECounter(cast(Callable[..., Tensor], field))
    )
    solver = SOLVERS[options.method]
    with counter.counting() as block:
        if isinstance(solver, StochasticSolver) and path is not None:
            if not isinstance(x, Tensor):
                raise TypeError(f"method {solver.name!r} carries one tensor, not a tuple of them")
            final: State = solver.sample(counter, x, t0, t1, options, context, path)
        else:  # an ODE solver, or a stochastic one without its path (which says so)
            final = solver.solve(counter, x, t0, t1, options, context)
    return ODESolution(final, block.nfe)
