"""Runs: a model, its data and its training options, rebuilt from a run directory's config.json.

A run directory holds ``config.json`` (everything needed to rebuild the model and reload its
data), the checkpoint files of :mod:`flowforge.train.checkpoint` and ``metrics.jsonl``. This is
the layer the command line stands on; library users can call it too.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__, data, models
from ..distributions.model import Model
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import setup
from .loop import TrainResult, split_weights, train


@dataclass(frozen=True)
class RunSpec:
    """What a run trains: a registered model on a dataset, with training options.

    Attributes:
        model: a name of :func:`flowforge.models.available`.
        data: a built-in dataset name or a path to a ``.npy``/``.npz``/``.csv`` file.
        model_options: keyword options of the model recipe.
        data_options: keyword options of :func:`flowforge.data.load`.
        standardize: train on standardised data; the statistics are stored with the model, so
            ``log_prob`` and samples stay in the data's own units.
        train: the training options.
    """

    model: str
    data: str
    model_options: dict
    data_options: dict
    standardize: bool
    train: TrainConfig

    def to_dict(self) -> dict:
        return {
            "model": {"name": self.model, "options": self.model_options},
            "data": {"source": self.data, "options": self.data_options},
            "standardize": self.standardize,
            "train": self.train.to_dict(),
        }


def load_dataset(config: dict) -> data.Dataset:
    """Reload the dataset a run was trained on, as its config describes it."""
    return data.load(config["data"]["source"], **config["data"].get("options", {}))


def build_model(config: dict, dataset: data.Dataset | None = None) -> Model:
    """Rebuild the (untrained) model a run's config describes, standardisation included."""
    spec = config["model"]
    dim = int(config["dim"])
    seed = int(config["train"].get("seed", 0))
    torch.manual_seed(seed)
    inner = models.create(spec["name"], dim=dim, **spec.get("options", {}))
    stats = config.get("standardization")
    if stats is None:
        return inner
    return data.Standardize.from_dict(inner, stats)


def start(spec: RunSpec, out: str | Path) -> TrainResult:
    """Create the run directory ``out``, write its config and train from scratch."""
    out = Path(out)
    info = setup(spec.train.device)
    if info.is_main and (out / ckpt.CONFIG_FILE).exists():
        raise FileExistsError(
            f"{out} already holds a run; resume it with --resume {out}, or choose another --out"
        )
    models.recipe(spec.model)  # an unknown name fails before the data is loaded
    valid = set(inspect.signature(data.load).parameters) - {"source"}
    unknown = sorted(set(spec.data_options) - valid)
    if unknown:
        raise ValueError(
            f"unknown data option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    dataset = data.load(spec.data, **spec.data_options)
    dim = math.prod(dataset.event_shape)
    config = {"flowforge_version": __version__, **spec.to_dict(), "dim": dim}
    config["event_shape"] = list(dataset.event_shape)
    if spec.standardize:
        mean, std = data.fit_standardization(dataset.train)
        config["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
    model = build_model(config, dataset)
    if info.is_main:
        ckpt.write_json_atomic(out / ckpt.CONFIG_FILE, config)
    return train(model, dataset.train, spec.train, val_x=dataset.val, run_dir=out)


def resume(run_dir: str | Path, steps: int | None = None) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint (to ``steps`` if given)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    options = dict(config["train"])
    if steps is not None:
        options["steps"] = steps
        config["train"] = options
        if setup(options.get("device", "auto")).is_main:
            ckpt.write_json_atomic(run_dir / ckpt.CONFIG_FILE, config)
    dataset = load_dataset(config)
    model = build_model(config, dataset)
    return train(
        model,
        dataset.train,
        TrainConfig.from_dict(options),
        val_x=dataset.val,
        run_dir=run_dir,
        resume=True,
    )


def read_config(run_dir: str | Path) -> dict:
    """A run's ``config.json``, with a clear error when the directory is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ckpt.CheckpointError(f"run directory {run_dir} does not exist")
    config = ckpt.read_json(run_dir / ckpt.CONFIG_FILE)
    for key in ("model", "data", "train", "dim"):
        if key not in config:
            raise ckpt.CheckpointError(f"{run_dir / ckpt.CONFIG_FILE} has no {key!r} entry")
    return config


def load(
    run_dir: str | Path, ema: bool = True, device: str = "cpu", weights: str = "best"
) -> tuple[Model, dict]:
    """Load a trained model from ``run_dir``: ``(model in eval mode, config)``.

    ``config["loaded"]`` says which weights were loaded (``"best"``, ``"ema"`` or ``"last"``)
    and from which step.

    Args:
        run_dir: the run directory.
        ema: use the EMA weights when the run kept them (for ``weights="last"``).
        device: where to put the model.
        weights: ``"best"``, the weights of the best validation NLL (falls back to the last
            checkpoint when the run kept none), or ``"last"``, the last checkpoint.
    """
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    config = read_config(run_dir)
    model = build_model(config)
    best = ckpt.load_best(Path(run_dir)) if weights == "best" else None
    if best is not None:
        chosen, step = best[0], best[1]
        config["loaded"] = {"weights": "best", "step": step, "val_nll": best[2]}
    else:
        saved, step = ckpt.load_weights(Path(run_dir))
        chosen = split_weights(saved, "ema") if ema else {}
        kind = "ema" if chosen else "last"
        chosen = chosen or split_weights(saved, "model")
        config["loaded"] = {"weights": kind, "step": step}
    try:
        model.load_state_dict(chosen)
    except RuntimeError as e:
        raise ckpt.CheckpointError(
            f"the weights in {run_dir} do not fit the model its config describes ({e})"
        ) from None
    return model.to(device).eval(), config
