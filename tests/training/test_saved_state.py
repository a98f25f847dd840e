"""Saved training states from untrusted files: check_saved_train_state refuses the hostile cases of
test_checkpoint_trust (train state, history, generator, callbacks) with one line naming the field, and each
callback with state checks a saved state with the rules of its constructor (check_state, load_state_dict)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from clihelp import tiny_model

import portacnn as pc
from portacnn import train_state as ts_module
from portacnn.callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint
from portacnn.optim import lr_scheduler as ls
from portacnn.train_state import MAX_CALLBACKS, MAX_EPOCHS, TrainState, check_saved_train_state
from portacnn.training.callbacks import STATE_CHECKS

EARLY = {"monitor": "val_loss", "mode": "min", "best": -0.5, "best_epoch": 0, "wait": 0, "stopped_epoch": None}
STEPLR = {"step_size": 1, "gamma": 0.5, "base_lrs": [0.1], "last_epoch": 1, "_step_count": 2, "_last_lr": [0.05]}
LRS = {"per": "epoch", "offset": 0, "scheduler": {"type": "StepLR", "state": STEPLR}}


def _base() -> dict:
    """What fit saves after one epoch of batch 16 (the state test_checkpoint_trust's cases edit)."""
    state = TrainState(seed=0, batch_size=16, epoch=1, rng=np.random.default_rng(0).bit_generator.state,
                       history={"loss": [2.1], "accuracy": [0.25]}, epoch_times=[0.5], callbacks=[]).to_json()
    return copy.deepcopy(state)


def ts(**changes):
    return lambda s: s.update(changes)


def hist(**changes):
    return lambda s: s["history"].update(changes)


def drop(key):
    return lambda s: s.pop(key)


def cbs(*entries):
    return ts(callbacks=list(entries))


def cb(kind, state):
    return {"type": kind, "state": state}


def lrs(**changes):
    return cb("LearningRateScheduler", {**LRS, **changes})


def sched(**changes):
    return lrs(scheduler={"type": "StepLR", "state": {**STEPLR, **changes}})


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = {"x": value}
    return value


CASES = {
    "batch_size 0": (ts(batch_size=0), "'batch_size' must be an int >= 1"),
    "batch_size huge": (ts(batch_size=1 << 40), "'batch_size' must be an int >= 1 and <= 16777216"),
    "seen 0 with step 3": (ts(step=3, seen=0), "'seen' (0)"),
    "seen beyond step * batch": (ts(step=1, seen=17, loss_sum=1.0), "'seen' (17)"),
    "epoch negative": (ts(epoch=-1), "'epoch' must be an int >= 0 and <= 100000"),
    "epoch beyond MAX_EPOCHS": (ts(epoch=MAX_EPOCHS + 1), "'epoch' must be"),
    "epoch a float": (ts(epoch=1.0), "'epoch' must be an int"),
    "epoch a bool": (ts(epoch=True), "'epoch' must be an int"),
    "step a string": (ts(step="0"), "'step' must be a non-negative 64-bit int"),
    "correct beyond seen": (ts(step=1, seen=16, correct=17, loss_sum=30.0), "'correct' (17) exceeds"),
    "counter beyond int64": (ts(step=1 << 63), "'step' must be a non-negative 64-bit int"),
    "loss_sum NaN": (ts(loss_sum=float("nan")), "'loss_sum' must be a finite number"),
    "loss_sum a string": (ts(loss_sum="1"), "'loss_sum' must be a finite number"),
    "loss_sum beyond a float": (ts(loss_sum=1 << 2000), "'loss_sum' must be a finite number"),
    "loss before any image": (ts(loss_sum=2.5), "'loss_sum' is 2.5 before any image"),
    "seed negative": (ts(seed=-1), "'seed' must be a non-negative int below 2**128"),
    "seed of 129 bits": (ts(seed=1 << 128), "'seed'"),
    "unknown field": (ts(evil=1), "unknown fields ['evil']"),
    "missing field": (drop("rng"), "missing fields ['rng']"),
    "history not a dict": (ts(history=[[0.5]]), "'history' must be an object of lists"),
    "history of strings": (hist(loss=["0.5"]), "each value of history['loss'] must be a finite number"),
    "history of numbers, not lists": (hist(loss=0.5), "history['loss'] must be a list"),
    "history NaN": (hist(loss=[float("nan")]), "history['loss']"),
    "history infinite": (hist(loss=[float("inf")]), "history['loss']"),
    "history longer than epoch": (hist(loss=[0.5, 0.4]), "history['loss'] has 2 values"),
    "history shorter than epoch": (hist(accuracy=[]), "history['accuracy'] has 0 values"),
    "history unknown key": (hist(evil=[1.0]), "'history' must hold"),
    "history key not a string": (hist(**{"3": [1.0]}), "'history' must hold"),
    "history without accuracy": (lambda s: s["history"].pop("accuracy"), "'history' must hold"),
    "history val_loss alone": (hist(val_loss=[0.5]), "'history' must hold"),
    "history val lists differ": (hist(val_loss=[0.5], val_accuracy=[]), "differ in length"),
    "history accuracy above 1": (hist(accuracy=[1.5]), "history['accuracy'] must be a finite number >= 0 and <= 1"),
    "history lr negative": (hist(lr=[-0.1]), "history['lr'] must be a finite number >= 0"),
    "history lr longer than epoch": (hist(lr=[0.1, 0.1]), "history['lr'] has 2 values"),
    "epoch_times not a list": (ts(epoch_times=3.0), "'epoch_times' must be a list"),
    "epoch_times negative": (ts(epoch_times=[-1.0]), "epoch_times' must be a finite number >= 0"),
    "rng not an object": (ts(rng="PCG64"), "'rng' is not a state"),
    "rng another generator": (ts(rng={"bit_generator": "MT19937", "state": {"key": [0] * 624, "pos": 0}}), "'rng'"),
    "rng without state": (ts(rng={"bit_generator": "PCG64"}), "'rng'"),
    "rng with a 200-bit state": (ts(rng={"bit_generator": "PCG64", "state": {"state": 1 << 200, "inc": 1},
                                         "has_uint32": 0, "uinteger": 0}), "'rng'"),
    # the callbacks: a bounded list of bounded JSON states, portacnn's own checked field by field
    "callbacks not a list": (ts(callbacks={"EarlyStopping": {}}), "field 'callbacks' must be a list"),
    "callbacks too many": (ts(callbacks=[cb("A", {})] * (MAX_CALLBACKS + 1)), "at most 64 callback states"),
    "callback not an object": (cbs(5), "callbacks[0] must be an object with the keys ['state', 'type']"),
    "callback with another key": (cbs({**cb("A", {}), "code": "import os"}), "callbacks[0] must be"),
    "callback type a path": (cbs(cb("../evil", {})), "callbacks[0] type must be a class name"),
    "callback type a number": (cbs(cb(3, {})), "type must be a class name"),
    "callback type too long": (cbs(cb("A" * 65, {})), "type must be a class name"),
    "callback state a list": (cbs(cb("A", [1])), "callbacks[0] (A) state must be an object"),
    "callback state NaN": (cbs(cb("A", {"x": float("nan")})), "['x'] must be a finite number"),
    "callback state infinite": (cbs(cb("A", {"x": [1.0, float("-inf")]})), "['x'][1] must be a finite number"),
    "callback state huge int": (cbs(cb("A", {"x": 1 << 70})), "['x'] must be a 64-bit int"),
    "callback state too deep": (cbs(cb("A", _nested(40))), "nested more than 16 levels"),
    "callback state too many values": (cbs(cb("A", {"x": [0] * 200_000})), "more than 100000 values"),
    "callback state long string": (cbs(cb("A", {"x": "y" * 5000})), "more than 4096 characters"),
    "callback state long key": (cbs(cb("A", {"k" * 100: 1})), "a key that is not a printable name"),
    "callback state an object": (cbs(cb("A", {"x": object()})), "['x'] is not JSON"),
    "early stopping without wait": (cbs(cb("EarlyStopping", {k: v for k, v in EARLY.items() if k != "wait"})),
                                    "callbacks[0] (EarlyStopping) state is missing field(s) ['wait']"),
    "early stopping with another key": (cbs(cb("EarlyStopping", {**EARLY, "x": 1})), "unknown field(s) ['x']"),
    "early stopping wait negative": (cbs(cb("EarlyStopping", {**EARLY, "wait": -1})), "wait must be an int >= 0"),
    "early stopping wait beyond the epochs": (cbs(cb("EarlyStopping", {**EARLY, "wait": 5})),
                                              "wait must be an int >= 0 and <= 1; got 5"),
    "early stopping wait a float": (cbs(cb("EarlyStopping", {**EARLY, "wait": 0.0})), "wait must be an int"),
    "early stopping best epoch not finished": (cbs(cb("EarlyStopping", {**EARLY, "best_epoch": 1})),
                                               "best_epoch must be an int >= 0 and <= 0 or None; got 1"),
    "early stopping best a string": (cbs(cb("EarlyStopping", {**EARLY, "best": "0.5"})),
                                     "best must be a finite number or None"),
    "early stopping mode unknown": (cbs(cb("EarlyStopping", {**EARLY, "mode": "up"})), "mode must be one of 'min', 'max'"),
    "early stopping monitor an escape": (cbs(cb("EarlyStopping", {**EARLY, "monitor": "\x1b]0;x\x07"})),
                                         "monitor must be a printable string"),
    "model checkpoint with a wait": (cbs(cb("ModelCheckpoint", EARLY)), "unknown field(s) ['stopped_epoch', 'wait']"),
    "scheduler per batch": (cbs(lrs(per="batch")), "per must be one of 'epoch', 'step'"),
    "scheduler offset a float": (cbs(lrs(offset=1.5)), "offset must be a 64-bit int or None"),
    "scheduler missing": (cbs(cb("LearningRateScheduler", {"per": "epoch", "offset": 0})),
                          "is missing field(s) ['scheduler']"),
    "scheduler type a path": (cbs(lrs(scheduler={"type": "a/b", "state": STEPLR})), "scheduler type must be a class name"),
    "scheduler state a list": (cbs(lrs(scheduler={"type": "StepLR", "state": [1]})), "scheduler state must be an object"),
    "scheduler not an object": (cbs(lrs(scheduler="StepLR")), "scheduler must be an object with the keys ['state', 'type']"),
    "scheduler rate negative": (cbs(sched(_last_lr=[-0.1])), "_last_lr must be a finite number >= 0"),
    "scheduler base rate a string": (cbs(sched(base_lrs=["0.1"])), "base_lrs must be a finite"),
    "scheduler rates not a list": (cbs(sched(_last_lr=0.1)), "_last_lr must be a list"),
    "scheduler last_epoch below -1": (cbs(sched(last_epoch=-2)), "last_epoch must be"),
    "scheduler step count a float": (cbs(sched(_step_count=2.0)), "_step_count must be a non-negative 64-bit int"),
    "sequential schedulers not a list": (cbs(sched(_schedulers={"a": 1})), "_schedulers must be a list"),
    "sequential inner rate NaN": (cbs(sched(_schedulers=[{**STEPLR, "_last_lr": [float("nan")]}])),
                                  "['_schedulers'][0]['_last_lr'][0] must be a finite number"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hostile_training_states_are_refused_in_one_line(case):
    edit, fragment = case
    state = _base()
    edit(state)
    with pytest.raises(ValueError) as err:
        check_saved_train_state(state)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_base_state_and_valid_callback_states_pass():
    check_saved_train_state(_base())
    state = _base()
    cbs(cb("EarlyStopping", EARLY), cb("ModelCheckpoint", {k: EARLY[k] for k in ("monitor", "mode", "best", "best_epoch")}),
        cb("LearningRateScheduler", LRS), cb("Mine", {"any": [1, "x", None, {"y": 2.5}]}))(state)
    hist(lr=[0.1], val_loss=[float("nan")], val_accuracy=[0.5])(state)
    check_saved_train_state(state)
    del state["callbacks"], state["epoch_times"]  # optional: older checkpoints lack them
    check_saved_train_state(state)
    for bad in ([1, 2], None, "state"):
        with pytest.raises(ValueError, match="not an object"):
            check_saved_train_state(bad)


def test_what_fit_saves_passes_and_its_limits_are_the_checkpoints(tmp_path):
    from portacnn import checkpoint

    x, y = pc.data.preprocess(np.zeros((40, 28, 28), np.uint8)), np.arange(40) % 10
    model = tiny_model()
    opt = pc.optim.SGD(model.parameters(), lr=0.1)
    callbacks = [EarlyStopping(monitor="loss", patience=5), LearningRateScheduler(ls.StepLR(opt, step_size=1))]
    model.fit(x, y, epochs=2, batch_size=16, progress=False, optimizer=opt, callbacks=callbacks,
              validation_split=0.1, checkpoint_path=tmp_path / "ck.safetensors")
    state = pc.load(tmp_path / "ck.safetensors").checkpoint["train_state"]
    assert [c["type"] for c in state["callbacks"]] == ["EarlyStopping", "LearningRateScheduler"]
    check_saved_train_state(state)
    for name in ("MAX_EPOCHS", "MAX_BATCH_SIZE", "MAX_CALLBACKS"):  # one home: the checkpoint re-exports them
        assert getattr(ts_module, name) is getattr(checkpoint, name)


# -- each callback class checks a saved state with its constructor's rules ---------------------------------------
def _scheduler_callback(per="epoch"):
    return LearningRateScheduler(ls.StepLR(pc.optim.SGD(tiny_model().parameters(), lr=0.1), step_size=1), per=per)


MAKERS = {
    "EarlyStopping": lambda **kw: EarlyStopping(**kw),
    "ModelCheckpoint": lambda **kw: ModelCheckpoint("best.safetensors", **kw),
}


def test_the_registry_holds_each_callback_with_state():
    assert STATE_CHECKS == {"EarlyStopping": EarlyStopping.check_state, "ModelCheckpoint": ModelCheckpoint.check_state,
                            "LearningRateScheduler": LearningRateScheduler.check_state}


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("monitor", [3, None, "", "m" * 65, "val\x1b[2J", b"loss"])
def test_a_monitor_the_constructor_refuses_is_refused_in_a_saved_state(name, monitor):
    make, cls = MAKERS[name], getattr(pc.callbacks, name)
    with pytest.raises(ValueError, match=f"{name} monitor must be a printable string"):
        make(monitor=monitor)
    live = make(monitor="val_loss")
    state = {**live.state_dict(), "monitor": monitor}
    with pytest.raises(ValueError, match=f"{name} state monitor must be a printable string"):
        cls.check_state(state, 3)
    with pytest.raises(ValueError, match="monitor must be a printable string"):
        live.load_state_dict(state)


@pytest.mark.parametrize("name", list(MAKERS))
def test_monitor_modes_and_deltas_follow_the_constructor(name):
    make, cls = MAKERS[name], getattr(pc.callbacks, name)
    for mode in ("up", 1, None, "MIN"):
        with pytest.raises(ValueError, match=f"{name} mode must be one of 'auto', 'min', 'max'"):
            make(mode=mode)
        with pytest.raises(ValueError, match="mode must be one of 'min', 'max'"):
            cls.check_state({**make().state_dict(), "mode": mode}, 3)
    for delta in (-0.1, True, float("nan"), float("inf"), "0"):
        with pytest.raises(ValueError, match=f"{name} min_delta must be a finite number >= 0"):
            make(min_delta=delta)
    assert make(mode="max", min_delta=1).min_delta == 1.0 and make(mode="max").state_dict()["mode"] == "max"
    for best in ("0.5", float("nan"), float("inf"), True, 1 << 2000):
        with pytest.raises(ValueError, match="best must be a finite number or None"):
            cls.check_state({**make().state_dict(), "best": best}, 3)
    for epoch, best_epoch in ((0, 0), (3, 3), (3, -1), (3, 1.0)):
        with pytest.raises(ValueError, match="best_epoch must be"):
            cls.check_state({**make().state_dict(), "best_epoch": best_epoch}, epoch)
    cls.check_state({**make().state_dict(), "best": -0.25, "best_epoch": 2}, 3)
    cls.check_state(make().state_dict(), 0)  # a fresh callback's state: nothing finished yet


def test_early_stopping_state_and_arguments():
    for patience in (-1, 1.5, True, "3", None, 10**400, 100_001):
        with pytest.raises(ValueError, match=r"EarlyStopping patience must be an int >= 0 and <= 100000"):
            EarlyStopping(patience=patience)
    for flag in (1, "yes", None):
        with pytest.raises(ValueError, match="EarlyStopping restore_best_weights must be True or False"):
            EarlyStopping(restore_best_weights=flag)
        with pytest.raises(ValueError, match="ModelCheckpoint save_best_only must be True or False"):
            ModelCheckpoint("best.safetensors", save_best_only=flag)
    live = EarlyStopping(monitor="val_loss")
    good = {**EARLY, "best_epoch": 1, "wait": 2, "stopped_epoch": 2}
    EarlyStopping.check_state(good, 3)
    for key, value, epoch in (("wait", 4, 3), ("wait", -1, 3), ("wait", 1.0, 3), ("stopped_epoch", 3, 3),
                              ("stopped_epoch", "2", 3)):
        with pytest.raises(ValueError, match=f"EarlyStopping state {key} must be"):
            EarlyStopping.check_state({**good, key: value}, epoch)
        if epoch == 3 and key == "wait" and value != 4:
            with pytest.raises(ValueError, match=f"{key} must be"):
                live.load_state_dict({**good, key: value})
    with pytest.raises(ValueError, match="stopped_epoch must be None; got 0"):  # no epoch has finished
        EarlyStopping.check_state({**EARLY, "best_epoch": None, "stopped_epoch": 0}, 0)
    for state in ({**good, "extra": 1}, {k: v for k, v in good.items() if k != "wait"}, [good], None):
        with pytest.raises(ValueError, match="EarlyStopping state"):
            EarlyStopping.check_state(state, 3)
        with pytest.raises(ValueError, match="EarlyStopping state"):
            live.load_state_dict(state)
    with pytest.raises(ValueError, match="unknown field"):  # a ModelCheckpoint has no wait
        ModelCheckpoint.check_state(good, 3)
    live.load_state_dict(good)  # a valid state loads, and the run it stopped is over
    assert live.wait == 2 and live.stop_training and live.state_dict() == good


def test_scheduler_state_and_arguments():
    with pytest.raises(ValueError, match="LearningRateScheduler per must be one of 'epoch', 'step'; got 'batch'"):
        _scheduler_callback(per="batch")
    live = _scheduler_callback()
    state = live.state_dict()
    LearningRateScheduler.check_state(state, 0)
    bad = [({**state, "per": "batch"}, "per must be one of 'epoch', 'step'"),
           ({**state, "per": None}, "per must be one of"),
           ({**state, "offset": 1.5}, "offset must be a 64-bit int or None"),
           ({**state, "offset": 1 << 64}, "offset must be a 64-bit int"),
           ({**state, "scheduler": {"type": "../x", "state": {}}}, "scheduler type must be a class name"),
           ({**state, "scheduler": {"type": "StepLR"}}, "scheduler is missing field(s) ['state']"),
           ({**state, "scheduler": {**state["scheduler"], "state": {**STEPLR, "_last_lr": [-1.0]}}},
            "_last_lr must be a finite number >= 0"),
           ({**state, "extra": 1}, "unknown field(s) ['extra']"),
           ({"per": "epoch"}, "missing field(s) ['offset', 'scheduler']")]
    for saved, fragment in bad:
        with pytest.raises(ValueError) as err:
            LearningRateScheduler.check_state(saved, 2)
        assert fragment in str(err.value) and "LearningRateScheduler state" in str(err.value)
        with pytest.raises(ValueError) as err:
            live.load_state_dict(saved)
        assert fragment in str(err.value)
    live.load_state_dict(state)
