"""Validation shared by the metrics: sample sets, counts and the numbers that configure them."""

from __future__ import annotations

from typing import cast

from torch import Tensor

from .._checks import check_finite_rows, check_number


def check_samples(x: object, name: str, min_samples: int) -> Tensor:
    """Check that ``x`` is a finite floating-point ``(N, *)`` tensor; return it as ``(N, D)``.

    A sample of images ``(N, C, H, W)`` is flattened to ``(N, C * H * W)``: the distances treat
    every element as one coordinate.

    Raises:
        TypeError: ``x`` is not a tensor, or not floating point.
        ValueError: fewer than two dimensions, fewer than ``min_samples`` rows, no features, or
            NaN / infinite values.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating-point tensor, got {x.dtype}; convert it with {name}.float()"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, D) or (N, *event_shape), got {tuple(x.shape)}; "
            f"reshape a set of N scalars to (N, 1)"
        )
    if x.shape[0] < min_samples:
        raise ValueError(
            f"{name} must hold at least {min_samples} sample{'s' if min_samples > 1 else ''}, "
            f"got {x.shape[0]} "
            f"(shape {tuple(x.shape)})"
        )
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature, got shape {tuple(x.shape)}")
    check_finite_rows(flat, name)
    return flat


def check_pair(
    x: object, y: object, min_samples: int, names: tuple[str, str] = ("x", "y")
) -> tuple[Tensor, Tensor]:
    """Check two sample sets ``(N, *)`` and ``(M, *)`` of one dimension, dtype and device.

    Returns:
        ``x`` as ``(N, D)`` and ``y`` as ``(M, D)``.
    """
    a, b = names
    xf = check_samples(x, a, min_samples)
    yf = check_samples(y, b, min_samples)
    if xf.shape[1] != yf.shape[1]:
        # check_samples accepted x and y, so both are tensors.
        x_shape, y_shape = tuple(cast(Tensor, x).shape), tuple(cast(Tensor, y).shape)
        raise ValueError(
            f"{a} and {b} must have the same number of features per sample, got "
            f"{a}: {x_shape} ({xf.shape[1]} features) and "
            f"{b}: {y_shape} ({yf.shape[1]} features)"
        )
    if xf.dtype != yf.dtype:
        raise TypeError(
            f"{a} and {b} must have the same dtype, got {a}: {xf.dtype} and {b}: {yf.dtype}; "
            f"convert one with .to(dtype)"
        )
    if xf.device != yf.device:
        raise ValueError(
            f"{a} and {b} must be on the same device, got {a}: {xf.device} and "
            f"{b}: {yf.device}; move one with .to(device)"
        )
    return xf, yf


def check_real(
    value: object, name: str, minimum: float | None = None, *, above: float | None = None
) -> float:
    """:func:`flowforge._checks.check_number` for a number that may also come as a one-element
    tensor (a metric's result fed back in)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    return check_number(value, name, minimum, above=above)
