"""Checkpoints without pickle: safetensors for tensors, JSON for the rest, committed atomically.

A checkpoint is three files in the run directory: ``model.safetensors`` (weights, and EMA
weights under ``ema.``), ``state.safetensors`` (optimiser moments, RNG states) and
``state.json`` (step, optimiser hyper-parameters). They are written in two phases so that a run
killed at any instant leaves a loadable checkpoint:

1. each file is written in full to ``NAME.new`` and flushed to disk;
2. an empty ``commit`` marker is created, the ``.new`` files are renamed over the old ones, and
   the marker is removed.

Loading first finishes an interrupted commit (marker present: every ``.new`` file is complete,
so the renames are rolled forward) or discards a half-written one (no marker). Each file records
the step it belongs to, and loading checks that they agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import Tensor

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
CONFIG_FILE = "config.json"
BEST_FILE = "best.safetensors"
_COMMIT = "commit"
_CHECKPOINT_FILES = (MODEL_FILE, STATE_FILE, STATE_JSON)


class CheckpointError(ValueError):
    """A run directory holds no usable checkpoint (missing, corrupt or inconsistent files)."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file, flushed, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON, atomically."""
    write_atomic(path, (json.dumps(value, indent=2) + "\n").encode())


def _write_new(path: Path, data: bytes) -> None:
    with open(path.with_name(path.name + ".new"), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _contiguous(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # safetensors refuses views and tensors sharing storage; copies are cheap at our sizes.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, Tensor],
    state_tensors: dict[str, Tensor],
    state: dict[str, object],
) -> None:
    """Write the checkpoint of ``step`` to ``run_dir`` in two phases (see the module docstring)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(step)}
    _write_new(run_dir / MODEL_FILE, st_save(_contiguous(weights), metadata=meta))
    _write_new(run_dir / STATE_FILE, st_save(_contiguous(state_tensors), metadata=meta))
    _write_new(
        run_dir / STATE_JSON, (json.dumps({**state, "step": step}, indent=2) + "\n").encode()
    )
    write_atomic(run_dir / _COMMIT, b"")
    _finish_commit(run_dir)


def _finish_commit(run_dir: Path) -> None:
    marker = run_dir / _COMMIT
    if marker.exists():
        for name in _CHECKPOINT_FILES:
            new = run_dir / (name + ".new")
            if new.exists():
                os.replace(new, run_dir / name)
        marker.unlink()
    else:
        for name in _CHECKPOINT_FILES:
            (run_dir / (name + ".new")).unlink(missing_ok=True)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a committed checkpoint (or one whose commit loading finishes).

    Reads only: a run killed before its first commit has none, and resumes from step 0.
    """
    run_dir = Path(run_dir)
    if (run_dir / MODEL_FILE).exists():
        return True
    return (run_dir / _COMMIT).exists() and (run_dir / (MODEL_FILE + ".new")).exists()


def check_run_dir(path: str | os.PathLike[str], name: str = "run_dir") -> Path:
    """``path`` as a :class:`Path`, checked to be a directory or creatable as one.

    Raises:
        FileExistsError: ``path``, or a folder above it, exists and is a file.
    """
    run_dir = Path(path)
    for p in (run_dir, *run_dir.parents):
        if p.exists():
            if not p.is_dir():
                what = "" if p == run_dir else f" ({p} is a file)"
                raise FileExistsError(
                    f"{name} {run_dir} cannot be a run directory{what}: it must be a new or "
                    "existing directory; choose another path"
                )
            break
    return run_dir


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e})") from None
    return tensors, meta


def save_best(run_dir: Path, step: int, val_nll: float, weights: dict[str, Tensor]) -> None:
    """Write ``best.safetensors``: the weights of the best validation NLL so far, atomically."""
    meta = {"step": str(step), "val_nll": repr(float(val_nll))}
    write_atomic(Path(run_dir) / BEST_FILE, st_save(_contiguous(weights), metadata=meta))


def load_best(run_dir: Path) -> tuple[dict[str, Tensor], int, float] | None:
    """``(weights, step, val_nll)`` of ``best.safetensors``, or ``None`` when the run has none."""
    path = Path(run_dir) / BEST_FILE
    if not path.exists():
        return None
    tensors, meta = _read_safetensors(path)
    return tensors, int(meta.get("step", -1)), float(meta.get("val_nll", "nan"))


def load_weights(run_dir: Path) -> tuple[dict[str, Tensor], int]:
    """Read ``model.safetensors``: the weights and the step they were saved at."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    _finish_commit(run_dir)
    tensors, meta = _read_safetensors(run_dir / MODEL_FILE)
    return tensors, int(meta.get("step", -1))


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    """Read a whole checkpoint: ``(weights, state_tensors, state)``, checked for consistency."""
    weights, step = load_weights(run_dir)
    state_tensors, meta = _read_safetensors(Path(run_dir) / STATE_FILE)
    state = read_json(Path(run_dir) / STATE_JSON)
    steps = {step, int(meta.get("step", -1)), state.get("step")}
    if len(steps) != 1:
        raise CheckpointError(f"checkpoint files in {run_dir} belong to different steps {steps}")
    return weights, state_tensors, state


def read_json(path: Path) -> dict:
    """Read a JSON object, with a :class:`CheckpointError` naming the file when it is unusable."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return value


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Split an optimiser's state into tensors (for safetensors) and JSON-able values."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, object]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], saved: dict
) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, object]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in saved.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
