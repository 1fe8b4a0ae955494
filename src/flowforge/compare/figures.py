"""The figures of a comparison (samples, densities, curves) and their captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import data, viz
from .evaluation import Evaluation


def dataset_columns(dataset: data.Dataset) -> tuple[str, ...] | None:
    """The data's column names (a CSV's header) when it has them, for axis labels."""
    return getattr(dataset, "columns", None)


def samples_figure(
    dataset: data.Dataset, samples: dict[str, Tensor], colors: dict[str, str], out: Path
) -> tuple[str, str]:
    """Write ``out/samples.png``: each model's samples beside the test data; return its file
    name and caption."""
    columns = dataset_columns(dataset)
    test = dataset.test
    if dataset.image_shape is None and len(dataset.event_shape) == 1 and dataset.dim > 2:
        fig = viz.plot_pairs(samples, test, columns=columns, colors=colors)
        k = min(dataset.dim, viz.comparison.PAIR_DIMS)
        which = f"the first {k} of the {dataset.dim}" if dataset.dim > k else f"the {k}"
        caption = (
            f"Samples against the data, pair by pair: each row is one model, each column one "
            f"pair of {which} coordinates; the test data in grey, "
            "the model's samples on top in its colour, on the same axes down each column. "
            "Where colour shows without grey beneath, the model puts mass the data lacks; grey "
            "left uncovered is data the model misses."
        )
    else:
        fig = viz.plot_comparison(
            samples, test, image_shape=dataset.image_shape, columns=columns, colors=colors
        )
        if dataset.image_shape is not None:
            caption = "The first test images, then the first 16 samples of each model."
        elif dataset.dim == 2:
            caption = (
                "2-D histograms of the test data (first panel) and of each model's samples, "
                "on the same axes and colour scale (the data's): matching colours mean "
                "matching density; a model that puts more mass anywhere than the data saturates "
                "there (yellow)."
            )
        else:
            caption = "Histograms of the test data and of each model's samples."
    viz.save_figure(fig, out / "samples.png")
    return "samples.png", caption


def density_caption(dataset: data.Dataset, evaluation: Evaluation) -> str:
    """The caption of ``densities.png``."""
    first = (
        "the exact density of the data"
        if dataset.log_prob is not None
        else "a histogram of the test data"
    )
    r = evaluation.density_resolution
    return (
        f"Each model's learned density p(x) on a {r} x {r} grid, beside {first} (first panel), "
        "on one colour scale: 0 to the first panel's peak, so equal colours are equal "
        "densities, and a model denser anywhere than the data saturates there (yellow); red "
        "marks points where a model's log-density is NaN or +inf."
    )


def curves_caption(losses: dict[str, str], timed: bool) -> str:
    """The caption of ``curves.png``: against seconds (``timed``) or steps."""
    axis = "training seconds" if timed else "optimiser steps"
    separate = (
        " Training losses of different objectives are in separate panels: a flow's NLL and a "
        "flow-matching regression loss are different quantities."
        if len(set(losses.values())) > 1
        else ""
    )
    return (
        f"Training curves against {axis}, one colour, line style and marker per model (the "
        "same as in the other figures). The validation NLL (data units, nats; lower is "
        f"better) compares every model.{separate} Each y-axis ends at the highest of the "
        "models' median values, so the large values of the first steps do not flatten the "
        "rest; the curves leave the top of a panel there."
    )


def bounds(x: torch.Tensor) -> tuple[float, float, float, float]:
    """A window around the data, padded by 10%, for density heatmaps."""
    lo, hi = x.min(dim=0).values, x.max(dim=0).values
    pad = 0.1 * (hi - lo)
    (x0, y0), (x1, y1) = (lo - pad).tolist(), (hi + pad).tolist()
    return x0, x1, y0, y1


def densities_figure(
    dataset: data.Dataset,
    densities: dict[str, np.ndarray],
    box: tuple[float, float, float, float],
    evaluation: Evaluation,
    colors: dict[str, str],
    out: Path,
) -> tuple[str, str]:
    """Write ``out/densities.png`` (2-D data): every model's density grid on one scale beside
    the true density (or the data's histogram); return its file name and caption."""
    viz.save_figure(
        viz.plot_density_grid(
            densities,
            bounds=box,
            resolution=evaluation.density_resolution,
            reference=dataset.log_prob,
            data=dataset.test if dataset.log_prob is None else None,
            colors=colors,
            columns=dataset_columns(dataset),
        ),
        out / "densities.png",
    )
    return "densities.png", density_caption(dataset, evaluation)


def curves_figure(
    records: dict[str, list[dict]],
    styles: dict[str, viz.Style],
    losses: dict[str, str],
    timed: bool,
    out: Path,
) -> tuple[str, str]:
    """Write ``out/curves.png``: the training curves, against seconds for a time budget
    (``timed``, when every run logged its times), else steps; return its file name and
    caption."""
    fig = viz.plot_model_curves(
        records, styles=styles, loss_labels=losses, x="auto" if timed else "step"
    )
    viz.save_figure(fig, out / "curves.png")
    in_seconds = fig.axes[0].get_xlabel() == "training time (s)"
    return "curves.png", curves_caption(losses, in_seconds)


def image_shape(dataset: data.Dataset) -> tuple[int, ...] | None:
    """``(C, H, W)`` of image data (flat rows with ``image_shape``, or image events), else
    ``None``."""
    if dataset.image_shape is not None:
        return tuple(dataset.image_shape)
    return tuple(dataset.event_shape) if len(dataset.event_shape) == 3 else None


def samples_by_label_figure(
    dataset: data.Dataset,
    by_label: dict[str, tuple[Tensor, Tensor]],
    reference: dict,
    out: Path,
    scale: float = 1.0,
) -> tuple[str, str]:
    """Write ``out/samples_by_label.png`` (a conditional comparison): each model's samples of
    every label at guidance ``scale`` (discrete flows: 1), beside test points of each; return
    its file name and caption."""
    targets = reference["targets"]
    data_labels = torch.cat([torch.full((t.shape[0],), k) for k, t in enumerate(targets)])
    fig = viz.plot_samples_by_label(
        {name: x for name, (x, _) in by_label.items()},
        {name: y for name, (_, y) in by_label.items()},
        num_classes=dataset.num_classes,
        label_names=dataset.label_names,
        data=torch.cat(targets),
        data_labels=data_labels,
        image_shape=image_shape(dataset),
        columns=dataset_columns(dataset),
        # No model colours on the frames: here colours are classes.
    )
    viz.save_figure(fig, out / "samples_by_label.png")
    at = (
        "guidance scale 1 (the conditional model itself)"
        if scale == 1
        else f"guidance scale {scale:g} (discrete flows: 1, their conditional model)"
    )
    if image_shape(dataset) is not None:
        caption = (
            f"Samples by label at {at}: the test images first, then one grid per model, "
            f"one row per class, its first {viz.labels.PER_ROW} samples drawn for that class."
        )
    else:
        caption = (
            f"Samples by label at {at}: test points first, then each model's samples, "
            "coloured by the label they were drawn for (one colour per class in every panel, "
            "the key below; here colours are classes, not models), as many of each label as "
            "the table measures."
        )
    return "samples_by_label.png", caption
