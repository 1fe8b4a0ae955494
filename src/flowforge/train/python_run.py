"""Runs trained from Python: a ``config.json`` and data, so the CLI and ``load`` can use them.

``flowforge train`` writes a run's ``config.json`` from its :class:`~flowforge.train.RunSpec`.
A run trained with :func:`flowforge.train.train` from arrays has no spec, so the loop writes one
from what the model records about itself (:func:`flowforge.models.create` sets
``model.created_with``) and keeps the arrays' held-out part in the run as ``data.safetensors``:
``flowforge evaluate`` and ``sample --plot`` then have data to compare with, and
``flowforge train --resume`` has the training data when it was small enough to keep.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from torch import Tensor

from .. import data
from .._version import __version__
from ..distributions.model import Model
from . import checkpoint as ckpt
from .config import NOISE_NOTES, TrainConfig

DATA_FILE = "data.safetensors"
# Training data up to this many values (16 MiB of float32) is kept in the run for resuming.
_KEEP_TRAIN = 1 << 22


def recipe_of(model: Model) -> tuple[dict | None, dict | None]:
    """``(created_with, standardization)``: how :func:`flowforge.models.create` built
    ``model`` (``None`` when it did not) and the statistics of a
    :class:`~flowforge.data.Standardize` around it (``None`` without one)."""
    stats, inner = None, model
    if isinstance(model, data.Standardize):
        stats, inner = model.to_dict(), model.inner
    built = getattr(inner, "created_with", None)
    return (built if isinstance(built, dict) else None), stats


def record_run(
    run_dir: Path,
    model: Model,
    config: TrainConfig,
    train_x: Tensor,
    val_x: Tensor | None,
    train_context: Tensor | None = None,
    val_context: Tensor | None = None,
    levels: int | None = None,
) -> bool:
    """Write ``config.json`` and ``data.safetensors`` for a fresh run trained from arrays.

    ``levels`` (the loop's): the training data are dequantised levels, recorded with how their
    noise is drawn, so that ``flowforge train --resume`` draws it the same way.

    A config that ``flowforge train`` wrote (:func:`~flowforge.train.start`) is left alone; one
    an earlier run from arrays wrote in the same directory is replaced. When ``model`` was not
    built by :func:`flowforge.models.create` no config is written (and a stale one removed):
    :func:`~flowforge.train.load` cannot rebuild such a model; rebuild it yourself and load
    :func:`~flowforge.train.load_state_dict`. Returns whether it wrote them.
    """
    run_dir = Path(run_dir)
    path = run_dir / ckpt.CONFIG_FILE
    if path.exists():
        try:
            if not ckpt.read_json(path).get("data", {}).get("in_run"):
                return False
        except ckpt.CheckpointError:
            pass  # unreadable: the run starts afresh, so its config is rewritten
    built, stats = recipe_of(model)
    options = None
    if built is not None:
        try:
            options = json.loads(json.dumps(built["options"]))
        except (TypeError, ValueError):  # an option JSON cannot hold (a module, a function...)
            options = None
    if built is None or options is None:
        path.unlink(missing_ok=True)
        (run_dir / DATA_FILE).unlink(missing_ok=True)
        return False
    tensors: dict[str, Tensor] = {}
    if val_x is not None:
        tensors["val"] = val_x
    keep_train = val_x is None or train_x.numel() <= _KEEP_TRAIN
    if keep_train:
        tensors["train"] = train_x
    for split, context in (("val", val_context), ("train", train_context)):
        if split in tensors and context is not None and _are_labels(context):
            tensors[f"{split}_labels"] = context
    ckpt.write_atomic(run_dir / DATA_FILE, st_save(ckpt._contiguous(tensors)))
    record = {
        "flowforge_version": __version__,
        "model": {"name": built["name"], "options": options},
        "data": {"source": DATA_FILE, "options": {}, "in_run": True, "train_kept": keep_train},
        "standardize": stats is not None,
        "train": config.to_dict(),
        "dim": int(built.get("dim", math.prod(model.event_shape))),
        "event_shape": list(model.event_shape),
    }
    if stats is not None:
        record["standardization"] = stats
    if levels is not None:
        record["levels"] = int(levels)
        record["dequantization"] = "uniform"
        record["dequantization_noise"] = NOISE_NOTES[config.dequantization]
    if model.num_classes and ("train_labels" in tensors or "val_labels" in tensors):
        # Conditioned on labels: evaluation reloads them with the data (flowforge evaluate).
        record["conditional"] = True
        record["num_classes"] = k = int(model.num_classes)
        counted = tensors.get("train_labels", tensors.get("val_labels"))
        if counted is not None:
            record["label_counts"] = torch.bincount(counted, minlength=k)[:k].tolist()
    ckpt.write_json_atomic(run_dir / ckpt.CONFIG_FILE, record)
    return True


def _are_labels(context: Tensor) -> bool:
    return context.ndim == 1 and not context.dtype.is_floating_point


def load_kept(run_dir: Path, config: dict) -> data.Dataset:
    """The data a run trained from arrays kept: its validation split as the held-out ``val``
    and ``test`` splits (the only held-out data the run knows), its training data when kept."""
    path = Path(run_dir) / DATA_FILE
    tensors, _ = ckpt._read_safetensors(path)
    held = tensors.get("val", tensors.get("train"))
    if held is None:
        raise ckpt.CheckpointError(f"{path} holds no data")
    train = tensors.get("train", held)
    labels = None
    held_labels = tensors.get("val_labels", tensors.get("train_labels"))
    if held_labels is not None:
        labels = {"val": held_labels, "test": held_labels}
        if "train_labels" in tensors:
            labels["train"] = tensors["train_labels"]
    return data.Dataset(
        name=str(path),
        train=train,
        val=held,
        test=held,
        event_shape=tuple(config.get("event_shape", held.shape[1:])),
        labels=labels,
        description="arrays given to flowforge.train.train; test is the validation split",
    )
