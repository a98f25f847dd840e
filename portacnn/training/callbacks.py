"""Callbacks: code a training run calls at fixed points, as in Keras (``fit(callbacks=[...])``).

Today there is one point, the end of an epoch, with that epoch's metrics (``loss``, ``accuracy`` and, with
validation data, ``val_loss``, ``val_accuracy``). A callback may stop the run by setting
``stop_training`` (the checkpoint of that epoch is written first). ``fit`` hands every callback the model
first (:meth:`Callback.set_model`).

- :class:`EarlyStopping`: stop when a metric has not improved for ``patience`` epochs (optionally going back
  to the best weights);
- :class:`ModelCheckpoint`: save the model whenever a metric improves (the best model of the run).
"""

from __future__ import annotations

import math


class Callback:
    """Subclass and override :meth:`on_epoch_end`; ``stop_training = True`` ends the run after this epoch."""

    stop_training = False
    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Called after epoch ``epoch`` (0-based) has finished and been checkpointed."""


class LambdaCallback(Callback):
    """A callback from a plain function ``fn(epoch, logs)`` (what ``fit(on_epoch_end=...)`` makes)."""

    def __init__(self, on_epoch_end):
        if not callable(on_epoch_end):
            raise ValueError(f"on_epoch_end must be callable; got {on_epoch_end!r}")
        self._fn = on_epoch_end

    def on_epoch_end(self, epoch, logs):
        self._fn(epoch, logs)


def as_callbacks(callbacks, on_epoch_end=None) -> list[Callback]:
    """``callbacks`` (None, a Callback, or a list of them) plus ``on_epoch_end`` as one list; anything else is
    a ValueError naming it."""
    found = [] if callbacks is None else [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
    for c in found:
        if not isinstance(c, Callback):
            raise ValueError(f"callbacks must be portacnn.training.Callback objects; got {c!r}")
    return found + ([LambdaCallback(on_epoch_end)] if on_epoch_end is not None else [])


class _Monitor(Callback):
    """Tracks the best value of one metric (``min`` for losses, ``max`` for accuracies unless told)."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; got {mode!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(f"min_delta must be a number >= 0; got {min_delta!r}")
        self.monitor = monitor
        self.sign = -1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else 1.0
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.best_epoch = None

    def improved(self, logs: dict) -> bool:
        if self.monitor not in logs:
            raise ValueError(f"{type(self).__name__} monitors {self.monitor!r}, which fit does not report; it reports "
                             f"{', '.join(sorted(logs))} (val_* need validation data)")
        value = self.sign * float(logs[self.monitor])
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best = value
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs, as Keras'
    EarlyStopping; ``restore_best_weights`` puts the best epoch's weights back when it stops."""

    def __init__(self, monitor="val_loss", patience=3, min_delta=0.0, mode="auto", restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0; got {patience!r}")
        self.patience, self.restore_best_weights = patience, bool(restore_best_weights)
        self.wait, self.best_weights, self.stopped_epoch = 0, None, None

    def on_epoch_end(self, epoch, logs):
        if self.improved(logs):
            self.best_epoch, self.wait = epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stop_training, self.stopped_epoch = True, epoch
            if self.restore_best_weights and self.best_weights is not None:
                self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model to ``path`` (atomically, as :meth:`Sequential.save`) whenever ``monitor`` improves, or
    after every epoch with ``save_best_only=False``: the best model of a run, kept apart from the resumable
    checkpoint ``fit(checkpoint_path=...)`` writes."""

    def __init__(self, path, monitor="val_loss", save_best_only=True, mode="auto", min_delta=0.0):
        super().__init__(monitor, mode, min_delta)
        self.path, self.save_best_only = path, bool(save_best_only)

    def on_epoch_end(self, epoch, logs):
        if self.improved(logs) or not self.save_best_only:
            self.best_epoch = epoch
            self.model.save(self.path)
