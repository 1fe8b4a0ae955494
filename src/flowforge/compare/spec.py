"""What a comparison trains (:class:`Comparison`) and returns (:class:`ComparisonResult`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from .._checks import check_bool
from ..train import TrainConfig
from .evaluation import Evaluation
from .markdown import ranked


@dataclass(frozen=True)
class Comparison:
    """Several registered models trained alike on one dataset, then evaluated alike.

    Every option of a comparison is a field here, and :func:`flowforge.compare.run` hands the
    per-model ones to each model's :class:`~flowforge.train.RunSpec` (see ``run_spec`` in
    ``compare/report.py``): a new option is a field, a keyword of
    :func:`flowforge.compare.compare`, and one line there.

    Attributes:
        models: registered model names, in the order they train and appear in the report.
        data: a built-in dataset name or a ``.npy``/``.npz``/``.csv`` file.
        train: the training settings: one :class:`~flowforge.train.TrainConfig` for every
            model, or a mapping with one per name (stored as the mapping).
        data_options: keyword options of :func:`flowforge.data.load`.
        standardize: train on standardised data (log-densities stay in the data's units).
        evaluation: what is measured of each model.
        budget: the preset's name, for the report (``"quick"``, ``"thorough"``), if any.
        conditional: every model is conditioned on the dataset's class labels.
    """

    models: tuple[str, ...]
    data: str
    train: TrainConfig | Mapping[str, TrainConfig]
    data_options: Mapping[str, Any] = field(default_factory=dict)
    standardize: bool = True
    evaluation: Evaluation = field(default_factory=Evaluation)
    budget: str | None = None
    conditional: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.models, str) or not all(isinstance(n, str) for n in self.models):
            raise TypeError(
                f"models must be a list of model names, got {self.models!r}; "
                "e.g. models=['nsf', 'maf']"
            )
        names = tuple(self.models)
        if not names:
            raise ValueError("models must name at least one model, got none")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"models must name each model once, got {', '.join(twice)} more than once"
            )
        if isinstance(self.train, TrainConfig):
            configs = dict.fromkeys(names, self.train)
        else:
            missing = [n for n in names if n not in self.train]
            if missing:
                raise ValueError(f"no training config for {', '.join(missing)}")
            configs = {n: self.train[n] for n in names}
        wrong = [n for n, c in configs.items() if not isinstance(c, TrainConfig)]
        if wrong:
            raise TypeError(
                f"train must be a TrainConfig or one per model, got "
                f"{type(configs[wrong[0]]).__name__} for {', '.join(wrong)}"
            )
        if not isinstance(self.evaluation, Evaluation):
            raise TypeError(
                f"evaluation must be an Evaluation, got {type(self.evaluation).__name__}"
            )
        check_bool(self.standardize, "standardize")
        check_bool(self.conditional, "conditional")
        object.__setattr__(self, "models", names)
        object.__setattr__(self, "train", MappingProxyType(configs))
        object.__setattr__(self, "data_options", MappingProxyType(dict(self.data_options)))

    def config(self, name: str) -> TrainConfig:
        """The training settings of model ``name``."""
        return cast("Mapping[str, TrainConfig]", self.train)[name]  # one per model by now


@dataclass(frozen=True)
class ComparisonResult:
    """What a comparison wrote, and its measurements.

    Attributes:
        out: the report directory.
        report: ``out/report.md``.
        results: what ``out/results.json`` holds: the settings, the data-to-data distance
            floor and ``"results"``, one row per model in training order (test NLL in
            ``nll_nats`` with ``nll_stderr``, ``distances``, ``steps``, ``stop_reason``,
            ``train_seconds``, ``eval_seconds``, ``nfe``, ...; a conditional comparison adds
            ``guidance``, one entry per guidance scale, to each row, and ``"labels"``: the
            classifier and the per-label floor).
    """

    out: Path
    report: Path
    results: Mapping[str, object]

    @property
    def rows(self) -> list[dict]:
        """One row per model, in training order."""
        return list(self.results["results"])  # type: ignore[call-overload]

    def ranked(self) -> list[dict]:
        """The rows in the report's order: by test NLL, lowest first."""
        return ranked(self.rows)

    @property
    def ranking(self) -> list[str]:
        """The model names in the report's order (best test NLL first)."""
        return [r["model"] for r in self.ranked()]
