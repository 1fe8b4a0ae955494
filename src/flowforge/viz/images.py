"""Grids of images."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from .._checks import check_int
from ._common import Array, check_image_shape, prepare, show_images
from .figure import new_figure


def plot_images(
    images: Array,
    *,
    nrow: int | None = None,
    title: str | None = None,
    image_shape: Sequence[int] | None = None,
) -> Figure:
    """A grid of grey (``C = 1``) or RGB (``C = 3``) images, without axes.

    Values are shown on a fixed [0, 1] scale (0 black, 1 white) and clipped to it, so images
    from different models are comparable and a model's out-of-range pixels saturate rather
    than rescale the whole grid. ``uint8`` images are read as 0..255 and divided by 255.
    Images holding NaN or infinite values are left out, and the title says how many.

    Args:
        images: ``(N, C, H, W)`` tensor or array, or flat ``(N, C·H·W)`` with ``image_shape``.
        nrow: images per row of the grid (as in ``torchvision.utils.make_grid``); default
            ``ceil(sqrt(N))``, a square grid.
        title: figure title.
        image_shape: ``(C, H, W)`` of one image, for flat input such as the 8×8 digits
            ``(N, 64)`` with ``image_shape=(1, 8, 8)``.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        TypeError: ``images`` is not a tensor or array of real numbers.
        ValueError: a shape other than ``(N, C, H, W)`` with ``C`` in {1, 3} (or flat rows
            that do not match ``image_shape``), or no images.

    Example:
        >>> import torch
        >>> from flowforge.viz import plot_images
        >>> fig = plot_images(torch.rand(16, 64), image_shape=(1, 8, 8), title="samples")
    """
    batch = prepare(images, "images", check_image_shape(image_shape), images_only=True)
    n = batch.values.shape[0]
    ncol = math.ceil(math.sqrt(max(n, 1))) if nrow is None else check_int(nrow, "nrow", 1)
    ncol = min(ncol, max(n, 1))
    rows = max(1, math.ceil(n / ncol))
    _, _, h, w = batch.values.shape
    # Size the figure to the grid's aspect, about 0.75 inch an image, between 3 and 10 inches
    # wide, so small grids are not blown up and large ones still fit a page.
    width = min(10.0, max(3.0, 0.75 * ncol))
    height = width * (rows * (h + 1) + 1) / (ncol * (w + 1) + 1)
    fig = new_figure(width, height + (0.5 if title or batch.dropped else 0.0))
    ax = fig.add_subplot()
    if n:
        show_images(ax, batch.values, ncol)
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no finite images", ha="center", va="center", transform=ax.transAxes)
    if batch.dropped:
        note = f"{batch.dropped:,} of {batch.total:,} images NaN/inf, left out"
        title = f"{title}\n{note}" if title else note
    if title:
        fig.suptitle(title)
    return fig
