"""Evaluation of a trained model: test NLL, samples and their distances to the data."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import data, metrics
from .._checks import check_bool, check_int
from ..diffusion import Diffusion
from ..distributions.model import Model
from ..dynamics import total_nfe
from ..matching.model import FlowMatching
from ..train import load_dataset
from .guidance import GUIDANCE_SCALES, check_scales

_EVAL_BATCH = 4096  # rows per log_prob call: bounds memory, and the result does not depend on it


@dataclass(frozen=True)
class Evaluation:
    """What is measured of each trained model, and on how much data.

    Attributes:
        test_points: the test NLL is taken over the first this many points of the test split
            (the same points for every model; the splits are shuffled, so a random subset), or
            ``None`` for the whole split.
        samples: samples drawn per model, for the distances, the figures and the sampling time.
        distance_points: the distances compare at most this many samples with as many test
            points (and the data-to-data floor uses the same sizes).
        exact_w2: also compute the exact Wasserstein-2 distance (the costliest by far).
        density_resolution: grid points per axis of the density images of 2-D data.
        guidance: a conditional comparison: the guidance scales a continuous model's samples
            are measured at (a discrete flow's at 1 only; ``compare/guidance.py``).
        label_samples: a conditional comparison: samples drawn per label and scale (fewer
            where a label has fewer training points, so that its floor is of the same size).
        guidance_method: the ODE solver of the guidance table's sampling, or ``None`` for each
            model's default (adaptive dopri5).
        guidance_steps: its fixed number of steps (with a fixed-step ``guidance_method``).
    """

    test_points: int | None = None
    samples: int = 5000
    distance_points: int = 2000
    exact_w2: bool = True
    density_resolution: int = 200
    guidance: tuple[float, ...] = GUIDANCE_SCALES
    label_samples: int = 500
    guidance_method: str | None = None
    guidance_steps: int | None = None

    def __post_init__(self) -> None:
        # Two points at least: the distances are means over pairs, the NLL has a spread.
        for name in ("samples", "distance_points", "density_resolution", "label_samples"):
            check_int(getattr(self, name), name, 2)
        if self.test_points is not None:
            check_int(self.test_points, "test_points", 2, "an int >= 2 or None")
        check_bool(self.exact_w2, "exact_w2")
        object.__setattr__(self, "guidance", check_scales(self.guidance))
        if self.guidance_method is not None and not isinstance(self.guidance_method, str):
            raise TypeError(
                f"guidance_method must be a solver name or None, got {self.guidance_method!r}"
            )
        if self.guidance_steps is not None:
            check_int(self.guidance_steps, "guidance_steps", 1, "an int >= 1 or None")

    @property
    def guidance_solver(self) -> dict[str, object]:
        """The solver options of the guidance table's sampling (empty: each model's own)."""
        out: dict[str, object] = {}
        if self.guidance_method is not None:
            out["method"] = self.guidance_method
        if self.guidance_steps is not None:
            out["steps"] = self.guidance_steps
        return out


def _dataset(config: dict, source: str | None) -> data.Dataset:
    return load_dataset(config) if source is None else data.load(source)


def only_label(dataset: data.Dataset, label: int) -> data.Dataset:
    """The points of ``dataset`` of class ``label`` (in every split), as a dataset of their own:
    what a conditional model's ``p(x | label)`` is evaluated against. Its entropy and exact
    density are unknown (they are the whole mixture's), so they are left out."""
    if dataset.labels is None:
        raise ValueError(f"the dataset {dataset.name!r} has no class labels")
    splits = {}
    for split in ("train", "val", "test"):
        keep = dataset.labels[split] == label
        if int(keep.sum()) < 2:
            raise ValueError(
                f"the {split} split of {dataset.name!r} has {int(keep.sum())} points of label "
                f"{label}; at least 2 are needed to evaluate it"
            )
        splits[split] = keep
    return data.Dataset(
        name=f"{dataset.name} (label {label})",
        **{k: getattr(dataset, k)[keep] for k, keep in splits.items()},
        event_shape=dataset.event_shape,
        labels={k: dataset.labels[k][keep] for k, keep in splits.items()},
        num_classes=dataset.num_classes,
        label_names=dataset.label_names,
        levels=dataset.levels,
        description=f"label {label} of {dataset.name}",
        image_shape=dataset.image_shape,
        columns=dataset.columns,
    )


def _sample_labels(dataset: data.Dataset, n: int, seed: int) -> Tensor:
    """``n`` labels drawn from the training split's labels: a conditional model's samples then
    follow the data's own mixture of classes (and a one-class dataset gives that class)."""
    if dataset.labels is None:
        raise ValueError(
            f"the model is conditional on class labels, but the dataset {dataset.name!r} has "
            "none to evaluate it with"
        )
    train = dataset.labels["train"]
    g = torch.Generator().manual_seed(seed)
    return train[torch.randint(train.shape[0], (n,), generator=g)]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def distance_reference(dataset: data.Dataset, split: str, evaluation: Evaluation) -> dict:
    """What every model's distances are measured against: the held-out points (flat), the MMD
    bandwidths fixed from them, and the data-to-data floor.

    The floor is the same distances between two independent draws of the data of the sizes a
    model is compared at: as many training points as a model's samples (the training split is
    a draw of the same distribution, independent of ``split``) against the same ``split``
    points. A model whose distance is near the floor is as close to the data as the data
    itself, at this sample size.
    """
    held = _flat(getattr(dataset, split))
    train = _flat(dataset.train)
    # The samples side of every distance gets this many rows, the floor's training draw too, so
    # the V-statistics' size-dependent bias is the same for the floor and for each model.
    size = min(evaluation.distance_points, train.shape[0], evaluation.samples)
    # One seeded subset of the held-out points, the same for every model and for the floor.
    target = _shuffled(held, seed=0)[:size]
    # The median heuristic on the data alone: one set of bandwidths for every model.
    median = metrics.median_distance(target, target)
    bandwidths = [median * c for c in metrics.BANDWIDTH_MULTIPLIERS] if median > 0 else None
    reference = {"target": target, "size": size, "bandwidths": bandwidths}
    reference["floor"] = _distances(_shuffled(train, seed=1)[:size], reference, evaluation)
    return reference


def _shuffled(x: Tensor, seed: int) -> Tensor:
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))]


def _distances(samples: Tensor, reference: dict, evaluation: Evaluation) -> dict[str, float]:
    """The biased (V-statistic, never negative) distances of ``samples`` to the reference,
    with the standard errors of MMD² and the energy distance."""
    return metrics.sample_distances(
        samples,
        reference["target"],
        max_w2=reference["size"],
        unbiased=False,
        bandwidths=reference["bandwidths"],
        exact_w2=evaluation.exact_w2,
        stderr=True,
    )


def evaluate_with_samples(
    model: Model,
    dataset: data.Dataset,
    evaluation: Evaluation,
    reference: dict,
    split: str = "test",
    seed: int = 0,
    solver: dict | None = None,
) -> tuple[dict, Tensor]:
    """The measurements of one model, and its samples (for the figures)."""
    solver = solver or {}
    x = getattr(dataset, split)
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        raise ValueError(
            f"dataset {dataset.name} has samples of shape {tuple(x.shape[1:])}, but the model "
            f"was trained on shape {tuple(model.event_shape)}"
        )
    if evaluation.test_points is not None:
        x = x[: evaluation.test_points]
    dim = math.prod(model.event_shape)
    n_samples = evaluation.samples
    # A conditional model: log p(x | y) under each point's own label, and samples under labels
    # drawn like the data's.
    context, sample_context = None, None
    if model.num_classes:
        sample_context = _sample_labels(dataset, n_samples, seed).to(model.device)
        context = dataset.labels[split][: x.shape[0]].to(model.device)  # type: ignore[index]
    nfe = [total_nfe(model)]
    start_t = time.perf_counter()
    result = metrics.nll(
        model, x.to(model.device), context=context, batch_size=_EVAL_BATCH, **solver
    )
    log_prob_s = time.perf_counter() - start_t
    nfe.append(total_nfe(model))
    torch.manual_seed(seed)
    start_t = time.perf_counter()
    with torch.no_grad():
        samples = model.sample(n_samples, context=sample_context, **solver).cpu()
    sample_s = time.perf_counter() - start_t
    nfe.append(total_nfe(model))
    finite = torch.isfinite(samples.reshape(n_samples, -1)).all(dim=1)
    start_t = time.perf_counter()
    distances = (
        _distances(_flat(samples[finite]), reference, evaluation) if finite.sum() >= 2 else {}
    )
    distance_s = time.perf_counter() - start_t
    straight = _straightness(model, sample_context, seed)
    row = {
        "data": dataset.name,
        "split": split,
        "n": result.n,
        "nll_nats": result.mean,
        "conditional": bool(model.num_classes),
        "nll_stderr": result.stderr,
        "bits_per_dim": metrics.bits_per_dim(result.mean, dim, levels=dataset.levels),
        # What the bits/dim are exact for: the data's discrete levels and their dequantisation.
        "levels": dataset.levels,
        "dequantization": dataset.dequantization,
        # H(x) floors -log p(x), not the conditional -log p(x | y), whose floor H(x | y) is lower.
        "entropy_nats": None if model.num_classes else dataset.entropy,
        "log_prob_seconds": log_prob_s,
        "sample_seconds": sample_s,
        "distance_seconds": distance_s,
        "n_samples": n_samples,
        "non_finite_samples": int((~finite).sum()),
        "solver": solver,
        "distances": distances,
        "distance_floor": reference["floor"],
        "distance_points": reference["size"],
        # Continuous models: function evaluations per solve (one solve per batch of rows).
        "nfe": _nfe_row(nfe, result.n),
        "straightness": straight,
    }
    return row, samples


# Straightness is measured on this many trajectories of this many RK4 steps: its Monte-Carlo
# error is then a few per cent, at the cost of one 1,000-row solve of 64 field evaluations.
STRAIGHTNESS_POINTS = 1000
STRAIGHTNESS_STEPS = 16


def _straightness(model: Model, sample_context: Tensor | None, seed: int) -> float | None:
    """Path straightness (:func:`flowforge.metrics.straightness`) of a flow-matching or
    diffusion model's own (probability-flow) trajectories from fresh noise; ``None`` for the
    other families."""
    inner = getattr(model, "inner", model)  # through Standardize
    if not isinstance(inner, (FlowMatching, Diffusion)):
        return None
    g = torch.Generator().manual_seed(seed + 1)
    shape = (STRAIGHTNESS_POINTS, *model.event_shape)
    x0 = torch.randn(shape, generator=g, dtype=model.dtype).to(model.device)
    context = None if sample_context is None else sample_context[:STRAIGHTNESS_POINTS]
    if context is not None and context.shape[0] < STRAIGHTNESS_POINTS:
        x0 = x0[: context.shape[0]]
    with torch.no_grad():
        return metrics.straightness(model, x0, context, steps=STRAIGHTNESS_STEPS)


def _nfe_row(counts: list[int | None], rows: int) -> dict[str, float] | None:
    """Function evaluations per log-density solve (one solve per batch of ``rows``) and per
    sampling solve, from the model's counts before, between and after them; ``None`` for a
    model that counts none (a discrete flow)."""
    start, log_prob, sample = counts
    if start is None or log_prob is None or sample is None:
        return None
    return {
        "log_prob": (log_prob - start) / math.ceil(rows / _EVAL_BATCH),
        "sample": sample - log_prob,
    }


def evaluate_model(
    model: Model,
    config: dict,
    source: str | None = None,
    split: str = "test",
    n_samples: int = 5000,
    seed: int = 0,
    solver: dict | None = None,
    label: int | None = None,
) -> dict:
    r"""Test NLL (nats and bits/dim), the entropy floor when known, sample distances and timings.

    A conditional model is scored by :math:`-\log p(x \mid y)` under each test point's own
    label, and its samples drawn under labels in the data's proportions; with ``label``, on the
    test points of that class only, against samples of that class.

    The distances (MMD², energy distance, sliced W2, exact W2; see
    :func:`flowforge.metrics.sample_distances`) are the biased V-statistics, never negative,
    with MMD bandwidths fixed from the data; ``distance_floor`` holds the same distances between
    two draws of the data of the same sizes, the value a perfect model would get.

    Args:
        model: a trained model (in the data's own units).
        config: its run config (names the training data).
        source: another dataset to evaluate on (default: the run's own).
        split: ``"test"`` or ``"val"``.
        n_samples: samples drawn for the distances and the sampling time.
        seed: seed of the sampling.
        solver: solver options of a continuous model (``method``, ``steps``, ...), for both
            the log-density and sampling; its accurate defaults when not given.
        label: a conditional model: evaluate the class ``label`` alone.
    """
    dataset = _dataset(config, source)
    if label is not None:
        dataset = only_label(dataset, label)
    evaluation = Evaluation(samples=n_samples)
    reference = distance_reference(dataset, split, evaluation)
    row, _ = evaluate_with_samples(model, dataset, evaluation, reference, split, seed, solver)
    extra = {"label": label} if label is not None else {}
    return {"model": config["model"]["name"], **row, **extra, "weights": config.get("loaded")}
