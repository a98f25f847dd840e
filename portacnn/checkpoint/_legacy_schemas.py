"""TEMPORARY: the metadata schemas the checkpoint reader kept for other modules (optimizer, training state, run
information), until each of those checks its own saved form."""

from __future__ import annotations

import math
import re

import numpy as np

from ..optim import OPTIMIZERS, MAX_PARAM_GROUPS
from ..optim.lr_scheduler import check_saved_state
from ..train_state import TrainState
from ..validation import _short
from .limits import Bad as _Bad

_MAX_COUNT = (1 << 63) - 1
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 24
_MAX_NAME, _MAX_TEXT = 64, 4096


def _in_checked(check, *args) -> None:
    try:
        check(*args)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _int(value, what, low=0, high=_MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an integer; got {_short(value)}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"in {low}..{high}"
        raise _Bad(f"{what} must be {bound}; got {_short(value)}")
    return value


def _number(value, what, low=None, high=None, low_open=False, high_open=False) -> float:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an int beyond any float
        finite = False
    if not finite:
        raise _Bad(f"{what} must be a finite number; got {_short(value)}")
    if (low is not None and (value < low or (low_open and value == low))) or (
            high is not None and (value > high or (high_open and value == high))):
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        raise _Bad(f"{what} must lie in {lo or '(-inf, '}{hi or 'inf)'}; got {_short(value)}")
    return float(value)


def _name(value, what, limit=_MAX_NAME) -> str:
    """A short printable string (it may be shown on a terminal: no control characters)."""
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _Bad(f"{what} must be a printable string of 1 to {limit} characters; got {_short(value)}")
    return value


_TRAIN_STATE_FIELDS = TrainState.REQUIRED  # the schema's fields are the dataclass's
_TRAIN_STATE_OPTIONAL = TrainState.OPTIONAL
_HISTORY_KEYS = {"loss": None, "accuracy": (0.0, 1.0), "val_loss": None, "val_accuracy": (0.0, 1.0), "lr": (0.0, None)}
#: callbacks with state in a training state (fit's callbacks=[...]), and the bounds of their (untrusted) states:
#: nesting, values in all (numbers, strings, lists, objects), characters of a key
MAX_CALLBACKS = 64
_MAX_STATE_DEPTH = 16
_MAX_STATE_VALUES = 100_000
_INT64 = 1 << 63
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _float_list(value, what, length_max, exact, bounds=None, non_finite=False) -> None:
    """A list of at most (``exact``: exactly) ``length_max`` numbers within ``bounds``; ``non_finite`` also
    lets NaN and infinities through (a validation loss can blow up while the weights stay finite)."""
    if not isinstance(value, list):
        raise _Bad(f"{what} must be a list of numbers; got {_short(value)}")
    if len(value) > length_max or (exact and len(value) != length_max):
        need = f"{length_max}" if exact else f"at most {length_max}"
        raise _Bad(f"{what} has {len(value)} values; the saved epoch count needs {need}")
    low, high = bounds or (None, None)
    for v in value:
        if non_finite and isinstance(v, float) and not math.isfinite(v):
            continue
        _number(v, f"each value of {what}", low, high)


def _check_train_state(state) -> None:
    """What ``fit(resume=...)`` reads (see portacnn.training.fit's snapshot)."""
    if not isinstance(state, dict):
        raise _Bad("it is not an object")
    unknown = sorted(set(state) - _TRAIN_STATE_FIELDS - _TRAIN_STATE_OPTIONAL)
    missing = sorted(_TRAIN_STATE_FIELDS - set(state))
    if unknown or missing:
        raise _Bad(f"unknown fields {unknown} or missing fields {missing}")
    epoch = _int(state["epoch"], "field 'epoch'", 0, MAX_EPOCHS)
    step = _int(state["step"], "field 'step'")
    seen = _int(state["seen"], "field 'seen'")
    correct = _int(state["correct"], "field 'correct'")
    batch_size = _int(state["batch_size"], "field 'batch_size'", 1, MAX_BATCH_SIZE)
    _int(state["seed"], "field 'seed'", 0, (1 << 128) - 1)
    loss_sum = _number(state["loss_sum"], "field 'loss_sum'")
    if not step <= seen <= step * batch_size:
        raise _Bad(f"field 'seen' ({seen}) must lie between 'step' ({step}) and step * batch_size "
                   f"({step * batch_size}): every step reads 1 to batch_size images")
    if correct > seen:
        raise _Bad(f"field 'correct' ({correct}) exceeds the {seen} images seen")
    if seen == 0 and loss_sum != 0:
        raise _Bad(f"field 'loss_sum' is {loss_sum} before any image was seen")
    rng = state["rng"]
    try:
        np.random.default_rng().bit_generator.state = rng
    except Exception:  # numpy raises TypeError, ValueError, KeyError, OverflowError... for bad states
        raise _Bad(f"field 'rng' is not a state numpy's default generator (PCG64) accepts: {_short(rng)}") from None
    history = state["history"]
    if not isinstance(history, dict):
        raise _Bad(f"field 'history' must be an object of lists; got {_short(history)}")
    unknown = sorted(set(history) - set(_HISTORY_KEYS))
    if unknown or not {"loss", "accuracy"} <= set(history) or (("val_loss" in history) != ("val_accuracy" in history)):
        raise _Bad(f"field 'history' must hold 'loss' and 'accuracy' (and 'val_loss' with 'val_accuracy'); "
                   f"got keys {sorted(history)}")
    for key, values in history.items():
        # training metrics: one per finished epoch; validation ones: at most that (a resumed run may drop them)
        _float_list(values, f"history[{key!r}]", epoch, key in ("loss", "accuracy"), _HISTORY_KEYS[key],
                    non_finite=key == "val_loss")
    if "val_loss" in history and len(history["val_loss"]) != len(history["val_accuracy"]):
        raise _Bad("history['val_loss'] and history['val_accuracy'] differ in length")
    if "epoch_times" in state:
        _float_list(state["epoch_times"], "field 'epoch_times'", epoch, False, (0.0, None))
    if state.get("callbacks") is not None:
        _check_callbacks(state["callbacks"], epoch)


def _plain_json(value, what: str, budget: list, depth: int = 0) -> None:
    """JSON of bounded size (``budget[0]`` values left in all) and nesting, with finite numbers, 64-bit integers,
    strings of at most _MAX_TEXT characters and keys of at most _MAX_NAME."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _Bad(f"the callbacks' states hold more than {_MAX_STATE_VALUES} values")
    if depth > _MAX_STATE_DEPTH:
        raise _Bad(f"{what} is nested more than {_MAX_STATE_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise _Bad(f"{what} must be a 64-bit integer; got {_short(value)}")
    elif isinstance(value, float):
        _number(value, what)
    elif isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise _Bad(f"{what} is a string of more than {_MAX_TEXT} characters")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(item, f"{what}[{i}]", budget, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if len(key) > _MAX_NAME or not key.isprintable():
                raise _Bad(f"{what} has a key that is not a printable name of at most {_MAX_NAME} characters: {_short(key)}")
            _plain_json(item, f"{what}[{key!r}]", budget, depth + 1)
    else:
        raise _Bad(f"{what} is not JSON: {_short(value)}")


def _object(value, what: str, keys) -> dict:
    if not isinstance(value, dict) or set(value) != set(keys):
        raise _Bad(f"{what} must be an object with the keys {sorted(keys)}; got {_short(value)}")
    return value


def _optional_epoch(value, what: str, epoch: int) -> None:
    """None, or an epoch the run has finished (0-based, below ``epoch``)."""
    if value is not None:
        if epoch == 0:
            raise _Bad(f"{what} must be null before any epoch has finished; got {_short(value)}")
        _int(value, what, 0, epoch - 1)


def _monitor_state(state, what, epoch, extra=()) -> None:
    _object(state, what, ("monitor", "mode", "best", "best_epoch") + extra)
    _name(state["monitor"], f"{what} monitor")
    if state["mode"] not in ("min", "max"):
        raise _Bad(f"{what} mode must be 'min' or 'max'; got {_short(state['mode'])}")
    if state["best"] is not None:
        _number(state["best"], f"{what} best")
    _optional_epoch(state["best_epoch"], f"{what} best_epoch", epoch)


def _early_stopping_state(state, what, epoch) -> None:
    _monitor_state(state, what, epoch, ("wait", "stopped_epoch"))
    _int(state["wait"], f"{what} wait", 0, epoch)
    _optional_epoch(state["stopped_epoch"], f"{what} stopped_epoch", epoch)


def _lr_scheduler_state(state, what, epoch) -> None:
    _object(state, what, ("per", "offset", "scheduler"))
    if state["per"] not in ("epoch", "step"):
        raise _Bad(f"{what} per must be 'epoch' or 'step'; got {_short(state['per'])}")
    if state["offset"] is not None:
        _int(state["offset"], f"{what} offset", -_MAX_COUNT)
    scheduler = _object(state["scheduler"], f"{what} scheduler", ("type", "state"))
    if not isinstance(scheduler["type"], str) or not _CLASS_NAME.fullmatch(scheduler["type"]):
        raise _Bad(f"{what} scheduler type must be a class name; got {_short(scheduler['type'])}")
    _in_checked(check_saved_state, scheduler["state"], f"{what} scheduler")


#: the callbacks of portacnn.training whose states are checked field by field (others: bounded JSON only)
_CALLBACK_STATES = {
    "EarlyStopping": _early_stopping_state,
    "ModelCheckpoint": _monitor_state,
    "LearningRateScheduler": _lr_scheduler_state,
}


def _check_callbacks(callbacks, epoch: int) -> None:
    """``[{"type": class name, "state": object}]``: at most MAX_CALLBACKS, every state bounded JSON, the states of
    portacnn's own callbacks field by field."""
    if not isinstance(callbacks, list) or len(callbacks) > MAX_CALLBACKS:
        raise _Bad(f"field 'callbacks' must be a list of at most {MAX_CALLBACKS} callback states; got {_short(callbacks)}")
    budget = [_MAX_STATE_VALUES]
    for i, entry in enumerate(callbacks):
        what = f"callbacks[{i}]"
        entry = _object(entry, what, ("type", "state"))
        kind = entry["type"]
        if not isinstance(kind, str) or not _CLASS_NAME.fullmatch(kind):
            raise _Bad(f"{what} type must be a class name; got {_short(kind)}")
        what = f"callbacks[{i}] ({kind}) state"
        if not isinstance(entry["state"], dict):
            raise _Bad(f"{what} must be an object; got {_short(entry['state'])}")
        _plain_json(entry["state"], what, budget, 1)
        if kind in _CALLBACK_STATES:
            _CALLBACK_STATES[kind](entry["state"], what, epoch)
