"""ODE integration against analytic solutions; adjoint gradients against backpropagation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowforge.dynamics import NFECounter, SolverOptions, integrate


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
