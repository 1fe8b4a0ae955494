"""Plots of samples, densities, images and training curves, drawn headless.

Every function returns a :class:`matplotlib.figure.Figure` drawn by the Agg backend and never
registered with ``matplotlib.pyplot``: nothing global changes, no window opens, and a figure
is freed when dropped. Write one with :func:`save_figure` (PNG, PDF or SVG, atomically), or
show it in a notebook by leaving it as a cell's value.

Inputs are torch tensors (any device, with or without grad) or numpy arrays: ``(N, D)`` points,
or ``(N, C, H, W)`` images with ``C`` 1 (grey) or 3 (RGB). Rows holding NaN or infinite values,
as a diverged model produces, are dropped and counted in the panel's title.

Example:
    >>> import flowforge as ff
    >>> from flowforge import viz
    >>> data = ff.data.checkerboard(10_000)
    >>> fig = viz.plot_density(ff.data.checkerboard_log_prob, data=data)
    >>> viz.save_figure(fig, "density.png")  # doctest: +SKIP
"""

from .comparison import plot_density_grid, plot_model_curves, plot_pairs
from .curves import plot_training_curves
from .density import log_density_grid, plot_density
from .figure import DEFAULT_DPI, save_figure
from .images import plot_images
from .labels import plot_samples_by_label
from .samples import plot_comparison, plot_samples
from .styles import Style, class_colors, style_map

__all__ = [
    "DEFAULT_DPI",
    "Style",
    "class_colors",
    "log_density_grid",
    "plot_comparison",
    "plot_density",
    "plot_density_grid",
    "plot_images",
    "plot_model_curves",
    "plot_pairs",
    "plot_samples",
    "plot_samples_by_label",
    "plot_training_curves",
    "save_figure",
    "style_map",
]
