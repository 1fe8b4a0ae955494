"""Options from TOML files and ``KEY=VALUE`` flags, merged into typed configs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..train.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Flag name -> TrainConfig field; flags override the [train] table of a config file.
_TRAIN_FLAGS = (
    "steps",
    "time_limit",
    "patience",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_steps",
    "grad_clip",
    "ema_decay",
    "eval_every",
    "checkpoint_every",
    "seed",
    "device",
    "dequantization",
)


def load_toml(path: str | Path) -> dict:
    """Read a TOML config; only the ``model``, ``data`` and ``train`` tables are allowed."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(config) - {"model", "data", "train"})
    if unknown:
        raise ValueError(
            f"config file {path} has unknown table(s) {', '.join(unknown)}; "
            "use [model], [data] and [train]"
        )
    for key, table in config.items():
        if not isinstance(table, dict):
            raise ValueError(f"config file {path}: {key} must be a table ([{key}])")
    return config


def parse_value(text: str) -> object:
    """``"8"`` -> 8, ``"1e-3"`` -> 0.001, ``"256,256"`` -> [256, 256], ``"true"`` -> True."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(part.strip()) for part in text.split(",") if part.strip()]
    return text


def parse_assignments(items: list[str], flag: str) -> dict[str, object]:
    """Parse repeated ``KEY=VALUE`` flags into a dict."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out


def eval_every_flag(text: str) -> int | str:
    """``--eval-every``: ``auto`` or a number of steps >= 0 (argparse's ``type``)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a number of steps, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number >= 0, got {value}")
    return value


def train_options(
    table: dict,
    args: argparse.Namespace,
    model: str | None = None,
    model_options: dict | None = None,
) -> TrainConfig:
    """A :class:`TrainConfig` from the training defaults of the recipe ``model`` (if given)
    built with ``model_options`` (``Recipe.training``: e.g. ``field="unet"`` has its own lr),
    overridden by a config file's ``[train]`` table, overridden by flags. A time limit with no
    step count (from the table or ``--steps``) makes the run open-ended in steps."""
    values: dict[str, object] = {}
    if model is not None:
        from ..models import recipe

        values.update(recipe(model).training(**(model_options or {})))
    values.update(table)
    for name in _TRAIN_FLAGS:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    if values.get("grad_clip") == 0:
        values["grad_clip"] = None  # "--grad-clip 0" reads naturally as "no clipping"
    if values.get("patience") == 0:
        values["patience"] = None  # "--patience 0": never stop early
    if values.get("time_limit") is not None and "steps" not in values:
        values["steps"] = None  # a budget in seconds alone: as many steps as fit
    if getattr(args, "no_progress", False):
        values["progress"] = False
    return TrainConfig.from_dict(values)
