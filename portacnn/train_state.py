"""Where a training run stands: the one record :func:`portacnn.training.fit` resumes from and checkpoints store.

A run is fully described by its seed and batch size (which fix every epoch's order), the position inside
it (epoch, step within the epoch), the epoch's running sums, the model generator's state (dropout masks),
the history so far and the states of the run's callbacks (a learning-rate schedule's position, an early
stop's best value). :mod:`portacnn.checkpoint` writes :meth:`TrainState.to_json` as the ``train_state``
field and validates the same fields when it reads one, so resuming from any checkpoint finishes with exactly
the weights of an uninterrupted run.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field


@dataclass
class TrainState:
    seed: int
    batch_size: int
    epoch: int = 0  # finished epochs
    step: int = 0  # finished steps of the current epoch
    loss_sum: float = 0.0  # sum over the epoch's images so far of their loss
    correct: int = 0  # the epoch's correct predictions so far
    seen: int = 0  # the epoch's images so far
    rng: dict | None = None  # the model generator's bit_generator.state
    history: dict = field(default_factory=lambda: {"loss": [], "accuracy": []})
    epoch_times: list = field(default_factory=list)
    #: ``[{"type": class name, "state": {...}}]`` of the callbacks with state, in order; None: not recorded
    #: (a checkpoint written before callbacks had state: a resumed run's callbacks then start afresh)
    callbacks: list | None = None

    #: what every saved training state holds, and what it may hold besides
    REQUIRED = frozenset({"seed", "batch_size", "epoch", "step", "loss_sum", "correct", "seen", "rng", "history"})
    OPTIONAL = frozenset({"epoch_times", "callbacks"})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, saved: dict) -> "TrainState":
        """The state a checkpoint holds (already checked by :mod:`portacnn.checkpoint`), as fresh objects."""
        return cls(**{**saved, "history": {k: list(v) for k, v in saved["history"].items()},
                      "epoch_times": list(saved.get("epoch_times", [])),
                      "callbacks": copy.deepcopy(saved.get("callbacks"))})

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step, self.loss_sum, self.correct, self.seen = 0, 0.0, 0, 0
