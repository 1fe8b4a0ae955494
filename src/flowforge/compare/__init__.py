"""Compare models side by side: train each alike on one dataset, evaluate alike, write a report.

This is what ``flowforge compare`` runs; from Python it gives the same runs, numbers and files,
and returns them:

Example:
    >>> import flowforge as ff
    >>> result = ff.compare.compare(
    ...     models=["nsf", "maf", "fm"], data="checkerboard", budget="quick", out="reports/cb"
    ... )  # doctest: +SKIP
    >>> result.ranking  # doctest: +SKIP
    ['nsf', 'maf', 'fm']
    >>> result.report  # doctest: +SKIP
    PosixPath('reports/cb/report.md')

``result.ranking`` names the models by test NLL, best first, as the report ranks them;
``result.ranked()`` gives their rows of ``results.json``.

:func:`compare` builds a :class:`Comparison` (each model's training settings from its recipe's
defaults, the budget preset and ``train=``; see :func:`train_configs`) and runs it with
:func:`run`; build a :class:`Comparison` yourself to give each model its own
:class:`~flowforge.train.TrainConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import data as _data
from .. import models as _models
from .._checks import check_int
from .budgets import BUDGETS, Budget, get_budget, train_configs
from .evaluation import Evaluation, evaluate_model
from .guidance import GUIDANCE_SCALES, check_scales
from .markdown import best_marks, ranked
from .report import model_styles, run
from .spec import Comparison, ComparisonResult

__all__ = [
    "BUDGETS",
    "GUIDANCE_SCALES",
    "Budget",
    "Comparison",
    "ComparisonResult",
    "Evaluation",
    "best_marks",
    "compare",
    "evaluate_model",
    "model_styles",
    "plan",
    "ranked",
    "run",
    "train_configs",
]


def plan(
    models: Sequence[str] | None = None,
    data: str = "checkerboard",
    *,
    budget: str | Budget = "quick",
    train: Mapping[str, object] | None = None,
    data_options: Mapping[str, object] | None = None,
    standardize: bool = True,
    samples: int | None = None,
    evaluation: Evaluation | None = None,
    conditional: bool = False,
    guidance: Sequence[float] | None = None,
) -> Comparison:
    """The :class:`Comparison` that :func:`compare` runs, checked, before anything trains.

    Takes the arguments of :func:`compare` but ``out``.
    """
    names: Sequence[str]
    if models is None:
        # Every registered model, or on image data every one that takes images.
        options: dict[str, Any] = dict(data_options or {})
        event = _data.load(data, **options).event_shape
        names = _models.available() if len(event) == 1 else _models.image_models()
    else:
        names = models
    if isinstance(names, str):
        raise TypeError(
            f"models must be a list of model names, got the string {names!r}; "
            f"e.g. models={names.split(',')!r}"
        )
    names = list(names)
    preset = get_budget(budget)
    configs = train_configs(names, preset, train)
    evaluation = preset.evaluation if evaluation is None else evaluation
    if samples is not None:
        evaluation = replace(evaluation, samples=check_int(samples, "samples", 2))
    if guidance is not None:
        if not conditional:
            raise ValueError(
                "guidance scales measure a conditional comparison; pass conditional=True "
                "(--conditional) with guidance= (--guidance-scales)"
            )
        evaluation = replace(evaluation, guidance=check_scales(guidance))
    return Comparison(
        models=tuple(names),
        data=data,
        train=configs,
        data_options=dict(data_options or {}),
        standardize=standardize,
        evaluation=evaluation,
        budget=preset.name,
        conditional=conditional,
    )


def compare(
    models: Sequence[str] | None = None,
    data: str = "checkerboard",
    *,
    out: str | Path,
    budget: str | Budget = "quick",
    train: Mapping[str, object] | None = None,
    data_options: Mapping[str, object] | None = None,
    standardize: bool = True,
    samples: int | None = None,
    evaluation: Evaluation | None = None,
    conditional: bool = False,
    guidance: Sequence[float] | None = None,
) -> ComparisonResult:
    """Train ``models`` on ``data`` within the same budget, evaluate them alike, write the report.

    The same as ``flowforge compare``: ``budget="quick"`` trains each model for 10 s and
    evaluates it on 5,000 test points, ``"thorough"`` for 60 s with the full evaluation
    (:data:`BUDGETS`). ``train={"time_limit": 30}`` sets the seconds, ``train={"steps": 500}``
    alone gives equal steps instead; any other :class:`~flowforge.train.TrainConfig` field in
    ``train`` applies to every model, over its recipe's training defaults. Writes
    ``report.md``, ``results.json``, the figures and ``runs/NAME`` under ``out`` (see
    :func:`run`).

    Args:
        models: registered model names, in the report's order (default: every registered one;
            on image data, every one that takes images, :func:`~flowforge.models.image_models`).
        data: a built-in dataset name or a ``.npy``/``.npz``/``.csv`` file.
        out: the report directory to create.
        budget: a preset's name (``"quick"``, ``"thorough"``) or a :class:`Budget`.
        train: training settings for every model (``--steps``, ``--lr``, ... of the CLI, and
            its ``[train]`` table), e.g. ``{"batch_size": 128, "progress": False}``.
        data_options: keyword options of :func:`flowforge.data.load`.
        standardize: train on standardised data.
        samples: samples per model for the distances and figures (default: the evaluation's).
        evaluation: what is measured (default: the budget preset's).
        conditional: train every model conditionally on the dataset's class labels (each
            scored by log p(x | its label); docs/conditioning.md), and add the figure of
            samples by label and the table of label accuracy and per-label energy distance
            per guidance scale (``compare/guidance.py``).
        guidance: the guidance scales of that table for continuous models (default
            ``(0, 1, 2, 4)``, :data:`GUIDANCE_SCALES`); discrete flows are measured at 1 only.

    Returns:
        The paths written and the measurements; ``result.ranking`` lists the models by test
        NLL, ``result.ranked()`` their rows.

    Raises:
        ValueError: an unknown model, preset or training option, or a bad value.
        FileExistsError: ``out`` already holds a run of one of the models.
    """
    comparison = plan(
        models,
        data,
        budget=budget,
        train=train,
        data_options=data_options,
        standardize=standardize,
        samples=samples,
        evaluation=evaluation,
        conditional=conditional,
        guidance=guidance,
    )
    return run(comparison, out)
