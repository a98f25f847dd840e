"""A run whose loss or weights became NaN or infinite stops with :class:`TrainingDiverged` (Keras'
TerminateOnNaN, raising: the weights in memory are no longer usable), never overwriting the last good
checkpoint; the message names that checkpoint when the run wrote it or resumed from it."""

from __future__ import annotations

import math

from ..backend import to_host, wide_dtypes
from .builtin import FitCallback


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights in memory are no longer usable."""


class StopOnNonFinite(FitCallback):
    """Raises :class:`TrainingDiverged` when the epoch's loss sum, read back every ``log_every`` steps, is NaN or
    infinite; ``note()`` is appended to the message (where the last good checkpoint is, or nothing)."""

    def __init__(self, note=lambda: ""):
        self.note = note

    def on_log(self, state):
        if not math.isfinite(state.loss_sum):
            raise TrainingDiverged(f"training diverged: the loss became {state.loss_sum} in epoch {state.epoch + 1} "
                                   f"(step {state.step}); lower the learning rate" + self.note())


def check_finite_weights(model, note: str = "") -> None:
    """TrainingDiverged when a weight of ``model`` is NaN or infinite (one host sync): the last update can
    overflow the weights even when the loss it followed was finite."""
    xp = model.backend.xp
    bad = int(to_host(sum(xp.sum(xp.astype(~xp.isfinite(p.data), wide_dtypes(xp)[0])) for p in model.parameters())))
    if bad:
        raise TrainingDiverged(f"training diverged: {bad} weights became NaN or infinite; lower the learning rate"
                               + note)
