"""The budget presets of a comparison, and each model's training settings within one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .. import models as _models
from .._checks import check_choice
from ..train import TrainConfig
from .evaluation import Evaluation


@dataclass(frozen=True)
class Budget:
    """A preset of a comparison: how long each model trains and how it is evaluated.

    Attributes:
        name: the preset's name (``budget="quick"``, ``--budget NAME``).
        time_limit: seconds of training per model (validation included).
        train: other training settings of the preset (``train=`` settings override them).
        evaluation: what is measured of each model.
        summary: one line for ``--help`` and the report.
    """

    name: str
    time_limit: float
    train: Mapping[str, object]
    evaluation: Evaluation
    summary: str


QUICK_SECONDS = 10.0
"""Training seconds per model of the quick preset: the README's main job (all 12 registered
models on the checkerboard, evaluated, with the report) then takes about 3 minutes on an idle
2-core machine; evaluation takes the rest (docs/plots.md, "compare budgets")."""

BUDGETS: dict[str, Budget] = {
    "quick": Budget(
        "quick",
        QUICK_SECONDS,
        # Validation is part of each model's seconds; 2,000 points (standard error about 0.01
        # nats) still pick the best step, and cost the continuous models a fifth of 10,000.
        {"max_val_samples": 2000},
        # The continuous models' exact log-densities set the cost: 5,000 test points (standard
        # error about 0.01 nats on the checkerboard), a 64 x 64 density grid (one solver call),
        # and no exact W2 (seconds a model; the sliced one stays).
        # A conditional comparison: 200 samples a label and guidance scale (4 scales of 8
        # labels: a few seconds a continuous model with its default dopri5, docs/cli.md).
        Evaluation(test_points=5000, exact_w2=False, density_resolution=64, label_samples=200),
        f"{QUICK_SECONDS:g} s a model, test NLL on 5,000 test points, 64 x 64 density images",
    ),
    "thorough": Budget(
        "thorough",
        60.0,
        {},
        Evaluation(),
        "60 s a model, the whole test split, exact W2, 200 x 200 density images",
    ),
}
"""The presets of :func:`flowforge.compare.compare` (``budget=``) and ``flowforge compare
--budget``; ``quick`` is the default."""


def get_budget(budget: str | Budget) -> Budget:
    """The preset named ``budget`` (a :class:`Budget` is returned as it is)."""
    if isinstance(budget, Budget):
        return budget
    return BUDGETS[check_choice(budget, "budget", BUDGETS)]


def train_configs(
    names: Sequence[str], budget: Budget, train: Mapping[str, object] | None = None
) -> dict[str, TrainConfig]:
    """Each model's training settings in a comparison: its recipe's training defaults, then
    the preset's settings, then ``train`` (the same for every model).

    The preset's time limit holds unless ``train`` sets ``steps`` without a ``time_limit``
    (then the models train for equal steps); with neither, the runs are open-ended in steps,
    as many as the preset's seconds allow.

    Args:
        names: registered model names (an unknown one is an error naming the registered ones).
        budget: the preset.
        train: :class:`~flowforge.train.TrainConfig` fields for every model, e.g.
            ``{"batch_size": 128, "steps": 500}``.

    Returns:
        One :class:`~flowforge.train.TrainConfig` per name.
    """
    train = dict(train or {})
    steps, seconds = "steps" in train, "time_limit" in train
    preset = dict(budget.train)
    if seconds or not steps:
        preset["time_limit"] = budget.time_limit
        if not steps:
            preset["steps"] = None  # open-ended: as many steps as the seconds allow
    defaults = {name: _models.recipe(name).train_defaults for name in names}  # typos first
    return {name: TrainConfig.from_dict({**defaults[name], **preset, **train}) for name in names}
