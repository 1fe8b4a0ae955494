"""Validation of user input at the public boundary: precise errors naming the argument."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor


def _shape(dims: tuple) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def check_batch(x: object, name: str, event_shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Check that ``x`` is a finite ``(B, *event_shape)`` tensor of ``dtype``; return it.

    Raises:
        TypeError: ``x`` is not a tensor, or has another dtype.
        ValueError: wrong rank or trailing shape, empty batch, NaN or infinite values.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 1 + len(event_shape):
        raise ValueError(
            f"{name} must have shape {_shape(('B', *event_shape))} "
            f"({1 + len(event_shape)} dimensions), got {tuple(x.shape)} ({x.ndim} dimensions)"
        )
    if tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name} must have shape {_shape(('B', *event_shape))}, got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor of dtype {dtype}, got {x.dtype}")
    if x.dtype != dtype:
        raise TypeError(
            f"{name} must have dtype {dtype} like the model's parameters, got {x.dtype}; "
            f"convert it with {name}.to({dtype}), or the model with model.to({x.dtype})"
        )
    check_finite_rows(x, name)
    return x


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"did you mean 'nsf'? "`` for the one of ``choices`` closest to a misspelled ``name``,
    ``""`` when none is close: the start of an "unknown name" message's hint.

    A choice equal to ``name`` but for case comes first; otherwise closeness is
    :func:`difflib.get_close_matches`' ratio of at least 0.6 (its default), which catches a
    dropped, doubled or swapped letter in a short name without suggesting anything for a name
    that is simply not there.
    """
    choices = list(choices)
    same = [c for c in choices if c.lower() == str(name).lower()]
    close = same or difflib.get_close_matches(str(name), choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def is_real(value: object) -> bool:
    """Whether ``value`` is a finite real Python or NumPy number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_int(value: object, name: str, minimum: int, described: str | None = None) -> int:
    """Check that ``value`` is an integer (Python or NumPy, not bool) of at least ``minimum``.

    Raises ``TypeError`` for a non-integer, ``ValueError`` below ``minimum``; both say
    ``"{name} must be {described}"`` (default ``"an int >= minimum"``) and what came.
    """
    described = described or f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {described}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {described}, got {value}")
    return int(value)


def check_seed(seed: object, name: str = "seed") -> int:
    """Check that ``seed`` is a non-negative int."""
    return check_int(seed, name, 0)


def check_count(n: object, name: str = "n") -> int:
    """Check that ``n`` is a positive integer number of samples."""
    return check_int(n, name, 1, "a positive int")


def check_finite_rows(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` saying how many (and which) rows of ``x (B, *)`` are not finite."""
    # The common case in one cheap reduction: NaN and inf survive a sum. A sum can overflow on
    # huge finite values, and then the row-wise check below decides.
    if math.isfinite(float(x.detach().sum())):
        return
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().squeeze(1)
        first = ", ".join(str(i) for i in bad[:5].tolist())
        raise ValueError(
            f"{name} has NaN or infinite values in {bad.numel()} of {x.shape[0]} rows "
            f"(first: {first})"
        )


def check_context(
    context: object,
    context_dim: int,
    batch: int | None,
    dtype: torch.dtype,
    name: str = "context",
) -> Tensor | None:
    """Check ``context`` against a model with ``context_dim`` conditioning features.

    ``context`` must be ``None`` for an unconditional model (``context_dim == 0``), and a
    finite ``(B, C)`` tensor otherwise, with ``B == batch`` when ``batch`` is given.
    """
    if context_dim == 0:
        if context is not None:
            raise ValueError(
                f"this model is unconditional, but {name} was given; create it with "
                f"context_dim=C to condition on C features, or pass {name}=None"
            )
        return None
    if context is None:
        raise ValueError(
            f"this model is conditional and needs {name} of shape (B, {context_dim}), got None"
        )
    context = check_batch(context, name, (context_dim,), dtype)
    if batch is not None and context.shape[0] != batch:
        raise ValueError(
            f"{name} must have one row per sample, shape ({batch}, {context_dim}), "
            f"got {tuple(context.shape)}"
        )
    return context
