r"""Conditional samples measured per guidance scale: label accuracy and per-label distance.

A comparison run with ``conditional=True`` draws, for every model and every guidance scale
:math:`w`, the same number of samples of each class :math:`k` and scores them two ways:

- **label accuracy**: the fraction that one classifier, fit once on the real training split
  (:func:`flowforge.metrics.fit_classifier`, the same for every model), recognises as the label
  they were drawn for; its accuracy on the real test points is the reference.
- **sample distance**: the energy distance (V-statistic) of the samples of label :math:`k` to
  the test points of label :math:`k`, averaged over the labels: how well each
  :math:`p(x \mid k)` is matched, not only the mixture. Its floor is the same distance between
  as many *training* points of label :math:`k` and the same test points.

Guidance (:math:`v_w = v(t, x, \varnothing) + w\,(v(t, x, y) - v(t, x, \varnothing))`) is for
continuous models (those with solver options); a discrete flow is measured at :math:`w = 1`
only, its plain conditional model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import data, metrics
from .._checks import check_number
from ..distributions.model import Model

GUIDANCE_SCALES = (0.0, 1.0, 2.0, 4.0)
"""The default guidance scales: the unconditional model (0), the conditional one (1), and two
guided ones, the range in which guided flow samples usually sharpen before they degrade."""

CLASSIFIER_POINTS = 20_000
"""The classifier is fit on at most this many training points (a seeded subset): the
nearest-neighbour vote of 2-D data is as accurate at 20,000 points as at 100,000, at a fifth of
the cost of classifying every sample."""


def check_scales(scales: object, name: str = "guidance") -> tuple[float, ...]:
    """``scales`` as a tuple of distinct finite floats (at least one)."""
    if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
        raise TypeError(
            f"{name} must be a sequence of guidance scales, got {scales!r}; e.g. {name}=(0, 1, 2)"
        )
    values = tuple(check_number(w, f"{name}[{i}]") for i, w in enumerate(scales))
    if not values:
        raise ValueError(f"{name} must hold at least one guidance scale, got none; e.g. (1,)")
    twice = sorted({w for w in values if values.count(w) > 1})
    if twice:
        raise ValueError(f"{name} must give each scale once, got {twice[0]:g} more than once")
    return values


def is_guided(model: Model) -> bool:
    """Whether ``model`` takes a guidance scale (a continuous model: it is a solver option)."""
    return "guidance" in model.solver_keys


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _seeded(x: Tensor, seed: int) -> Tensor:
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))]


def label_reference(dataset: data.Dataset, per_label: int, kind: str = "auto") -> dict:
    r"""What every model's conditional samples are measured against.

    Fits the classifier on (at most :data:`CLASSIFIER_POINTS` of) the training split and
    measures it on the whole test split; per label :math:`k`, fixes the test points the
    samples are compared with and the number of samples drawn,
    :math:`n_k = \min(` ``per_label``, training points of :math:`k)`, and computes the floor:
    the energy distance of :math:`n_k` training points of :math:`k` to the same test points.

    Args:
        dataset: a labelled dataset.
        per_label: samples drawn per label (and test points compared with, at most).
        kind: the classifier's kind (:func:`flowforge.metrics.fit_classifier`).

    Returns:
        ``{"classifier", "kind", "fit_points", "accuracy", "class_accuracies", "counts",
        "targets", "floor", "floor_per_label", "num_classes"}``.
    """
    if dataset.labels is None or not dataset.num_classes:
        raise ValueError(f"the dataset {dataset.name!r} has no class labels")
    k = dataset.num_classes
    train_x, train_y = _flat(dataset.train), dataset.labels["train"]
    keep = _seeded(torch.arange(train_x.shape[0]), 0)[:CLASSIFIER_POINTS]
    classifier = metrics.fit_classifier(train_x[keep], train_y[keep], kind, num_classes=k)
    test_x, test_y = _flat(dataset.test), dataset.labels["test"]
    counts, targets, floors = [], [], []
    for label in range(k):
        train_k = _seeded(train_x[train_y == label], 1)
        test_k = _seeded(test_x[test_y == label], 0)[:per_label]
        n = min(per_label, train_k.shape[0])
        if n < 2 or test_k.shape[0] < 2:
            raise ValueError(
                f"label {label} of {dataset.name!r} has {train_k.shape[0]} training and "
                f"{test_k.shape[0]} test points; at least 2 of each are needed to measure its "
                "samples"
            )
        counts.append(n)
        targets.append(test_k)
        floors.append(metrics.energy_distance(train_k[:n], test_k, unbiased=False))
    return {
        "classifier": classifier,
        "kind": classifier.kind,
        "fit_points": int(keep.shape[0]),
        "accuracy": classifier.accuracy(test_x, test_y),
        "class_accuracies": list(classifier.class_accuracies(test_x, test_y)),
        "counts": counts,
        "targets": targets,
        "floor": sum(floors) / k,
        "floor_per_label": floors,
        "num_classes": k,
    }


def guidance_rows(
    model: Model,
    reference: dict,
    scales: Sequence[float],
    solver: dict | None = None,
    seed: int = 0,
) -> tuple[list[dict], Tensor, Tensor]:
    """Label accuracy and per-label energy distance of ``model``'s samples at each scale.

    A continuous model is sampled at every scale of ``scales`` (with ``solver``, its defaults
    when empty); a discrete flow at ``w = 1`` only, without a guidance argument.

    Args:
        model: a trained model conditional on the dataset's labels (data units).
        reference: from :func:`label_reference`.
        scales: the guidance scales of a continuous model.
        solver: solver options of a continuous model's sampling.
        seed: seeds the sampling (the same noise at every scale).

    Returns:
        One row per scale (``guidance``, ``guided`` (whether the model took the scale),
        ``label_accuracy``, ``energy_distance``, its per-label values, ``n_samples``,
        ``non_finite_samples``, ``sample_seconds``, ``solver``), and the samples and labels
        at :func:`figure_scale` (for the figure).
    """
    guided = is_guided(model)
    solver = dict(solver or {}) if guided else {}
    labels = torch.repeat_interleave(
        torch.arange(reference["num_classes"]), torch.tensor(reference["counts"])
    )
    context = labels.to(model.device)
    rows, drawn = [], {}
    for w in scales if guided else (1.0,):
        options = {**solver, "guidance": float(w)} if guided else {}
        torch.manual_seed(seed)
        began = time.perf_counter()
        with torch.no_grad():
            samples = model.sample(labels.shape[0], context=context, **options).cpu()
        seconds = time.perf_counter() - began
        drawn[float(w)] = samples
        rows.append(
            _score(samples, labels, reference, float(w), seconds, solver) | {"guided": guided}
        )
    shown = drawn[figure_scale(scales) if guided else 1.0]
    return rows, shown, labels


def figure_scale(scales: Sequence[float]) -> float:
    """The scale whose samples the figure shows: the conditional model itself (w = 1), or the
    first of ``scales`` without it."""
    return 1.0 if 1.0 in scales else float(scales[0])


def _score(
    samples: Tensor, labels: Tensor, reference: dict, w: float, seconds: float, solver: dict
) -> dict:
    flat = _flat(samples).to(reference["targets"][0].dtype)
    finite = torch.isfinite(flat).all(dim=1)
    # A non-finite sample counts as misclassified: it is no member of its class.
    right = 0
    if finite.any():
        predicted = reference["classifier"].predict(flat[finite])
        right = int((predicted == labels[finite]).sum())
    distances = []
    for k, target in enumerate(reference["targets"]):
        mine = flat[finite & (labels == k)]
        distances.append(
            metrics.energy_distance(mine, target, unbiased=False)
            if mine.shape[0] >= 2
            else math.nan
        )
    return {
        "guidance": w,
        "label_accuracy": right / labels.shape[0],
        "energy_distance": sum(distances) / len(distances),
        "energy_distance_per_label": distances,
        "n_samples": int(labels.shape[0]),
        "non_finite_samples": int((~finite).sum()),
        "sample_seconds": seconds,
        "solver": solver,
    }


def label_summary(reference: dict, solver: dict) -> dict:
    """What ``results.json`` records of :func:`label_reference` (``"labels"``): the
    classifier's kind and accuracy on the real test points, the per-label floor and counts,
    and the guidance table's solver (empty: each model's default)."""
    return {
        "classifier": reference["kind"],
        "classifier_points": reference["fit_points"],
        "test_accuracy": reference["accuracy"],
        "class_accuracies": reference["class_accuracies"],
        "distance": "energy distance (V-statistic) to the test points of each label, averaged",
        "energy_floor": reference["floor"],
        "energy_floor_per_label": reference["floor_per_label"],
        "samples_per_label": reference["counts"],
        "test_points_per_label": [int(t.shape[0]) for t in reference["targets"]],
        "solver": dict(solver),
    }
