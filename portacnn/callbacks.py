"""Callbacks for :func:`portacnn.training.fit` (``fit(callbacks=[...])``), under the name Keras users look for:
the classes of :mod:`portacnn.training.callbacks`, where they are defined and documented."""

from __future__ import annotations

from .training.callbacks import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
)

__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "LearningRateScheduler", "ModelCheckpoint"]
