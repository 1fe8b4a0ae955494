"""Samples of a class-conditional model, drawn by label: colours per class, or a row per class."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._checks import check_int
from ._common import (
    Array,
    Batch,
    Bounds,
    Columns,
    as_batch,
    aspect,
    auto_bounds,
    axis_name,
    check_bounds,
    check_columns,
    check_image_shape,
    data_range,
    image_grid,
    label_xy,
    to_numpy,
)
from .figure import new_figure
from .samples import color_panel
from .styles import class_colors

PER_ROW = 8
"""Images per class row of an image grid: eight show a class's variety and keep 10 rows small."""

_PANELS_A_ROW = 4  # as in plot_comparison: square panels still readable on a page
_HIST_BINS = 40  # 1-D points: per class; enough for shape at a few hundred points a class


class _Labelled:
    """One panel's checked input: finite rows only, with their labels."""

    def __init__(self, values: np.ndarray, labels: np.ndarray, total: int, is_image: bool):
        self.values = values
        self.labels = labels
        self.total = total
        self.dropped = total - values.shape[0]
        self.is_image = is_image

    def title(self, name: str) -> str:
        if not self.dropped:
            return name
        return f"{name}\n{self.dropped:,} of {self.total:,} rows NaN/inf, dropped"


def _labels(labels: object, name: str, rows: int) -> np.ndarray:
    """``labels`` as an ``(N,)`` int64 array of ``rows`` non-negative class indices."""
    arr = to_numpy(labels, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer class labels, got dtype {arr.dtype}; e.g. "
            "torch.tensor([0, 1, 1, 2])"
        )
    if arr.shape != (rows,):
        raise ValueError(
            f"{name} must have shape ({rows},), one label per row of the samples, got {arr.shape}"
        )
    if rows and arr.min() < 0:
        raise ValueError(f"{name} must be class indices >= 0, got {int(arr.min())}")
    return arr.astype(np.int64)


def _prepare(
    x: object,
    labels: object,
    name: str,
    label_name: str,
    image_shape: tuple[int, int, int] | None,
) -> _Labelled:
    arr, is_image = as_batch(x, name, image_shape)
    lab = _labels(labels, label_name, arr.shape[0])
    flat = arr.reshape(arr.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1) if arr.dtype.kind == "f" else np.ones(len(arr), bool)
    values = arr[finite]
    if is_image and values.dtype == np.uint8:
        values = values / 255.0  # 8-bit images: 0..255, as plot_images reads them
    return _Labelled(values.astype(np.float64), lab[finite], arr.shape[0], is_image)


def plot_samples_by_label(
    samples: Array | Mapping[str, Array],
    labels: Array | Mapping[str, Array],
    *,
    num_classes: int | None = None,
    label_names: Sequence[str] | None = None,
    data: Array | None = None,
    data_labels: Array | None = None,
    bounds: Sequence[float] | None = None,
    image_shape: Sequence[int] | None = None,
    per_row: int = PER_ROW,
    max_points: int = 20_000,
    columns: Sequence[str] | None = None,
    colors: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Samples of a class-conditional model by label, one panel per model (the data first).

    - **points** ``(N, D)``: a scatter plot of the first two coordinates, each point in the
      colour of its class (:func:`~flowforge.viz.styles.class_colors`: the same colours in
      every panel), drawn in a shuffled order so no class hides another; one key of the
      classes below the panels, never over the data. 1-D points: one histogram line per class.
    - **images** ``(N, C, H, W)``, or flat rows with ``image_shape``: a grid per panel with one
      row per class (its first ``per_row`` samples; a class with fewer leaves white cells),
      each row named on the left.

    Rows holding NaN or infinite values are dropped (with their labels) and counted in the
    panel's title.

    Args:
        samples: ``(N, D)`` points or ``(N, C, H, W)`` images, or a mapping of model name to
            them (one panel each, in the mapping's order; all of one kind).
        labels: ``(N,)`` integer class of each sample: one tensor or array for every panel
            (each panel then has the same ``N``), or a mapping with one per model.
        num_classes: ``K``, the classes drawn (``0..K-1``); default the largest label + 1.
        label_names: one name per class, for the key and the rows; default ``"0" .. "K-1"``.
        data: real points or images of the same kind, drawn first (``"data"``); optional.
        data_labels: ``(M,)`` labels of ``data`` (required with it).
        bounds: ``(xmin, xmax, ymin, ymax)`` of the points' panels; default the data's
            central 99.8 % (every panel's samples' when no data), padded by 5 %.
        image_shape: ``(C, H, W)``, to read flat rows as images.
        per_row: images per class row.
        max_points: at most this many points per panel, chosen at random with a fixed seed.
        columns: one name per coordinate of the points, for the axis labels.
        colors: model name → colour of its panel's title and frame (e.g. from
            :func:`style_map`), as in :func:`plot_comparison`.
        title: figure title.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        TypeError: an input of the wrong type (labels that are not integers, ...).
        ValueError: wrong shapes, labels of the wrong length or out of ``0..K-1``, panels of
            different kinds, ``data`` without ``data_labels``, or bad ``label_names``.

    Example:
        >>> import torch
        >>> from flowforge.viz import plot_samples_by_label
        >>> y = torch.arange(4).repeat_interleave(50)
        >>> x = torch.randn(200, 2) + 3 * torch.stack([y % 2, y // 2], dim=1)
        >>> fig = plot_samples_by_label({"fm": x}, y, label_names=["a", "b", "c", "d"])
    """
    per_row = check_int(per_row, "per_row", 1)
    max_points = check_int(max_points, "max_points", 1)
    shape = check_image_shape(image_shape)
    models = samples if isinstance(samples, Mapping) else {"samples": samples}
    if not models:
        raise ValueError("samples must name at least one model, got an empty mapping")
    if (data is None) != (data_labels is None):
        raise ValueError("data and data_labels go together: give both (or neither)")
    inputs: list[tuple[str, str, object, str, object]] = []  # (panel, arg, x, label arg, y)
    if data is not None:
        inputs.append(("data", "data", data, "data_labels", data_labels))
    for name, x in models.items():
        if not isinstance(name, str):
            raise TypeError(f"samples keys must be str model names, got {name!r}")
        arg = f"samples[{name!r}]" if isinstance(samples, Mapping) else "samples"
        if isinstance(labels, Mapping):
            if name not in labels:
                raise ValueError(f"labels has no entry for {name!r}; give one per model")
            inputs.append((name, arg, x, f"labels[{name!r}]", labels[name]))
        else:
            inputs.append((name, arg, x, "labels", labels))
    panels = [(name, _prepare(x, y, arg, larg, shape)) for name, arg, x, larg, y in inputs]
    first = panels[0][1]
    for (_, p), (name, _, _, _, _) in zip(panels, inputs, strict=True):
        if p.is_image != first.is_image or p.values.shape[1:] != first.values.shape[1:]:
            raise ValueError(
                f"every panel must be the same kind of data; {inputs[0][1]} has rows of shape "
                f"{first.values.shape[1:]}, {name!r} of shape {p.values.shape[1:]}"
            )
    top = max((int(p.labels.max()) for _, p in panels if p.labels.size), default=0)
    k = top + 1 if num_classes is None else check_int(num_classes, "num_classes", 1)
    if top >= k:
        raise ValueError(f"labels must be classes 0..{k - 1} (num_classes={k}), got a label {top}")
    names = _label_names(label_names, k)
    if first.is_image:
        fig = _image_panels(panels, k, names, per_row)
    else:
        fig = _point_panels(panels, k, names, bounds, max_points, columns, data is not None)
    for ax, (name, _) in zip(fig.axes, panels, strict=False):
        if colors and name in colors:
            color_panel(ax, colors[name])
    if title:
        fig.suptitle(title)
    return fig


def _label_names(label_names: Sequence[str] | None, k: int) -> list[str]:
    if label_names is None:
        return [str(i) for i in range(k)]
    if isinstance(label_names, str) or not all(isinstance(n, str) for n in label_names):
        raise TypeError(f"label_names must be a sequence of str, got {label_names!r}")
    if len(label_names) != k:
        raise ValueError(f"label_names must name each of the {k} classes, got {len(label_names)}")
    return list(label_names)


def _grid_shape(n: int) -> tuple[int, int]:
    ncols = min(n, _PANELS_A_ROW)
    return math.ceil(n / ncols), ncols


def _point_panels(
    panels: list[tuple[str, _Labelled]],
    k: int,
    names: list[str],
    bounds: Sequence[float] | None,
    max_points: int,
    columns: Sequence[str] | None,
    has_data: bool,
) -> Figure:
    dim = panels[0][1].values.shape[1]
    cols = check_columns(columns, dim)
    palette = class_colors(k)
    nrows, ncols = _grid_shape(len(panels))
    fig = new_figure(3.2 * ncols, 3.8 * nrows + 0.5)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(panels))]
    if dim == 1:
        pool = panels[0][1].values if has_data else np.concatenate([p.values for _, p in panels])
        lo, hi = data_range(pool) if bounds is None else check_bounds(bounds)[:2]
        for ax, (name, p) in zip(axes, panels, strict=True):
            _class_histograms(ax, p, k, palette, (float(np.min(lo)), float(np.max(hi))))
            ax.set_xlabel(axis_name(0, cols))
            ax.set_title(p.title(name))
    else:
        box = _box(bounds, panels, has_data)
        for ax, (name, p) in zip(axes, panels, strict=True):
            _class_scatter(ax, p, palette, box, max_points, cols)
            ax.set_title(p.title(name))
    handles = [
        Line2D([], [], linestyle="", marker="o", color=palette[i], label=names[i]) for i in range(k)
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(k, 10),
        title="class",
        fontsize="small",
    )
    return fig


def _box(
    bounds: Sequence[float] | None, panels: list[tuple[str, _Labelled]], has_data: bool
) -> Bounds:
    if bounds is not None:
        return check_bounds(bounds)
    pool = panels[0][1].values if has_data else np.concatenate([p.values for _, p in panels])
    return auto_bounds(Batch(pool[:, :2], pool.shape[0], 0, False))


def _class_scatter(
    ax: Axes,
    p: _Labelled,
    palette: list[str],
    box: Bounds,
    max_points: int,
    columns: Columns,
) -> None:
    """Every point in its class's colour, in a seeded random order: no class drawn over all
    the others, as one call per class (the last on top) would."""
    n = p.values.shape[0]
    order = np.random.default_rng(0).permutation(n)[:max_points]
    if n:
        ax.scatter(
            p.values[order, 0],
            p.values[order, 1],
            s=3,
            alpha=0.6,
            linewidths=0,
            c=[palette[i] for i in p.labels[order]],
            rasterized=True,
        )
    else:
        ax.text(0.5, 0.5, "no finite rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_aspect(aspect(box))
    label_xy(ax, columns)


def _class_histograms(
    ax: Axes, p: _Labelled, k: int, palette: list[str], span: tuple[float, float]
) -> None:
    edges = np.linspace(span[0], span[1], _HIST_BINS + 1)
    for i in range(k):
        values = p.values[p.labels == i, 0]
        if values.size:
            counts, _ = np.histogram(values, bins=edges)
            ax.stairs(counts / (p.values.shape[0] * (edges[1] - edges[0])), edges, color=palette[i])
    ax.set_xlim(span)
    ax.set_yticks([])


def _image_panels(
    panels: list[tuple[str, _Labelled]], k: int, names: list[str], per_row: int
) -> Figure:
    _, c, h, w = panels[0][1].values.shape
    nrows, ncols = _grid_shape(len(panels))
    # About 0.3 inch an image, so ten rows of eight digits take a 3-inch-wide panel.
    width = max(2.0, 0.3 * per_row + 0.6)
    height = width * (k * (h + 1) + 1) / (per_row * (w + 1) + 1) + 0.6
    fig = new_figure(width * ncols, height * nrows)
    for i, (name, p) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        rows = []
        for label in range(k):
            mine = p.values[p.labels == label][:per_row]
            pad = np.ones((per_row - mine.shape[0], c, h, w))  # white cells: too few samples
            rows.append(np.concatenate([mine, pad]) if pad.size else mine)
        grid = image_grid(np.concatenate(rows), per_row)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        # One tick per row at its centre, named by the class.
        ax.set_yticks([1 + r * (h + 1) + (h - 1) / 2 for r in range(k)], names, fontsize="small")
        ax.tick_params(left=False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(p.title(name))
    return fig
