"""Model samples beside the data, and side by side across models."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._checks import check_int
from ._common import (
    DATA_COLOR,
    SAMPLES_COLOR,
    Array,
    Batch,
    Bounds,
    Columns,
    aspect,
    auto_bins,
    auto_bounds,
    axis_name,
    check_bounds,
    check_columns,
    check_image_shape,
    check_same_kind,
    data_range,
    dropped_note,
    histogram2d,
    label_xy,
    note_if_empty,
    panel_title,
    prepare,
    scatter,
    show_grid,
    show_images,
)
from .figure import new_figure

CORNER_DIMS = 4
"""Coordinates of the corner plot drawn for D > 2: 4 give 6 pairs, still readable on a page."""

GRID_IMAGES = 64
"""Images per panel of :func:`plot_samples`: an 8 × 8 grid; more become too small to judge."""

COMPARISON_IMAGES = 16
"""Images per model in :func:`plot_comparison`: a 4 × 4 grid, so many models fit one figure."""

_MARGINAL_BINS = 40  # per dimension; enough for shape at a few thousand points, little noise


def plot_samples(
    samples: Array,
    data: Array | None = None,
    *,
    title: str | None = None,
    bounds: Sequence[float] | None = None,
    max_points: int = 20_000,
    image_shape: Sequence[int] | None = None,
    columns: Sequence[str] | None = None,
) -> Figure:
    """Model samples beside the data, on the same axes and colour scale.

    What is drawn depends on the data:

    - **2-D points**: two 2-D histograms (samples, data) of the density of points, on one
      colour scale, the data's: where the model puts more mass than the data anywhere has,
      the colour saturates. Histograms read better than scatter plots for dense toy data.
    - **points with D > 2** (or D = 1): a corner plot of the first :data:`CORNER_DIMS`
      coordinates: on the diagonal each one's histogram, samples (blue line) over data (grey);
      below it the scatter plot of each pair, data in grey and samples in blue, the smaller set on
      top.
    - **images** ``(N, C, H, W)``, or flat rows with ``image_shape``: a grid of the first
      :data:`GRID_IMAGES` samples beside one of the data (see :func:`plot_images`).

    Rows holding NaN or infinite values (a diverged model) are dropped and counted in the
    panel's title.

    Args:
        samples: ``(N, D)`` points or ``(N, C, H, W)`` images, a tensor or array.
        data: the same kind, any ``N``; optional.
        title: figure title.
        bounds: ``(xmin, xmax, ymin, ymax)`` of the first two coordinates; default the data's
            central 99.8 % (the samples' when no data), padded by 5 %. Points outside are not
            shown. For 1-D points only ``xmin, xmax`` are used.
        max_points: at most this many rows of ``samples`` and of ``data`` are drawn, chosen
            at random with a fixed seed (the plot is reproducible and leaves torch's random
            state alone). Bounds and bins are computed from the same rows.
        image_shape: ``(C, H, W)``, to read flat ``(N, C·H·W)`` rows as images.
        columns: one name per coordinate of ``(N, D)`` points, for the axis labels (e.g. a
            CSV's header, ``dataset.columns``); default ``x1 .. xD``.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        TypeError: an input is not a tensor or array of real numbers.
        ValueError: wrong shapes, no rows, ``samples`` and ``data`` of different kinds or
            dimensions, or bad ``bounds`` / ``max_points``.

    Example:
        >>> import torch
        >>> import flowforge as ff
        >>> from flowforge.viz import plot_samples
        >>> data = ff.data.checkerboard(20_000, seed=0)
        >>> fig = plot_samples(data + 0.1 * torch.randn_like(data), data, title="nsf")
    """
    max_points = check_int(max_points, "max_points", 1)
    shape = check_image_shape(image_shape)
    s = prepare(samples, "samples", shape, limit=max_points, image_limit=GRID_IMAGES)
    d = None
    if data is not None:
        d = prepare(data, "data", shape, limit=max_points, image_limit=GRID_IMAGES)
        check_same_kind(s, d, "samples", "data")
    batches = [(panel_title("samples", s), s)]
    if d is not None:
        batches.append((panel_title("data", d), d))

    if s.is_image:
        fig = new_figure(4.2 * len(batches), 4.6)
        for i, (label, b) in enumerate(batches):
            ax = fig.add_subplot(1, len(batches), i + 1)
            _image_panel(ax, b, GRID_IMAGES)
            ax.set_title(label)
    else:
        box = _bounds(bounds, d if d is not None else s)
        dim = s.values.shape[1]
        names = check_columns(columns, dim)
        if dim == 2:
            fig = new_figure(4.2 * len(batches), 4.4)
            axes = [fig.add_subplot(1, len(batches), i + 1) for i in range(len(batches))]
            _histogram_panels(axes, batches, box, 1 if d is not None else None, names)
        else:
            fig = _corner(s, d, box, names)
    if title:
        fig.suptitle(title)
    return fig


def plot_comparison(
    samples_by_model: Mapping[str, Array],
    data: Array | None = None,
    *,
    bounds: Sequence[float] | None = None,
    max_points: int = 20_000,
    image_shape: Sequence[int] | None = None,
    title: str | None = None,
    columns: Sequence[str] | None = None,
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """One panel per model (the data first), on shared axes and colour scale.

    Each panel is drawn as in :func:`plot_samples`: 2-D points as histograms on the data's
    colour scale (the largest model's when no data), points with D > 2 as scatter plots of the
    first two coordinates, 1-D points as histograms over the data's, images as a grid of the
    first :data:`COMPARISON_IMAGES`. Up to four panels a row.

    Args:
        samples_by_model: model name → its samples, ``(N, D)`` or ``(N, C, H, W)``; all the
            same kind. Panels follow the mapping's order.
        data: the data, the same kind; optional.
        bounds: ``(xmin, xmax, ymin, ymax)`` shared by every panel; default from the data
            (from all samples together when no data).
        max_points: at most this many rows per panel, chosen at random with a fixed seed.
        image_shape: ``(C, H, W)``, to read flat rows as images.
        title: figure title.
        columns: one name per coordinate of the points, for the axis labels.
        colors: model name → colour of its panel's title and frame (e.g. from
            :func:`style_map`), so a model looks the same here as in its curves.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        TypeError: ``samples_by_model`` is not a mapping of names to tensors or arrays.
        ValueError: it is empty, or shapes differ across models and data (see
            :func:`plot_samples`).

    Example:
        >>> import flowforge as ff
        >>> from flowforge.viz import plot_comparison
        >>> data = ff.data.checkerboard(5000, seed=0)
        >>> fig = plot_comparison({"nsf": data + 0.1, "maf": data * 0.9}, data)
    """
    if not isinstance(samples_by_model, Mapping):
        raise TypeError(
            "samples_by_model must be a mapping of model name to samples, "
            f"got {type(samples_by_model).__name__}"
        )
    if not samples_by_model:
        raise ValueError("samples_by_model must name at least one model, got an empty mapping")
    max_points = check_int(max_points, "max_points", 1)
    shape = check_image_shape(image_shape)
    inputs = [] if data is None else [("data", "data", data)]  # (panel label, argument, input)
    for name, samples in samples_by_model.items():
        if not isinstance(name, str):
            raise TypeError(f"samples_by_model keys must be str names, got {name!r}")
        inputs.append((name, f"samples_by_model[{name!r}]", samples))
    batches: list[tuple[str, Batch]] = []
    for name, arg, x in inputs:
        b = prepare(x, arg, shape, limit=max_points, image_limit=COMPARISON_IMAGES)
        if batches:
            check_same_kind(batches[0][1], b, inputs[0][1], arg)
        batches.append((name, b))
    first = batches[0][1]
    labelled = [(panel_title(name, b), b) for name, b in batches]

    ncols = min(len(labelled), 4)
    nrows = math.ceil(len(labelled) / ncols)
    # Taller than wide: room for a two-line title above a square panel.
    fig = new_figure(3.2 * ncols, 3.8 * nrows + (0.4 if title else 0.0))
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(labelled))]
    if first.is_image:
        for ax, (label, b) in zip(axes, labelled, strict=True):
            _image_panel(ax, b, COMPARISON_IMAGES)
            ax.set_title(label)
    else:
        reference = 0 if data is not None else None
        # Without data, the range covers every model's samples, so none is cut off unseen.
        pooled = np.concatenate([b.values for _, b in batches[: 1 if reference == 0 else None]])
        box = _bounds(bounds, Batch(pooled, pooled.shape[0], 0, False))
        names = check_columns(columns, first.values.shape[1])
        if first.values.shape[1] == 2:
            _histogram_panels(axes, labelled, box, reference, names)
        elif first.values.shape[1] == 1:
            for ax, (label, b) in zip(axes, labelled, strict=True):
                ref = batches[0][1] if reference == 0 and b is not batches[0][1] else None
                _marginal(ax, b, ref, 0, box[:2])
                ax.set_title(label)
        else:
            for ax, (label, b) in zip(axes, labelled, strict=True):
                if not note_if_empty(ax, b):
                    color = DATA_COLOR if reference is not None and ax is axes[0] else SAMPLES_COLOR
                    scatter(ax, b.values, box, color, names)
                ax.set_title(label)
    for ax, (name, _) in zip(axes, batches, strict=True):
        if colors and name in colors:
            color_panel(ax, colors[name])
    if title:
        fig.suptitle(title)
    return fig


def color_panel(ax: Axes, color: str) -> None:
    """Give a panel's title and frame a model's colour, the one of its lines elsewhere."""
    ax.title.set_color(color)
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(1.6)


def _bounds(bounds: Sequence[float] | None, reference: Batch) -> Bounds:
    """The caller's bounds, checked, or the reference's; for 1-D points only x counts."""
    if bounds is not None:
        return check_bounds(bounds)
    if reference.values.shape[1] == 1:
        lo, hi = data_range(reference.values)
        return (float(lo[0]), float(hi[0]), 0.0, 1.0)
    return auto_bounds(reference)


def _image_panel(ax: Axes, batch: Batch, limit: int) -> None:
    if note_if_empty(ax, batch):
        ax.set_axis_off()
        return
    show_images(ax, batch.values, math.ceil(math.sqrt(min(limit, batch.values.shape[0]))))


def _histogram_panels(
    axes: list[Axes],
    batches: list[tuple[str, Batch]],
    bounds: Bounds,
    reference: int | None,
    columns: Columns = None,
) -> None:
    """2-D histograms on one colour scale: the reference panel's, or the largest one's."""
    sizes = [b.values.shape[0] for _, b in batches if b.values.shape[0]]
    bins = auto_bins(min(sizes, default=1))  # the same grid everywhere, fit for the smallest
    hists = [histogram2d(b.values, bounds, bins) for _, b in batches]
    vmax = float(hists[reference].max()) if reference is not None else 0.0
    if vmax <= 0:  # no reference, or a reference with no points inside the bounds
        vmax = max(float(h.max()) for h in hists)
    for ax, (label, b), h in zip(axes, batches, hists, strict=True):
        if note_if_empty(ax, b):  # left blank: an all-zero heatmap would look like a result
            ax.set(xlim=bounds[:2], ylim=bounds[2:], aspect=aspect(bounds))
            label_xy(ax, columns)
        else:
            show_grid(ax, h, bounds, columns, vmin=0.0, vmax=vmax if vmax > 0 else 1.0)
        ax.set_title(label)


def _marginal(
    ax: Axes, samples: Batch, data: Batch | None, j: int, span: tuple[float, float]
) -> None:
    """Histogram of coordinate ``j``: samples as a blue line over the data filled in grey."""
    edges = np.linspace(span[0], span[1], _MARGINAL_BINS + 1)
    width = edges[1] - edges[0]
    for batch, is_data in ((data, True), (samples, False)):
        if batch is None or batch.values.shape[0] == 0:
            continue
        counts, _ = np.histogram(batch.values[:, j], bins=edges)
        density = counts / (batch.values.shape[0] * width)
        if is_data:
            ax.stairs(density, edges, fill=True, color=DATA_COLOR, alpha=0.5, label="data")
        else:
            ax.stairs(density, edges, color=SAMPLES_COLOR, linewidth=1.3, label="samples")
    ax.set_xlim(span)
    ax.set_ylim(bottom=0.0, top=1.3 * ax.get_ylim()[1])  # headroom for the legend
    ax.set_yticks([])  # densities of different coordinates differ in scale; shape is the point
    ax.locator_params(axis="x", nbins=5)  # fewer ticks, so neighbouring panels' labels never touch


# Sets of at most this many points are drawn in larger, opaque dots in the corner plot.
SMALL_SET = 500


def _corner(s: Batch, d: Batch | None, box: Bounds, columns: Columns) -> Figure:
    """A corner plot of the first :data:`CORNER_DIMS` coordinates: histograms on the diagonal,
    pairwise scatter plots (data grey, samples blue; the smaller set on top) below it."""
    dim = s.values.shape[1]
    k = min(dim, CORNER_DIMS)
    lo, hi = data_range((d if d is not None else s).values[:, :k])
    # The first two coordinates use the caller's bounds (the data's by default).
    lo[:2], hi[:2] = box[0::2][: min(k, 2)], box[1::2][: min(k, 2)]
    size = 2.3 if k > 1 else 3.2
    fig = new_figure(size * k + 0.6, size * k + 0.9)
    batches = [("samples", s)] + ([("data", d)] if d is not None else [])
    # The first panel's title counts the rows dropped, the figure's title names the coordinates.
    notes = [f"{name}: {dropped_note(b)}" for name, b in batches if b.dropped]
    for i in range(k):
        for j in range(i + 1):
            ax = fig.add_subplot(k, k, i * k + j + 1)
            if i == j:
                _marginal(ax, s, d, j, (float(lo[j]), float(hi[j])))
                ax.set_title(axis_name(j, columns), fontsize="medium")
            else:
                layers = [(d, DATA_COLOR, 0.35), (s, SAMPLES_COLOR, 0.45)]
                # The smaller set goes on top, in larger dots, so a small test split (a user's
                # 30 held-out rows) stays visible among thousands of samples.
                layers.sort(key=lambda t: -1 if t[0] is None else -t[0].values.shape[0])
                for b, color, alpha in layers:
                    if b is not None and b.values.shape[0]:
                        few = b.values.shape[0] <= SMALL_SET
                        ax.scatter(
                            b.values[:, j],
                            b.values[:, i],
                            s=6 if few else 1.5,
                            alpha=0.8 if few else alpha,
                            linewidths=0,
                            color=color,
                            rasterized=True,
                        )
                ax.set(xlim=(lo[j], hi[j]), ylim=(lo[i], hi[i]))
                ax.set_xlabel(axis_name(j, columns), fontsize="small")
                ax.set_ylabel(axis_name(i, columns), fontsize="small")
                ax.tick_params(labelsize="x-small")
            if i == 0 and j == 0 and notes:
                ax.set_title("\n".join([axis_name(0, columns), *notes]), fontsize="medium")
    handles = [Line2D([], [], color=SAMPLES_COLOR, label="samples")]
    if d is not None:
        handles.insert(0, Line2D([], [], color=DATA_COLOR, lw=6, alpha=0.5, label="data"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    if dim > k:  # in the empty upper triangle
        fig.text(0.98, 0.9, f"the first {k} of {dim} coordinates", ha="right", va="top")
    return fig
