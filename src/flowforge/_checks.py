"""Validation of user input at the public boundary: precise errors naming the argument."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


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


def _got(value: object) -> str:
    """What came, for an error message: its repr (shortened) and, if not a number, its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return text
    return f"{text} ({type(value).__name__})"


def _bounds(
    minimum: float | None, maximum: float | None, above: float | None, below: float | None
) -> str:
    """``"in [0, 1)"``, ``">= 0"``, ``"> 0"``... for the bounds that are set; ``""`` for none."""
    low = (f"[{minimum:g}", minimum) if minimum is not None else None
    low = (f"({above:g}", above) if above is not None else low
    high = (f"{maximum:g}]", maximum) if maximum is not None else None
    high = (f"{below:g})", below) if below is not None else high
    if low and high:
        return f"in {low[0]}, {high[0]}"
    if low:
        return (">= " if minimum is not None else "> ") + f"{low[1]:g}"
    if high:
        return ("<= " if maximum is not None else "< ") + f"{high[1]:g}"
    return ""


def check_int(
    value: object,
    name: str,
    minimum: int | None = None,
    described: str | None = None,
    *,
    maximum: int | None = None,
) -> int:
    """Check that ``value`` is an integer (Python or NumPy, never a bool) in
    ``[minimum, maximum]`` (each bound optional); return it as an ``int``.

    Raises ``TypeError`` for a non-integer, ``ValueError`` out of bounds; both say
    ``"{name} must be {described}"`` (default ``"an int >= minimum"``, ``"an int in [a, b]"``)
    and what came.
    """
    if described is None:
        described = " ".join(("an int", _bounds(minimum, maximum, None, None))).strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {described}, got {_got(value)}")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {described}, got {value}")
    return number


def check_number(
    value: object,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
    described: str | None = None,
) -> float:
    """Check that ``value`` is a finite real number (Python or NumPy, never a bool) within the
    bounds given: ``minimum <= value <= maximum``, ``above < value < below``; return it as a
    ``float``.

    Raises ``TypeError`` for a non-number, ``ValueError`` for NaN, an infinity or a value out of
    bounds; both say ``"{name} must be {described}"`` (default ``"a number in [0, 1)"``,
    ``"a positive number"``, ``"a number >= 0"``, ``"a finite number"``...) and what came.
    """
    if described is None:
        bounds = _bounds(minimum, maximum, above, below)
        if above == 0 and minimum is None and maximum is None and below is None:
            described = "a positive number"
        else:
            described = f"a number {bounds}" if bounds else "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {described}, got {_got(value)}")
    number = float(value)
    if not (
        math.isfinite(number)
        and (minimum is None or number >= minimum)
        and (maximum is None or number <= maximum)
        and (above is None or number > above)
        and (below is None or number < below)
    ):
        raise ValueError(f"{name} must be {described}, got {value!r}")
    return number


def check_positive(value: object, name: str, described: str | None = None) -> float:
    """Check that ``value`` is a finite number > 0 (never a bool); return it as a ``float``."""
    return check_number(value, name, above=0, described=described)


def check_probability(value: object, name: str) -> float:
    """Check that ``value`` is a number in [0, 1] (never a bool); return it as a ``float``."""
    return check_number(value, name, 0, 1, described="a probability in [0, 1]")


def check_bool(value: object, name: str) -> bool:
    """Check that ``value`` is ``True`` or ``False`` (not 0, 1 or a string); return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_got(value)}")
    return bool(value)


def check_choice(value: object, name: str, choices: Iterable[T]) -> T:
    """Check that ``value`` is one of ``choices``; return it.

    Raises ``ValueError``: ``"{name} must be one of a, b, c; got 'x'"``, with a
    :func:`did_you_mean` hint for a misspelled name.
    """
    options = tuple(choices)
    # A bool is not the option 0 or 1.
    if not isinstance(value, bool) and value in options:
        return options[options.index(value)]
    message = f"{name} must be one of {', '.join(str(c) for c in options)}; got {value!r}"
    if isinstance(value, str) and all(isinstance(c, str) for c in options):
        hint = did_you_mean(value, [str(c) for c in options])
        if hint:
            message += f"; {hint.strip()}"
    raise ValueError(message)


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
    num_classes: int = 0,
) -> Tensor | None:
    """Check ``context`` against a model with ``context_dim`` conditioning features or
    ``num_classes`` class labels.

    ``context`` must be ``None`` for an unconditional model, a finite ``(B, C)`` float tensor
    for ``context_dim == C``, and a ``(B,)`` integer tensor of labels in ``0..K`` for
    ``num_classes == K`` (``K`` is the null label), returned as int64; ``B == batch`` when
    ``batch`` is given.
    """
    if num_classes:
        return check_labels(context, num_classes, batch, name)
    if context_dim == 0:
        if context is not None:
            raise ValueError(
                f"this model is unconditional, but {name} was given; create it with "
                f"context_dim=C to condition on C features or num_classes=K for class labels, "
                f"or pass {name}=None"
            )
        return None
    if context is None:
        raise ValueError(
            f"this model is conditional and needs {name} of shape (B, {context_dim}), got None"
        )
    if isinstance(context, Tensor) and not context.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be float features of shape (B, {context_dim}) for a model built with "
            f"context_dim={context_dim}, got a {context.dtype} tensor; class labels need a "
            "model built with num_classes=K"
        )
    context = check_batch(context, name, (context_dim,), dtype)
    if batch is not None and context.shape[0] != batch:
        raise ValueError(
            f"{name} must have one row per sample, shape ({batch}, {context_dim}), "
            f"got {tuple(context.shape)}"
        )
    return context


def check_labels(
    labels: object,
    num_classes: int | None,
    batch: int | None,
    name: str = "context",
    *,
    null: bool = True,
    owner: str | None = None,
) -> Tensor:
    """Check that ``labels`` is a ``(B,)`` integer tensor of class labels; return it as int64.

    The labels must lie in ``0..num_classes`` when ``null`` (``num_classes`` itself is the
    null label of a model), in ``0..num_classes - 1`` otherwise, and be non-negative when
    ``num_classes`` is ``None``. ``owner`` says whose classes they are in the range error
    (default: "a model built with num_classes=K").

    Raises:
        TypeError: not a tensor, a float or bool tensor.
        ValueError: missing, wrong shape or batch size, or a label out of range.
    """
    k = num_classes
    if k is None:
        expected = "a (B,) integer tensor of class labels"
        span = "0 or more"
    elif null:
        expected = f"a (B,) integer tensor of class labels in 0..{k - 1} ({k} is the null label)"
        span = f"0..{k - 1} ({k} is the null label)"
    else:
        expected = f"a (B,) integer tensor of class labels in 0..{k - 1}"
        span = f"0..{k - 1}"
    if labels is None:
        raise ValueError(
            f"this model is conditional on class labels (num_classes={k}) and needs {name}: "
            f"{expected}; got None"
        )
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be {expected}, got {type(labels).__name__}")
    built = owner or f"a model built with num_classes={k}"
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(
            f"{name} must be {expected}"
            + (f" for {built}" if k is not None and owner is None else "")
            + f", got a {labels.dtype} tensor; convert it with {name}.long()"
        )
    if labels.ndim != 1 or (batch is not None and labels.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(
            f"{name} must hold one label per sample, shape {want}, got {tuple(labels.shape)}"
        )
    if labels.numel() == 0:
        raise ValueError(f"{name} must hold at least one label, got shape {tuple(labels.shape)}")
    low, high = int(labels.min()), int(labels.max())
    top = None if k is None else (k if null else k - 1)
    if low < 0 or (top is not None and high > top):
        got = f"label {low}" if low == high else f"labels from {low} to {high}"
        where = "" if k is None else f" for {built}"
        raise ValueError(f"{name} must hold class labels in {span}{where}, got {got}")
    return labels.long()


def log_class_weights(weights: object, num_classes: int, name: str = "weights") -> Tensor:
    """Check ``(K,)`` class weights (``None``: uniform) and return their normalised logarithm,
    :math:`\\log p(y)`, a float64 ``(K,)`` tensor.

    Raises ``ValueError`` for another shape, non-finite or negative weights, or all zero.
    """
    k = num_classes
    if weights is None:
        weights = torch.ones(k, dtype=torch.float64)
    if not isinstance(weights, Tensor) or tuple(weights.shape) != (k,):
        got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"{name} must be a ({k},) tensor of class weights, got {got}")
    w = weights.detach().double()
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return torch.log(w / w.sum())
