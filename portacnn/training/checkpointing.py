"""The checkpoints of a run: what ``fit(checkpoint_path=...)`` writes while it trains, and what
``fit(resume=...)`` takes back from one.

A checkpoint holds the weights, the optimizer and the run's :class:`~portacnn.train_state.TrainState` (its
position, history, generator and the states of its callbacks), so that a run resumed from it finishes with
exactly the weights of an uninterrupted one. :func:`portacnn.checkpoint.save` writes it atomically: an
interrupted write leaves the previous file whole.
"""

from __future__ import annotations

import os

from .. import distributed
from .._atomic import TargetError, check_target
from ..checkpoint import save
from ..train_state import TrainState, check_saved_train_state
from .builtin import FitCallback
from .divergence import check_finite_weights


def callback_states(callbacks) -> list[dict]:
    """What checkpoints keep of the callbacks: ``{"type": class name, "state": ...}`` of each with state, in order."""
    return [{"type": type(c).__name__, "state": s} for c in callbacks if (s := c.state_dict()) is not None]


def restore_callbacks(callbacks, saved) -> None:
    """Give the callbacks with state what the checkpoint kept of them (nothing from a checkpoint without the record)."""
    if saved is None:
        return
    live = [c for c in callbacks if c.state_dict() is not None]
    want, have = [e["type"] for e in saved], [type(c).__name__ for c in live]
    if want != have:
        raise ValueError(f"resume: the checkpoint's run had the callbacks with state {want or '(none)'} and this fit has "
                         f"{have or '(none)'}; pass the same callbacks, in the same order, to continue that run")
    for callback, entry in zip(live, saved):
        try:
            callback.load_state_dict(entry["state"])
        except ValueError as e:
            raise ValueError(f"resume: {e}") from None


def resume_state(resume, model, batch_size: int, seed: int) -> tuple[TrainState, dict]:
    """The position ``fit(resume=...)`` continues from: ``resume`` is a model :func:`portacnn.load` read (its
    weights go into ``model``) or its ``.checkpoint`` dict. Returns the state (the model's generator set to it)
    and the checkpoint's information; a ValueError when it holds no usable training state or another run's
    batch size or seed."""
    info = resume if isinstance(resume, dict) else getattr(resume, "checkpoint", None)
    saved = (info or {}).get("train_state")
    if not saved:
        raise ValueError("resume: the checkpoint holds no training state (it was saved without a trainer)")
    try:
        check_saved_train_state(saved)  # load checked it; a dict may have been changed since, or be made by hand
    except ValueError as e:
        raise ValueError(f"resume: the checkpoint's training state is not usable: {e}") from None
    if resume is not model and not isinstance(resume, dict):
        model.load_state_dict(resume.state_dict())
    if saved["batch_size"] != batch_size or saved["seed"] != seed:
        raise ValueError(f"resume: the checkpoint was trained with batch_size={saved['batch_size']}, seed={saved['seed']}; "
                         "use the same values to continue the run")
    state = TrainState.from_json(saved)
    model.rng.bit_generator.state = state.rng
    return state, info


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class TrainingCheckpoint(FitCallback):
    """Writes the run's resumable checkpoint to ``path``: every ``every`` epochs (None: never on a schedule) and
    at the last one, before the caller's callbacks see the epoch; again after them when they stopped the run or
    changed their states (EarlyStopping, ModelCheckpoint), so that a resumed run has them; when a signal stops
    the run (mid-epoch: a step-level checkpoint); at the end of a run that wrote none (a finished run resumed
    into a new file). Never over the last good checkpoint with weights that are not finite
    (:class:`~portacnn.training.divergence.TrainingDiverged` instead). Under MPI (``comm``) every rank takes
    the snapshot, rank 0 writes, and a failure there stops every rank.

    ``resumed_from`` is the file the run resumed from: when it is ``path``, it is the last good checkpoint
    until the run writes one. A path that cannot be written (its folder missing, a folder) is refused when the
    run starts, in one line naming it (:func:`portacnn._atomic.check_target`), not after its first epoch."""

    def __init__(self, path, every, epochs: int, state: TrainState, callbacks, optimizer, extra, input_shape,
                 comm=None, resumed_from=None):
        if comm is None:  # before any work, not after the first epoch (under MPI rank 0 writes: its failure stops all)
            try:
                check_target(path)
            except TargetError as e:
                raise type(e)(e.errno, f"fit(checkpoint_path=...) cannot write there: {e.strerror}", e.filename) from None
        self.path, self.every, self.epochs, self.state, self.callbacks = path, every, epochs, state, callbacks
        self.optimizer, self.extra, self.input_shape, self.comm = optimizer, extra, input_shape, comm
        self.last_good = path if resumed_from and _same_file(resumed_from, path) else None
        self.saved_now = False

    def good_note(self) -> str:
        """What a divergence message says of the checkpoint: only one this run wrote, or the one it resumed from."""
        return f"; the last good checkpoint is {self.last_good}" if self.last_good else ""

    def write(self) -> None:
        check_finite_weights(self.model, self.good_note())
        self.state.rng = self.model.rng.bit_generator.state
        self.state.callbacks = callback_states(self.callbacks)  # on every rank: it decides later writes
        train_state = self.state.to_json()

        def write():
            save(self.model, self.path, optimizer=self.optimizer, train_state=train_state, extra=self.extra,
                 input_shape=self.input_shape)

        if self.comm is None:
            write()
        else:
            distributed.on_rank0(self.comm, write)
        self.last_good = self.path

    def on_epoch_end(self, epoch, logs):
        finished = self.state.epoch  # the run's state has moved on to the next epoch
        self.saved_now = self.every is not None and (finished % self.every == 0 or finished == self.epochs)
        if self.saved_now:
            self.write()

    def on_callbacks_end(self, finished):
        if finished and not self.saved_now:
            self.write()  # the run ends here: its checkpoint must hold this epoch
        elif self.saved_now and callback_states(self.callbacks) != self.state.callbacks:
            self.write()  # the callbacks' states after this epoch, so that a resumed run has them

    def on_stop(self):
        self.write()

    def on_train_end(self):
        if self.last_good is None:
            self.write()  # e.g. a finished run resumed into a new file: the path must hold it
