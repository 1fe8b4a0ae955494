"""Heatmaps of a 2-D model's density."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .._checks import check_int
from ._common import (
    CMAP,
    Array,
    auto_bins,
    check_bounds,
    histogram2d,
    note_if_empty,
    panel_title,
    prepare,
    show_grid,
)
from .figure import new_figure

CHUNK = 16_384
"""Grid points per call of ``log_prob_fn``: bounds the memory of models whose activations grow
with the batch (a 200 × 200 grid is 40 000 points), while keeping calls few."""

LOG_RANGE = 15.0
"""With ``log=True``, colours span this many nats below the largest log-density (a factor of
3 × 10⁶): tails show, while ``-inf`` and near-zero values do not stretch the scale."""

_BAD = "red"  # where log_prob is NaN or +inf: a colour no density takes in viridis


def plot_density(
    log_prob_fn: Callable[[Tensor], Tensor],
    *,
    bounds: Sequence[float] = (-4, 4, -4, 4),
    resolution: int = 200,
    data: Array | None = None,
    title: str | None = None,
    log: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Figure:
    r"""Heatmap of a 2-D density :math:`p(x) = \exp \log p(x)` on a grid, beside the data.

    ``log_prob_fn`` is evaluated at the centres of a ``resolution × resolution`` grid over
    ``bounds``, in chunks of :data:`CHUNK` points, under :func:`torch.no_grad` (a model whose
    ``log_prob`` needs autograd inside, like a CNF's divergence, enables it itself). Put a
    model in ``eval()`` mode first. ``-inf`` is a density of 0, as for exact densities with
    bounded support like the checkerboard's; NaN or ``+inf`` values are shown in red and
    counted in the panel's title.

    With ``data``, a second panel shows its 2-D histogram, normalised to a density, on the
    same colour scale (set by the model), so the colours of the two panels mean the same.

    Args:
        log_prob_fn: maps an ``(n, 2)`` tensor to ``(n,)`` log-densities in nats, e.g.
            ``model.log_prob``.
        bounds: ``(xmin, xmax, ymin, ymax)`` of the grid.
        resolution: grid points per axis (at least 2).
        data: ``(N, 2)`` points to show beside the model; optional.
        title: figure title.
        log: colour by :math:`\log p(x)` instead of :math:`p(x)`, over :data:`LOG_RANGE`
            nats below its largest value: shows the tails, where a linear scale shows only
            the modes.
        dtype: dtype of the grid passed to ``log_prob_fn``: the model's (``model.dtype``).
        device: device of the grid: the model's, for a model on a GPU.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        TypeError: ``log_prob_fn`` is not callable, or returns something that is not a tensor
            or array.
        ValueError: ``log_prob_fn`` returns the wrong shape, ``data`` is not ``(N, 2)``, or
            bad ``bounds`` / ``resolution``.

    Example:
        >>> import flowforge as ff
        >>> from flowforge.viz import plot_density
        >>> fig = plot_density(ff.data.checkerboard_log_prob, data=ff.data.checkerboard(5000))
    """
    if not callable(log_prob_fn):
        raise TypeError(
            f"log_prob_fn must be callable, (n, 2) -> (n,), got {type(log_prob_fn).__name__}"
        )
    box = check_bounds(bounds)
    resolution = check_int(resolution, "resolution", 2)
    d = None
    if data is not None:
        d = prepare(data, "data")
        if d.is_image or d.event_shape != (2,):
            raise ValueError(f"data must have shape (N, 2), got {(d.total, *d.event_shape)}")

    log_p = log_density_grid(log_prob_fn, box, resolution, dtype, device)
    bad = np.isnan(log_p) | (log_p == np.inf)
    finite = log_p[np.isfinite(log_p)]
    if log:
        top = float(finite.max()) if finite.size else 0.0
        values, vmin, vmax = log_p, top - LOG_RANGE, top
        label = r"$\log p(x)$ (nats)"
    else:
        with np.errstate(over="ignore"):  # exp(log p > 709) is inf: too high to colour anyway
            values = np.exp(log_p)
        peak = values[np.isfinite(values)]
        vmin, vmax = 0.0, float(peak.max()) if peak.size else 0.0
        label = "$p(x)$"

    hist = None
    if d is not None:
        hist = histogram2d(d.values, box, auto_bins(d.values.shape[0]))
        if log:
            with np.errstate(divide="ignore"):  # empty bins: log 0 = -inf, floored below
                hist = np.maximum(np.log(hist), vmin)
        if vmax <= vmin:  # the model is zero (or NaN) everywhere: fall back to the data's scale
            vmax = float(hist.max())
    if vmax <= vmin:
        vmax = vmin + 1.0
    # Clipped into the colour range: -inf is the lowest colour, an overflowed exp the highest.
    values = np.ma.masked_array(np.clip(values, vmin, vmax), mask=bad)

    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=_BAD)
    panels = 1 if d is None else 2
    fig = new_figure(4.3 * panels + 0.8, 4.8)  # room for two-line titles over square panels
    ax = fig.add_subplot(1, panels, 1)
    im = show_grid(ax, values, box, cmap=cmap, vmin=vmin, vmax=vmax)
    model_title = "model density"
    if bad.any():
        model_title += f"\n{int(bad.sum()):,} of {bad.size:,} grid points NaN/+inf (red)"
    elif not finite.size:
        model_title += "\nlog_prob is -inf everywhere"
    ax.set_title(model_title)
    axes = [ax]
    if hist is not None and d is not None:
        ax = fig.add_subplot(1, panels, 2, sharex=axes[0], sharey=axes[0])
        show_grid(ax, hist, box, cmap=cmap, vmin=vmin, vmax=vmax)
        note_if_empty(ax, d)
        ax.set_title(panel_title("data", d))
        axes.append(ax)
    fig.colorbar(im, ax=axes, label=label, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def log_density_grid(
    log_prob_fn: Callable[[Tensor], Tensor],
    bounds: tuple[float, float, float, float],
    resolution: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """``log_prob_fn`` at the cell centres of a grid over ``bounds``: ``(resolution, resolution)``
    float64, rows = y, as :func:`plot_density` and :func:`plot_density_grid` draw it.

    Evaluated in chunks of :data:`CHUNK` points under :func:`torch.no_grad`.
    """
    if not callable(log_prob_fn):
        raise TypeError(
            f"log_prob_fn must be callable, (n, 2) -> (n,), got {type(log_prob_fn).__name__}"
        )
    bounds = check_bounds(bounds)
    resolution = check_int(resolution, "resolution", 2)
    x0, x1, y0, y1 = bounds
    # Cell centres, so each value stands for the cell drawn around it by imshow's extent.
    xs = x0 + (np.arange(resolution) + 0.5) * (x1 - x0) / resolution
    ys = y0 + (np.arange(resolution) + 0.5) * (y1 - y0) / resolution
    gx, gy = np.meshgrid(xs, ys)
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=dtype, device=device)
    out = []
    with torch.no_grad():
        for chunk in grid.split(CHUNK):
            lp: object = log_prob_fn(chunk)  # checked: a user's callable may return anything
            if isinstance(lp, Tensor):
                values = lp.detach().to("cpu", torch.float64).numpy()
            elif isinstance(lp, np.ndarray):
                values = lp.astype(np.float64)
            else:
                raise TypeError(
                    f"log_prob_fn must return a tensor of shape ({chunk.shape[0]},), "
                    f"got {type(lp).__name__}"
                )
            if values.shape != (chunk.shape[0],):
                raise ValueError(
                    f"log_prob_fn must return shape ({chunk.shape[0]},) for an input of shape "
                    f"{tuple(chunk.shape)}, got {values.shape}"
                )
            out.append(values)
    return np.concatenate(out).reshape(resolution, resolution)
