"""Where a training run stands: the one record :func:`portacnn.training.fit` resumes from and checkpoints store.

A run is fully described by its seed and batch size (which fix every epoch's order), the position inside
it (epoch, step within the epoch), the epoch's running sums, the model generator's state (dropout masks),
the history so far and the states of the run's callbacks (a learning-rate schedule's position, an early
stop's best value). :mod:`portacnn.checkpoint` writes :meth:`TrainState.to_json` as the ``train_state``
field, so resuming from any checkpoint finishes with exactly the weights of an uninterrupted run.

A saved state comes from a file, which may be hostile: :func:`check_saved_train_state` checks one before
anything uses it (every field typed and bounded by the limits below, the fields consistent with each other,
the callbacks' states bounded JSON and those of portacnn's own callbacks field by field), with the rules of
:mod:`portacnn.validation`.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from .validation import INT64_MAX, Integer, Real, Rule, _short

#: epochs of a run (the saved ``epoch``, history lengths)
MAX_EPOCHS = 100_000
#: images per batch
MAX_BATCH_SIZE = 1 << 24
#: counters (steps, images seen, correct predictions) fit the int64 the trainer keeps them in on a device
MAX_COUNT = INT64_MAX
#: callbacks with state in one training state, and the bounds of their (untrusted) states: nesting, values
#: in all (numbers, strings, lists, objects), characters of a string and of a key
MAX_CALLBACKS = 64
MAX_STATE_DEPTH = 16
MAX_STATE_VALUES = 100_000
MAX_TEXT = 4096
MAX_KEY = 64


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
        """The state a checkpoint holds (already checked by :func:`check_saved_train_state`), as fresh objects."""
        return cls(**{**saved, "history": {k: list(v) for k, v in saved["history"].items()},
                      "epoch_times": list(saved.get("epoch_times", [])),
                      "callbacks": copy.deepcopy(saved.get("callbacks"))})

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step, self.loss_sum, self.correct, self.seen = 0, 0.0, 0, 0


# -- rules of the saved fields (portacnn.validation's, with the few a file needs besides) ------------------------
class WideInteger(Integer):
    """:class:`~portacnn.validation.Integer` with bounds too long to print, described in words instead."""

    def __init__(self, low, high, text: str):
        super().__init__(low, high)
        self.text = text

    def describe(self):
        return self.text


class ClassName(Rule):
    """A Python class name of at most 64 characters (what a saved state names its callback or scheduler by)."""

    PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

    def describe(self):
        return "a class name (a letter or _, then at most 63 letters, digits or _)"

    def check(self, value, what):
        if not isinstance(value, str) or not self.PATTERN.fullmatch(value):
            self._fail(value, what)
        return value


COUNT = Integer(0, MAX_COUNT)
INT64 = Integer(-MAX_COUNT - 1, MAX_COUNT)
SEED = WideInteger(0, (1 << 128) - 1, "a non-negative int below 2**128")
#: each history list's values (val_loss may also hold NaN and infinities: it can blow up while the weights
#: stay finite)
HISTORY_VALUES = {"loss": Real(), "accuracy": Real(0.0, 1.0), "val_loss": Real(), "val_accuracy": Real(0.0, 1.0),
                  "lr": Real(0.0)}


def _float_list(value, what: str, length_max: int, exact: bool, rule: Rule, non_finite: bool = False) -> None:
    """A list of at most (``exact``: exactly) ``length_max`` numbers, each of ``rule``."""
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of numbers; got {_short(value)}")
    if len(value) > length_max or (exact and len(value) != length_max):
        need = f"{length_max}" if exact else f"at most {length_max}"
        raise ValueError(f"{what} has {len(value)} values; the saved epoch count needs {need}")
    for v in value:
        if not (non_finite and isinstance(v, float) and not math.isfinite(v)):
            rule.check(v, f"each value of {what}")


def _check_history(history, epoch: int) -> None:
    if not isinstance(history, dict):
        raise ValueError(f"field 'history' must be an object of lists; got {_short(history)}")
    if set(history) - set(HISTORY_VALUES) or not {"loss", "accuracy"} <= set(history) or (
            ("val_loss" in history) != ("val_accuracy" in history)):
        raise ValueError(f"field 'history' must hold 'loss' and 'accuracy' (and 'val_loss' with 'val_accuracy'); "
                         f"got keys {sorted(map(str, history))}")
    for key, values in history.items():
        # training metrics: one per finished epoch; validation ones: at most that (a resumed run may drop them)
        _float_list(values, f"history[{key!r}]", epoch, key in ("loss", "accuracy"), HISTORY_VALUES[key],
                    non_finite=key == "val_loss")
    if "val_loss" in history and len(history["val_loss"]) != len(history["val_accuracy"]):
        raise ValueError("history['val_loss'] and history['val_accuracy'] differ in length")


def check_saved_train_state(state) -> None:
    """A training state read from an untrusted file (what ``fit(resume=...)`` reads), before anything uses it:
    exactly the fields of :class:`TrainState`, each typed and bounded, consistent with each other
    (``step <= seen <= step * batch_size``, ``correct <= seen``, one history value per finished epoch), a
    generator state NumPy accepts, and the callbacks' states (:func:`check_callback_states`). A one-line
    ValueError naming the field otherwise."""
    if not isinstance(state, dict):
        raise ValueError(f"it is not an object: {_short(state)}")
    unknown = sorted(map(str, set(state) - TrainState.REQUIRED - TrainState.OPTIONAL))
    missing = sorted(TrainState.REQUIRED - set(state))
    if unknown or missing:
        raise ValueError(f"unknown fields {unknown} or missing fields {missing}")
    epoch = Integer(0, MAX_EPOCHS).check(state["epoch"], "field 'epoch'")
    step, seen, correct = (COUNT.check(state[k], f"field {k!r}") for k in ("step", "seen", "correct"))
    batch_size = Integer(1, MAX_BATCH_SIZE).check(state["batch_size"], "field 'batch_size'")
    SEED.check(state["seed"], "field 'seed'")
    loss_sum = Real().check(state["loss_sum"], "field 'loss_sum'")
    if not step <= seen <= step * batch_size:
        raise ValueError(f"field 'seen' ({seen}) must lie between 'step' ({step}) and step * batch_size "
                         f"({step * batch_size}): every step reads 1 to batch_size images")
    if correct > seen:
        raise ValueError(f"field 'correct' ({correct}) exceeds the {seen} images seen")
    if seen == 0 and loss_sum != 0:
        raise ValueError(f"field 'loss_sum' is {loss_sum} before any image was seen")
    try:
        np.random.default_rng().bit_generator.state = state["rng"]
    except Exception:  # numpy raises TypeError, ValueError, KeyError, OverflowError... for bad states
        raise ValueError(f"field 'rng' is not a state numpy's default generator (PCG64) accepts: "
                         f"{_short(state['rng'])}") from None
    _check_history(state["history"], epoch)
    if "epoch_times" in state:
        _float_list(state["epoch_times"], "field 'epoch_times'", epoch, False, Real(0.0))
    if state.get("callbacks") is not None:
        check_callback_states(state["callbacks"], epoch)


def check_plain_json(value, what: str, budget: list, depth: int = 0) -> None:
    """JSON of bounded size (``budget[0]`` values left in all) and nesting: finite numbers, 64-bit integers,
    strings of at most ``MAX_TEXT`` characters, keys printable and of at most ``MAX_KEY``."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"the callbacks' states hold more than {MAX_STATE_VALUES} values")
    if depth > MAX_STATE_DEPTH:
        raise ValueError(f"{what} is nested more than {MAX_STATE_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        INT64.check(value, what)
    elif isinstance(value, float):
        Real().check(value, what)
    elif isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"{what} is a string of more than {MAX_TEXT} characters")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_plain_json(item, f"{what}[{i}]", budget, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_KEY or not key.isprintable():
                raise ValueError(f"{what} has a key that is not a printable name of at most {MAX_KEY} characters: "
                                 f"{_short(key)}")
            check_plain_json(item, f"{what}[{key!r}]", budget, depth + 1)
    else:
        raise ValueError(f"{what} is not JSON: {_short(value)}")


def check_callback_states(callbacks, epoch: int) -> None:
    """The saved ``callbacks`` field, ``[{"type": class name, "state": object}]``, of a state at ``epoch``
    finished epochs: at most ``MAX_CALLBACKS`` entries, every state bounded JSON, the states of portacnn's own
    callbacks checked field by field by their class's ``check_state`` (the others' by their
    ``load_state_dict`` when a run resumes)."""
    # imported here: portacnn.training imports the checkpoint module, which checks training states with this one
    from .training.callbacks import STATE_CHECKS

    if not isinstance(callbacks, list) or len(callbacks) > MAX_CALLBACKS:
        raise ValueError(f"field 'callbacks' must be a list of at most {MAX_CALLBACKS} callback states; got "
                         f"{_short(callbacks)}")
    budget = [MAX_STATE_VALUES]
    for i, entry in enumerate(callbacks):
        what = f"callbacks[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"type", "state"}:
            raise ValueError(f"{what} must be an object with the keys ['state', 'type']; got {_short(entry)}")
        kind = ClassName().check(entry["type"], f"{what} type")
        what = f"callbacks[{i}] ({kind}) state"
        if not isinstance(entry["state"], dict):
            raise ValueError(f"{what} must be an object; got {_short(entry['state'])}")
        check_plain_json(entry["state"], what, budget, 1)
        if kind in STATE_CHECKS:
            STATE_CHECKS[kind](entry["state"], epoch, what=what)
