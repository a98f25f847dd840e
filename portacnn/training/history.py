"""The record of a run, as Keras keeps it: :class:`History` (what ``fit`` returns) and the callback that fills it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .builtin import FitCallback


@dataclass
class History:
    """Per-epoch metrics, like Keras' ``History``: ``history["loss"][e]`` is epoch e's mean training loss."""

    history: dict = field(default_factory=lambda: {"loss": [], "accuracy": []})
    epoch_times: list = field(default_factory=list)
    interrupted: bool = False
    signal: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the run

    def to_dict(self) -> dict:
        return {"history": self.history, "epoch_times": self.epoch_times, "interrupted": self.interrupted,
                "signal": self.signal}


class RecordHistory(FitCallback):
    """Appends each epoch's metrics to ``history`` (``val_loss`` and ``val_accuracy`` with validation data; with
    ``track_lr``, ``lr``: the first parameter group's rate at the epoch's end) and the epoch's seconds.

    ``history`` may already hold a resumed run's epochs: the lists a run adds start empty beside them."""

    def __init__(self, history: History, validation: bool, track_lr: bool):
        self.history, self.track_lr = history, track_lr
        if validation:
            history.history.setdefault("val_loss", [])
            history.history.setdefault("val_accuracy", [])
        if track_lr:
            history.history.setdefault("lr", [])
        self._start = None

    def on_epoch_begin(self, epoch):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs):
        record = self.history.history
        for key, value in logs.items():
            record[key].append(value)
        if self.track_lr:
            record["lr"].append(float(self.model.optimizer.param_groups[0]["lr"]))
        self.history.epoch_times.append(time.perf_counter() - self._start)

    def latest(self) -> dict:
        """The last value of every metric: what the caller's callbacks get as an epoch's ``logs``."""
        return {key: values[-1] for key, values in self.history.history.items()}
