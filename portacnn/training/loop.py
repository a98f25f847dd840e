"""The training loop of :class:`~portacnn.Sequential` (``fit``); evaluation and prediction are :mod:`.evaluation`'s.

Determinism: epoch ``e`` visits the samples in ``numpy.random.default_rng([seed, e]).permutation(N)``,
drawn on the host, and dropout draws from the model's own generator. The trainer's position (epoch,
step within the epoch, running sums, generator state, history) is plain JSON saved in checkpoints, so a
run resumed from any checkpoint finishes with exactly the weights of an uninterrupted run.

Host syncs: the loss and the number of correct predictions accumulate on the device; they are read back
(one transfer of two numbers) only every ``log_every`` steps and at the end of an epoch.

``fit`` is split as Keras splits it: here the loop over epochs and steps; what a run records, shows, stops on
and saves are callbacks it builds from its own arguments (:mod:`.history`, :mod:`.progress`,
:mod:`.divergence`, :mod:`.checkpointing`) and calls beside the caller's (:mod:`.callbacks`); a step is
:mod:`.steps`' in one process and :mod:`.mpi_step`'s under MPI.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import numpy as np

from .. import distributed
from ..backend import to_host, wide_dtypes
from ..checkpoint import check_architecture, optimizer_from_checkpoint
from ..inputs import Images, images
from ..losses import get_loss
from ..optim import OPTIMIZERS, Adam, Optimizer, by_name
from ..train_state import TrainState
from ..validation import Integer, NoneValue, Real, _short, check, check_all
from . import mpi_step
from .callbacks import Callback, LearningRateScheduler, ModelCheckpoint, as_callbacks
from .checkpointing import TrainingCheckpoint, restore_callbacks, resume_state
from .divergence import StopOnNonFinite, TrainingDiverged
from .evaluation import check_labels, evaluate, read_loss_and_count
from .history import History, RecordHistory
from .progress import ProgressDisplay
from .signals import Interrupt
from .steps import AUGMENT_STREAM, local_step

__all__ = ["AUGMENT_STREAM", "History", "TrainingDiverged", "fit", "held_out_count"]

#: the rules of fit's numeric arguments (portacnn.validation's)
FIT_RULES = {"epochs": Integer(1), "batch_size": Integer(1), "log_every": Integer(1),
             "checkpoint_every": Integer(1) | NoneValue(), "label_smoothing": Real(0, 1, high_open=True),
             "verbose": Integer(0, 2) | NoneValue()}
VALIDATION_SPLIT = Real(0, 1, high_open=True) | NoneValue()


# -- argument checks ----------------------------------------------------------------------------------
def held_out_count(n: int, validation_split) -> int:
    """How many of ``n`` training images ``fit(validation_split=...)`` holds out (at least 1; 0 for a split of 0
    or None)."""
    split = check(validation_split, VALIDATION_SPLIT, "validation_split")
    if not split:
        return 0
    count = max(1, int(round(n * split)))
    if count >= n:
        raise ValueError(f"validation_split={validation_split} leaves no training images out of {n}")
    return count




@dataclass
class _Settings:
    """The arguments of fit that steer the run, checked."""

    epochs: int
    batch_size: int
    shuffle: bool
    seed: int
    log_every: int
    label_smoothing: float
    augment: object
    verbose: int
    validation_split: float
    checkpoint_path: object
    checkpoint_every: int | None
    checkpoint_extra: dict | None


@dataclass
class _Data:
    """What a run trains on: the images (``source``), their host labels, the training rows (None: all of them;
    else those a validation split leaves) and the validation images and labels (or None)."""

    source: Images
    labels: np.ndarray
    rows: np.ndarray | None
    validation: tuple | None

    @property
    def n_train(self) -> int:
        return self.source.shape[0] if self.rows is None else self.rows.size

    def order(self, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """The rows epoch ``epoch`` visits, in its order (a permutation drawn from [seed, epoch])."""
        n = self.n_train
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        return order if self.rows is None else self.rows[order]


def _read_data(model, x, y, validation_data, validation_split, seed, checkpoint_path) -> _Data:
    source = images(x, model, "x", materialize_dask=True, learn=True)
    n = source.shape[0]
    if model.input_shape is None:  # the images it trains on are what it reads: its checkpoints record them
        model.input_shape = tuple(source.shape[1:])
    if checkpoint_path is not None:  # refuse before the first epoch what save would refuse after it
        check_architecture(model.architecture(), source.shape[1:], model.dtype)
    labels = check_labels(model, y, n)
    rows = None
    if validation_split:
        if validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        count = held_out_count(n, validation_split)
        drawn = np.random.default_rng([seed, 2**32 - 1]).permutation(n)  # apart from every epoch's order
        held, rows = np.sort(drawn[:count]), np.sort(drawn[count:])
        validation_data = (source.rows(held), labels[held])
    if validation_data is not None:
        x_val, y_val = validation_data
        x_val = images(x_val, model, "validation images")
        validation_data = (x_val, check_labels(model, y_val, x_val.shape[0], "validation labels"))
    return _Data(source, labels, rows, validation_data)


def _adopt_resumed(model, resume) -> None:
    """The preprocessing and class names of the run ``resume`` continues (a loaded model or its ``.checkpoint``
    dict) on ``model``, before its raw images are read: a fresh model would otherwise record another
    preprocessing (no normalisation) and train the rest of the run on inputs read otherwise. A preprocessing
    or class names of ``model``'s own that differ from the run's are refused in one line."""
    saved = resume if isinstance(resume, dict) else {"preprocessing": getattr(resume, "preprocessing", None),
                                                     "class_names": getattr(resume, "class_names", None)}
    for key, what in (("preprocessing", "reads raw images"), ("class_names", "names its classes")):
        theirs, ours = saved.get(key), getattr(model, key)
        if theirs is None or resume is model:
            continue
        if ours is None:
            setattr(model, key, theirs)
        elif ours != theirs:
            raise ValueError(f"resume: the model {what} otherwise than the run it continues ({_short(ours, 60)} "
                             f"against {_short(theirs, 60)}); resume into a model without {key} or with the run's")


def _check_optimizer(optimizer) -> None:
    """A ValueError unless ``optimizer`` is None, a portacnn optimizer or a name :func:`by_name` knows."""
    if isinstance(optimizer, str):
        by_name(optimizer)
    elif optimizer is not None and not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer must be a name ({', '.join(sorted(OPTIMIZERS))}), a portacnn.optim optimizer "
                         f"built on model.parameters(), or None; got {type(optimizer).__name__} {_short(optimizer)}")


def _optimizer(model, optimizer, resumed: dict | None):
    """The optimizer a run trains with (``optimizer`` checked by :func:`_check_optimizer`). ``resumed``: the
    checkpoint information of the run resumed, whose saved optimizer (with its state) is taken for None or
    its own name; a name that is not the saved optimizer's is refused, for building it afresh would silently
    drop that state. An optimizer given is used as it is."""
    if optimizer is not None and not isinstance(optimizer, str):
        return optimizer
    saved = optimizer_from_checkpoint(model, resumed) if resumed is not None else None
    if optimizer is None:
        return Adam(model.parameters(), lr=1e-3) if saved is None else saved
    kind = by_name(optimizer)
    if saved is None:
        return kind(model.parameters())
    if type(saved) is not kind:
        name = type(saved).__name__.lower()
        raise ValueError(f"resume: the run was trained with {name}, not {optimizer.lower()}; leave optimizer out (or "
                         f"pass {name!r}) to continue it with its saved state, or pass an optimizer to change it")
    return saved


def _batches(n, batch_size):
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


class _DeviceSums:
    """One process: the epoch's loss sum and correct count, added up on the device from the host values
    (non-zero after a resume) and read back only when logged."""

    def __init__(self, model, state: TrainState):
        backend, self.xp = model.backend, model.backend.xp
        self.loss = self.xp.asarray(state.loss_sum, dtype=backend.dtype(model.dtype), device=backend.device)
        self.count_dtype = wide_dtypes(self.xp)[0]
        self.correct = self.xp.asarray(state.correct, dtype=self.count_dtype, device=backend.device)

    def add(self, loss, n, logits, labels) -> None:
        xp = self.xp
        self.loss = self.loss + loss * n
        self.correct = self.correct + xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, self.count_dtype))

    def read(self) -> tuple[float, int]:
        return read_loss_and_count(self.xp, self.loss, self.correct)


class _HostSums:
    """Under MPI: the sums of every step's allreduce, on the host."""

    def __init__(self, state: TrainState):
        self.loss, self.correct = state.loss_sum, state.correct

    def add(self, loss_sum, correct) -> None:
        self.loss, self.correct = self.loss + loss_sum, self.correct + correct

    def read(self) -> tuple[float, int]:
        return self.loss, self.correct


def _callbacks(model, callbacks, on_epoch_end, comm) -> list[Callback]:
    found = as_callbacks(callbacks, on_epoch_end)
    for callback in found:  # only rank 0 saves ModelCheckpoint files
        quiet = comm is not None and distributed.rank(comm) != 0 and isinstance(callback, ModelCheckpoint)
        callback.set_model(distributed.NoSave(model) if quiet else model)
    return found


def fit(model, x, y, epochs=10, batch_size=128, optimizer=None, validation_data=None, shuffle=True, seed=0,
        progress=True, log_every=20, resume=None, checkpoint_path=None, checkpoint_every=1,
        checkpoint_extra=None, on_epoch_end=None, callbacks=None, validation_split=0.0,
        label_smoothing=0.0, augment=None, verbose=None, comm=None, loss="cross_entropy") -> History:
    """Train ``model`` on images ``x`` (N, C, H, W floats, host or device) and labels ``y`` (N,).

    ``optimizer`` is an optimizer built on ``model.parameters()``, or a name as Keras takes one ("adam",
    "adamw", "sgd", "rmsprop", any case: :func:`portacnn.optim.by_name`'s class with its default
    hyper-parameters, built on the model's parameters); None is Adam(lr=1e-3). ``loss`` is the loss by name
    (:data:`portacnn.losses.LOSSES`: "cross_entropy" or Keras' "sparse_categorical_crossentropy", both
    softmax cross-entropy of the logits against integer class ids) or
    :func:`portacnn.losses.softmax_cross_entropy` itself. ``resume`` is a model loaded with
    :func:`portacnn.load` (or its ``.checkpoint`` dict): training continues from the saved position with the
    saved optimizer and its state, when ``optimizer`` is None or the saved optimizer's name (another name is
    refused; an optimizer given replaces the saved one).
    ``checkpoint_path`` writes a resumable checkpoint every ``checkpoint_every`` epochs, at the end and on
    Ctrl-C or SIGTERM (which then stop training after the current step and mark the history ``interrupted``,
    with ``history.signal`` naming the signal; a second signal raises :class:`Stopped` at once);
    ``checkpoint_extra`` is a JSON-able dict stored with it. ``callbacks`` (see
    :mod:`portacnn.training.callbacks`: hooks before the run, around every epoch and after every step) and
    ``on_epoch_end(epoch, logs)`` run after every epoch; checkpoints keep the callbacks' states (a resumed run
    needs callbacks of the same types, in the same order), written again after the callbacks of an epoch when
    they changed them (EarlyStopping, ModelCheckpoint). With a :class:`LearningRateScheduler`, the history has
    ``lr`` (the first group's rate at each epoch's end).
    ``validation_split`` (0 < f < 1) holds out that fraction of ``x``/``y`` for validation, drawn once from
    ``seed`` (the same images on a resume), instead of ``validation_data``. ``label_smoothing`` (0 <= eps < 1)
    trains on smoothed targets (:func:`portacnn.losses.softmax_cross_entropy`; the logged training loss is that
    loss, validation losses are plain cross-entropy). ``augment`` (a :mod:`portacnn.augment` transform, or any
    ``f(batch, rng)``) changes every training batch on its device before the forward pass, drawing from a
    generator seeded by (seed, epoch, step): the same draws on every backend and after a resume (pass the same
    ``augment`` again); validation and test images are never augmented. ``verbose`` (as Keras): 1 shows a
    tqdm bar on a terminal or in a Jupyter notebook and one line per epoch on stderr elsewhere (logs, CI),
    2 one line per epoch, 0 nothing; left out, it is 1, or 0 with ``progress=False``.
    ``comm`` (an mpi4py communicator of K > 1 processes, e.g. ``MPI.COMM_WORLD`` under ``mpiexec -n K``; see
    :mod:`portacnn.distributed`) trains data-parallel: every rank passes the same data, model, seed and
    arguments, computes its rows of each batch (BatchNorm with the whole batch's statistics), and the ranks add
    their gradients in one allreduce per step, so weights and history equal one process's to float rounding on
    every rank (for two ranks and a model without BatchNorm, bit for bit one process's with ``workers=2``). Only rank 0 writes checkpoints
    (and ModelCheckpoint files) and shows progress; other callbacks run on every rank. Left out, training runs
    in this process alone (the command line uses :func:`portacnn.distributed.auto_comm`).
    A NaN/inf loss raises :class:`TrainingDiverged` without overwriting the last good checkpoint.
    """
    if comm is not None and distributed.size(comm) == 1:
        comm = None  # one process: the ordinary loop

    def prepare() -> _Run:
        checked = check_all("fit", {"epochs": epochs, "batch_size": batch_size, "log_every": log_every,
                                    "checkpoint_every": checkpoint_every, "label_smoothing": label_smoothing,
                                    "verbose": verbose}, FIT_RULES)
        get_loss(loss)  # the one loss fit trains with, by any of its names
        _check_optimizer(optimizer)
        if augment is not None and not callable(augment):
            raise ValueError("augment must be a portacnn.augment transform (or a function f(batch, rng)); "
                             f"got {augment!r}")
        if checked["verbose"] is None:
            checked["verbose"] = 1 if progress else 0
        if comm is not None:
            distributed.check_trainable(model)
            if distributed.rank(comm) != 0:
                checked["verbose"] = 0  # only rank 0 shows progress
        settings = _Settings(shuffle=shuffle, seed=seed, augment=augment, validation_split=validation_split,
                             checkpoint_path=checkpoint_path, checkpoint_extra=checkpoint_extra, **checked)
        if resume is not None:
            _adopt_resumed(model, resume)
        data = _read_data(model, x, y, validation_data, validation_split, seed, checkpoint_path)
        return _Run(model, settings, data, _callbacks(model, callbacks, on_epoch_end, comm), optimizer, resume, comm)

    if comm is None:
        return prepare().train()
    # under MPI: an argument, data or checkpoint refused on one rank stops every rank (none waits for it in a
    # collective); then the ranks compare their data and whole setup before the first step
    run = distributed.agree(comm, prepare)
    run.start()
    return run.train()


class _Run:
    """One call of :func:`fit`: its position (a TrainState), optimizer, callbacks (the caller's and fit's own)
    and the loops over epochs and steps."""

    def __init__(self, model, settings: _Settings, data: _Data, callbacks, optimizer, resume, comm):
        self.model, self.settings, self.data, self.callbacks, self.comm = model, settings, data, callbacks, comm
        self.resumed = resume is not None
        self.state, info = TrainState(seed=settings.seed, batch_size=settings.batch_size), None
        if self.resumed:
            self.state, info = resume_state(resume, model, settings.batch_size, settings.seed)
            restore_callbacks(callbacks, self.state.callbacks)
        self.position = self.state.to_json() if comm is not None else None  # compared by the ranks (start)
        self.optimizer = _optimizer(model, optimizer, info if self.resumed else None)
        model.optimizer = self.optimizer  # what the callbacks see (self.model.optimizer)
        # the per-step hook is called only on the callbacks that define it: no cost per step otherwise
        self.batch_callbacks = [c for c in callbacks if type(c).on_train_batch_end is not Callback.on_train_batch_end]
        self._own_callbacks(info)
        self.transport = self.batch_sums = None

    def start(self) -> None:
        """Under MPI, before the first step: the same data and setup on every rank, or one line on each (the same
        ValueError); the gradient transport and BatchNorm's sums over the ranks."""
        s, data = self.settings, self.data
        settings = {"epochs": s.epochs, "batch_size": s.batch_size, "seed": s.seed, "shuffle": bool(s.shuffle),
                    "validation_split": s.validation_split, "label_smoothing": s.label_smoothing,
                    "log_every": s.log_every,  # whether a checkpoint is written and how often (where: rank 0's alone)
                    "checkpointing": [s.checkpoint_path is not None,
                                      s.checkpoint_every if s.checkpoint_path is not None else None]}
        self.transport, self.batch_sums = mpi_step.start(
            self.comm, self.model, source=data.source, labels=data.labels, validation=data.validation,
            rows=data.rows, settings=settings, augment=s.augment, optimizer=self.optimizer, callbacks=self.callbacks,
            position=self.position, checkpoint_extra=s.checkpoint_extra)

    def _own_callbacks(self, info) -> None:
        """fit's own callbacks, from its arguments: the history (one record with the TrainState's), the progress
        display, the stop on a non-finite loss and the checkpoint."""
        s, state = self.settings, self.state
        self.history = History(history=state.history, epoch_times=state.epoch_times)
        track_lr = any(isinstance(c, LearningRateScheduler) for c in self.callbacks)
        self.record = RecordHistory(self.history, self.data.validation is not None, track_lr)
        self.progress = ProgressDisplay(s.verbose, s.epochs, self.data.n_train, state, self.history)
        self.checkpoint = None
        if s.checkpoint_path is not None:
            resumed_from = (info or {}).get("path") if self.resumed else None
            self.checkpoint = TrainingCheckpoint(s.checkpoint_path, s.checkpoint_every, s.epochs, state, self.callbacks,
                                                 self.optimizer, s.checkpoint_extra, self.data.source.shape[1:],
                                                 self.comm, resumed_from)
        note = self.checkpoint.good_note if self.checkpoint is not None else (lambda: "")
        # in this order: a loss found non-finite is never shown, an epoch is recorded before it is shown or saved
        self.own = [self.record, StopOnNonFinite(note), self.progress]
        if self.checkpoint is not None:
            self.own.append(self.checkpoint)
        for callback in self.own:
            callback.set_model(self.model)

    def train(self) -> History:
        def begin():
            for callback in self.callbacks:
                callback.on_train_begin()

        if self.comm is None:
            begin()
        else:  # one refusing on one rank (a scheduler built on another optimizer) stops every rank
            distributed.agree(self.comm, begin)
        # a run a callback stopped (early stopping) is over: resuming it trains nothing more
        over = self.resumed and any(callback.stop_training for callback in self.callbacks)
        with Interrupt() as self.interrupt:
            # under MPI the ranks stop on the signals they agreed on in a step's allreduce, never on their own
            self.stop = self.interrupt if self.comm is None else mpi_step.Agreed()
            try:
                while self.state.epoch < self.settings.epochs and not over:
                    over = self._epoch()
            finally:
                self.progress.close()
        if not self.history.interrupted:
            for callback in self.own:
                callback.on_train_end()
        if self.interrupt.hit and self.history.signal is None:  # it came after the last step: the run is complete,
            self.history.signal = signal.Signals(self.interrupt.signum).name  # but the caller must learn of it
        self.model.optimizer = self.optimizer
        return self.history

    def _epoch(self) -> bool:
        """Train one epoch (the rest of it, after a resume mid-epoch); True when the run ends with it."""
        state, stop = self.state, self.stop
        epoch = state.epoch
        order = self.data.order(self.settings.seed, epoch, self.settings.shuffle)
        spans = _batches(order.size, self.settings.batch_size)
        for callback in self.callbacks + self.own:
            callback.on_epoch_begin(epoch)
        sums = _DeviceSums(self.model, state) if self.comm is None else _HostSums(state)
        last_logged = state.step
        while state.step < len(spans):
            lo, hi = spans[state.step]
            self._step(order[lo:hi], sums)
            state.step += 1
            state.seen += hi - lo
            for callback in self.batch_callbacks:  # host values only: no wait for the device
                callback.on_train_batch_end(state.step - 1, {"epoch": epoch, "size": hi - lo})
            if state.step == len(spans) or state.step - last_logged >= self.settings.log_every or stop.hit:
                state.loss_sum, state.correct = sums.read()
                for callback in self.own:
                    callback.on_log(state)
                last_logged = state.step
            if stop.hit:
                break
        if stop.hit and state.step < len(spans):
            self._stopped()
            return True
        return self._end_epoch(epoch)

    def _step(self, idx, sums) -> None:
        """One optimizer step on the rows ``idx`` of the epoch's order; its loss and correct count go to ``sums``."""
        s, model = self.settings, self.model
        where = (s.seed, self.state.epoch, self.state.step)
        if self.comm is not None:  # this rank's rows; the gradients and sums of all ranks in one allreduce
            sums.add(*mpi_step.rank_step(self.comm, model, self.data.source, self.data.labels, idx, s.augment, where,
                                         s.label_smoothing, self.interrupt, self.stop, self.transport,
                                         self.batch_sums))
            self.optimizer.step()
            self.optimizer.zero_grad()
            return
        loss, logits, labels = local_step(model, self.data.source, self.data.labels, idx, s.augment, where,
                                          s.label_smoothing)
        self.optimizer.step()
        self.optimizer.zero_grad()
        sums.add(loss, idx.size, logits, labels)

    def _end_epoch(self, epoch: int) -> bool:
        """The epoch's metrics to fit's callbacks (recorded, shown, checkpointed), then to the caller's; True when
        the run ends here (a callback stopped it, or a signal came)."""
        state = self.state
        logs = {"loss": state.loss_sum / state.seen, "accuracy": state.correct / state.seen}
        if self.data.validation is not None:
            val = evaluate(self.model, *self.data.validation, batch_size=max(self.settings.batch_size, 1000),
                           comm=self.comm)
            logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        state.next_epoch()
        for callback in self.own:
            callback.on_epoch_end(epoch, logs)
        logs = self.record.latest()
        if self.comm is None:
            for callback in self.callbacks:
                callback.on_epoch_end(epoch, logs)
        else:  # a callback failing on one rank (a ModelCheckpoint file on rank 0) stops every rank
            mpi_step.end_epoch(self.comm, self.model, self.callbacks, epoch, logs)
        finished = any(callback.stop_training for callback in self.callbacks)
        for callback in self.own:
            callback.on_callbacks_end(finished)
        if not finished and self.stop.hit and state.epoch < self.settings.epochs:
            self._stopped()
        return finished or self.stop.hit

    def _stopped(self) -> None:
        """A signal stopped the run before its last epoch: the history says so, fit's callbacks close and save."""
        self.history.interrupted = True
        self.history.signal = signal.Signals(self.stop.signum).name
        for callback in self.own:
            callback.on_stop()
