"""Runs: a model, its data and its training options, rebuilt from a run directory's config.json.

A run directory holds ``config.json`` (everything needed to rebuild the model and reload its
data), the checkpoint files of :mod:`flowforge.train.checkpoint` and ``metrics.jsonl``. This is
the layer the command line stands on; library users can call it too.
"""

from __future__ import annotations

import inspect
import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .. import data, models
from .._checks import check_choice
from .._version import __version__
from ..distributions.model import Model
from . import checkpoint as ckpt
from .config import NOISE_NOTES, TrainConfig
from .distributed import setup
from .loop import TrainResult, split_weights, train
from .python_run import load_kept

# What config.json's "preprocess" says a model trains on (besides the logit option's own).
PREPROCESS = {True: "standardize: per feature (pixel) mean and std", False: "none: the raw data"}
# The logit's alpha a run gives a recipe with a logit option (glow, realnvp) on discrete images
# unless its options set one: on the 8x8 digits it beat per-pixel standardisation by 0.4
# bits/dim in 60 s, and 0.05 (RealNVP's CIFAR-10 choice) by 0.1 (docs/data.md).
IMAGE_LOGIT = 0.01


def run_model_options(
    name: str, options: dict, levels: int | None, event_shape: Sequence[int]
) -> dict:
    """The options a run builds model ``name`` with: ``options``, and on discrete images
    (``levels`` set, ``event_shape`` ``(C, H, W)``) ``logit=IMAGE_LOGIT`` for a recipe that has
    a ``logit`` option the options leave unset (``logit=None`` turns it off)."""
    if levels is None or len(event_shape) != 3 or "logit" in options:
        return dict(options)
    if "logit" not in models.recipe(name).options():
        return dict(options)
    return {**options, "logit": IMAGE_LOGIT}


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
        conditional: train a class-conditional model on the dataset's labels (the model is
            built with ``num_classes`` = the dataset's number of classes).
    """

    model: str
    data: str
    model_options: dict
    data_options: dict
    standardize: bool
    train: TrainConfig
    conditional: bool = False

    def to_dict(self) -> dict:
        out = {
            "model": {"name": self.model, "options": self.model_options},
            "data": {"source": self.data, "options": self.data_options},
            "standardize": self.standardize,
            "train": self.train.to_dict(),
        }
        if self.conditional:  # absent for unconditional runs, as in runs written before
            out["conditional"] = True
        return out


def dataset_labels(dataset: data.Dataset, split: str = "train") -> torch.Tensor:
    """The labels of ``split``, or a ``ValueError`` saying how to give a dataset labels."""
    if dataset.labels is None or split not in dataset.labels:
        raise ValueError(
            f"the dataset {dataset.name!r} has no class labels to condition on; labelled "
            "built-ins: digits, 8gaussians, 2spirals, pinwheel, rings, moons, circles; for a "
            "file, say where its labels are: --data-option label=COLUMN (a CSV column) or "
            "label=NAME (an .npz array)"
        )
    return dataset.labels[split]


def label_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """How many training samples each class has: sampling without a label draws labels in
    these proportions, so the samples follow the data's own mixture of classes."""
    return torch.bincount(labels, minlength=num_classes).tolist()


def _contexts(config: dict, dataset: data.Dataset) -> tuple[torch.Tensor | None, ...]:
    """The conditioning the trainer gets, ``(train, val)``: the dataset's labels for a
    conditional run, ``None`` otherwise."""
    if not config.get("conditional"):
        return None, None
    return dataset_labels(dataset, "train"), dataset_labels(dataset, "val")


def load_dataset(config: dict, run_dir: str | Path | None = None) -> data.Dataset:
    """Reload the dataset a run was trained on, as its config describes it.

    A run trained from arrays in Python keeps its held-out data in the run
    (``data.safetensors``); it is read from ``run_dir``, or from ``config["run_dir"]``, which
    :func:`load` sets.
    """
    spec = config["data"]
    if spec.get("in_run"):
        where = run_dir if run_dir is not None else config.get("run_dir")
        if where is None:
            raise ValueError(
                "this run keeps its data in its run directory: pass run_dir, or load the "
                "config with flowforge.train.load"
            )
        return load_kept(Path(where), config)
    return data.load(spec["source"], **spec.get("options", {}))


def build_model(config: dict, dataset: data.Dataset | None = None) -> Model:
    """Rebuild the (untrained) model a run's config describes, standardisation included."""
    spec = config["model"]
    seed = int(config["train"].get("seed", 0))
    torch.manual_seed(seed)
    options = dict(spec.get("options", {}))
    if config.get("conditional"):
        options["num_classes"] = int(config["num_classes"])
    shape = config.get("event_shape")
    if shape is not None and len(shape) > 1:  # images keep their shape end to end
        inner = models.create(spec["name"], shape=tuple(int(d) for d in shape), **options)
    else:
        inner = models.create(spec["name"], dim=int(config["dim"]), **options)
    stats = config.get("standardization")
    if stats is None:
        return inner
    return data.Standardize.from_dict(inner, stats)


def start(spec: RunSpec, out: str | Path, desc: str = "train") -> TrainResult:
    """Create the run directory ``out``, write its config and train from scratch.

    A directory that already holds a run is never overwritten: the same settings on a run
    that has not finished resume it (as :func:`resume`); a config without a checkpoint (a run
    killed before its first one) starts again from step 0; anything else is an error saying
    what to do.

    Args:
        spec: what to train.
        out: the run directory.
        desc: the progress bar's label.
    """
    out = ckpt.check_run_dir(out, "--out")
    info = setup(spec.train.device)
    if (out / ckpt.CONFIG_FILE).exists() and ckpt.has_checkpoint(out):
        return _continue_existing(spec, out, desc)
    models.recipe(spec.model)  # an unknown name fails before the data is loaded
    valid = set(inspect.signature(data.load).parameters) - {"source"}
    unknown = sorted(set(spec.data_options) - valid)
    if unknown:
        raise ValueError(
            f"unknown data option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    dataset = data.load(spec.data, **spec.data_options)
    options = run_model_options(spec.model, spec.model_options, dataset.levels, dataset.event_shape)
    spec = replace(spec, model_options=options)
    dim = math.prod(dataset.event_shape)
    config = {"flowforge_version": __version__, **spec.to_dict(), "dim": dim}
    config["event_shape"] = list(dataset.event_shape)
    config["columns"] = list(dataset.columns) if dataset.columns else None  # CSV header names
    # Discrete data (the digits, image files): how they were made continuous, so that an
    # evaluation states, and can redo, the dequantisation its bits/dim are exact for.
    config["levels"] = dataset.levels
    config["dequantization"] = dataset.dequantization
    if dataset.levels is not None:  # and whether training redraws its noise (TrainConfig)
        config["dequantization_noise"] = NOISE_NOTES[spec.train.dequantization]
    config["image_shape"] = list(dataset.image_shape) if dataset.image_shape else None
    if spec.conditional:
        dataset_labels(dataset)  # a dataset without labels fails before anything is written
        config["num_classes"] = dataset.num_classes
        config["label_names"] = list(dataset.label_names) if dataset.label_names else None
        config["label_counts"] = label_counts(dataset_labels(dataset), dataset.num_classes or 0)
    # A flow with the logit preprocessing (glow, realnvp: logit=ALPHA) takes the dequantised
    # data themselves, in [0, 1): they are not standardised.
    logit = spec.model_options.get("logit")
    if logit is not None and dataset.levels is None:
        raise ValueError(
            f"logit={logit!r} preprocesses dequantised data in [0, 1) (the digits, image files), "
            f"but {spec.data} is continuous data without levels; leave the logit out "
            "(-o logit=null) to train on standardised data"
        )
    if spec.standardize and logit is None:
        mean, std = data.fit_standardization(dataset.train)
        config["standardization"] = {"mean": mean.tolist(), "std": std.tolist()}
    config["preprocess"] = (
        f"logit, alpha={logit}" if logit is not None else PREPROCESS[spec.standardize]
    )
    model = build_model(config, dataset)
    if info.is_main:
        ckpt.write_json_atomic(out / ckpt.CONFIG_FILE, config)
    train_context, val_context = _contexts(config, dataset)
    return train(
        model,
        dataset.train,
        spec.train,
        val_x=dataset.val,
        run_dir=out,
        desc=desc,
        train_context=train_context,
        val_context=val_context,
        levels=dataset.levels,
    )


def _continue_existing(spec: RunSpec, out: Path, desc: str) -> TrainResult:
    """``start`` on a directory that holds a run with a checkpoint: resume it when it is the
    same run and unfinished, else say what to do."""
    state = ckpt.read_json(out / ckpt.STATE_JSON)
    stored = read_config(out)
    quoted = shlex.quote(str(out))
    finished = state.get("stop_reason") in ("steps", "time", "early_stop")
    if finished:
        how = {"steps": "its steps", "time": "its time limit", "early_stop": "early stopping"}
        raise FileExistsError(
            f"{out} already holds a run, finished at step {state.get('step')} "
            f"({how[state['stop_reason']]}); choose another --out, or train it on with: "
            f"flowforge train --resume {quoted} and a larger --steps, --time-limit or --patience"
        )
    if not _same_run(stored, spec):
        raise FileExistsError(
            f"{out} already holds a run with other settings (checkpoint at step "
            f"{state.get('step')}); resume it with: flowforge train --resume {quoted}, or "
            "choose another --out"
        )
    return resume(out, desc=desc, progress=spec.train.progress)


def _same_run(stored: dict, spec: RunSpec) -> bool:
    """Whether a stored config describes the run ``spec`` would start (progress aside)."""
    try:
        stored_train = TrainConfig.from_dict(stored["train"])
    except (TypeError, ValueError):
        return False
    mine = json.loads(json.dumps(spec.to_dict()))  # tuples become lists, as in the file
    shape = stored.get("event_shape") or ()
    mine["model"]["options"] = run_model_options(
        spec.model, mine["model"]["options"], stored.get("levels"), shape
    )
    keys = ("model", "data", "standardize", "conditional")
    same = all(stored.get(k) == mine.get(k) for k in keys)
    return same and replace(stored_train, progress=True) == replace(spec.train, progress=True)


# What a resume may change: the budget, and the progress bar.
_RESUME_CHANGES = ("time_limit", "patience", "progress")


def resume(
    run_dir: str | Path, steps: int | None = None, *, desc: str = "train", **changes: object
) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint, or from step 0 when it was
    stopped before its first one.

    Args:
        run_dir: the run directory.
        steps: a new step budget (``None``: keep it).
        desc: the progress bar's label.
        **changes: a new ``time_limit`` or ``patience`` (``None`` turns either off), or
            ``progress``; the other options are the run's own.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config.get("reflow"):
        # A reflow run trains on its source model's (noise, sample) pairs, not on the data.
        source = config["reflow"].get("source", "RUN")
        raise ValueError(
            f"{run_dir} is a reflow of {source}: it trains on that model's noise/sample pairs, "
            f"not on the data; continue it with the command that made it: flowforge reflow "
            f"{shlex.quote(str(source))} --out {shlex.quote(str(run_dir))}"
        )
    options = dict(config["train"])
    if "dequantization" not in options:
        options["dequantization"] = "fixed"  # a run from before the noise was redrawn
    unknown = sorted(set(changes) - set(_RESUME_CHANGES))
    if unknown:
        raise ValueError(
            f"a resumed run keeps its settings; {', '.join(unknown)} cannot change "
            f"(steps, {', '.join(_RESUME_CHANGES)} can)"
        )
    budget = {k: v for k, v in changes.items() if k != "progress"}
    if steps is not None:
        budget["steps"] = steps
    options.update(changes)
    if steps is not None:
        options["steps"] = steps
    if budget:
        config["train"] = {**config["train"], **budget}
        TrainConfig.from_dict(config["train"])  # a bad value fails before it is written
        if setup(options.get("device", "auto")).is_main:
            ckpt.write_json_atomic(run_dir / ckpt.CONFIG_FILE, config)
    if config["data"].get("in_run") and not config["data"].get("train_kept", False):
        raise ValueError(
            f"the run in {run_dir} was trained from arrays too large to keep in it; resume it "
            "from Python: flowforge.train.train(model, train_x, config, run_dir=..., "
            "resume=True)"
        )
    dataset = load_dataset(config, run_dir)
    model = build_model(config, dataset)
    train_context, val_context = _contexts(config, dataset)
    return train(
        model,
        dataset.train,
        TrainConfig.from_dict(options),
        val_x=dataset.val,
        run_dir=run_dir,
        resume=True,
        desc=desc,
        train_context=train_context,
        val_context=val_context,
        levels=config.get("levels"),
    )


def read_config(run_dir: str | Path) -> dict:
    """A run's ``config.json``, with a clear error when the directory is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ckpt.CheckpointError(f"run directory {run_dir} does not exist")
    if not (run_dir / ckpt.CONFIG_FILE).exists():
        if ckpt.has_checkpoint(run_dir):
            raise ckpt.CheckpointError(
                f"{run_dir} has weights but no {ckpt.CONFIG_FILE}: its model was not built by "
                "flowforge.models.create, so it cannot be rebuilt from the run; build it "
                "yourself and call model.load_state_dict(flowforge.train.load_state_dict(run))"
            )
        raise ckpt.CheckpointError(
            f"{run_dir} holds no run yet (no {ckpt.CONFIG_FILE}: it was stopped before it "
            "began); start it again with the original flowforge train command"
        )
    config = ckpt.read_json(run_dir / ckpt.CONFIG_FILE)
    for key in ("model", "data", "train", "dim"):
        if key not in config:
            raise ckpt.CheckpointError(f"{run_dir / ckpt.CONFIG_FILE} has no {key!r} entry")
    # A hand-edited or damaged config fails here, by name, not as a KeyError deep inside.
    shapes = {"model": dict, "data": dict, "train": dict, "dim": int}
    bad = [k for k, kind in shapes.items() if not isinstance(config[k], kind)]
    for table, key in (("model", "name"), ("data", "source")):
        if table not in bad and not isinstance(config[table].get(key), str):
            bad.append(f"{table}.{key}")
    if bad:
        raise ckpt.CheckpointError(
            f"{run_dir / ckpt.CONFIG_FILE} is damaged: {', '.join(bad)} "
            "is missing or of the wrong type; restore the file or train the run again"
        )
    return config


def load_state_dict(
    run_dir: str | Path, weights: str = "best", ema: bool = True
) -> tuple[dict[str, torch.Tensor], dict]:
    """The trained weights of ``run_dir`` as a state dict, and which they are.

    For a model you build yourself (one :func:`load` cannot rebuild):
    ``model.load_state_dict(load_state_dict(run_dir)[0])``.

    Args:
        run_dir: the run directory.
        weights: ``"best"``, the weights of the best validation NLL (the last checkpoint's
            when the run kept none), or ``"last"``, the last checkpoint.
        ema: with the last checkpoint, its EMA weights when the run kept them.

    Returns:
        ``(state_dict, loaded)``, ``loaded`` saying ``{"weights": "best" | "ema" | "last",
        "step": ...}`` (and the ``val_nll`` of the best).
    """
    check_choice(weights, "weights", ("best", "last"))
    best = ckpt.load_best(Path(run_dir)) if weights == "best" else None
    if best is not None:
        return best[0], {"weights": "best", "step": best[1], "val_nll": best[2]}
    saved, step = ckpt.load_weights(Path(run_dir))
    chosen = split_weights(saved, "ema") if ema else {}
    kind = "ema" if chosen else "last"
    return chosen or split_weights(saved, "model"), {"weights": kind, "step": step}


def load(
    run_dir: str | Path, ema: bool = True, device: str = "cpu", weights: str = "best"
) -> tuple[Model, dict]:
    """Load a trained model from ``run_dir``: ``(model in eval mode, config)``.

    ``config`` is the run's ``config.json`` (model, data, training options), with two keys
    added: ``config["loaded"]`` says which weights were loaded (``"best"``, ``"ema"`` or
    ``"last"``) and from which step, and ``config["run_dir"]`` where from (for
    :func:`load_dataset`). Runs written by ``flowforge train`` and runs trained from Python on
    a model of :func:`flowforge.models.create` load alike; for another model, build it and use
    :func:`load_state_dict`.

    Args:
        run_dir: the run directory.
        ema: use the EMA weights when the run kept them (for ``weights="last"``).
        device: where to put the model.
        weights: ``"best"``, the weights of the best validation NLL (falls back to the last
            checkpoint when the run kept none), or ``"last"``, the last checkpoint.

    Example:
        >>> model, config = flowforge.train.load("runs/nsf")  # doctest: +SKIP
        >>> x = model.sample(1000)  # doctest: +SKIP
    """
    check_choice(weights, "weights", ("best", "last"))
    config = read_config(run_dir)
    model = build_model(config)
    chosen, config["loaded"] = load_state_dict(run_dir, weights=weights, ema=ema)
    config["run_dir"] = str(run_dir)
    try:
        model.load_state_dict(chosen)
    except RuntimeError as e:
        raise ckpt.CheckpointError(
            f"the weights in {run_dir} do not fit the model its config describes ({e})"
        ) from None
    return model.to(device).eval(), config
