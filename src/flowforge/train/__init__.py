"""Training: the loop, checkpoints, EMA, distributed runs, and run directories."""

from .checkpoint import CheckpointError
from .config import TrainConfig
from .ema import EMA
from .loop import TrainingDiverged, TrainingInterrupted, TrainResult, batch_indices, train
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
    "RunSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "batch_indices",
    "build_model",
    "load",
    "load_dataset",
    "load_state_dict",
    "read_config",
    "resume",
    "start",
    "train",
]
