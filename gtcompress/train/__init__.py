"""Training and evaluation loops, losses and metrics."""

from gtcompress.train.loop import TrainConfig, TrainResult, evaluate, predict, train
from gtcompress.train.metrics import compute_metric, higher_is_better, task_loss

__all__ = [
    "TrainConfig",
    "TrainResult",
    "compute_metric",
    "evaluate",
    "higher_is_better",
    "predict",
    "task_loss",
    "train",
]
