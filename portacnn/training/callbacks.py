"""Callbacks: code a training run calls at fixed points, as in Keras (``fit(callbacks=[...])``).

``fit`` hands every callback the model first (:meth:`Callback.set_model`; ``self.model.optimizer`` is the
optimizer the run trains with), then calls, in the order the callbacks were given:

- :meth:`~Callback.on_train_begin` once, before the first step (after a resume restored the callbacks' state);
- :meth:`~Callback.on_epoch_begin` before each epoch (also before a resumed run finishes an epoch it had begun);
- :meth:`~Callback.on_train_batch_end` after every optimizer step, with host values only (reading the loss
  there would wait for the device at every step);
- :meth:`~Callback.on_epoch_end` after each epoch has finished and been checkpointed, with its metrics
  (``loss``, ``accuracy``, with validation data ``val_loss``, ``val_accuracy``; ``lr`` with a
  :class:`LearningRateScheduler`). Setting ``stop_training`` ends the run after that epoch.

A callback with state returns it from :meth:`~Callback.state_dict` (plain JSON, finite numbers) and takes it
back in :meth:`~Callback.load_state_dict`: checkpoints written by ``fit`` hold the states of its callbacks, and
``fit(resume=...)`` restores them, so that a resumed run stops, saves and schedules exactly as the uninterrupted
one (it must be given callbacks of the same types, in the same order). The callbacks here:

- :class:`EarlyStopping`: stop when a metric has not improved for ``patience`` epochs (optionally going back
  to the best weights);
- :class:`ModelCheckpoint`: save the model whenever a metric improves (the best model of the run);
- :class:`LearningRateScheduler`: step a schedule of :mod:`portacnn.optim.lr_scheduler` after every epoch or
  after every optimizer step.

Their public home is :mod:`portacnn.callbacks`. Each of them checks its arguments with the rules of
:mod:`portacnn.validation`, and a saved state with the same rules: :meth:`~EarlyStopping.check_state` checks
one read from an untrusted file before any callback exists (:data:`STATE_CHECKS`, which
:func:`portacnn.train_state.check_saved_train_state` calls), and ``load_state_dict`` refuses what it refuses.
"""

from __future__ import annotations

import json
import math
import os
import warnings

from .._atomic import TargetError, check_target
from ..optim.lr_scheduler import LRScheduler, check_saved_state
from ..train_state import INT64, MAX_EPOCHS, ClassName
from ..validation import Boolean, Integer, Name, NoneValue, Options, Real, Rule, check, check_all


class Callback:
    """Subclass and override the hooks you need; ``stop_training = True`` ends the run after the current epoch.

    A callback with state overrides :meth:`state_dict` and :meth:`load_state_dict` so that checkpoints keep it.
    """

    stop_training = False
    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self) -> None:
        """Called once before the first step of ``fit``; ``self.model.optimizer`` is the run's optimizer."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based) trains, also when a resumed run continues it mid-way."""

    def on_train_batch_end(self, batch: int, logs: dict) -> None:
        """Called after every optimizer step; ``batch`` is the step's index in its epoch, ``logs`` holds host
        values only (``epoch``, ``size``: the images of the step), never the loss (that would wait for the device)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Called after epoch ``epoch`` (0-based) has finished and been checkpointed."""

    def state_dict(self) -> dict | None:
        """What a checkpoint keeps of this callback: a JSON-able dict with finite numbers, or None (the default) for
        a callback without state."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Take back what :meth:`state_dict` returned (a resumed run); ValueError when it does not fit."""
        if state:
            raise ValueError(f"{type(self).__name__} has saved state but no load_state_dict; override load_state_dict "
                             "to restore what its state_dict returns")


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


class _Fields(Rule):
    """An object with exactly the keys of ``rules``, each value checked by its rule (a saved state)."""

    def __init__(self, rules: dict):
        self.rules = rules

    def describe(self):
        return f"an object with the keys {sorted(self.rules)}"

    def check(self, value, what):
        if not isinstance(value, dict):
            self._fail(value, what)
        return check_all(what, value, self.rules, required=self.rules)


class _SavedSchedule(Rule):
    """A scheduler's saved state, as :func:`portacnn.optim.lr_scheduler.check_saved_state` checks it."""

    def describe(self):
        return "a saved scheduler state"

    def check(self, value, what):
        check_saved_state(value, what)
        return value


def _finished_epoch(epoch: int) -> Rule:
    """None, or an epoch a run at ``epoch`` finished epochs has finished (0-based, below ``epoch``)."""
    return NoneValue() if epoch == 0 else Integer(0, epoch - 1) | NoneValue()


class _FilePath(Rule):
    """A file path: a non-empty str or an os.PathLike (kept as given)."""

    def describe(self):
        return "a file path (a non-empty str or os.PathLike)"

    def check(self, value, what):
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value) or "\0" in str(os.fspath(value)):
            self._fail(value, what)
        return value


FILE_PATH = _FilePath()
MONITOR = Name(64)
MODES = Options("auto", "min", "max")
MIN_DELTA = Real(0)
#: epochs without progress before stopping: at most a run's epochs (as the recipe's --early-stopping); more could
#: never stop a run, and an unbounded int is no number (10**400 is no float)
PATIENCE = Integer(0, MAX_EPOCHS)


class _Monitor(Callback):
    """Tracks the best value of one metric (``min`` for losses, ``max`` for accuracies unless told)."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        name = type(self).__name__
        self.monitor = check(monitor, MONITOR, f"{name} monitor")
        mode = check(mode, MODES, f"{name} mode")
        self.sign = -1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else 1.0
        self.min_delta = check(min_delta, MIN_DELTA, f"{name} min_delta")
        self.best = math.inf
        self.best_epoch = None
        self._restored = False

    def on_train_begin(self):
        """A new run starts from scratch (as Keras); a resumed one keeps what its checkpoint restored."""
        restored, self._restored = self._restored, False
        if not restored:
            self.reset()

    def reset(self) -> None:
        self.best, self.best_epoch, self.stop_training = math.inf, None, False

    def improved(self, logs: dict) -> bool:
        if self.monitor not in logs:
            raise ValueError(f"{type(self).__name__} monitors {self.monitor!r}, which fit does not report; it reports "
                             f"{', '.join(sorted(logs))} (val_* need validation data)")
        value = self.sign * float(logs[self.monitor])
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best = value
            return True
        return False

    def state_dict(self) -> dict:
        """The metric and its direction, the best (signed) value so far (None before any) and its epoch."""
        return {"monitor": self.monitor, "mode": "max" if self.sign < 0 else "min",
                "best": None if math.isinf(self.best) else self.best, "best_epoch": self.best_epoch}

    @classmethod
    def _state_rules(cls, epoch: int) -> dict:
        """The rules of a saved state at ``epoch`` finished epochs (the mode is resolved: 'min' or 'max')."""
        return {"monitor": MONITOR, "mode": Options("min", "max"), "best": Real() | NoneValue(),
                "best_epoch": _finished_epoch(epoch)}

    @classmethod
    def check_state(cls, state: dict, epoch: int, what: str | None = None) -> None:
        """A saved state (from an untrusted file, of a run at ``epoch`` finished epochs), checked without
        building the callback: exactly its keys, each by the constructor's rule (the monitor's name, the
        mode) or its own (a finite best value, epochs the run has finished); a one-line ValueError otherwise."""
        _Fields(cls._state_rules(epoch)).check(state, what or f"{cls.__name__} state")

    def load_state_dict(self, state: dict) -> None:
        name = type(self).__name__
        self.check_state(state, MAX_EPOCHS)
        mode = "max" if self.sign < 0 else "min"
        if (state["monitor"], state["mode"]) != (self.monitor, mode):
            raise ValueError(f"{name} was saved monitoring {state['monitor']!r} ({state['mode']}); this one monitors "
                             f"{self.monitor!r} ({mode}): give it the saved run's monitor and mode")
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_epoch = state["best_epoch"]
        self._restored = True


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs, as Keras'
    EarlyStopping; ``restore_best_weights`` puts the best epoch's weights back when it stops.

    Its state (best value, its epoch, the epochs waited, the epoch it stopped at) is kept in checkpoints, so a
    resumed run stops at the same epoch, and a run it stopped stays finished (``fit(resume=...)`` trains no
    further, and the checkpoint keeps the weights it stopped with: the best ones when restored); the best
    weights themselves are not kept (they would double the file): a run resumed after its best epoch keeps
    its last weights when it stops, with a warning.
    """

    def __init__(self, monitor="val_loss", patience=3, min_delta=0.0, mode="auto", restore_best_weights=False):
        super().__init__(monitor, mode, min_delta)
        self.patience = check(patience, PATIENCE, "EarlyStopping patience")
        self.restore_best_weights = check(restore_best_weights, Boolean(), "EarlyStopping restore_best_weights")
        self.wait, self.best_weights, self.stopped_epoch = 0, None, None

    def reset(self) -> None:
        super().reset()
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
            elif self.restore_best_weights and self.best_epoch is not None:
                warnings.warn(f"EarlyStopping: the best weights (epoch {self.best_epoch + 1}) predate the checkpoint "
                              "this run resumed from, which does not hold them; the last weights are kept", stacklevel=2)

    @classmethod
    def _state_rules(cls, epoch: int) -> dict:
        """The monitor's, and the epochs waited (at most the finished ones) and the epoch it stopped at."""
        return {**super()._state_rules(epoch), "wait": Integer(0, epoch), "stopped_epoch": _finished_epoch(epoch)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.stop_training = self.stopped_epoch is not None  # the run it stopped is over


class ModelCheckpoint(_Monitor):
    """Save the model to ``path`` (atomically, as :meth:`Sequential.save`) whenever ``monitor`` improves, or
    after every epoch with ``save_best_only=False``: the best model of a run, kept apart from the resumable
    checkpoint ``fit(checkpoint_path=...)`` writes. Its best value is kept in checkpoints: a resumed run only
    replaces the file with a better model. ``path`` must be a file path (checked when built) whose folder exists
    (checked when the run begins, before any step: a one-line ValueError, also an OSError, naming ``path``)."""

    def __init__(self, path, monitor="val_loss", save_best_only=True, mode="auto", min_delta=0.0):
        super().__init__(monitor, mode, min_delta)
        self.path = check(path, FILE_PATH, "ModelCheckpoint path")
        self.save_best_only = check(save_best_only, Boolean(), "ModelCheckpoint save_best_only")

    def on_train_begin(self):
        """Before any work: the file must be one it can write (its folder exists), else a one-line ValueError
        naming the path, not a failed save after the first epoch."""
        try:
            check_target(self.path)
        except TargetError as e:
            raise type(e)(e.errno, f"ModelCheckpoint cannot save there: {e.strerror}", e.filename) from None
        super().on_train_begin()

    def on_epoch_end(self, epoch, logs):
        if self.improved(logs) or not self.save_best_only:
            self.best_epoch = epoch
            self.model.save(self.path)


# a scheduler's state: what its progress is (taken from a checkpoint) and what its arguments are (must agree)
_PROGRESS = frozenset({"last_epoch", "_step_count", "_last_lr", "base_lrs"})


def _json_type(value) -> str:
    if value is None or isinstance(value, (bool, str, list, dict)):
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def _match_scheduler_state(saved, live, where: str) -> None:
    """``saved`` (from a checkpoint) fits ``live`` (this run's scheduler's state, as JSON): the same keys, the
    same arguments, progress values of the same kinds and lengths; else a ValueError naming the entry."""
    if _json_type(saved) != _json_type(live):
        raise ValueError(f"{where} is a {_json_type(saved)} in the checkpoint, a {_json_type(live)} in this run's scheduler")
    if isinstance(live, dict):
        if set(saved) != set(live):
            raise ValueError(f"{where} has the entries {sorted(saved)} in the checkpoint, {sorted(live)} in this run's "
                             "scheduler: build the same kind of scheduler")
        for key, value in live.items():
            if key == "_schedulers":  # SequentialLR: each scheduler in turn
                if len(saved[key]) != len(value):
                    raise ValueError(f"{where} chains {len(saved[key])} schedulers in the checkpoint, {len(value)} here")
                for i, (s, v) in enumerate(zip(saved[key], value)):
                    _match_scheduler_state(s, v, f"{where}._schedulers[{i}]")
            elif key in _PROGRESS:
                _match_progress(saved[key], value, f"{where}.{key}")
            elif saved[key] != value:
                raise ValueError(f"{where}.{key} is {saved[key]!r} in the checkpoint and {value!r} in this run's scheduler: "
                                 "build the scheduler with the saved run's arguments")


def _match_progress(saved, live, where):
    if _json_type(saved) != _json_type(live) or (isinstance(live, list) and len(saved) != len(live)):
        raise ValueError(f"{where} does not fit this run's scheduler (one value per parameter group): build it on an "
                         "optimizer with the saved run's parameter groups")
    if isinstance(live, list):
        for s, v in zip(saved, live):
            _match_progress(s, v, where)
    elif isinstance(live, int) and not isinstance(live, bool) and not isinstance(saved, int):
        raise ValueError(f"{where} must be an integer; got {saved!r}")


def _bind(scheduler, optimizer) -> None:
    scheduler.optimizer = optimizer
    for inner in getattr(scheduler, "_schedulers", ()):
        _bind(inner, optimizer)


PER = Options("epoch", "step")


class LearningRateScheduler(Callback):
    """Step ``scheduler`` (one of :mod:`portacnn.optim.lr_scheduler`) during ``fit``: ``per="epoch"`` after every
    epoch (the rate of epoch e is the schedule's value after e steps, torch's usual loop), ``per="step"`` after
    every optimizer step (OneCycleLR's ``total_steps`` is then epochs * steps per epoch). Build the scheduler on
    the optimizer you pass to ``fit``. History gets ``lr``: the first group's rate at each epoch's end.

    Checkpoints keep the schedule's state. To resume, build the same scheduler (on any optimizer of the same
    kind with the same groups, e.g. a throwaway one) and call ``fit(resume=..., callbacks=[...])`` without an
    optimizer: ``fit`` restores the saved optimizer, attaches the scheduler to it and continues the schedule
    exactly (given an optimizer, ``fit`` trains that one, and the schedule writes its rates into it).
    """

    def __init__(self, scheduler, per="epoch"):
        if not isinstance(scheduler, LRScheduler):
            raise ValueError(f"LearningRateScheduler needs a scheduler from portacnn.optim.lr_scheduler (StepLR, "
                             f"OneCycleLR, ...); got {scheduler!r}")
        self.scheduler, self.per = scheduler, check(per, PER, "LearningRateScheduler per")
        self._offset = None  # per="epoch": the scheduler's last_epoch minus the run's epoch when the run started
        self._restored = False

    def on_train_begin(self):
        restored, self._restored = self._restored, False
        if not restored:  # a new run (or another fit with this callback): the schedule goes on from where it is
            self._offset = None
        optimizer = getattr(self.model, "optimizer", None)
        own = self.scheduler.optimizer
        if optimizer is own or optimizer is None:
            pass
        elif not restored:
            raise ValueError("LearningRateScheduler: its scheduler was built on another optimizer than the one fit "
                             "trains with; pass that optimizer: fit(optimizer=...)")
        elif type(optimizer) is not type(own) or len(optimizer.param_groups) != len(own.param_groups):
            raise ValueError(f"LearningRateScheduler: its scheduler was built on a {type(own).__name__} with "
                             f"{len(own.param_groups)} parameter groups, and the run trains a {type(optimizer).__name__} "
                             f"with {len(optimizer.param_groups)}: build it on the same kind of optimizer")
        else:
            _bind(self.scheduler, optimizer)
        if restored:
            self.scheduler._write_groups()  # the saved rates (and momentum), whichever optimizer the run has

    def on_epoch_begin(self, epoch):
        if self.per != "epoch":
            return
        if self._offset is None:
            self._offset = self.scheduler.last_epoch - epoch
        behind = self._offset + epoch - self.scheduler.last_epoch  # 1 after an epoch, 0 when resumed mid-epoch
        if behind > 1:
            raise ValueError(f"LearningRateScheduler: its scheduler stands {behind} steps behind epoch {epoch}: the "
                             "saved schedule does not belong to this run; resume with the run's own checkpoint")
        if behind == 1:
            self.scheduler.step()

    def on_train_batch_end(self, batch, logs):
        if self.per == "step":
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"per": self.per, "offset": self._offset,
                "scheduler": {"type": type(self.scheduler).__name__, "state": self.scheduler.state_dict()}}

    @classmethod
    def check_state(cls, state: dict, epoch: int, what: str | None = None) -> None:
        """A saved state (from an untrusted file), checked without building the callback: exactly its keys,
        ``per`` by the constructor's rule, the offset a 64-bit int or None, the scheduler a class name and a
        state :func:`portacnn.optim.lr_scheduler.check_saved_state` accepts (``epoch``, the run's finished
        epochs, bounds nothing here); a one-line ValueError otherwise."""
        scheduler = _Fields({"type": ClassName(), "state": _SavedSchedule()})
        _Fields({"per": PER, "offset": INT64 | NoneValue(), "scheduler": scheduler}).check(
            state, what or f"{cls.__name__} state")

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state, MAX_EPOCHS)
        if state["per"] != self.per:
            raise ValueError(f"LearningRateScheduler was saved with per={state['per']!r}; this one has per={self.per!r}: "
                             "use the saved run's")
        saved = state["scheduler"]
        kind = type(self.scheduler).__name__
        if saved["type"] != kind:
            raise ValueError(f"LearningRateScheduler was saved with a {saved['type']}; this one has a {kind}: build the "
                             "saved run's scheduler")
        live = json.loads(json.dumps(self.scheduler.state_dict()))
        _match_scheduler_state(saved["state"], live, kind)
        self.scheduler.load_state_dict(saved["state"])
        self._offset, self._restored = state["offset"], True


#: the check of a saved state of each of portacnn's callbacks with state, by class name (what a training state
#: names it by): ``STATE_CHECKS[name](state, epoch, what=...)``
STATE_CHECKS = {cls.__name__: cls.check_state for cls in (EarlyStopping, ModelCheckpoint, LearningRateScheduler)}
