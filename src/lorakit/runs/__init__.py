"""A training run's output folder: its file names (`folder`) and its record `run.json`
(`record`). Below training and evaluation, so the writer and every reader share one definition."""

from .folder import CONTROL_DIR, EVENTS_FILE, RUN_FILE, RunFolder, epoch_of, sort_by_epoch
from .record import EpochRecord, RunError, RunRecord, keep_epoch, load_run, loss_table

__all__ = [
    "CONTROL_DIR",
    "EVENTS_FILE",
    "RUN_FILE",
    "EpochRecord",
    "RunError",
    "RunFolder",
    "RunRecord",
    "epoch_of",
    "keep_epoch",
    "load_run",
    "loss_table",
    "sort_by_epoch",
]
