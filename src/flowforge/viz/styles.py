"""One fixed style per model (colour, line style, marker), the same in every figure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_int

COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""matplotlib's ten ``tab10`` colours: distinct from each other, and the usual ones."""

LINESTYLES = ("-", "--", ":", "-.")
"""Line styles, changed after every ten models: a colour repeats only with another line."""

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
"""Markers, a second cue beside the colour (for grey print and colour-blind readers)."""

DISTINCT_STYLES = len(COLORS) * len(LINESTYLES)
"""Models up to this many (40) get distinct (colour, line style) pairs; beyond, styles repeat."""


@dataclass(frozen=True)
class Style:
    """How one model is drawn: its colour, line style and marker.

    Attributes:
        color: a matplotlib colour (hex).
        linestyle: a matplotlib line style (``"-"``, ``"--"``, ...).
        marker: a matplotlib marker (``"o"``, ``"s"``, ...).
    """

    color: str
    linestyle: str
    marker: str

    def line(self) -> dict[str, Any]:
        """Keyword arguments of ``Axes.plot`` for this style (``Any``: matplotlib types each
        keyword more narrowly than a ``str``)."""
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


def style_map(names: Iterable[str], order: Sequence[str] = ()) -> dict[str, Style]:
    r"""A style per name: the :math:`i`-th name of ``order`` (then of the others) gets colour
    :math:`i \bmod 10`, line style :math:`\lfloor i / 10 \rfloor \bmod 4` and marker
    :math:`(i + \lfloor i / 10 \rfloor) \bmod 10`.

    Pass the full list of possible names as ``order`` (``flowforge compare`` passes the model
    registry's order) and a model keeps its style in every figure and every comparison, whichever
    subset of models is drawn. Names not in ``order`` follow it, in their own order.

    Args:
        names: the names to style (e.g. the models of one comparison).
        order: the order that fixes each name's index; default: ``names`` themselves.

    Returns:
        ``{name: Style}`` for every name of ``names``, in their order.

    Example:
        >>> from flowforge.viz import style_map
        >>> styles = style_map(["fm", "nsf"], order=["nsf", "maf", "fm"])
        >>> styles["nsf"].color, styles["fm"].color
        ('#1f77b4', '#2ca02c')
    """
    names = list(names)
    if not all(isinstance(n, str) for n in (*names, *order)):
        raise TypeError(f"names and order must be strings, got {names!r} and {list(order)!r}")
    index = {name: i for i, name in enumerate(dict.fromkeys(order))}
    for name in names:
        index.setdefault(name, len(index))
    out = {}
    for name in names:
        i = index[name]
        out[name] = Style(
            color=COLORS[i % len(COLORS)],
            linestyle=LINESTYLES[(i // len(COLORS)) % len(LINESTYLES)],
            marker=MARKERS[(i + i // len(COLORS)) % len(MARKERS)],
        )
    return out


def class_colors(num_classes: int) -> list[str]:
    """One colour per class ``0..K-1``, the same in every panel and figure of a conditional model.

    Up to 10 classes: the ten :data:`COLORS` (``tab10``); up to 20: matplotlib's ``tab20``
    (pairs of a dark and a light shade); beyond, evenly spaced colours of ``turbo``, which stay
    apart in hue though neighbours grow alike.

    Example:
        >>> from flowforge.viz.styles import class_colors
        >>> class_colors(3)
        ['#1f77b4', '#ff7f0e', '#2ca02c']
    """
    import matplotlib
    from matplotlib.colors import to_hex

    k = check_int(num_classes, "num_classes", 1)
    if k <= len(COLORS):
        return list(COLORS[:k])
    if k <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [to_hex(cmap(i)) for i in range(k)]
    cmap = matplotlib.colormaps["turbo"]
    return [to_hex(cmap(x)) for x in np.linspace(0.05, 0.95, k)]
