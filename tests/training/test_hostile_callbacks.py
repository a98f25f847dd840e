"""Hostile arguments and states for the callbacks, as properties over many values: every numeric argument of
EarlyStopping and ModelCheckpoint refused in one line naming it, or kept as a finite number; a ModelCheckpoint
or fit(checkpoint_path=...) that cannot write refused before the first step, naming the user's path; a
LearningRateScheduler state with any field hostile refused, or loaded with finite non-negative rates."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from clihelp import float_subset, tiny_model
from conftest import sweep

import portacnn as pc
from portacnn.callbacks import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint
from portacnn.optim.lr_scheduler import CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR, StepLR

HOSTILE = [math.nan, math.inf, -math.inf, -1, -1e-300, 1e300, 10**400, -(10**400), True, False, None, "0.1", [0.1],
           np.float32("nan"), np.float64(-0.0), 0, 2**63, 1 + 2j]


def _one_line(e: Exception, *names):
    text = str(e)
    assert "\n" not in text and all(n in text for n in names), text


# -- constructor arguments ----------------------------------------------------------------------------------------
ARGS = {
    EarlyStopping: ["min_delta", "patience"],
    ModelCheckpoint: ["min_delta"],
}


def _build(cls, **kw):
    return cls("best.safetensors", **kw) if cls is ModelCheckpoint else cls(**kw)


@pytest.mark.parametrize("value", sweep(HOSTILE, 6), ids=[repr(v)[:20] for v in HOSTILE])
@pytest.mark.parametrize("cls, arg", [(c, a) for c, args in ARGS.items() for a in args],
                         ids=lambda v: getattr(v, "__name__", v))
def test_numeric_arguments_are_refused_or_finite(cls, arg, value):
    try:
        callback = _build(cls, **{arg: value})
    except ValueError as e:
        _one_line(e, f"{cls.__name__} {arg}")
        return
    kept = getattr(callback, arg)
    assert not isinstance(kept, bool) and isinstance(kept, (int, float)), repr(kept)
    assert math.isfinite(kept) and kept >= 0, kept


@pytest.mark.parametrize("path", [None, 3, 2.5, "", b"best.safetensors", ["best.safetensors"], object()],
                         ids=["None", "int", "float", "empty", "bytes", "list", "object"])
def test_model_checkpoint_path_is_a_path(path):
    with pytest.raises(ValueError) as info:
        ModelCheckpoint(path)
    _one_line(info.value, "ModelCheckpoint path must be a file path")


# -- paths that cannot be written: refused before the first step ----------------------------------------------
class _Steps(Callback):
    steps = 0

    def on_train_batch_end(self, batch, logs):
        self.steps += 1


def _paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "afolder").mkdir()
    return {"missing-folder": tmp_path / "nope" / "best.safetensors",
            "missing-parents": tmp_path / "a" / "b" / "best.safetensors",
            "a-folder": tmp_path / "afolder",
            "file-as-folder": tmp_path / "afile" / "best.safetensors"}


@pytest.mark.parametrize("kind", ["missing-folder", "missing-parents", "a-folder", "file-as-folder"])
@pytest.mark.parametrize("how", ["ModelCheckpoint", "checkpoint_path", "resumed-ModelCheckpoint"])
def test_an_unwritable_path_is_refused_before_the_first_step(tmp_path, kind, how):
    path = _paths(tmp_path)[kind]
    x, y = float_subset("train", 64)
    model, steps = tiny_model(), _Steps()
    callbacks, kwargs = [steps], {}
    if how == "checkpoint_path":
        kwargs["checkpoint_path"] = path
    else:
        callbacks.append(ModelCheckpoint(path, monitor="loss"))
    if how == "resumed-ModelCheckpoint":  # a resumed run checks its ModelCheckpoint's path as well
        good = tmp_path / "run.safetensors"
        model.fit(x, y, epochs=1, batch_size=32, progress=False, checkpoint_path=good,
                  callbacks=[ModelCheckpoint(tmp_path / "best.safetensors", monitor="loss")])
        kwargs["resume"] = pc.load(good)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, epochs=2, batch_size=32, progress=False, callbacks=callbacks, **kwargs)
    assert isinstance(info.value, OSError) and info.value.filename == str(path)
    _one_line(info.value, str(path))
    assert ".tmp" not in str(info.value)
    assert steps.steps == 0, f"refused only after {steps.steps} steps"
    assert not (tmp_path / "nope").exists() and not (tmp_path / "a").exists()


# -- a LearningRateScheduler's saved state, every numeric field hostile ----------------------------------------
def _optimizer():
    return pc.optim.SGD(tiny_model().parameters(), lr=0.1, momentum=0.9)


SCHEDULERS = {
    "StepLR": lambda o: StepLR(o, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda o: CosineAnnealingLR(o, T_max=5),
    "OneCycleLR": lambda o: OneCycleLR(o, max_lr=0.1, total_steps=10),
    "SequentialLR": lambda o: SequentialLR(o, [LinearLR(o, start_factor=0.1, total_iters=2),
                                               StepLR(o, step_size=2, gamma=0.5)], milestones=[2]),
}


def _numeric_fields(state, path=()):
    if isinstance(state, dict):
        for k, v in state.items():
            yield from _numeric_fields(v, path + (k,))
    elif isinstance(state, list):
        for i, v in enumerate(state):
            yield from _numeric_fields(v, path + (i,))
    elif isinstance(state, (int, float)) and not isinstance(state, bool):
        yield path


def _set(state, path, value):
    for key in path[:-1]:
        state = state[key]
    state[path[-1]] = value


def _cases():
    for name, make in SCHEDULERS.items():
        saved = LearningRateScheduler(make(_optimizer())).state_dict()
        for path in _numeric_fields(saved):
            for value in (math.nan, math.inf, -1, -3, 0, 1e300, 10**400, True, None, "1"):
                yield pytest.param(name, path, value, id=f"{name}-{'.'.join(map(str, path))}-{value!r}"[:90])


@pytest.mark.parametrize("name, path, value", sweep(_cases(), 60))
def test_a_hostile_scheduler_state_is_refused_or_loads_finite_rates(name, path, value):
    """gamma -3, step_size 0, a negative or NaN rate: refused in one line; whatever loads leaves every rate the
    optimizer trains with finite and >= 0, and nothing changed when refused."""
    saved = LearningRateScheduler(SCHEDULERS[name](_optimizer())).state_dict()
    _set(saved, path, value)
    callback = LearningRateScheduler(SCHEDULERS[name](_optimizer()))
    before = copy.deepcopy(callback.scheduler.state_dict())
    try:
        callback.load_state_dict(saved)
    except ValueError as e:
        assert "\n" not in str(e), str(e)
        assert callback.scheduler.state_dict() == before
        return
    for rate in callback.scheduler.get_last_lr():
        assert not isinstance(rate, bool) and math.isfinite(rate) and rate >= 0, rate


@pytest.mark.parametrize("where", [(), ("scheduler",), ("scheduler", "state")])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_unknown_keys_in_a_scheduler_state_are_refused(name, where):
    saved = LearningRateScheduler(SCHEDULERS[name](_optimizer())).state_dict()
    target = saved
    for key in where:
        target = target[key]
    target["bogus"] = 1
    with pytest.raises(ValueError, match="bogus") as info:
        LearningRateScheduler(SCHEDULERS[name](_optimizer())).load_state_dict(saved)
    _one_line(info.value)


@pytest.mark.parametrize("field, value, fragment", [("gamma", -3, "gamma"), ("step_size", 0, "step_size"),
                                                    ("_last_lr", [-0.1], "_last_lr"), ("base_lrs", [-1.0], "base_lrs")])
def test_the_cases_of_the_issue_are_refused(field, value, fragment):
    saved = LearningRateScheduler(SCHEDULERS["StepLR"](_optimizer())).state_dict()
    saved["scheduler"]["state"][field] = value
    with pytest.raises(ValueError, match=fragment):
        LearningRateScheduler(SCHEDULERS["StepLR"](_optimizer())).load_state_dict(saved)
