"""Training: the training loop (:mod:`.loop`), evaluation and prediction (:mod:`.evaluation`), signals during a
run (:mod:`.signals`) and callbacks (:mod:`.callbacks`, whose public home is :mod:`portacnn.callbacks`).

``fit`` builds its own callbacks from its arguments (:mod:`.history`, :mod:`.progress`, :mod:`.divergence`,
:mod:`.checkpointing`); under MPI a step is :mod:`.mpi_step`'s. The run's position is a
:class:`portacnn.train_state.TrainState`, the record checkpoints store.
"""

from __future__ import annotations

from .callbacks import Callback
from .divergence import TrainingDiverged
from .evaluation import check_labels, evaluate, predict, predict_log_proba, predict_proba
from .history import History
from .loop import fit, held_out_count
from .signals import Stopped

__all__ = ["Callback", "History", "Stopped", "TrainingDiverged", "check_labels", "evaluate", "fit", "held_out_count",
           "predict", "predict_log_proba", "predict_proba"]
