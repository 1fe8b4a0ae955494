"""Figures that put several models side by side: curves, density grids, pairwise views."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._checks import check_choice, check_int, is_real
from ._common import (
    DATA_COLOR,
    SAMPLES_COLOR,
    Array,
    auto_bins,
    axis_name,
    check_bounds,
    check_columns,
    data_range,
    histogram2d,
    panel_title,
    prepare,
    show_grid,
)
from .density import log_density_grid
from .figure import new_figure
from .samples import color_panel
from .styles import Style, style_map

CURVE_QUANTILE = 0.5
"""Curves' y-axes end at the highest of the models' values at this quantile (their medians):
the first steps' losses (or a model that diverged) do not flatten everyone's end of training
into one line, and at least half of every model's curve stays in view."""

PAIR_DIMS = 4
"""Coordinates shown by :func:`plot_pairs` by default: 4 give 6 pairs, a row that fits a page."""

_GRID_COLS = 4  # panels a row in the density grid: square panels still readable on a page
_MARKS = 8  # markers per curve: enough to tell styles apart, few enough not to clutter
_BAD = "red"  # NaN/+inf densities, as in plot_density


def _styles(names: Sequence[str], styles: Mapping[str, Style] | None) -> dict[str, Style]:
    given = dict(styles or {})
    missing = [n for n in names if n not in given]
    # Models without a given style get the next ones after the given ones, never a repeat.
    extra = style_map(missing, order=[*given, *missing]) if missing else {}
    return {n: given.get(n) or extra[n] for n in names}


def _real(value: object) -> float:
    """A record's value, already checked to be a real number, as a float."""
    return float(cast(float, value))


def _legend(fig: Figure, names: Sequence[str], styles: Mapping[str, Style]) -> None:
    """One legend for the whole figure, below the panels, so it never covers data."""
    handles = [Line2D([], [], **styles[n].line(), markersize=5, label=n) for n in names]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(names), 6))


def plot_model_curves(
    records_by_model: Mapping[str, Iterable[Mapping[str, object]]],
    *,
    styles: Mapping[str, Style] | None = None,
    loss_labels: Mapping[str, str] | None = None,
    x: str = "auto",
    title: str | None = None,
) -> Figure:
    """Training curves of several models, each in its style, losses grouped by objective.

    Panels, left to right: the validation NLL of every model (one quantity, comparable across
    families); one panel of training loss per distinct ``loss_labels`` value (a flow's NLL and
    a flow-matching regression loss are different quantities, so never share an axis); and,
    when records carry ``"nfe"`` above 1, function evaluations per training step of the
    models whose training solves an ODE. One legend below the panels; each y-axis ends at the
    highest of the models' medians (:data:`CURVE_QUANTILE`), so the first steps' large values
    do not flatten the rest while half of every curve stays in view.

    Args:
        records_by_model: model name → its ``metrics.jsonl`` records (dicts with ``"step"`` and
            some of ``"loss"``, ``"val_nll"``, ``"nfe"``, ``"time_s"``).
        styles: model name → :class:`Style` (e.g. :func:`style_map` of the registry order);
            models without one get the next free styles.
        loss_labels: model name → the name of its training objective (the panel title);
            default one panel, ``"training loss"``, for all.
        x: ``"step"``, ``"time"`` (training seconds, from ``"time_s"``; a validation record
            without it gets the time interpolated between its neighbours) or ``"auto"``: time
            when every model's records have it.
        title: figure title.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        ValueError: no model, an unknown ``x``, or no record with anything to draw.
    """
    if not isinstance(records_by_model, Mapping) or not records_by_model:
        raise ValueError("records_by_model must map at least one model name to its records")
    check_choice(x, "x", ("auto", "step", "time"))
    names = list(records_by_model)
    records = {
        n: [r for r in records_by_model[n] if isinstance(r.get("step"), int | float)] for n in names
    }
    style = _styles(names, styles)
    labels = {n: (loss_labels or {}).get(n, "training loss") for n in names}
    timed = all(any("time_s" in r for r in records[n]) for n in names)
    use_time = x == "time" or (x == "auto" and timed)
    if use_time and not timed:
        raise ValueError("x='time' needs a 'time_s' in the records of every model")

    def series(name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [(_real(r["step"]), _real(r[key])) for r in records[name] if is_real(r.get(key))]
        if not rows:
            return np.empty(0), np.empty(0)
        steps, values = (np.asarray(v) for v in zip(*rows, strict=True))
        if use_time:
            clock = sorted(
                (_real(r["step"]), _real(r["time_s"]))
                for r in records[name]
                if is_real(r.get("time_s"))
            )
            known_steps, known_times = zip(*clock, strict=True)
            # A step before the first logged one: time in proportion, from 0 at step 0.
            steps = np.interp(steps, (0.0, *known_steps), (0.0, *known_times))
        keep = np.isfinite(values)
        return steps[keep], values[keep]

    groups = list(dict.fromkeys(labels[n] for n in names))
    # Only models whose training solves an ODE: a regression step costs one evaluation.
    solving = [n for n in names if (series(n, "nfe")[1] > 1).any()]
    panels = [("validation NLL (data units)", "val_nll", names)]
    panels += [(group, "loss", [n for n in names if labels[n] == group]) for group in groups]
    if solving:
        panels.append(("function evaluations per training step", "nfe", solving))
    drawn = [(t, k, m) for t, k, m in panels if any(series(n, k)[0].size for n in m)]
    if not drawn:
        raise ValueError("nothing to plot: no record has a 'loss', 'val_nll' or 'nfe' value")
    fig = new_figure(4.6 * len(drawn), 4.4 + 0.25 * math.ceil(len(names) / 6))
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (panel, key, members) in zip(axes, drawn, strict=True):
        values = []
        for name in members:
            xs, ys = series(name, key)
            if xs.size:
                every = max(1, xs.size // _MARKS)
                ax.plot(xs, ys, **style[name].line(), markevery=every, markersize=4, lw=1.2)
                values.append(ys)
        lo = min(float(v.min()) for v in values)
        hi = max(float(np.quantile(v, CURVE_QUANTILE)) for v in values)
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
        unit = "nats" if key == "val_nll" else ("NFE" if key == "nfe" else "loss")
        ax.set(title=panel, xlabel="training time (s)" if use_time else "step", ylabel=unit)
        ax.title.set_fontsize("medium")
        ax.grid(alpha=0.3)
    _legend(fig, names, style)
    if title:
        fig.suptitle(title)
    return fig


def plot_density_grid(
    log_probs: Mapping[str, Callable[[torch.Tensor], torch.Tensor] | np.ndarray],
    *,
    bounds: Sequence[float],
    resolution: int = 200,
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reference_label: str = "true density",
    data: Array | None = None,
    colors: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Figure:
    r"""The densities :math:`p(x)` of several 2-D models in one grid, on one colour scale.

    The first panel is the reference: the exact density ``reference`` where it is known (the
    checkerboard's, say), else the histogram of ``data`` as a density. Every panel shares its
    axes and the colour scale 0 .. the reference's largest value, so equal colours are equal
    densities; a model that puts more mass anywhere than the reference has saturates there.
    NaN or ``+inf`` values are red and counted in the panel's title.

    Args:
        log_probs: model name → its ``log_prob`` (``(n, 2) -> (n,)``, evaluated on the grid
            under :func:`torch.no_grad`) or its log-density already on the grid, an array of
            shape ``(resolution, resolution)`` from :func:`log_density_grid` (rows = y).
        bounds: ``(xmin, xmax, ymin, ymax)`` of the grid.
        resolution: grid points per axis.
        reference: the exact log-density of the data, if known.
        reference_label: the reference panel's title.
        data: ``(N, 2)`` points; their histogram is the reference when ``reference`` is None.
        colors: model name → colour of its panel's title and frame.
        columns: the two coordinates' names, for the axis labels.
        title: figure title.
        dtype: dtype of the grid passed to the callables.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        ValueError: no model, a grid of the wrong shape, or bad ``bounds`` / ``resolution``.
    """
    if not isinstance(log_probs, Mapping) or not log_probs:
        raise ValueError("log_probs must map at least one model name to its log-density")
    box = check_bounds(bounds)
    resolution = check_int(resolution, "resolution", 2)
    names = check_columns(columns, 2)
    grids: dict[str, np.ndarray] = {}
    for name, lp in log_probs.items():
        if callable(lp):
            grids[name] = log_density_grid(lp, box, resolution, dtype)
        else:
            grid = np.asarray(lp, dtype=np.float64)
            if grid.shape != (resolution, resolution):
                raise ValueError(
                    f"log_probs[{name!r}] must be a ({resolution}, {resolution}) grid or a "
                    f"callable, got an array of shape {grid.shape}"
                )
            grids[name] = grid
    panels: list[tuple[str, np.ndarray, int]] = []  # (title, density, bad points)
    if reference is not None:
        panels.append((reference_label, np.exp(log_density_grid(reference, box, resolution)), 0))
    elif data is not None:
        d = prepare(data, "data")
        if d.is_image or d.event_shape != (2,):
            raise ValueError(f"data must have shape (N, 2), got {(d.total, *d.event_shape)}")
        hist = histogram2d(d.values, box, min(resolution, auto_bins(d.values.shape[0])))
        panels.append((panel_title("data (histogram)", d), hist, 0))
    for name, log_p in grids.items():
        bad = np.isnan(log_p) | (log_p == np.inf)
        with np.errstate(over="ignore"):  # exp(log p > 709) is inf: saturates anyway
            density = np.exp(np.where(bad, -np.inf, log_p))
        panels.append((name, density, int(bad.sum())))
    vmax = float(panels[0][1].max()) if panels[0][1].size else 0.0
    if not vmax > 0:  # no reference, or one that is 0 on the whole window: the models' peak
        finite = [p[np.isfinite(p)] for _, p, _ in panels]
        vmax = max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_BAD)
    ncols = min(len(panels), _GRID_COLS)
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(3.1 * ncols + 0.9, 3.3 * nrows + (0.4 if title else 0.0))
    axes: list[Axes] = []
    for i, (label, density, bad_count) in enumerate(panels):
        ax = fig.add_subplot(
            nrows, ncols, i + 1, sharex=axes[0] if axes else None, sharey=axes[0] if axes else None
        )
        shown = np.ma.masked_invalid(np.clip(density, 0.0, vmax))
        if bad_count:
            label += f"\n{bad_count:,} points NaN/+inf (red)"
        im = show_grid(ax, shown, box, names, cmap=cmap, vmin=0.0, vmax=vmax)
        ax.set_title(label, fontsize="medium")
        model = label.split("\n")[0]
        if colors and model in colors and i >= len(panels) - len(grids):
            color_panel(ax, colors[model])
        axes.append(ax)
    fig.colorbar(im, ax=axes, label="$p(x)$", shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def plot_pairs(
    samples_by_model: Mapping[str, Array],
    data: Array,
    *,
    max_dims: int = PAIR_DIMS,
    columns: Sequence[str] | None = None,
    colors: Mapping[str, str] | None = None,
    max_points: int = 2000,
    title: str | None = None,
) -> Figure:
    """Pairwise scatter plots of the first coordinates: one row per model, samples over data.

    Each row is one model; each column one pair ``(x_i, x_j)``, ``i < j``, of the first
    ``max_dims`` coordinates. Every panel draws the data in grey and the model's samples on top
    in its colour, on axes shared down the column (the data's central 99.8 %), so a row reads
    as "where do the samples miss the data", pair by pair — the view of D > 2 data that a
    single scatter plot of ``x_1, x_2`` cannot give.

    Args:
        samples_by_model: model name → ``(N, D)`` samples, ``D >= 2``; the rows' order.
        data: ``(M, D)`` data.
        max_dims: coordinates shown (at least 2): ``k (k - 1) / 2`` pairs.
        columns: one name per coordinate (all ``D``), for the axis labels.
        colors: model name → colour of its samples and row title; default blue.
        max_points: at most this many rows of each set are drawn (a seeded random subset).
        title: figure title.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        ValueError: no model, shapes that differ or are not ``(N, D)`` with ``D >= 2``.
    """
    if not isinstance(samples_by_model, Mapping) or not samples_by_model:
        raise ValueError("samples_by_model must map at least one model name to its samples")
    max_dims = check_int(max_dims, "max_dims", 2)
    max_points = check_int(max_points, "max_points", 1)
    d = prepare(data, "data", limit=max_points)
    if d.is_image or len(d.event_shape) != 1 or d.event_shape[0] < 2:
        raise ValueError(
            f"data must have shape (N, D) with D >= 2, got {(d.total, *d.event_shape)}"
        )
    dim = d.event_shape[0]
    names = check_columns(columns, dim)
    batches = {}
    for name, x in samples_by_model.items():
        b = prepare(x, f"samples_by_model[{name!r}]", limit=max_points)
        if b.is_image or b.event_shape != d.event_shape:
            raise ValueError(
                f"samples_by_model[{name!r}] must have shape (N, {dim}) like data, "
                f"got {(b.total, *b.event_shape)}"
            )
        batches[name] = b
    k = min(dim, max_dims)
    pairs = list(itertools.combinations(range(k), 2))
    lo, hi = data_range(d.values[:, :k])
    fig = new_figure(2.3 * len(pairs) + 0.4, 2.3 * len(batches) + 0.8 + (0.4 if title else 0))
    grid = fig.subplots(len(batches), len(pairs), squeeze=False)
    for row, (name, b) in zip(grid, batches.items(), strict=True):
        color = (colors or {}).get(name, SAMPLES_COLOR)
        for ax, (i, j) in zip(row, pairs, strict=True):
            _pair_panel(ax, d.values, b.values, i, j, color)
            ax.set(xlim=(lo[i], hi[i]), ylim=(lo[j], hi[j]))
            ax.set_xlabel(axis_name(i, names), fontsize="small")
            ax.set_ylabel(axis_name(j, names), fontsize="small")
            ax.tick_params(labelsize="x-small")
        row[0].set_title(panel_title(name, b), loc="left", fontsize="medium", color=color)
    handles = [
        Line2D([], [], ls="", marker="o", color=DATA_COLOR, label="data"),
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            color=SAMPLES_COLOR if not colors else "0.1",
            markerfacecolor="none",
            label="samples (the row's colour)",
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2)
    note = f"first {k} of {dim} coordinates" if dim > k else f"all {dim} coordinates"
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize="medium")
    return fig


def _pair_panel(ax: Axes, data: np.ndarray, samples: np.ndarray, i: int, j: int, color: str):
    for points, c, alpha in ((data, DATA_COLOR, 0.35), (samples, color, 0.45)):
        if points.shape[0]:
            ax.scatter(
                points[:, i],
                points[:, j],
                s=1.5,
                alpha=alpha,
                linewidths=0,
                color=c,
                rasterized=True,
            )
