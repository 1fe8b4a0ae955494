"""ODE integration against analytic solutions; adjoint gradients against backpropagation."""

from __future__ import annotations

import itertools
import math
from types import MappingProxyType

import pytest
import torch
from torch import nn

import flowforge as ff
from flowforge._checks import check_number
from flowforge.dynamics import (
    GRIDS,
    METHODS,
    SOLVERS,
    NFECounter,
    Solver,
    SolverOptions,
    integrate,
    solver_keywords,
)
from flowforge.dynamics.grids import grid_options

#: What a fixed-step solver takes, as its refusals list it.
FIXED = "steps, adjoint, grid, shift, rho,"


def decay(t, x, context=None):
    return -0.7 * x


@pytest.mark.parametrize(
    ("options", "tol"),
    [
        (SolverOptions("dopri5", rtol=1e-9, atol=1e-9), 1e-7),
        (SolverOptions("rk4", steps=20), 1e-6),
        (SolverOptions("midpoint", steps=200), 1e-5),
        (SolverOptions("heun", steps=200), 1e-5),
        (SolverOptions("euler", steps=2000), 1e-3),
    ],
)
def test_exponential_decay_matches_its_solution(options, tol):
    x0 = torch.randn(5, 3, dtype=torch.float64)
    sol = integrate(decay, x0, 0.0, 1.0, options)
    torch.testing.assert_close(sol.state, x0 * math.exp(-0.7), atol=tol, rtol=0)
    # And backwards in time: the inverse map.
    back = integrate(decay, sol.state, 1.0, 0.0, options)
    torch.testing.assert_close(back.state, x0, atol=2 * tol, rtol=0)


def test_euler_error_is_first_order_and_rk4_fourth_order():
    x0 = torch.ones(1, 1, dtype=torch.float64)
    exact = math.exp(-0.7)

    def error(method, steps):
        return abs(
            integrate(decay, x0, options=SolverOptions(method, steps=steps)).state.item() - exact
        )

    assert error("euler", 40) / error("euler", 80) == pytest.approx(2, rel=0.05)
    assert error("rk4", 10) / error("rk4", 20) == pytest.approx(16, rel=0.1)


def test_rotation_keeps_the_radius():
    # v = A x with A antisymmetric: trajectories are circles, solved exactly by exp(tA).
    a = torch.tensor([[0.0, -2.0], [2.0, 0.0]], dtype=torch.float64)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    sol = integrate(
        lambda t, x, context=None: x @ a.T, x0, options=SolverOptions(rtol=1e-10, atol=1e-10)
    )
    torch.testing.assert_close(sol.state, x0 @ torch.linalg.matrix_exp(a).T, atol=1e-7, rtol=0)


@pytest.mark.parametrize(
    ("method", "per_step"), [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)]
)
def test_fixed_step_cost_in_function_evaluations(method, per_step):
    sol = integrate(decay, torch.ones(2, 2), options=SolverOptions(method, steps=7))
    assert sol.nfe == 7 * per_step


def test_adaptive_cost_grows_with_accuracy():
    x0 = torch.randn(8, 2, dtype=torch.float64)

    def stiff(t, x, context=None):
        return torch.sin(6 * x) - x

    loose = integrate(stiff, x0, options=SolverOptions(rtol=1e-3, atol=1e-3)).nfe
    tight = integrate(stiff, x0, options=SolverOptions(rtol=1e-9, atol=1e-9)).nfe
    assert tight > loose >= 6


def test_tuple_states_and_context():
    x0, s0 = torch.ones(3, 2), torch.zeros(3)
    c = torch.tensor([[1.0], [2.0], [3.0]])

    def field(t, state, context=None):
        x, _ = state
        return -context * x, (context * x).sum(1)

    x1, s1 = integrate(field, (x0, s0), options=SolverOptions("rk4", steps=50), context=c).state
    torch.testing.assert_close(x1, torch.exp(-c).expand(3, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(s1, 2 * (1 - torch.exp(-c[:, 0])), atol=1e-5, rtol=0)


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    def forward(self, t, x, context=None):
        return self.net(torch.cat([x, t.expand(x.shape[0], 1)], dim=1))


def test_adjoint_gradients_match_backpropagation():
    field = Field()
    x0 = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for adjoint in (False, True):
        options = SolverOptions(rtol=1e-10, atol=1e-10, adjoint=adjoint)
        loss = integrate(field, x0, options=options).state.square().sum()
        grads.append(torch.autograd.grad(loss, [x0, *field.parameters()]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_given_counter_keeps_counting():
    counter = NFECounter(decay)
    integrate(counter, torch.ones(1, 1), options=SolverOptions("euler", steps=3))
    integrate(counter, torch.ones(1, 1), options=SolverOptions("euler", steps=2))
    assert counter.nfe == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "rk45"}, "method must be one of"),
        ({"method": "euler"}, "steps must be an int >= 1"),
        ({"method": "rk4", "steps": 0}, "steps must be an int >= 1"),
        ({"method": "dopri5", "steps": 10}, "chooses its own steps"),
        ({"rtol": 0.0}, "rtol must be a positive number"),
        ({"atol": float("nan")}, "atol must be a positive number"),
    ],
)
def test_bad_solver_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SolverOptions(**kwargs)


# -- the solver registry -------------------------------------------------------------------------


def test_every_solver_is_registered_with_the_options_it_takes():
    # The ODE solvers, then the stochastic samplers that flowforge.diffusion registers.
    ode = ("euler", "midpoint", "heun", "rk4", "dopri5")
    assert SOLVERS.names() == (*ode, "ddpm", "ddim", "euler-maruyama")
    for name in ("euler", "midpoint", "heun", "rk4"):
        assert SOLVERS[name].name == name and SOLVERS[name].takes == (
            "steps",
            "adjoint",
            "grid",
            "shift",
            "rho",
        )
    assert SOLVERS["dopri5"].takes == ("rtol", "atol", "adjoint")
    assert [s.name for s in SOLVERS.values() if not s.stochastic] == list(ode)
    # METHODS (torchdiffeq's names) is read from the registry's ODE solvers.
    assert METHODS.names() == ode and METHODS["heun"] == "heun2"
    with pytest.raises(ValueError, match=r"method must be one of .*did you mean 'rk4'"):
        SOLVERS["rk5"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"method": "euler", "rtol": 1e-3},
            rf"'euler' takes {FIXED} not rtol; .*\(dopri5\)",
        ),
        (
            {"method": "rk4", "steps": 2, "atol": 1e-3},
            f"'rk4' takes {FIXED} not atol",
        ),
        ({"method": "dopri5", "steps": 4}, "'dopri5' takes rtol, atol, adjoint, not steps"),
        (
            {"method": "dopri5", "steps": 4},
            r"chooses its own steps.*\(euler, midpoint, heun, rk4, ddpm, ddim, euler-maruyama\)",
        ),
        ({"eta": 0.5}, "'dopri5' takes rtol, atol, adjoint, not eta; .*takes it \\(ddim\\)"),
        ({"zeta": 0.5}, "'dopri5' takes rtol, atol, adjoint, not zeta; .*no registered method"),
    ],
)
def test_options_the_solver_does_not_take_are_refused_by_name(given, message):
    with pytest.raises(ValueError, match=message):
        SolverOptions(rtol=1e-3, atol=1e-4).merged(**given)


def test_defaults_of_another_solver_merge_in_silently():
    defaults = SolverOptions("dopri5", None, rtol=1e-3, atol=1e-4)
    euler = defaults.merged(method="euler", steps=8)
    assert (euler.method, euler.steps, euler.adjoint) == ("euler", 8, False)
    # The tolerances only dopri5 takes fall back; the method's own options are kept.
    assert defaults.merged(rtol=1e-6) == SolverOptions("dopri5", None, 1e-6, 1e-4)
    assert defaults.merged(method="dopri5", steps=None) == defaults  # None: not given
    fixed = SolverOptions("rk4", 16, adjoint=True)
    assert fixed.merged(method="dopri5") == SolverOptions("dopri5", None, adjoint=True)
    assert fixed.merged(steps=3) == SolverOptions("rk4", 3, adjoint=True)
    with pytest.raises(ValueError, match="steps must be an int >= 1 for method 'midpoint', which"):
        defaults.merged(method="midpoint")  # the new method's requirement still holds


def test_a_model_validates_options_by_the_solver_they_belong_to():
    model = ff.models.create("ffjord", dim=2, hidden=(8,), rtol=1e-3, atol=1e-3)
    assert model.sample(3, method="euler", steps=8).shape == (3, 2) and model.last_nfe == 8
    with pytest.raises(ValueError, match=f"method 'euler' takes {FIXED} not rtol"):
        model.sample(3, method="euler", rtol=1e-3)
    with pytest.raises(ValueError, match="chooses its own steps"):
        model.log_prob(torch.zeros(2, 2), method="dopri5", steps=4)
    options, divergence = model.solver_options(method="heun", steps=2, divergence="hutchinson")
    assert options == SolverOptions("heun", 2) and divergence == "hutchinson"


class Damped(Solver):
    """A toy solver with an option of its own, the way a stochastic sampler joins: Euler steps
    of ``eta * v``."""

    name = "damped"
    takes = ("steps", "eta")
    defaults = MappingProxyType({"eta": 1.0})

    def check(self, options):
        super().check(options)
        check_number(options.get("eta"), "eta", 0, 1)

    def solve(self, field, x, t0, t1, options, context=None):
        dt = (t1 - t0) / options.steps
        for i in range(options.steps):
            t = torch.as_tensor(t0 + i * dt, dtype=x.dtype)
            x = x + dt * options.get("eta") * field(t, x, context)
        return x


@pytest.fixture
def damped(monkeypatch):
    monkeypatch.setitem(SOLVERS._items, "damped", Damped())
    return SOLVERS["damped"]


def test_a_solver_with_its_own_options_joins_the_registry(damped):
    assert "eta" in solver_keywords()
    options = SolverOptions().merged(method="damped", steps=4, eta=0.5)
    assert options.extra == {"eta": 0.5} and options.get("eta") == 0.5
    assert SolverOptions("damped", 4).get("eta") == 1.0  # its default
    sol = integrate(decay, torch.ones(1, 1, dtype=torch.float64), options=options)
    assert sol.nfe == 4 and sol.state.item() == pytest.approx((1 - 0.7 * 0.5 / 4) ** 4)
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\], got 2.0"):
        SolverOptions().merged(method="damped", steps=4, eta=2.0)
    with pytest.raises(ValueError, match=rf"'euler' takes {FIXED} not eta.*\(ddim, damped\)"):
        SolverOptions().merged(method="euler", steps=2, eta=0.5)
    # Its options drop when another method is chosen, and a model accepts them as keywords.
    assert options.merged(method="euler").extra == {}
    model = ff.models.create("ffjord", dim=2, hidden=(8,))
    assert "eta" in model.solver_keys
    assert model.sample(3, method="damped", steps=5, eta=0.2).shape == (3, 2)
    assert model.last_nfe == 5


# -- time grids of the fixed-step solvers ---------------------------------------------------------

GRID_CASES = [
    ("uniform", {}),
    ("shift", {}),
    ("shift", {"shift": 0.3}),
    ("shift", {"shift": 7.5}),
    ("edm", {}),
    ("edm", {"rho": 2.0}),
]


@pytest.mark.parametrize(("name", "params"), GRID_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("t0", "t1"), [(0.0, 1.0), (1.0, 0.0), (0.2, 0.9)])
@pytest.mark.parametrize("steps", [1, 2, 5, 32])
def test_every_grid_hits_both_ends_exactly_and_is_monotone(name, params, dtype, t0, t1, steps):
    t = GRIDS[name](steps, t0, t1, dtype=dtype, **params)
    assert t.shape == (steps + 1,) and t.dtype == dtype
    assert t[0].item() == torch.tensor(t0, dtype=dtype).item()
    assert t[-1].item() == torch.tensor(t1, dtype=dtype).item()
    steps_taken = t.diff() * (1 if t1 > t0 else -1)
    assert bool((steps_taken > 0).all())
    if name != "uniform":  # decreasing: the same points as increasing, reversed
        up = GRIDS[name](steps, min(t0, t1), max(t0, t1), dtype=dtype, **params)
        assert torch.equal(t, up if t1 > t0 else up.flip(0))


def test_the_registered_grids():
    assert GRIDS.names() == ("uniform", "shift", "edm")
    assert grid_options() == ("shift", "rho")
    assert SOLVERS["euler"].takes == ("steps", "adjoint", "grid", "shift", "rho")
    assert SolverOptions("rk4", 4).get("grid") == "uniform"
    with pytest.raises(ValueError, match=r"grid must be one of uniform, shift, edm.*'shift'"):
        SolverOptions("euler", 4, extra={"grid": "shfit"})


def test_the_shift_bends_towards_the_noise_as_in_sd3():
    # SD3 shifts noise levels sigma (1 = noise) by s sigma / (1 + (s - 1) sigma); flowforge's
    # time is t = 1 - sigma.
    sigma = torch.linspace(1, 0, 9, dtype=torch.float64)
    sd3 = 3.0 * sigma / (1 + 2.0 * sigma)
    t = GRIDS["shift"](8, 0.0, 1.0, dtype=torch.float64, shift=3.0)
    torch.testing.assert_close(t, 1 - sd3, atol=1e-15, rtol=0)
    uniform = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert bool((t[1:-1] < uniform[1:-1]).all())  # more of the steps near t = 0, the noise
    assert t[1] - t[0] < t[-1] - t[-2]


def test_the_edm_grid_is_the_rho_schedule_in_noise_to_signal_ratio():
    t = GRIDS["edm"](4, 0.0, 1.0, dtype=torch.float64)
    i = torch.arange(5, dtype=torch.float64) / 4
    sigma = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(t[1:-1], (1 / (1 + sigma))[1:-1], atol=1e-15, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("t0", "t1"), [(0.0, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize("steps", [1, 3, 7, 100])
def test_a_shift_of_one_is_the_uniform_grid_exactly(dtype, t0, t1, steps):
    shifted = GRIDS["shift"](steps, t0, t1, dtype=dtype, shift=1.0)
    assert torch.equal(shifted, GRIDS["uniform"](steps, t0, t1, dtype=dtype))
    assert torch.equal(shifted, torch.linspace(t0, t1, steps + 1, dtype=dtype))
    x0 = torch.randn(3, 2, dtype=dtype)
    plain = integrate(decay, x0, t0, t1, SolverOptions("heun", steps)).state
    one = integrate(
        decay, x0, t0, t1, SolverOptions("heun", steps, extra={"grid": "shift", "shift": 1})
    ).state
    assert torch.equal(plain, one)


@pytest.mark.parametrize(("name", "params"), GRID_CASES[1:])
@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("rk4", 4)])
def test_a_linear_ode_on_a_grid_converges_as_steps_grow(name, params, method, order):
    x0 = torch.ones(1, 1, dtype=torch.float64)
    exact = math.exp(-0.7)

    def error(steps):
        options = SolverOptions(method, steps, extra={"grid": name, **params})
        return abs(integrate(decay, x0, options=options).state.item() - exact)

    errors = [error(n) for n in (8, 16, 32, 64)]
    assert all(a > b for a, b in itertools.pairwise(errors))
    # The order of the method survives a smooth change of time variable.
    assert errors[-2] / errors[-1] == pytest.approx(2**order, rel=0.25)
    # And backwards in time, over the same points reversed: the inverse map, to the accuracy
    # of the two solves.
    options = SolverOptions(method, 64, extra={"grid": name, **params})
    x1 = integrate(decay, x0, 0.0, 1.0, options).state
    back = integrate(decay, x1, 1.0, 0.0, options).state
    assert abs(back.item() - 1.0) <= 3 * errors[-1] / exact + 1e-12


def test_encode_and_decode_on_a_shifted_grid_stay_inverse():
    torch.manual_seed(0)
    model = ff.models.create("fm", dim=2, hidden=(16, 16)).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    solver = {"method": "rk4", "steps": 16, "grid": "shift", "shift": 3.0}
    z = model.encode(x, **solver)
    assert model.last_nfe == 64
    torch.testing.assert_close(model.decode(z, **solver), x, atol=1e-6, rtol=0)
    # The grid changes the solve (the same steps on different times).
    uniform = model.encode(x, method="euler", steps=2)
    shifted = model.encode(x, method="euler", steps=2, grid="shift")
    assert (uniform - shifted).abs().max() > 1e-6
    assert model.sample(4, steps=3, grid="edm", rho=3.0).shape == (4, 2)
    assert {"grid", "shift", "rho"} <= set(model.solver_keys)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"method": "euler", "steps": 4, "grid": "sift"}, r"grid must be one of .*did you mean"),
        ({"method": "euler", "steps": 4, "shift": 3.0}, r"shift is an option of grid='shift', not"),
        ({"method": "rk4", "steps": 4, "grid": "edm", "shift": 2.0}, "not of grid='edm'"),
        ({"method": "dopri5", "grid": "shift"}, r"not grid \(it places its own steps.*\(euler,"),
        ({"method": "dopri5", "shift": 2.0}, "'dopri5' takes rtol, atol, adjoint, not shift"),
        ({"method": "euler", "grid": "shift"}, r"steps must be an int .*got None \(grid='shift'"),
        ({"method": "euler", "steps": 2, "grid": "shift", "shift": 0.0}, "shift must be a pos"),
        ({"method": "euler", "steps": 2, "grid": "shift", "shift": -2}, "shift must be a pos"),
        ({"method": "euler", "steps": 2, "grid": "edm", "rho": float("inf")}, "rho must be a"),
    ],
)
def test_bad_grid_options(given, message):
    with pytest.raises(ValueError, match=message):
        SolverOptions().merged(**given)


def test_bad_grid_option_types_and_extreme_shifts():
    with pytest.raises(TypeError, match="shift must be a positive number"):
        SolverOptions("euler", 2, extra={"grid": "shift", "shift": "3"})
    options = SolverOptions("euler", 4, extra={"grid": "shift", "shift": 1e-12})
    with pytest.raises(ValueError, match="puts two of its points at the same float32 time"):
        integrate(decay, torch.ones(1, 1), options=options)
    assert integrate(decay, torch.ones(1, 1, dtype=torch.float64), options=options).nfe == 4


def test_a_grid_given_replaces_the_defaults_grid_and_its_options():
    defaults = SolverOptions("euler", 4, extra={"grid": "shift", "shift": 2.0})
    assert defaults.merged(grid="edm").extra == {"grid": "edm"}
    assert defaults.merged(steps=8).extra == {"grid": "shift", "shift": 2.0}
    assert defaults.merged(grid=None, shift=None) == defaults  # None: not given
    assert defaults.merged(method="dopri5") == SolverOptions()
    assert defaults.merged(method="heun").extra == {"grid": "shift", "shift": 2.0}
