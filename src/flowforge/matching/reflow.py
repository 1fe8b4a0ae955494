r"""Reflow (k-rectified flow) and one-step distillation: a model's own noise/sample pairs.

A trained flow carries noise :math:`z` to data by the ODE :math:`x = \mathrm{decode}(z)`.
Reflow draws pairs :math:`(x_0, x_1) = (z, \mathrm{decode}(z))` and trains a new field on the
straight path between them (the linear path with :math:`\sigma_{\min} = 0`, the pairs kept as
they come): the new flow has the same marginals, no larger transport cost, and straighter
trajectories, so few solver steps suffice (Liu et al., 2022, Theorems 3.3 and 3.5).
*Distillation* trains instead the one-step map :math:`x_1 \approx z + v_\theta(0, z)` on the
pairs (Liu et al., §2.3): the flow-matching loss with every time at :math:`t = 0`
(:class:`FixedTime`), so one Euler step is the sampler.

This module draws the pairs (:func:`reflow_noise`, :func:`decode_pairs`); saving them, resuming
and training the rounds is :func:`flowforge.train.reflow`'s job.

References:
    Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow (Liu,
    Gong and Liu, 2022) https://arxiv.org/abs/2209.03003
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int, check_number
from ..distributions.model import Model
from ..distributions.normal import BaseDistribution, StandardNormal
from .time import TimeSampler

#: Pairs decoded per solve: bounds the memory of one adaptive solve (dopri5 keeps about seven
#: copies of the state), small enough for images, large enough that a 2-D solve is not
#: dominated by per-step overhead.
DEFAULT_CHUNK = 4096

#: The solver of :func:`decode_pairs` unless one is given: the pairs are the new model's
#: targets, so they are solved accurately (adaptive, tolerances of the recipes' default).
PAIR_SOLVER: dict[str, object] = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5}


@dataclass(frozen=True)
class Pairs:
    """Noise/sample pairs of a flow: the training set of reflow and distillation.

    Attributes:
        x0: ``(N, *event_shape)`` base points :math:`z` (in the model's base space).
        x1: ``(N, *event_shape)`` their images :math:`\\mathrm{decode}(z)` (in the units the
            model's ``decode`` returns: the data's own for a standardised run).
        context: ``(N,)`` class labels or ``(N, C)`` features each pair was decoded with, or
            ``None`` for an unconditional model.
        seed: the seed :math:`z` was drawn with (``None`` for pairs given from elsewhere).
    """

    x0: Tensor
    x1: Tensor
    context: Tensor | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("x0", "x1"):
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if self.x0.shape != self.x1.shape or self.x0.ndim < 2:
            raise ValueError(
                "x0 and x1 must have the same shape (N, *event_shape), got "
                f"{tuple(self.x0.shape)} and {tuple(self.x1.shape)}"
            )
        if self.context is not None and (
            not isinstance(self.context, Tensor) or self.context.shape[:1] != self.x0.shape[:1]
        ):
            raise ValueError(
                f"context must have one row per pair ({self.x0.shape[0]}), got "
                f"{getattr(self.context, 'shape', type(self.context).__name__)}"
            )

    def __len__(self) -> int:
        return int(self.x0.shape[0])


class FixedTime(TimeSampler):
    r"""Every time at one value :math:`t_0`: with ``t0 = 0`` and the linear path, the
    flow-matching loss on pairs is the distillation loss
    :math:`\|x_1 - (x_0 + v_\theta(0, x_0))\|^2` (Liu et al., 2022, §2.3)."""

    name = "fixed"

    def __init__(self, t0: float = 0.0):
        super().__init__()
        self.t0 = check_number(t0, "t0", 0.0, 1.0)

    def _draw(self, n, device, dtype, generator) -> Tensor:
        return torch.full((n,), self.t0, device=device, dtype=dtype)


def reflow_noise(base: BaseDistribution, n: int, seed: int) -> Tensor:
    """``n`` points of the standard normal ``base``, drawn by a CPU generator seeded with
    ``seed``, on the CPU in float32: the same for a seed on every machine, however they are
    later chunked.

    Args:
        base: the model's base distribution, a :class:`~flowforge.distributions.StandardNormal`
            (the base of every flow-matching recipe).
        n: the number of points.
        seed: an integer >= 0.

    Returns:
        ``(n, *event_shape)``.
    """
    check_int(n, "n", 1, "a positive number of pairs")
    check_int(seed, "seed", 0, "an integer >= 0")
    if type(base) is not StandardNormal:  # a learned base would need its own sampler here
        raise TypeError(
            f"reflow draws its noise from a standard normal base, got {type(base).__name__}"
        )
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *base.event_shape), generator=g, dtype=torch.float32)


def decode_pairs(
    model: Model,
    x0: Tensor,
    context: Tensor | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    x1: Tensor | None = None,
    done: int = 0,
    on_chunk: Callable[[Tensor, int], None] | None = None,
    progress: bool = True,
    **solver: object,
) -> Tensor:
    r"""Solve :math:`x_1 = \mathrm{decode}(x_0)` with ``model``, ``chunk_size`` rows at a time.

    Each chunk is one solve under ``no_grad``, so memory is bounded by ``chunk_size``; rows
    ``[0, done)`` of a partly filled ``x1`` are kept (resuming), and ``on_chunk(x1, done)`` is
    called after every chunk (to save progress). The result is a deterministic function of
    ``x0``, ``context``, the model, the solver and ``chunk_size``: an adaptive solver chooses its
    steps per chunk, so another ``chunk_size`` agrees within the solver's tolerance, not bit
    for bit (a fixed-step solver agrees to the float rounding of the batched network).

    Args:
        model: a continuous model (or a :class:`~flowforge.data.Standardize` around one).
        x0: ``(N, *event_shape)`` base points (:func:`reflow_noise`).
        context: ``(N,)`` labels or ``(N, C)`` features, or ``None``.
        chunk_size: rows per solve.
        x1: ``(N, *event_shape)`` a partial result to continue, or ``None``.
        done: how many leading rows of ``x1`` are already solved.
        on_chunk: called as ``on_chunk(x1, done)`` after each chunk.
        progress: show a tqdm bar over the pairs.
        **solver: solver options (default :data:`PAIR_SOLVER`: dopri5 at 1e-5; no guidance).

    Returns:
        ``x1``, ``(N, *event_shape)``, on the CPU in ``x0``'s dtype.
    """
    check_int(chunk_size, "chunk_size", 1, "a positive number of pairs per solve")
    n = x0.shape[0]
    check_int(done, "done", 0, f"an integer in [0, {n}]")
    if done > n:
        raise ValueError(f"done must be at most the number of pairs {n}, got {done}")
    if x1 is None:
        x1 = torch.empty_like(x0)
    elif x1.shape != x0.shape:
        raise ValueError(f"x1 must have x0's shape {tuple(x0.shape)}, got {tuple(x1.shape)}")
    # A method (or steps alone, which means Euler) replaces the default solver outright.
    given = "method" in solver or "steps" in solver
    options = dict(solver) if given else {**PAIR_SOLVER, **solver}
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else x0.dtype
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=done, desc="reflow pairs", unit="pair", dynamic_ncols=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            while done < n:
                stop = min(done + chunk_size, n)
                c = None if context is None else context[done:stop].to(device)
                out = model.decode(x0[done:stop].to(device, dtype), context=c, **options)
                x1[done:stop] = out.to(x1.device, x1.dtype)
                done = stop
                if on_chunk is not None:
                    on_chunk(x1, done)
                if bar is not None:
                    bar.update(stop - bar.n)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return x1
