"""Shared parts of the plots: input checks, non-finite rows, bounds, 2-D histograms, grids."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.image import AxesImage

CMAP = "viridis"
"""Colour map of every density: perceptually uniform, and readable in grey and by colour-blind
readers."""

SAMPLES_COLOR = "C0"
DATA_COLOR = "0.45"
"""Samples are blue, data grey, in every plot that shows both."""

Bounds = tuple[float, float, float, float]
Columns = Sequence[str] | None
"""Names of the coordinates, for axis labels (a CSV's header); ``None``: ``x1 .. xD``."""
Array = torch.Tensor | np.ndarray
"""What the plots accept: a tensor (any device, with or without grad) or a numpy array."""


@dataclass(frozen=True)
class Batch:
    """A checked batch, non-finite rows dropped.

    Attributes:
        values: ``(n, D)`` points or ``(n, C, H, W)`` images, float64, all finite.
        total: number of rows given.
        dropped: number of rows dropped for holding NaN or infinite values.
        is_image: whether ``values`` are images.
    """

    values: np.ndarray
    total: int
    dropped: int
    is_image: bool

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[1:])


def to_numpy(x: object, name: str) -> np.ndarray:
    """``x`` (a tensor or array of real numbers) as a numpy array, without copying if possible."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {x.dtype}")
        x = x.detach().cpu()
        # numpy has no bfloat16 (nor float8): widen those to float32 first.
        if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got an array of dtype {x.dtype}")
        return x
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_image_shape(image_shape: object) -> tuple[int, int, int] | None:
    """Check that ``image_shape`` is ``None`` or ``(C, H, W)`` with ``C`` 1 or 3."""
    if image_shape is None:
        return None
    if (
        not isinstance(image_shape, Sequence)
        or len(image_shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in image_shape)
    ):
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {image_shape!r}")
    if image_shape[0] not in (1, 3):
        raise ValueError(
            f"image_shape must have C = 1 (grey) or 3 (RGB) channels, got {tuple(image_shape)}"
        )
    return (image_shape[0], image_shape[1], image_shape[2])


def as_batch(
    x: object,
    name: str,
    image_shape: tuple[int, int, int] | None = None,
    *,
    images_only: bool = False,
) -> tuple[np.ndarray, bool]:
    """Check the rank of ``x``: ``(N, D)`` points or ``(N, C, H, W)`` images; return it as numpy.

    Flat ``(N, D)`` rows become images when ``image_shape = (C, H, W)`` is given. Returns the
    array (its own dtype, no float64 copy yet: a batch can be a whole image dataset) and whether
    it holds images.
    """
    arr = to_numpy(x, name)
    points = "(N, C, H, W) images" if images_only else "(N, D) points or (N, C, H, W) images"
    if arr.ndim == 3:
        raise ValueError(
            f"{name} must have shape {points}, got {arr.shape}; for grey images of shape "
            f"(N, H, W) add the channel dimension: {name}[:, None]"
        )
    if arr.ndim == 2 and image_shape is not None:
        if arr.shape[1] != math.prod(image_shape):
            raise ValueError(
                f"image_shape {image_shape} holds {math.prod(image_shape)} values per image, "
                f"but {name} has shape {arr.shape} ({arr.shape[1]} per row)"
            )
        arr = arr.reshape(arr.shape[0], *image_shape)
    elif arr.ndim == 4 and image_shape is not None and arr.shape[1:] != image_shape:
        raise ValueError(
            f"{name} has shape {arr.shape}, images of shape {arr.shape[1:]}, but "
            f"image_shape={image_shape} was given; pass image_shape only for flat rows"
        )
    if arr.ndim == 2 and not images_only:
        is_image = False
    elif arr.ndim == 4:
        if arr.shape[1] not in (1, 3):
            raise ValueError(
                f"{name} must have 1 (grey) or 3 (RGB) channels in shape (N, C, H, W), "
                f"got {arr.shape}"
            )
        is_image = True
    else:
        hint = "; flat rows also need image_shape=(C, H, W)" if images_only else ""
        raise ValueError(f"{name} must have shape {points}, got {arr.shape}{hint}")
    if arr.shape[0] == 0 or 0 in arr.shape[1:]:
        raise ValueError(f"{name} must hold at least one non-empty row, got shape {arr.shape}")
    return arr, is_image


def prepare(
    x: object,
    name: str,
    image_shape: tuple[int, int, int] | None = None,
    *,
    limit: int | None = None,
    image_limit: int | None = None,
    images_only: bool = False,
) -> Batch:
    """Check ``x``, drop rows with NaN or infinite values and keep at most ``limit`` rows.

    Points are subsampled at random with a fixed seed (a plot is reproducible and touches no
    global random state); images keep the first ``image_limit``, so a grid shows the same
    images as the tensor's head.
    """
    arr, is_image = as_batch(x, name, image_shape, images_only=images_only)
    if is_image:
        limit = image_limit
    total = arr.shape[0]
    flat = arr.reshape(total, -1)
    finite = np.isfinite(flat).all(axis=1) if arr.dtype.kind == "f" else np.ones(total, bool)
    keep = np.flatnonzero(finite)
    if limit is not None and keep.size > limit:
        if is_image:
            keep = keep[:limit]
        else:
            keep = np.sort(np.random.default_rng(0).choice(keep, size=limit, replace=False))
    values = arr[keep]
    if is_image and values.dtype == np.uint8:
        # 8-bit images: 0..255 is the convention, so 255 is white.
        values = values / 255.0
    return Batch(values.astype(np.float64), total, int(total - finite.sum()), is_image)


def check_same_kind(a: Batch, b: Batch, a_name: str, b_name: str) -> None:
    """Check that two batches are both points of the same ``D`` or both images of one shape."""
    if a.is_image != b.is_image or a.event_shape != b.event_shape:
        what = {True: "images of shape (N, {})", False: "points of shape (N, {})"}
        raise ValueError(
            f"{a_name} and {b_name} must be the same kind of data; got {a_name} as "
            + what[a.is_image].format(", ".join(map(str, a.event_shape)))
            + f" and {b_name} as "
            + what[b.is_image].format(", ".join(map(str, b.event_shape)))
        )


def dropped_note(batch: Batch) -> str:
    """How many rows were dropped for NaN or infinite values, e.g. for a panel's title."""
    return f"{batch.dropped:,} of {batch.total:,} rows NaN/inf, dropped"


def panel_title(label: str, batch: Batch) -> str:
    """``label``, with a second line counting the non-finite rows dropped, if any."""
    return f"{label}\n{dropped_note(batch)}" if batch.dropped else label


def note_if_empty(ax: Axes, batch: Batch) -> bool:
    """Write a note on ``ax`` when every row was dropped; return whether it was."""
    if batch.values.shape[0]:
        return False
    ax.text(
        0.5,
        0.5,
        "no finite rows",
        ha="center",
        va="center",
        transform=ax.transAxes,
        bbox={"facecolor": "white", "edgecolor": "0.6"},
    )
    return True


def check_bounds(bounds: object, name: str = "bounds") -> Bounds:
    """Check that ``bounds`` is ``(xmin, xmax, ymin, ymax)``, finite, with min < max."""
    try:
        # A tuple, list, array or tensor; anything else fails here and is reported below.
        values = tuple(float(b) for b in cast(Any, bounds))
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be four numbers (xmin, xmax, ymin, ymax), got {bounds!r}"
        ) from None
    if len(values) != 4:
        raise ValueError(f"{name} must be (xmin, xmax, ymin, ymax), got {bounds!r}")
    x0, x1, y0, y1 = values
    if not all(math.isfinite(b) for b in values) or not (x0 < x1 and y0 < y1):
        raise ValueError(
            f"{name} must be finite (xmin, xmax, ymin, ymax) with xmin < xmax and ymin < ymax, "
            f"got {bounds!r}"
        )
    return (x0, x1, y0, y1)


def data_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column plotting range of ``values (n, D)``: its central 99.8 %, padded by 5 %.

    Quantiles rather than min/max, so a few far outliers (a model's stray samples) do not
    shrink everything else to a dot; 0.1 % cut at each end still leaves ±3.1 σ of a Gaussian.
    """
    if values.shape[0] == 0:
        return np.full(values.shape[1], -1.0), np.full(values.shape[1], 1.0)
    lo, hi = np.quantile(values, [0.001, 0.999], axis=0)
    span = hi - lo
    pad = np.where(span > 0, 0.05 * span, 1.0)  # a constant column still gets a visible range
    return lo - pad, hi + pad


def auto_bounds(reference: Batch) -> Bounds:
    """Bounds of the first two coordinates from ``reference`` (the data when given)."""
    lo, hi = data_range(reference.values[:, :2])
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def aspect(bounds: Bounds) -> Literal["equal", "auto"]:
    """Equal aspect (a circle looks round) unless the ranges differ by more than 4×.

    Beyond that an equal-aspect panel becomes a sliver that hides the shape it should show.
    """
    ratio = (bounds[3] - bounds[2]) / (bounds[1] - bounds[0])
    return "equal" if 0.25 <= ratio <= 4 else "auto"


def auto_bins(n: int) -> int:
    """Bins per axis of a 2-D histogram of ``n`` points: about 10 points per bin, 20 to 200.

    At 10 points a bin the Poisson noise is about 30 %, so shapes read clearly; 20 bins keep
    a small sample from looking like a few blocks, 200 is finer than a panel shows.
    """
    return int(np.clip(math.sqrt(max(n, 1) / 10), 20, 200))


def histogram2d(points: np.ndarray, bounds: Bounds, bins: int) -> np.ndarray:
    """Density estimate on a ``bins × bins`` grid over ``bounds``, shape ``(bins_y, bins_x)``.

    Normalised by all ``n`` points, not only those inside the bounds (as numpy's
    ``density=True`` would), so the values are comparable with a model's exact density.
    """
    x0, x1, y0, y1 = bounds
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins, range=[[x0, x1], [y0, y1]])
    area = (x1 - x0) * (y1 - y0) / bins**2
    return counts.T / (max(points.shape[0], 1) * area)


def show_grid(
    ax: Axes, values: np.ndarray, bounds: Bounds, columns: Columns = None, **kwargs
) -> AxesImage:
    """Draw ``values (rows = y, cols = x)`` over ``bounds`` as an image; label the axes."""
    im = ax.imshow(
        values,
        origin="lower",
        extent=bounds,
        aspect=aspect(bounds),
        interpolation="nearest",
        cmap=kwargs.pop("cmap", CMAP),
        **kwargs,
    )
    label_xy(ax, columns)
    return im


def check_columns(columns: object, dim: int) -> tuple[str, ...] | None:
    """Check that ``columns`` is ``None`` or one name (a str) per coordinate of ``D = dim``."""
    if columns is None:
        return None
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a sequence of names, got {type(columns).__name__}")
    names = tuple(columns)
    if not all(isinstance(c, str) for c in names):
        raise TypeError(f"columns must be strings, got {names!r}")
    if len(names) != dim:
        raise ValueError(f"columns must name each of the {dim} coordinates, got {len(names)} names")
    return names


def axis_name(j: int, columns: Columns = None) -> str:
    """The label of coordinate ``j`` (0-based): its column name, else ``x_{j+1}``."""
    return columns[j] if columns else f"$x_{{{j + 1}}}$"


def label_xy(ax: Axes, columns: Columns = None, i: int = 0, j: int = 1) -> None:
    """Label the axes with coordinates ``i`` (x) and ``j`` (y)."""
    ax.set_xlabel(axis_name(i, columns))
    ax.set_ylabel(axis_name(j, columns))


def scatter(
    ax: Axes, points: np.ndarray, bounds: Bounds, color: str, columns: Columns = None
) -> None:
    """Small, translucent markers; rasterised so a PDF/SVG of 20 000 points stays small."""
    ax.scatter(
        points[:, 0], points[:, 1], s=2, alpha=0.5, linewidths=0, color=color, rasterized=True
    )
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect(aspect(bounds))
    label_xy(ax, columns)


def image_grid(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """Tile ``images (n, C, H, W)`` in ``ncol`` columns, ``pad`` white pixels around each.

    Returns ``(rows, cols)`` for grey images or ``(rows, cols, 3)`` for RGB, values in [0, 1].
    """
    n, c, h, w = images.shape
    nrows = max(1, math.ceil(n / ncol))
    grid = np.ones((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad))
    for i, img in enumerate(np.clip(images, 0.0, 1.0)):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = img
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_images(ax: Axes, images: np.ndarray, ncol: int) -> None:
    """Draw a grid of ``images (n, C, H, W)`` on ``ax``, without axes."""
    grid = image_grid(images, ncol)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.set_axis_off()
