"""Training: the loops (:mod:`.loop`), signals during a run (:mod:`.signals`) and callbacks (:mod:`.callbacks`).

The run's position is a :class:`portacnn.train_state.TrainState`, the record checkpoints store.
"""

from __future__ import annotations

from .callbacks import Callback, EarlyStopping, LambdaCallback, LearningRateScheduler, ModelCheckpoint
from .loop import History, TrainingDiverged, check_labels, evaluate, fit, held_out, predict, predict_log_proba, predict_proba
from .signals import Stopped

__all__ = ["Callback", "EarlyStopping", "History", "LambdaCallback", "LearningRateScheduler", "ModelCheckpoint", "Stopped",
           "TrainingDiverged", "check_labels", "evaluate", "fit", "held_out", "predict", "predict_log_proba", "predict_proba"]
