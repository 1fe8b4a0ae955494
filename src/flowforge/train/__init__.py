"""Training: the loop, checkpoints, EMA, distributed runs, and run directories."""

from .checkpoint import CheckpointError
from .config import TrainConfig
from .ema import EMA
from .loop import TrainingDiverged, TrainResult, batch_indices, train
from .run import RunSpec, build_model, load, load_dataset, read_config, resume, start

__all__ = [
    "EMA",
    "CheckpointError",
    "RunSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "batch_indices",
    "build_model",
    "load",
    "load_dataset",
    "read_config",
    "resume",
    "start",
    "train",
]
