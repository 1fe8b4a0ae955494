"""Probes for Hutchinson-type trace estimators, shared by the divergence and log-det estimators."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_choice

PROBES = ("rademacher", "gaussian")


def probe(x: Tensor, kind: str = "rademacher", generator: torch.Generator | None = None) -> Tensor:
    r"""A probe :math:`\varepsilon` shaped like ``x``, :math:`E[\varepsilon\varepsilon^\top] = I`.

    Rademacher probes (:math:`\pm 1`) give Hutchinson's estimator the smallest variance among
    i.i.d. probes; Gaussian probes are the other common choice.

    Args:
        x: ``(B, *event)`` tensor whose shape, dtype and device the probe takes (any shape:
            the entries are i.i.d., so the identity second moment holds over any flattening).
        kind: ``"rademacher"`` or ``"gaussian"``.
        generator: random generator (default: torch's global one).
    """
    if kind == "rademacher":
        bits = torch.randint(0, 2, x.shape, generator=generator, device=x.device)
        return (2 * bits - 1).to(x.dtype)
    if kind == "gaussian":
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    check_choice(kind, "probe kind", PROBES)  # raises: the "must be one of" error
    raise AssertionError(f"probe kind {kind!r} is in PROBES but has no sampler here")
