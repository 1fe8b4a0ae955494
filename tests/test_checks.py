"""The shared validation helpers: one message per kind of check, and a bool is never a number."""

import math

import numpy as np
import pytest
import torch

from flowforge._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_probability,
)
from flowforge.distributions import DiagNormal
from flowforge.dynamics import SolverOptions
from flowforge.estimators import LogDetOptions, probe
from flowforge.matching import (
    LogitNormalTime,
    ModeTime,
    SchrodingerBridgePath,
    SinkhornCoupling,
    VPScheduler,
)
from flowforge.models import create
from flowforge.nets.lipschitz import lipschitz_estimate
from flowforge.transforms import ResidualBlock, RQSplineTransformer
from flowforge.viz.figure import save_figure


def test_check_int():
    assert check_int(3, "n", 1) == 3
    assert type(check_int(np.int64(3), "n", 1)) is int
    assert check_int(-5, "seed") == -5  # no bound unless one is given
    assert check_int(7, "levels", 2, maximum=7) == 7
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        check_int(0, "n", 1)
    with pytest.raises(ValueError, match=r"levels must be an int in \[2, 7\], got 8"):
        check_int(8, "levels", 2, maximum=7)
    with pytest.raises(TypeError, match=r"n must be an int >= 1, got 2.5"):
        check_int(2.5, "n", 1)
    with pytest.raises(TypeError, match=r"n must be an int >= 1, got '3' \(str\)"):
        check_int("3", "n", 1)
    with pytest.raises(TypeError, match=r"n must be a positive int, got True \(bool\)"):
        check_int(True, "n", 1, "a positive int")


def test_check_number():
    assert check_number(2, "x") == 2.0 and type(check_number(2, "x")) is float
    assert check_number(np.float32(0.5), "p", 0, 1) == 0.5
    assert check_number(0.0, "decay", 0, below=1) == 0.0
    for bad, message in [
        (math.nan, r"x must be a finite number, got nan"),
        (math.inf, r"x must be a finite number, got inf"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_number(bad, "x")
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, 1\), got 1.0"):
        check_number(1.0, "decay", 0, below=1)
    with pytest.raises(ValueError, match=r"c must be a number in \(0, 1\), got 0"):
        check_number(0, "c", above=0, below=1)
    with pytest.raises(ValueError, match=r"w must be a number >= 0, got -1"):
        check_number(-1, "w", 0)
    with pytest.raises(TypeError, match=r"x must be a finite number, got '1' \(str\)"):
        check_number("1", "x")
    with pytest.raises(TypeError, match=r"x must be a finite number, got tensor"):
        check_number(torch.tensor(1.0), "x")


def test_positive_and_probability():
    assert check_positive(1e-9, "lr") == 1e-9
    with pytest.raises(ValueError, match="lr must be a positive number, got 0"):
        check_positive(0, "lr")
    with pytest.raises(ValueError, match=r"lr must be a positive number, got -1\.0"):
        check_positive(-1.0, "lr")
    assert check_probability(0, "p") == 0.0 and check_probability(1, "p") == 1.0
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5"):
        check_probability(1.5, "p")


@pytest.mark.parametrize(
    "check", [check_number, check_positive, check_probability, lambda v, n: check_int(v, n, 0)]
)
@pytest.mark.parametrize("flag", [True, False])
def test_a_bool_is_never_a_number(check, flag):
    with pytest.raises(TypeError, match=rf"x must be .*, got {flag} \(bool\)"):
        check(flag, "x")


def test_check_bool():
    assert check_bool(True, "flag") is True and check_bool(False, "flag") is False
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match="flag must be True or False, got"):
            check_bool(bad, "flag")


def test_check_choice():
    assert check_choice("rk4", "method", ("euler", "rk4")) == "rk4"
    assert check_choice("tanh", "activation", {"tanh": 1, "silu": 2}) == "tanh"
    with pytest.raises(ValueError, match=r"^method must be one of euler, rk4; got 'leapfrog'$"):
        check_choice("leapfrog", "method", ("euler", "rk4"))
    with pytest.raises(
        ValueError, match=r"^probe must be one of gaussian, rademacher; got 'gausian'; did you mean"
    ):
        check_choice("gausian", "probe", ("gaussian", "rademacher"))
    with pytest.raises(ValueError, match=r"must be one of 1, 3; got True"):
        check_choice(True, "channels", (1, 3))
    with pytest.raises(ValueError, match=r"must be one of a, b; got \['a'\]"):
        check_choice(["a"], "x", {"a": 0, "b": 1})  # unhashable: an error, not a crash


# -- the local checks that took True for a number now refuse it ------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: SolverOptions(rtol=True),
        lambda: SolverOptions(atol=True),
        lambda: SchrodingerBridgePath(True),
        lambda: SinkhornCoupling(True),
        lambda: LogitNormalTime(loc=True),
        lambda: ModeTime(scale=True),
        lambda: VPScheduler(True, 20.0),
        lambda: DiagNormal((2,), scale=True),
        lambda: RQSplineTransformer(bound=True),
        lambda: LogDetOptions("roulette", p=True),
        lambda: LogDetOptions("roulette", lam=True),
        lambda: LogDetOptions("series", order=True),
        lambda: ResidualBlock(2, hidden=(4,), coeff=True),
        lambda: ResidualBlock(2, hidden=(4,), tol=True),
        lambda: lipschitz_estimate(lambda x: x, torch.zeros(2, 2), lr=True),
    ],
)
def test_true_is_not_a_number_anywhere(make):
    with pytest.raises((TypeError, ValueError), match=r"must be"):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogDetOptions("roulette", shared=1),
        lambda: LogDetOptions("roulette", neumann_grad="yes"),
        lambda: create("resflow", dim=2, neumann_grad=1),
        lambda: create("resflow", dim=2, actnorm="no"),
    ],
)
def test_flags_must_be_bools(make):
    with pytest.raises(TypeError, match=r"must be True or False"):
        make()


# -- every "must be one of" error comes from check_choice: one message, with did-you-mean ------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LogDetOptions("seris"), "estimator must be one of exact, series, roulette"),
        (lambda: LogDetOptions("roulette", distribution="geometrc"), "distribution must be one"),
        (lambda: LogDetOptions("roulette", probe="rademaker"), "probe must be one of"),
        (lambda: probe(torch.zeros(2, 2), "gausian"), "probe kind must be one of"),
        (lambda: ResidualBlock(2, hidden=(4,), train_logdet="rouette"), "estimator must be one"),
        (lambda: create("resflow", dim=2, estimator="serie"), "estimator must be one of"),
        (lambda: create("resflow", dim=2, eval_estimator="exactt"), "eval_estimator must be"),
        (lambda: SolverOptions("eulr", steps=2), "method must be one of euler"),
    ],
)
def test_misspelled_names_get_one_message_with_a_hint(make, message):
    with pytest.raises(ValueError, match=rf"^{message}.*; got '\w+'; did you mean '\w+'\?$"):
        make()


def test_save_figure_refuses_true_as_dpi(tmp_path):
    from matplotlib.figure import Figure

    with pytest.raises(TypeError, match=r"dpi must be a positive number, got True \(bool\)"):
        save_figure(Figure(), tmp_path / "fig.png", dpi=True)
