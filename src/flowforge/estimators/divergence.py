r"""Divergence of a vector field: exact (vectorised autograd) and Hutchinson's estimator.

One shared module, so that each estimator is written once: continuous normalizing flows and
flow-matching likelihoods estimate traces of Jacobians with these functions, and residual-flow
log-determinants (:mod:`~flowforge.estimators.logdet`) with the same probes.

Every function takes a batch of events of any shape, ``(B, *event)``: ``(B, D)`` for vectors,
``(B, C, H, W)`` for images. The divergence is the trace of the Jacobian of the flattened event,
:math:`\sum_k \partial v_k / \partial x_k` over all ``D = prod(event)`` entries.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._registry import Registry
from .reduce import sum_except_batch


def divergence_exact(v: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    r"""Exact divergence :math:`\nabla\cdot v = \mathrm{tr}(\partial v / \partial x)`, ``(B,)``.

    All ``D = prod(event)`` vector-Jacobian products run in one batched backward pass
    (``is_grads_batched``, with the identity basis shaped like the event), not a Python loop
    over entries: cost about ``D`` backward passes of work, done at once.

    Args:
        v: ``(B, *event)`` output of the field, computed from ``x`` with gradients enabled.
        x: ``(B, *event)`` input that requires grad; samples must not interact (a per-sample
            field).
        create_graph: keep the graph, to differentiate the divergence (training).
    """
    # rows[i, b, j] = d v_{b,i} / d x_{b,j} over flattened events; the trace takes j = i.
    return torch.einsum("ibi->b", _jacobian_rows(v, x, create_graph))


def divergence_hutchinson(
    v: Tensor, x: Tensor, noise: Tensor, create_graph: bool = False
) -> Tensor:
    r"""Hutchinson's unbiased estimate :math:`\varepsilon^\top (\partial v/\partial x) \varepsilon`.

    :math:`E_\varepsilon[\varepsilon^\top J \varepsilon] = \operatorname{tr} J` for any probe with
    :math:`E[\varepsilon\varepsilon^\top] = I` (see :func:`~flowforge.estimators.probe`); one
    backward pass.

    Args:
        v: ``(B, *event)`` output of the field, computed from ``x`` with gradients enabled.
        x: ``(B, *event)`` input that requires grad.
        noise: ``(B, *event)`` probe.
        create_graph: keep the graph, to differentiate the estimate (training).

    References:
        A stochastic estimator of the trace of the influence matrix for Laplacian smoothing
        splines (Hutchinson, 1990); FFJORD (Grathwohl et al., 2018)
        https://arxiv.org/abs/1810.01367
    """
    vjp, noise = _vjp(v, x, noise, create_graph)
    return sum_except_batch(vjp * noise)


def divergence_and_frobenius(
    v: Tensor,
    x: Tensor,
    method: str = "exact",
    noise: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""The divergence and the squared Frobenius norm of the Jacobian, from the same passes.

    Exact: both from the ``D = prod(event)`` batched Jacobian rows, :math:`\operatorname{tr} J` and
    :math:`\|J\|_F^2 = \sum_{ij} J_{ij}^2`. Hutchinson: both from one vector-Jacobian product
    :math:`\varepsilon^\top J`, as :math:`\varepsilon^\top J \varepsilon` and
    :math:`\|\varepsilon^\top J\|^2`, unbiased because
    :math:`E\|\varepsilon^\top J\|^2 = \operatorname{tr}(J J^\top) = \|J\|_F^2`. The Frobenius
    norm is the Jacobian regulariser of RNODE (Finlay et al., 2020).

    Args:
        v: ``(B, *event)`` output of the field, computed from ``x`` with gradients enabled.
        x: ``(B, *event)`` input that requires grad.
        method: ``"exact"`` or ``"hutchinson"`` (then ``noise`` is the probe).
        noise: the ``(B, *event)`` probe for Hutchinson's estimator.
        create_graph: keep the graph, to differentiate both (training).

    Returns:
        ``(divergence (B,), frobenius (B,))``.

    References:
        How to train your neural ODE: the world of Jacobian and kinetic regularization
        (Finlay et al., 2020) https://arxiv.org/abs/2002.02798
    """
    method = _method(method, noise)
    if method == "exact":
        rows = _jacobian_rows(v, x, create_graph)
        return torch.einsum("ibi->b", rows), rows.square().sum(dim=(0, 2))
    vjp, noise = _vjp(v, x, noise, create_graph)
    return sum_except_batch(vjp * noise), sum_except_batch(vjp.square())


def field_and_divergence(
    field: Callable[[Tensor], Tensor],
    x: Tensor,
    method: str = "exact",
    noise: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Evaluate ``field(x)`` and its divergence together: ``(v (B, *event), div (B,))``.

    Args:
        field: a per-sample map ``(B, *event) -> (B, *event)``.
        x: ``(B, *event)`` points.
        method: ``"exact"`` or ``"hutchinson"`` (then ``noise`` is the probe).
        noise: the probe for Hutchinson's estimator.
        create_graph: keep the graph through the divergence (training).
    """
    method = _method(method, noise)
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        v = field(x)
        if method == "hutchinson" and noise is not None:  # _method refused it without a probe
            return v, divergence_hutchinson(v, x, noise, create_graph)
        return v, divergence_exact(v, x, create_graph)


def _check(v: Tensor, x: Tensor) -> None:
    if x.ndim < 2 or v.shape != x.shape:
        raise ValueError(
            f"v and x must both have shape (B, *event), e.g. (B, D) or (B, C, H, W), and the "
            f"same shape; got v {tuple(v.shape)} and x {tuple(x.shape)}"
        )
    if not x.requires_grad:
        raise ValueError("x must require grad, and v must be computed from it")


def _jacobian_rows(v: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    r"""The per-sample Jacobians of flattened events, ``(D, B, D)``: ``[i, b, j]`` is
    :math:`\partial v_{b,i} / \partial x_{b,j}`, from one batched backward pass."""
    _check(v, x)
    b, event = x.shape[0], x.shape[1:]
    d = math.prod(event)
    # The identity basis, one event-shaped cotangent per entry (a view: nothing is copied).
    eye = torch.eye(d, dtype=v.dtype, device=v.device)
    basis = eye.view(d, 1, *event).expand(d, b, *event)
    (rows,) = torch.autograd.grad(v, x, basis, create_graph=create_graph, is_grads_batched=True)
    return rows if rows.ndim == 3 else rows.reshape(d, b, d)


def _vjp(v: Tensor, x: Tensor, noise: Tensor | None, create_graph: bool) -> tuple[Tensor, Tensor]:
    r""":math:`\varepsilon^\top \partial v / \partial x`, ``(B, *event)``, one backward pass;
    and the probe :math:`\varepsilon`."""
    _check(v, x)
    if noise is None:
        raise ValueError("Hutchinson's estimator needs a probe: pass noise=probe(x)")
    if noise.shape != x.shape:
        raise ValueError(
            f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
        )
    (vjp,) = torch.autograd.grad(v, x, noise, create_graph=create_graph)
    return vjp, noise


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
