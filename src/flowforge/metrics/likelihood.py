"""Likelihood metrics: the mean negative log-likelihood of a model and its bits per dimension."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .._checks import check_int, check_positive, log_class_weights
from ._checks import check_real


class HasLogProb(Protocol):
    """Anything with a log-density ``log_prob(x, context=None, **solver) -> (B,)`` in nats."""

    def log_prob(self, x: Tensor, context: Tensor | None = None, **solver: Any) -> Tensor: ...


@dataclass(frozen=True)
class NLLResult:
    r"""The mean negative log-likelihood of a data set and its Monte-Carlo standard error.

    Attributes:
        mean: :math:`-\frac1n \sum_i \log p(x_i)`, in nats per sample (not per dimension).
        stderr: the standard error of ``mean``, :math:`s / \sqrt n` with :math:`s` the sample
            standard deviation (``n - 1`` denominator) of :math:`-\log p(x_i)`.
        n: the number of samples :math:`n`.
    """

    mean: float
    stderr: float
    n: int


def nll(
    model: HasLogProb,
    x: Tensor,
    context: Tensor | None = None,
    batch_size: int = 4096,
    **solver: Any,
) -> NLLResult:
    r"""Mean negative log-likelihood :math:`-\frac1n \sum_i \log p(x_i \mid c_i)`, in nats.

    Evaluates ``model.log_prob`` on chunks of ``batch_size`` rows under ``torch.no_grad()`` and
    averages in float64. ``model`` is any object with ``log_prob(x, context=None) -> (B,)``, such
    as every :class:`~flowforge.Model`; ``context`` is passed only when given, so an object whose
    ``log_prob`` takes ``x`` alone works too.

    The model's train/eval mode is left as it is: call ``model.eval()`` first when it has layers
    that behave differently in training (dropout, batch statistics), or the result depends on
    the chunking. A model that needs autograd inside ``log_prob`` (a continuous flow computing
    its divergence exactly) must enable it there with ``torch.enable_grad()``.

    Args:
        model: the model, with ``log_prob(x, context=None)`` returning log-densities in nats.
        x: data ``(n, *event_shape)``, ``n >= 2``, on the model's device and dtype.
        context: conditioning ``(n, *)``, one row per sample, or ``None``.
        batch_size: rows per ``log_prob`` call; the result does not depend on it.
        **solver: solver options for a continuous-time model's ``log_prob``
            (e.g. ``method="rk4", steps=16``), passed on unchanged.

    Returns:
        The mean, its standard error and ``n``; see :class:`NLLResult`. Divide by the number
        of dimensions, or use :func:`bits_per_dim`, for a per-dimension figure.

    Raises:
        TypeError: ``model`` has no ``log_prob``; ``x`` or ``context`` is not a tensor.
        ValueError: fewer than 2 rows, rows of ``context`` and ``x`` differ, ``log_prob``
            returns another shape than ``(B,)``, or non-finite log-densities (it says how many).

    Example:
        >>> import torch, flowforge as ff
        >>> from flowforge.metrics import nll
        >>> model = ff.models.create("maf", dim=2)
        >>> result = nll(model.eval(), torch.randn(100, 2))
        >>> result.n
        100
    """
    if not callable(getattr(model, "log_prob", None)):
        raise TypeError(
            f"model must have a log_prob(x, context=None) method, got {type(model).__name__}"
        )
    if not isinstance(x, Tensor):
        raise TypeError(
            f"x must be a torch.Tensor of shape (n, *event_shape), got {type(x).__name__}"
        )
    if x.ndim < 1 or x.shape[0] < 2:
        # The standard error needs at least two values of -log p.
        raise ValueError(
            f"x must hold at least 2 samples along its first dimension, got shape {tuple(x.shape)}"
        )
    if context is not None:
        if not isinstance(context, Tensor):
            raise TypeError(
                f"context must be a torch.Tensor with one row per sample or None, "
                f"got {type(context).__name__}"
            )
        if context.ndim < 1 or context.shape[0] != x.shape[0]:
            raise ValueError(
                f"context must have one row per sample of x, shape ({x.shape[0]}, *), "
                f"got {tuple(context.shape)}"
            )
    batch_size = check_int(batch_size, "batch_size", 1)

    n = x.shape[0]
    chunks = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size]
            if context is None:
                lp = model.log_prob(xb, **solver)
            else:
                lp = model.log_prob(xb, context[start : start + batch_size], **solver)
            if not isinstance(lp, Tensor) or tuple(lp.shape) != (xb.shape[0],):
                got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
                raise ValueError(
                    f"model.log_prob must return one log-density per sample, shape "
                    f"({xb.shape[0]},), got {got}"
                )
            chunks.append(lp.detach().cpu())
    # Accumulate in float64: the mean of many float32 log-densities loses digits otherwise.
    neg = -torch.cat(chunks).to(torch.float64)
    finite = torch.isfinite(neg)
    if not bool(finite.all()):
        bad = (~finite).nonzero().squeeze(1)
        first = ", ".join(str(i) for i in bad[:5].tolist())
        raise ValueError(
            f"model.log_prob returned NaN or infinite values for {bad.numel()} of {n} samples "
            f"(first: {first}); -inf means the model gives those points zero density: check "
            f"that the data lie in the model's support and are preprocessed as in training"
        )
    return NLLResult(
        mean=float(neg.mean()), stderr=float(neg.std(unbiased=True) / math.sqrt(n)), n=n
    )


def bits_per_dim(
    nll_nats: float,
    dim: int | Sequence[int],
    levels: int | None = None,
    scale: float | Tensor | None = None,
) -> float:
    r"""Bits per dimension :math:`\mathrm{NLL} / (D \ln 2)`, plus :math:`\log_2 L` if discrete.

    Without ``levels`` this converts a negative log-likelihood of continuous data from nats per
    sample to bits per dimension: :math:`\mathrm{NLL} / (D \ln 2)`.

    With ``levels`` :math:`= L`, the data are discrete values :math:`v \in \{0, \dots, L-1\}^D`
    that were uniformly dequantised to :math:`x = (v + u) / L` with
    :math:`u \sim \mathcal U[0, 1)^D` (so :math:`x \in [0, 1)^D`), and ``nll_nats`` is
    :math:`-\mathbb E_{v, u}[\log p(x)]` of the model's density on :math:`x`. Each :math:`v`
    owns a cell of volume :math:`L^{-D}`, and by Jensen's inequality

    .. math::
        \log P(v) = \log \int_{[0,1)^D} p\!\left(\tfrac{v+u}{L}\right) L^{-D} \, du
        \ \ge\ \mathbb E_u\!\left[\log p\!\left(\tfrac{v+u}{L}\right)\right] - D \log L,

    so the result :math:`\frac{\mathrm{NLL}}{D \ln 2} + \log_2 L` is an upper bound on the bits
    per dimension of the discrete data, :math:`-\mathbb E[\log_2 P(v)] / D`, with equality when
    :math:`p` is constant on every cell. This is the figure papers report for images, e.g.
    ``levels=256`` for 8-bit pixels scaled to :math:`[0, 1)`, ``levels=17`` for the 8x8 digits
    (values 0 to 16). Variational dequantisation (Flow++) learns :math:`q(u \mid v)` and gives a
    tighter bound; it is not implemented here.

    The density must be the one on :math:`x` at that scale. For the NLL of a model of
    standardised data :math:`y = (x - m) / s` (the inner model of
    :class:`~flowforge.data.Standardize`), give ``scale`` :math:`= s`: the change of variables
    :math:`\log p_x(x) = \log p_y(y) - \sum_d \log s_d` adds :math:`\sum_d \log s_d` to the
    NLL first. A model wrapped in ``Standardize`` already answers in :math:`x` and needs none.

    The correction is a constant, so a standard error converts without it:
    ``stderr / (dim * ln 2)``.

    Args:
        nll_nats: the mean negative log-likelihood in nats per sample, e.g. ``nll(...).mean``.
        dim: the number of dimensions :math:`D` of one sample (all elements of an image),
            or the event shape, e.g. ``(3, 32, 32)``, whose product it is.
        levels: the number :math:`L \ge 2` of discrete values per dimension in the unit
            interval of ``x``, or ``None`` for continuous data; ``Dataset.levels``.
        scale: :math:`s > 0` of standardised data :math:`y = (x - m) / s`, when ``nll_nats``
            is of :math:`y`: a number (every dimension) or a tensor of the event shape (one
            per dimension, e.g. ``Standardize.std``); ``None`` when ``nll_nats`` is of
            :math:`x`.

    Returns:
        Bits per dimension, a Python float.

    References:
        A note on the evaluation of generative models (Theis et al., 2016)
        https://arxiv.org/abs/1511.01844

        Flow++: Improving Flow-Based Generative Models with Variational Dequantization and
        Architecture Design (Ho et al., 2019) https://arxiv.org/abs/1902.00275

    Example:
        >>> from flowforge.metrics import bits_per_dim
        >>> round(bits_per_dim(64 * 0.6931471805599453, dim=64), 6)
        1.0
        >>> round(bits_per_dim(0.0, dim=64, levels=256), 6)
        8.0
        >>> round(bits_per_dim(0.0, (1, 8, 8), levels=17), 6)  # uniform on the digits' levels
        4.087463
    """
    if isinstance(nll_nats, NLLResult):
        raise TypeError("nll_nats must be a number of nats; pass nll(...).mean, not the NLLResult")
    nll_nats = check_real(nll_nats, "nll_nats")
    if isinstance(dim, (tuple, list, torch.Size)):
        shape = tuple(check_int(d, "dim", 1, "an int >= 1 or an event shape of them") for d in dim)
        if not shape:
            raise ValueError("dim must be an int >= 1 or a non-empty event shape, got ()")
        dim = math.prod(shape)
    else:
        shape = None
        dim = check_int(dim, "dim", 1)
    if scale is not None:
        nll_nats += _log_scale(scale, dim, shape)
    bits = nll_nats / (dim * math.log(2))
    if levels is not None:
        # One level would be constant data, whose discrete log-likelihood is always 0.
        levels = check_int(levels, "levels", 2)
        bits += math.log2(levels)
    return bits


def _log_scale(scale: float | Tensor, dim: int, shape: tuple[int, ...] | None) -> float:
    r""":math:`\sum_d \log s_d` of a number (the same for all ``dim`` dimensions) or a tensor that
    broadcasts to the event shape (a flat ``dim`` without one: ``dim`` elements, or one)."""
    if not isinstance(scale, Tensor):
        return dim * math.log(check_positive(scale, "scale"))
    s = scale.detach().to("cpu", torch.float64)
    target = shape if shape is not None else (dim,)
    try:
        s = torch.broadcast_to(s, target)
    except RuntimeError:
        raise ValueError(
            f"scale must be a number or a tensor that broadcasts to the event shape {target}, "
            f"got shape {tuple(s.shape)}"
        ) from None
    if not bool((torch.isfinite(s) & (s > 0)).all()):
        raise ValueError(f"scale must be positive and finite everywhere, got min {float(s.min())}")
    return float(torch.log(s).sum())


def marginal_log_prob(
    model: HasLogProb,
    x: Tensor,
    num_classes: int,
    weights: Tensor | None = None,
    **solver: Any,
) -> Tensor:
    r"""The label-free log-density of a model conditioned on class labels:
    :math:`\log p(x) = \log \sum_y p(y)\, p(x \mid y)`, one :math:`\log p(x \mid y)` per label.

    What a class-conditional model says about :math:`x` alone (e.g. to draw its density, or to
    compare it with an unconditional model's :math:`-\log p(x)`), exact when the model's
    conditional densities are. Costs ``num_classes`` evaluations of ``log_prob``.

    Args:
        model: a model with ``log_prob(x, context=labels)``, built with ``num_classes``.
        x: ``(B, *event_shape)`` points.
        num_classes: ``K``; the labels summed over are ``0..K-1`` (not the null label).
        weights: ``(K,)`` non-negative class weights :math:`p(y)` (normalised here), e.g. the
            training set's class counts; default uniform.
        **solver: solver options of a continuous model.

    Returns:
        ``(B,)`` log-densities in nats.
    """
    k = check_int(num_classes, "num_classes", 2)
    log_w = log_class_weights(weights, k).to(x.device)
    labels = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    per_label = [model.log_prob(x, labels + y, **solver).double() for y in range(k)]
    return torch.logsumexp(torch.stack(per_label, dim=1) + log_w, dim=1).to(x.dtype)
