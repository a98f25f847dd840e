"""fit's own callbacks, one at a time: the history record, the progress display, the stop on a non-finite loss
and the checkpoint (its schedule, the last good file, what a failed write leaves); fit's checked arguments and
held_out_count."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from clihelp import tiny_model

import portacnn as pc
from portacnn.callbacks import Callback, EarlyStopping
from portacnn.train_state import TrainState
from portacnn.training import checkpointing
from portacnn.training.checkpointing import TrainingCheckpoint, callback_states
from portacnn.training.divergence import StopOnNonFinite, TrainingDiverged, check_finite_weights
from portacnn.training.history import History, RecordHistory
from portacnn.training.loop import held_out_count
from portacnn.training.progress import ProgressDisplay


def _with_optimizer(lr=0.1):
    model = tiny_model()
    model.optimizer = pc.optim.SGD(model.parameters(), lr=lr)
    return model


# -- the history ------------------------------------------------------------------------------------------------
def test_record_history_appends_each_epoch_and_the_rate_and_time():
    history = History()
    record = RecordHistory(history, validation=True, track_lr=True)
    record.set_model(_with_optimizer(lr=0.25))
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    for epoch in range(2):
        record.on_epoch_begin(epoch)
        record.on_epoch_end(epoch, {"loss": 1.0 - epoch / 4, "accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6})
    assert history.history == {"loss": [1.0, 0.75], "accuracy": [0.5, 0.5], "val_loss": [0.9, 0.9],
                               "val_accuracy": [0.6, 0.6], "lr": [0.25, 0.25]}
    assert len(history.epoch_times) == 2 and all(t >= 0 for t in history.epoch_times)
    assert record.latest() == {"loss": 0.75, "accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6, "lr": 0.25}
    with pytest.raises(KeyError):  # a metric fit never reports has no list: a bug, not a silent new key
        record.on_epoch_end(2, {"loss": 0.5, "accuracy": 0.5, "top5": 0.9})


def test_record_history_keeps_a_resumed_run_and_adds_lists_beside_it():
    history = History(history={"loss": [2.0], "accuracy": [0.1]}, epoch_times=[3.0])
    record = RecordHistory(history, validation=True, track_lr=False)
    record.set_model(_with_optimizer())
    record.on_epoch_begin(1)
    record.on_epoch_end(1, {"loss": 1.5, "accuracy": 0.2, "val_loss": 1.4, "val_accuracy": 0.3})
    assert history.history == {"loss": [2.0, 1.5], "accuracy": [0.1, 0.2], "val_loss": [1.4], "val_accuracy": [0.3]}
    assert history.epoch_times[0] == 3.0 and len(history.epoch_times) == 2
    assert History().to_dict() == {"history": {"loss": [], "accuracy": []}, "epoch_times": [], "interrupted": False,
                                   "signal": None}


# -- the progress display ---------------------------------------------------------------------------------------
def _one_epoch(display, state, history, epoch=0):
    display.on_epoch_begin(epoch)
    state.step, state.seen, state.loss_sum, state.correct = 2, 64, 64 * 0.5, 48
    display.on_log(state)
    history.history["loss"].append(0.5)
    history.history["accuracy"].append(0.75)
    history.epoch_times.append(1.25)
    display.on_epoch_end(epoch, {})


@pytest.mark.parametrize("verbose, tty, shown", [(0, True, ""), (0, False, ""), (2, True, "line"), (2, False, "line"),
                                                 (1, False, "line"), (1, True, "bar")])
def test_progress_display_follows_verbose_and_the_terminal(capsys, monkeypatch, verbose, tty, shown):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    state, history = TrainState(seed=0, batch_size=32), History()
    display = ProgressDisplay(verbose, 3, 64, state, history)
    _one_epoch(display, state, history)
    err = capsys.readouterr().err
    if shown == "":
        assert err == ""
    elif shown == "line":
        assert err == "epoch 1/3: loss 0.5000  accuracy 0.7500  (1.2 s)\n"
    else:
        assert "epoch 1/3" in err and "loss=0.5000" in err and "accuracy=0.7500" in err and display.bar is None


def test_progress_bar_closes_on_a_stop_and_on_a_failure(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    state, history = TrainState(seed=0, batch_size=32, step=1, seen=32), History()
    display = ProgressDisplay(1, 2, 64, state, history)
    display.on_epoch_begin(0)
    assert display.bar is not None and display.bar.n == 32  # a resumed epoch starts where it stood
    display.on_stop()
    assert display.bar is None
    display.close()  # again: nothing to close
    display.on_epoch_begin(1)
    display.close()
    assert display.bar is None and "epoch 2/2" in capsys.readouterr().err


# -- the stop on a non-finite loss --------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_sum", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_raises_with_the_epoch_step_and_checkpoint(loss_sum):
    state = TrainState(seed=0, batch_size=8, epoch=1, step=3, seen=24, loss_sum=loss_sum)
    with pytest.raises(TrainingDiverged) as err:
        StopOnNonFinite(lambda: "; the last good checkpoint is ck.safetensors").on_log(state)
    assert str(err.value) == (f"training diverged: the loss became {loss_sum} in epoch 2 (step 3); lower the learning "
                              "rate; the last good checkpoint is ck.safetensors")
    with pytest.raises(TrainingDiverged, match=r"\(step 3\); lower the learning rate$"):
        StopOnNonFinite().on_log(state)
    StopOnNonFinite().on_log(TrainState(seed=0, batch_size=8, step=3, seen=24, loss_sum=1e30))  # finite: go on


def test_non_finite_weights_are_found_in_one_sync():
    model = tiny_model()
    check_finite_weights(model)
    model.layers[0].weight.data[0, 0, 0, :2] = [np.nan, np.inf]
    with pytest.raises(TrainingDiverged, match="2 weights became NaN or infinite; lower the learning rate; note$"):
        check_finite_weights(model, "; note")


# -- the checkpoint ---------------------------------------------------------------------------------------------------
class _Counter(Callback):
    """A callback with state that changes in on_epoch_end."""

    def __init__(self):
        self.count = 0

    def on_epoch_end(self, epoch, logs):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def _checkpoint(tmp_path, every, epochs, callbacks=(), resumed_from=None, path=None):
    model = tiny_model()
    state = TrainState(seed=0, batch_size=8, rng=model.rng.bit_generator.state)
    optimizer = pc.optim.Adam(model.parameters())
    ck = TrainingCheckpoint(path or tmp_path / "ck.safetensors", every, epochs, state, list(callbacks), optimizer,
                            {"model": "seed"}, (1, 28, 28), resumed_from=resumed_from)
    ck.set_model(model)
    return ck, state


def _finish_epoch(ck, state, callbacks=(), finished=False):
    state.history["loss"].append(1.0)
    state.history["accuracy"].append(0.5)
    state.next_epoch()
    ck.on_epoch_end(state.epoch - 1, {})
    for callback in callbacks:
        callback.on_epoch_end(state.epoch - 1, {})
    ck.on_callbacks_end(finished)


def _count_writes(monkeypatch):
    writes = []
    monkeypatch.setattr(checkpointing, "save", lambda model, path, train_state, **kw: writes.append(train_state))
    return writes


def test_the_checkpoint_is_written_every_few_epochs_and_at_the_last(tmp_path, monkeypatch):
    writes = _count_writes(monkeypatch)
    ck, state = _checkpoint(tmp_path, every=2, epochs=5)
    for _ in range(5):
        _finish_epoch(ck, state)
    assert [w["epoch"] for w in writes] == [2, 4, 5]
    ck.on_train_end()  # the run wrote one: nothing more
    assert len(writes) == 3 and ck.good_note() == f"; the last good checkpoint is {tmp_path / 'ck.safetensors'}"


def test_the_checkpoint_follows_the_callbacks(tmp_path, monkeypatch):
    writes = _count_writes(monkeypatch)
    counter = _Counter()
    ck, state = _checkpoint(tmp_path, every=1, epochs=5, callbacks=[counter])
    _finish_epoch(ck, state, [counter])  # saved before the callbacks (count 0), again after them (count 1)
    assert [(w["epoch"], w["callbacks"]) for w in writes] == [(1, [{"type": "_Counter", "state": {"count": 0}}]),
                                                              (1, [{"type": "_Counter", "state": {"count": 1}}])]
    writes.clear()
    ck, state = _checkpoint(tmp_path, every=None, epochs=5)
    _finish_epoch(ck, state)
    assert writes == []  # no schedule: nothing unless the run ends
    _finish_epoch(ck, state, finished=True)  # a callback stopped the run: its checkpoint holds this epoch
    ck.on_stop()  # and a signal writes one too
    assert [w["epoch"] for w in writes] == [2, 2]


def test_a_run_that_wrote_nothing_writes_at_its_end_and_a_resumed_file_is_the_last_good(tmp_path, monkeypatch):
    writes = _count_writes(monkeypatch)
    ck, _ = _checkpoint(tmp_path, every=None, epochs=1)
    assert ck.good_note() == ""
    ck.on_train_end()
    assert len(writes) == 1
    path = tmp_path / "run.safetensors"
    path.write_bytes(b"x")
    ck, _ = _checkpoint(tmp_path, every=1, epochs=1, resumed_from=str(path), path=path)
    assert ck.good_note() == f"; the last good checkpoint is {path}"
    ck.on_train_end()
    assert len(writes) == 1  # the resumed file holds the run already
    assert _checkpoint(tmp_path, 1, 1, resumed_from=tmp_path / "other", path=path)[0].good_note() == ""


def test_weights_that_are_not_finite_never_replace_the_last_good_checkpoint(tmp_path):
    ck, state = _checkpoint(tmp_path, every=1, epochs=3)
    _finish_epoch(ck, state)
    good = (tmp_path / "ck.safetensors").read_bytes()
    assert pc.load(tmp_path / "ck.safetensors").checkpoint["extra"] == {"model": "seed"}
    ck.model.layers[0].weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingDiverged, match=r"1 weights became NaN .*; the last good checkpoint is .*ck.safetensors"):
        _finish_epoch(ck, state)
    assert (tmp_path / "ck.safetensors").read_bytes() == good


def test_a_refused_write_leaves_the_previous_file_whole(tmp_path):
    class Bad(_Counter):
        def state_dict(self):
            return {"count": float("inf") if self.count else 0}

    bad = Bad()
    ck, state = _checkpoint(tmp_path, every=1, epochs=3, callbacks=[bad])
    state.history["loss"].append(1.0)
    state.history["accuracy"].append(0.5)
    state.next_epoch()
    ck.on_epoch_end(0, {})
    good = (tmp_path / "ck.safetensors").read_bytes()
    bad.on_epoch_end(0, {})
    with pytest.raises(pc.CheckpointError, match="must be a finite number"):  # save refuses before it writes
        ck.on_callbacks_end(False)
    assert (tmp_path / "ck.safetensors").read_bytes() == good


def test_callback_states_keep_only_callbacks_with_state():
    assert callback_states([Callback(), _Counter(), EarlyStopping(monitor="loss")]) == [
        {"type": "_Counter", "state": {"count": 0}},
        {"type": "EarlyStopping", "state": {"monitor": "loss", "mode": "min", "best": None, "best_epoch": None,
                                            "wait": 0, "stopped_epoch": None}}]


# -- fit's arguments -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "fit epochs must be a positive int; got 0"),
    ({"batch_size": 2.0}, "fit batch_size must be a positive int; got 2.0"),
    ({"log_every": True}, "fit log_every must be a positive int; got True"),
    ({"checkpoint_every": 0}, "fit checkpoint_every must be a positive int or None; got 0"),
    ({"label_smoothing": 1.0}, "fit label_smoothing must be a finite number >= 0 and < 1; got 1.0"),
    ({"label_smoothing": True}, "fit label_smoothing must be"),
    ({"verbose": True}, "fit verbose must be an int >= 0 and <= 2 or None; got True"),
    ({"augment": "affine"}, "augment must be a portacnn.augment transform"),
    ({"validation_split": 1}, "validation_split must be a finite number >= 0 and < 1 or None; got 1"),
    ({"validation_split": 0.999}, "validation_split=0.999 leaves no training images out of 8"),
])  # fmt: skip
def test_fit_arguments_are_checked_in_one_line(kwargs, message):
    x, y = np.zeros((8, 1, 28, 28), np.float32), np.arange(8)
    with pytest.raises(ValueError) as err:
        tiny_model().fit(x, y, **{"epochs": 1, "progress": False, **kwargs})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_held_out_count_is_a_count():
    assert [held_out_count(100, s) for s in (0, 0.0, None, 0.1, 0.004, 0.5)] == [0, 0, 0, 10, 1, 50]
    for bad in (-0.1, 1.0, True, "0.1", float("nan")):
        with pytest.raises(ValueError, match="validation_split must be"):
            held_out_count(100, bad)


def test_resume_refuses_a_training_state_changed_by_hand(tmp_path):
    x, y = np.zeros((16, 1, 28, 28), np.float32), np.arange(16) % 10
    model = tiny_model()
    model.fit(x, y, epochs=1, batch_size=8, progress=False, checkpoint_path=tmp_path / "ck.safetensors")
    saved = pc.load(tmp_path / "ck.safetensors")
    saved.checkpoint["train_state"]["step"] = -1
    with pytest.raises(ValueError, match="resume: the checkpoint's training state is not usable: field 'step' must be"):
        saved.fit(x, y, epochs=2, batch_size=8, progress=False, resume=saved)
