"""Shared tools of the contract tests: perturbation, autograd Jacobians, safetensors round trips."""

from __future__ import annotations

import torch
from safetensors.torch import load, save
from torch import Tensor, nn


def perturb(module: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Add N(0, std^2) noise to every parameter, moving layers off their identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def batch_jacobian(f, x: Tensor) -> Tensor:
    """Per-sample Jacobians ``(B, D, D)`` of a map ``(B, D) -> (B, D)`` acting on each row alone.

    Differentiating the batch sum of the outputs gives ``J[i, b, j] = d f(x)_{b,i} / d x_{b,j}``
    in one vectorised pass (the samples are independent), without ``vmap`` over the model.
    """
    jac = torch.autograd.functional.jacobian(lambda v: f(v).sum(dim=0), x, vectorize=True)
    return jac.permute(1, 0, 2)


def autograd_ladj(f, x: Tensor) -> Tensor:
    """``log |det df/dx|`` per sample by autograd and ``slogdet``, shape ``(B,)``."""
    return torch.linalg.slogdet(batch_jacobian(f, x))[1]


def state_round_trip(module: nn.Module, fresh: nn.Module) -> nn.Module:
    """Save ``module``'s state with safetensors (no pickle) and load it into ``fresh``."""
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    fresh.load_state_dict(load(save(state)))
    return fresh
