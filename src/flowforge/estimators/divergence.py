"""Divergence of a vector field: exact (vectorised autograd) and Hutchinson's estimator.

One shared module (STYLE.md rule 6): continuous normalizing flows and flow-matching likelihoods
estimate traces of Jacobians with these functions, and residual-flow log-determinants
(:mod:`~flowforge.estimators.logdet`) with the same probes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._registry import Registry


def divergence_exact(v: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    r"""Exact divergence :math:`\nabla\cdot v = \mathrm{tr}(\partial v / \partial x)`, ``(B,)``.

    All ``D`` vector-Jacobian products run in one batched backward pass (``is_grads_batched``),
    not a Python loop over dimensions: cost about ``D`` backward passes of work, done at once.

    Args:
        v: ``(B, D)`` output of the field, computed from ``x`` with gradients enabled.
        x: ``(B, D)`` input that requires grad; rows must not interact (a per-sample field).
        create_graph: keep the graph, to differentiate the divergence (training).
    """
    b, d = _check(v, x)
    basis = torch.eye(d, dtype=v.dtype, device=v.device).unsqueeze(1).expand(d, b, d)
    (rows,) = torch.autograd.grad(v, x, basis, create_graph=create_graph, is_grads_batched=True)
    # rows[i, b, j] = d v_{b,i} / d x_{b,j}; the trace takes j = i.
    return torch.einsum("ibi->b", rows)


def divergence_hutchinson(
    v: Tensor, x: Tensor, noise: Tensor, create_graph: bool = False
) -> Tensor:
    r"""Hutchinson's unbiased estimate :math:`\varepsilon^\top (\partial v/\partial x) \varepsilon`.

    :math:`E_\varepsilon[\varepsilon^\top J \varepsilon] = \operatorname{tr} J` for any probe with
    :math:`E[\varepsilon\varepsilon^\top] = I` (see :func:`~flowforge.estimators.probe`); one
    backward pass.

    Args:
        v: ``(B, D)`` output of the field, computed from ``x`` with gradients enabled.
        x: ``(B, D)`` input that requires grad.
        noise: ``(B, D)`` probe.
        create_graph: keep the graph, to differentiate the estimate (training).

    References:
        A stochastic estimator of the trace of the influence matrix for Laplacian smoothing
        splines (Hutchinson, 1990); FFJORD (Grathwohl et al., 2018)
        https://arxiv.org/abs/1810.01367
    """
    _check(v, x)
    if noise.shape != x.shape:
        raise ValueError(
            f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
        )
    (vjp,) = torch.autograd.grad(v, x, noise, create_graph=create_graph)
    return (vjp * noise).sum(dim=1)


def divergence_and_frobenius(
    v: Tensor,
    x: Tensor,
    method: str = "exact",
    noise: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""The divergence and the squared Frobenius norm of the Jacobian, from the same passes.

    Exact: both from the ``D`` batched Jacobian rows, :math:`\operatorname{tr} J` and
    :math:`\|J\|_F^2 = \sum_{ij} J_{ij}^2`. Hutchinson: both from one vector-Jacobian product
    :math:`\varepsilon^\top J`, as :math:`\varepsilon^\top J \varepsilon` and
    :math:`\|\varepsilon^\top J\|^2`, unbiased because
    :math:`E\|\varepsilon^\top J\|^2 = \operatorname{tr}(J J^\top) = \|J\|_F^2`. The Frobenius
    norm is the Jacobian regulariser of RNODE (Finlay et al., 2020).

    Args:
        v: ``(B, D)`` output of the field, computed from ``x`` with gradients enabled.
        x: ``(B, D)`` input that requires grad.
        method: ``"exact"`` or ``"hutchinson"`` (then ``noise`` is the probe).
        noise: the probe for Hutchinson's estimator.
        create_graph: keep the graph, to differentiate both (training).

    Returns:
        ``(divergence (B,), frobenius (B,))``.

    References:
        How to train your neural ODE: the world of Jacobian and kinetic regularization
        (Finlay et al., 2020) https://arxiv.org/abs/2002.02798
    """
    b, d = _check(v, x)
    method = _method(method, noise)
    if method == "exact":
        basis = torch.eye(d, dtype=v.dtype, device=v.device).unsqueeze(1).expand(d, b, d)
        (rows,) = torch.autograd.grad(v, x, basis, create_graph=create_graph, is_grads_batched=True)
        return torch.einsum("ibi->b", rows), rows.square().sum(dim=(0, 2))
    if noise.shape != x.shape:
        raise ValueError(
            f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
        )
    (vjp,) = torch.autograd.grad(v, x, noise, create_graph=create_graph)
    return (vjp * noise).sum(dim=1), vjp.square().sum(dim=1)


def field_and_divergence(
    field: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "exact",
    noise: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Evaluate ``field(x)`` and its divergence together: ``(v (B, D), div (B,))``.

    Args:
        field: a per-sample map ``(B, D) -> (B, D)``.
        x: ``(B, D)`` points.
        method: ``"exact"`` or ``"hutchinson"`` (then ``noise`` is the probe).
        noise: the probe for Hutchinson's estimator.
        create_graph: keep the graph through the divergence (training).
    """
    method = _method(method, noise)
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        v = field(x)
        if method == "exact":
            return v, divergence_exact(v, x, create_graph)
        return v, divergence_hutchinson(v, x, noise, create_graph)


def _check(v: Tensor, x: Tensor) -> tuple[int, int]:
    if x.ndim != 2 or v.shape != x.shape:
        raise ValueError(
            f"v and x must both have shape (B, D), got v {tuple(v.shape)} and x {tuple(x.shape)}"
        )
    if not x.requires_grad:
        raise ValueError("x must require grad, and v must be computed from it")
    return x.shape[0], x.shape[1]


#: The divergence estimators by name: ``exact`` ``(v, x, create_graph)`` and ``hutchinson``
#: ``(v, x, noise, create_graph)``.
DIVERGENCES: Registry[Callable[..., Tensor]] = Registry("divergence")
DIVERGENCES.register("exact", divergence_exact)
DIVERGENCES.register("hutchinson", divergence_hutchinson)


def _method(method: str, noise: Tensor | None) -> str:
    method = DIVERGENCES.check(method, "method")
    if method == "hutchinson" and noise is None:
        raise ValueError("method='hutchinson' needs a probe: pass noise=probe(x)")
    return method
