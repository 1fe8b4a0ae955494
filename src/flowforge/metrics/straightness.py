r"""How straight a flow is, and how far its pairing moves mass.

Straightness (Liu et al., 2022, eq. 6) is
:math:`S = \mathbb E \int_0^1 \|(x_1 - x_0) - v(t, x_t)\|^2 dt` along the model's own
trajectories :math:`x_t` from noise :math:`x_0` to their end :math:`x_1`: zero exactly when
every trajectory is a straight line at constant speed, which one Euler step integrates
exactly. The transport cost :math:`\mathbb E\|x_1 - x_0\|^2` of a pairing is what reflow never
increases (their Theorem 3.5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_choice, check_int
from ..data.preprocess import Standardize
from ..dynamics.cnf import CNF
from ._checks import check_pair

Field = Callable[[Tensor, Tensor], Tensor]
#: The fixed-step integrators :func:`straightness` follows trajectories with.
METHODS = ("euler", "rk4")


def _field_of(model: CNF | Standardize | Field, context: Tensor | None) -> Field:
    """The velocity ``v(t, x)`` of a continuous model (in its own, standardised space), or a
    callable field ``v(t, x)`` as it comes."""
    if isinstance(model, Standardize):
        model = model.inner
    if isinstance(model, CNF):
        cnf = model
        c = cnf._condition(context)
        return lambda t, x: cnf.field(t, x, c)
    if isinstance(model, torch.nn.Module) or callable(model):
        if context is not None:
            raise ValueError("context is for a model; a plain field v(t, x) takes none")
        return model
    raise TypeError(f"model must be a continuous model or a field v(t, x), got {type(model)}")


def straightness(
    model: CNF | Standardize | Field,
    x0: Tensor,
    context: Tensor | None = None,
    *,
    steps: int = 16,
    method: str = "rk4",
) -> float:
    r"""Path straightness :math:`S = \mathbb E \int_0^1 \|(x_1 - x_0) - v(t, x_t)\|^2 dt`.

    The trajectories start at ``x0`` and are integrated on a uniform grid of ``steps`` steps
    over the model's time span (:attr:`CNF.span <flowforge.dynamics.CNF.span>`, ``(0, 1)``
    but for a diffusion model, which stops at ``1 - truncation``; the chord is then divided by
    the span's length, the speed of a straight path)
    of ``method``; :math:`x_1` is where each ends, and the integral over time is the solver's
    own quadrature over the velocities it evaluated (Euler: the left rule; RK4: the weights
    1/6, 1/3, 1/3, 1/6 of its four stages), so it costs no evaluation beyond the solve and
    measures exactly how far the solver's steps are from one straight step: one Euler step
    gives 0 for any field. The norm is the squared Euclidean norm over the whole event (not a
    per-entry mean), as in Liu et al. A standardised model is measured in its standardised
    space, where its field lives.

    Args:
        model: a continuous model (a :class:`~flowforge.dynamics.CNF`, e.g. a flow-matching
            model, possibly inside :class:`~flowforge.data.Standardize`), or a field
            ``v(t, x)`` with ``t`` a scalar tensor.
        x0: ``(B, *event_shape)`` base points (noise).
        context: ``(B,)`` labels or ``(B, C)`` features of a conditional model, or ``None``.
        steps: grid steps, >= 1.
        method: ``"euler"`` or ``"rk4"``.

    Returns:
        :math:`S`, a float (0 for straight trajectories; the units of the data squared).

    References:
        Flow Straight and Fast (Liu et al., 2022) https://arxiv.org/abs/2209.03003

    Example:
        >>> import torch
        >>> from flowforge.metrics import straightness
        >>> round(straightness(lambda t, x: torch.ones_like(x), torch.randn(64, 2)), 9)
        0.0
    """
    check_int(steps, "steps", 1, "a positive number of grid steps")
    check_choice(method, "method", METHODS)
    if not isinstance(x0, Tensor) or x0.ndim < 2:
        raise ValueError(f"x0 must be a (B, *event_shape) tensor, got {getattr(x0, 'shape', x0)}")
    v = _field_of(model, context)
    inner = model.inner if isinstance(model, Standardize) else model
    # A model's own time span (a diffusion model stops short of t = 1); (0, 1) for a field.
    start, end = inner.span if isinstance(inner, CNF) else (0.0, 1.0)
    h = (end - start) / steps
    with torch.no_grad():
        x = x0
        # (weight, velocity) of every evaluation the solver makes: its own quadrature rule.
        used: list[tuple[float, Tensor]] = []
        for i in range(steps):
            t = torch.tensor(start + i * h, dtype=x0.dtype, device=x0.device)
            k1 = v(t, x)
            if method == "euler":
                used.append((h, k1))
                x = x + h * k1
                continue
            k2 = v(t + h / 2, x + h / 2 * k1)
            k3 = v(t + h / 2, x + h / 2 * k2)
            k4 = v(t + h, x + h * k3)
            used += [(h / 6, k1), (h / 3, k2), (h / 3, k3), (h / 6, k4)]
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        chord = (x - x0).flatten(1) / (end - start)  # the constant speed of a straight path
        total = sum(w * (chord - k.flatten(1)).square().sum(1) for w, k in used)
        return float(total.mean())  # type: ignore[union-attr]


def transport_cost(x0: Tensor, x1: Tensor) -> float:
    r"""The transport cost :math:`\mathbb E \|x_1 - x_0\|^2` of a pairing, row by row.

    The squared Euclidean norm over the whole event, averaged over the pairs; for a flow's
    pairs :math:`(z, \mathrm{decode}(z))` it is what reflow does not increase.

    Args:
        x0: ``(N, *event_shape)``.
        x1: ``(N, *event_shape)``, ``x1[i]`` paired with ``x0[i]``.

    Returns:
        A float.

    Example:
        >>> import torch
        >>> from flowforge.metrics import transport_cost
        >>> transport_cost(torch.zeros(3, 2), torch.ones(3, 2))
        2.0
    """
    check_pair(x0, x1, 1, ("x0", "x1"))
    if x0.shape != x1.shape:
        raise ValueError(
            f"x0 and x1 must be paired row by row (the same shape), got {tuple(x0.shape)} and "
            f"{tuple(x1.shape)}"
        )
    return float((x1 - x0).flatten(1).square().sum(1).mean())
