"""Callbacks: code a training run calls at fixed points, as in Keras (``fit(callbacks=[...])``).

Today there is one point, the end of an epoch, with that epoch's metrics (``loss``, ``accuracy`` and, with
validation data, ``val_loss``, ``val_accuracy``). A callback may stop the run by setting
``stop_training`` (the checkpoint of that epoch is written first).
"""

from __future__ import annotations


class Callback:
    """Subclass and override :meth:`on_epoch_end`; ``stop_training = True`` ends the run after this epoch."""

    stop_training = False

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
