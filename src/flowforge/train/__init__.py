"""Training: the loop, checkpoints, EMA, distributed runs, and run directories."""

from .checkpoint import CheckpointError
from .config import TrainConfig
from .ema import EMA
from .loop import TrainingDiverged, TrainingInterrupted, TrainResult, batch_indices, train
from .rectify import ReflowResult, ReflowRound, generate_pairs, load_pairs, reflow, reflow_run
from .run import (
    RunSpec,
    build_model,
    load,
    load_dataset,
    load_state_dict,
    read_config,
    resume,
    start,
)

__all__ = [
    "EMA",
    "CheckpointError",
    "ReflowResult",
    "ReflowRound",
    "RunSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "batch_indices",
    "build_model",
    "generate_pairs",
    "load",
    "load_dataset",
    "load_pairs",
    "load_state_dict",
    "read_config",
    "reflow",
    "reflow_run",
    "resume",
    "start",
    "train",
]
