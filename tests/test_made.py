"""MADE: outputs must be autoregressive in the inputs, in the given order."""

from __future__ import annotations

import pytest
import torch

from flowforge.nets import MADE, MLP
from helpers import batch_jacobian, perturb


@pytest.mark.parametrize("d", [1, 2, 7])
@pytest.mark.parametrize("order", ["natural", "random"])
def test_made_is_autoregressive(d, order):
    perm = torch.randperm(d) if order == "random" else None
    made = perturb(MADE(d, 3, hidden=(32, 32), order=perm).double(), std=0.5)
    x = torch.randn(4, d, dtype=torch.float64)
    # Jacobian of each of the P output groups with respect to the inputs.
    for p in range(3):
        jac = batch_jacobian(lambda v, p=p: made(v)[:, :, p], x).abs().sum(0)
        rank = torch.empty(d, dtype=torch.long)
        rank[made.order] = torch.arange(d)
        allowed = rank[None, :] < rank[:, None]  # output i may see input j iff j comes before i
        assert (jac[~allowed] == 0).all()
        if d > 1:
            # And the connections that are allowed are used (the net is not trivially masked).
            assert (jac[allowed] > 0).all()


def test_made_context_reaches_every_output():
    made = perturb(MADE(4, 2, hidden=(16, 16), context_features=3).double(), std=0.5)
    x = torch.randn(5, 4, dtype=torch.float64)
    c = torch.randn(5, 3, dtype=torch.float64)
    delta = (made(x, c) - made(x, c + 1)).abs()
    assert (delta.amax(dim=0) > 0).all()


def test_made_and_mlp_start_at_zero():
    x = torch.randn(3, 4)
    assert (MADE(4, 2)(x) == 0).all()
    assert (MLP(4, 5)(x) == 0).all()


def test_hidden_sizes_are_validated():
    with pytest.raises(ValueError, match="hidden"):
        MADE(3, 2, hidden=())
    with pytest.raises(ValueError, match="hidden"):
        MLP(3, 2, hidden=(8, 0))
