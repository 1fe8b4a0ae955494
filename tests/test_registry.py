"""The one name-to-object helper, and every table built on it."""

import pytest
import torch

from flowforge import dynamics, estimators, matching
from flowforge._registry import Registry
from flowforge.models.continuous import ACTIVATIONS


def test_lookup_membership_and_order():
    reg = Registry("colour")
    reg.register("red", 1)

    @reg.register("blue")
    def blue():
        return 2

    reg.register("green", 3)
    assert reg["red"] == 1 and reg.get("blue") is blue and blue() == 2
    assert reg.names() == ("red", "blue", "green") == tuple(reg)
    assert list(reg.items()) == [("red", 1), ("blue", blue), ("green", 3)]
    assert "red" in reg and "pink" not in reg and 1 not in reg and len(reg) == 3
    assert reg.check("green") == "green"


def test_unknown_name_is_one_message_with_a_hint():
    reg = Registry("colour")
    reg.register("red", 1)
    reg.register("blue", 2)
    with pytest.raises(ValueError, match=r"^colour must be one of red, blue; got 'bleu'; did you"):
        reg["bleu"]
    with pytest.raises(ValueError, match=r"^hue must be one of red, blue; got 'pink'$"):
        reg.get("pink", "hue")
    with pytest.raises(ValueError, match=r"^colour must be one of red, blue; got \['red'\]$"):
        reg.check(["red"])


def test_duplicate_and_bad_names_are_refused():
    reg = Registry("colour")
    reg.register("red", 1)
    with pytest.raises(ValueError, match="'red' is already registered"):
        reg.register("red", 2)
    assert reg["red"] == 1
    with pytest.raises(TypeError, match="non-empty str"):
        reg.register("", 3)


@pytest.mark.parametrize(
    ("table", "names", "message"),
    [
        (matching.SCHEDULERS, ("condot", "cosine", "polynomial", "vp"), "scheduler"),
        (matching.PATHS, ("condot", "cosine", "polynomial", "vp", "bridge"), "path"),
        (matching.COUPLINGS, ("independent", "ot", "sinkhorn"), "coupling"),
        (matching.TIME_SAMPLERS, ("uniform", "logit-normal", "mode"), "time_sampler"),
        (ACTIVATIONS, ("tanh", "softplus", "silu", "elu"), "activation"),
        (estimators.DIVERGENCES, ("exact", "hutchinson"), "divergence"),
        (dynamics.METHODS, ("euler", "midpoint", "heun", "rk4", "dopri5"), "method"),
    ],
)
def test_every_table_is_a_registry(table, names, message):
    assert isinstance(table, Registry) and table.names() == names
    bad = names[0][:-1] + names[0][-1] * 2  # a doubled last letter: close enough to hint
    with pytest.raises(ValueError, match=rf"^{message} must be one of .*; did you mean"):
        table[bad]


def test_tables_hold_todays_objects():
    assert matching.SCHEDULERS["vp"] is matching.VPScheduler
    assert ACTIVATIONS["silu"] is torch.nn.SiLU
    assert estimators.DIVERGENCES["exact"] is estimators.divergence_exact
    assert dynamics.METHODS["heun"] == "heun2" and dynamics.METHODS["rk4"] == "rk4"
    path = matching.PATHS["polynomial"](sigma_min=1e-4, exponent=3.0, sigma=0.5)
    assert isinstance(path.scheduler, matching.PolynomialScheduler)
    assert isinstance(matching.COUPLINGS["sinkhorn"](sigma=0.2), matching.SinkhornCoupling)
    times = matching.TIME_SAMPLERS["mode"](
        loc=0.0, scale=1.0, mode_scale=0.5, shift=2.0, stratified=True
    )
    assert isinstance(times, matching.ModeTime) and times.scale == 0.5 and times.shift == 2.0
