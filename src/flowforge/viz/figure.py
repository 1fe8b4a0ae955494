"""Headless figures and their atomic writing to PNG, PDF or SVG."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._checks import check_positive

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

DEFAULT_DPI = 150
"""Resolution of raster output (PNG) in dots per inch: a 6-inch-wide figure is 900 pixels wide."""

_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
FIGURE_SUFFIXES = tuple(_FORMATS)
"""The suffixes :func:`save_figure` writes, for callers that check a path before drawing."""

# Vector formats embed the time of writing, and SVG random element ids; leaving the time out and
# salting the ids with a fixed string makes the same figure give the same bytes, so re-running a
# report does not show every figure as changed.
_METADATA: dict[str, dict[str, None]] = {
    "png": {},
    "pdf": {"CreationDate": None},
    "svg": {"Date": None},
}
_RC: dict[str, dict[RcKeyType, Any]] = {"png": {}, "pdf": {}, "svg": {"svg.hashsalt": "flowforge"}}


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches drawn by Agg, outside ``matplotlib.pyplot``.

    The figure is never registered with pyplot, so it opens no window, changes no global
    backend, and is freed as soon as the caller drops it (no ``plt.close`` needed).
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: float = DEFAULT_DPI) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format named by its suffix.

    The figure is written to a temporary file in the same folder, flushed to disk, then renamed
    over ``path`` with :func:`os.replace`, so a reader (or a crash) never sees a half-written
    file and an existing file is replaced in one step. Missing parent folders are created.

    Args:
        fig: the figure, e.g. from :func:`plot_samples`.
        path: where to write; the suffix chooses the format: ``.png`` (raster, at ``dpi``),
            ``.pdf`` or ``.svg`` (vector; ``dpi`` only affects rasterised parts such as dense
            scatter plots and heatmaps).
        dpi: dots per inch of raster output, default :data:`DEFAULT_DPI` (150).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``fig`` is not a :class:`matplotlib.figure.Figure`.
        ValueError: the suffix is not ``.png``, ``.pdf`` or ``.svg``, or ``dpi`` is not positive.

    Example:
        >>> import torch
        >>> from flowforge.viz import plot_samples, save_figure
        >>> fig = plot_samples(torch.randn(500, 2))
        >>> save_figure(fig, "runs/demo/samples.png")  # doctest: +SKIP
        PosixPath('runs/demo/samples.png')
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib.figure.Figure, got {type(fig).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"path must end in .png, .pdf or .svg (the suffix chooses the format), "
            f"got {str(path)!r}"
        )
    check_positive(dpi, "dpi")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden, unique name in the target folder: os.replace is only atomic within one file
    # system, and a leading dot keeps globs like "*.png" from picking up a partial file.
    # open(..., "xb") rather than tempfile.mkstemp, so the file gets the usual permissions
    # (0o666 minus the umask) instead of mkstemp's owner-only 0o600.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # rc_context restores the global rcParams as it leaves.
        with open(tmp, "xb") as f, matplotlib.rc_context(_RC[fmt]):
            fig.savefig(f, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
