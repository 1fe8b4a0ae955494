"""Training curves from a run's metrics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeGuard

from matplotlib.figure import Figure

from .figure import new_figure

_MARKED = 100  # series this short (e.g. a validation NLL every 1000 steps) get point markers


def plot_training_curves(
    records: Iterable[Mapping[str, object]] | str | os.PathLike[str],
    *,
    keys: Sequence[str] | str = ("loss", "val_nll"),
    title: str | None = None,
) -> Figure:
    """Each metric in ``keys`` against the training step, one panel per metric.

    A record contributes to a panel when it has a numeric ``"step"`` and a numeric value for
    that key; other records are skipped, so training and validation records can be mixed in
    one file. A step logged twice (a run resumed from an earlier checkpoint) keeps its last
    value. NaN or infinite values (a diverged run) are left out and counted in the panel's
    title. Keys that no record has are skipped.

    Args:
        records: the metric records, e.g. ``{"step": 100, "loss": 3.9, "lr": 1e-3}``, or the
            path of a ``metrics.jsonl`` file of one JSON object a line. An unparsable last
            line without a newline is ignored: a run still writing may leave one.
        keys: the metrics to plot, in panel order; a single name is one panel.
        title: figure title.

    Returns:
        The figure; write it with :func:`save_figure`.

    Raises:
        TypeError: ``records`` is neither a path nor an iterable of mappings, or ``keys`` is
            not a sequence of str.
        ValueError: no record has a step and a value for any of ``keys`` (the message lists
            the keys the records do have), or a line of the file is not a JSON object.
        FileNotFoundError: the path does not exist.

    Example:
        >>> from flowforge.viz import plot_training_curves
        >>> records = [{"step": s, "loss": 4 - s / 1000} for s in range(0, 1000, 10)]
        >>> records += [{"step": s, "val_nll": 4.1 - s / 1000} for s in range(0, 1000, 250)]
        >>> fig = plot_training_curves(records)
    """
    if isinstance(records, (str, os.PathLike)):
        source = f" in {os.fspath(records)!r}"
        records = _read_jsonl(Path(records))
    else:
        source = ""
        if isinstance(records, Mapping) or not isinstance(records, Iterable):
            raise TypeError(
                "records must be a list of dicts or the path of a metrics.jsonl file, "
                f"got {type(records).__name__}"
            )
        records = list(records)
    if isinstance(keys, str):
        keys = (keys,)
    if not isinstance(keys, Sequence) or not keys or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"keys must be a non-empty sequence of metric names, got {keys!r}")

    series: dict[str, dict[float, float]] = {key: {} for key in keys}
    present: set[str] = set()
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise TypeError(f"records[{i}] must be a dict, got {type(record).__name__}")
        present.update(str(k) for k in record)
        step = record.get("step")
        if not _is_number(step) or not math.isfinite(step):
            continue
        for key in keys:
            value = record.get(key)
            if _is_number(value):
                series[key][float(step)] = float(value)  # a repeated step keeps its last value
    found = [key for key in keys if series[key]]
    if not found:
        available = sorted(k for k in present if k != "step")
        raise ValueError(
            f"nothing to plot: no record{source} has a numeric 'step' and a value for any of "
            f"keys {tuple(keys)}; the records have keys {available}"
        )

    fig = new_figure(6.4, 0.4 + 2.3 * len(found))
    axes = fig.subplots(len(found), 1, sharex=True, squeeze=False)[:, 0]
    for ax, key in zip(axes, found, strict=True):
        steps = sorted(series[key])
        values = [series[key][s] for s in steps]
        kept = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
        style = {"marker": "o", "markersize": 3} if len(kept) <= _MARKED else {}
        if kept:
            ax.plot(*zip(*kept, strict=True), linewidth=1.2, **style)
        dropped = len(values) - len(kept)
        label = key if not dropped else f"{key} ({dropped} of {len(values)} values NaN/inf)"
        ax.set_ylabel(key)
        ax.set_title(label, loc="left", fontsize="medium")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:
        fig.suptitle(title)
    return fig


def _is_number(value: object) -> TypeGuard[float]:
    # bool is an int subclass, but a flag is not a measurement.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_jsonl(path: Path) -> list[Mapping[str, object]]:
    """The JSON objects of ``path``, one a line; blank lines skipped."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records: list[Mapping[str, object]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: a line still being written
                continue
            raise ValueError(f"{path}:{number} is not valid JSON: {error.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number} must be a JSON object, got {type(record).__name__}")
        records.append(record)
    return records
