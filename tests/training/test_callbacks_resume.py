"""Callbacks with state across checkpoints: LearningRateScheduler (per epoch and per step, with parameter groups)
and EarlyStopping / ModelCheckpoint resume bit for bit; the hooks fit calls; mismatched callbacks refused."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from clihelp import float_subset, tiny_model
from conftest import sweep

import portacnn as pc
from portacnn import checkpoint
from portacnn.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
)
from portacnn.optim import lr_scheduler as ls

N, BATCH, EPOCHS = 96, 32, 3
STEPS_PER_EPOCH = N // BATCH
TOTAL = EPOCHS * STEPS_PER_EPOCH


@pytest.fixture(scope="module")
def data():
    return float_subset("train", N), float_subset("test", 64)


class Trace(Callback):
    """Records, after every step, each group's (lr, momentum or beta1) that the step used (put it before the
    LearningRateScheduler, which changes them for the next step). Without state: resumed runs need not have it."""

    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, batch, logs):
        self.seen.append([(g["lr"], g["betas"][0] if "betas" in g else g["momentum"])
                          for g in self.model.optimizer.param_groups])


def _onecycle_groups_step(model, opt=None):
    opt = opt or pc.optim.AdamW(pc.optim.split_decay(model), lr=1e-3, weight_decay=0.05)
    return opt, ls.OneCycleLR(opt, max_lr=0.01, total_steps=TOTAL), "step"


def _steplr_epoch(model, opt=None):
    opt = opt or pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return opt, ls.StepLR(opt, step_size=1, gamma=0.5), "epoch"


def _cosine_groups_epoch(model, opt=None):
    opt = opt or pc.optim.Adam(pc.optim.split_decay(model, weight_decay=1e-3), lr=2e-3)
    return opt, ls.CosineAnnealingLR(opt, T_max=EPOCHS, eta_min=1e-5), "epoch"


def _cosine_to_zero_step(model, opt=None):
    """The last step brings the rate to exactly 0: the final checkpoint must still load and resume."""
    opt = opt or pc.optim.SGD(pc.optim.split_decay(model), lr=0.05, momentum=0.9, nesterov=True)
    return opt, ls.CosineAnnealingLR(opt, T_max=TOTAL), "step"


def _warmup_cosine_step(model, opt=None):
    opt = opt or pc.optim.AdamW(pc.optim.split_decay(model), lr=3e-3)
    return opt, ls.SequentialLR(opt, [ls.LinearLR(opt, start_factor=0.1, total_iters=4),
                                      ls.CosineAnnealingLR(opt, T_max=TOTAL - 4)], milestones=[4]), "step"


def _warmup_cosine_epoch(model, opt=None):
    opt = opt or pc.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    return opt, ls.SequentialLR(opt, [ls.LinearLR(opt, start_factor=0.25, total_iters=1),
                                      ls.CosineAnnealingLR(opt, T_max=EPOCHS)], milestones=[1]), "epoch"


def _onecycle_sgd_epoch(model, opt=None):
    opt = opt or pc.optim.SGD(model.parameters(), lr=0.01)  # no momentum: OneCycleLR cycles it in, as torch
    return opt, ls.OneCycleLR(opt, max_lr=0.05, total_steps=EPOCHS, three_phase=True), "epoch"


SCHEDULES = [
    pytest.param(_onecycle_groups_step, id="AdamW-split_decay-OneCycle-per-step"),
    pytest.param(_steplr_epoch, id="SGD-StepLR-per-epoch"),
    pytest.param(_cosine_groups_epoch, id="Adam-split_decay-Cosine-per-epoch"),
    pytest.param(_cosine_to_zero_step, id="SGD-nesterov-Cosine-to-zero-per-step"),
    pytest.param(_warmup_cosine_step, id="AdamW-warmup-cosine-per-step"),
    pytest.param(_warmup_cosine_epoch, id="RMSprop-warmup-cosine-per-epoch"),
    pytest.param(_onecycle_sgd_epoch, id="SGD-OneCycle-three-phase-per-epoch"),
]


def _fit(model, data, callbacks, **kw):
    (x, y), _ = data
    return model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, seed=3, progress=False, callbacks=callbacks, **kw)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key


def _interrupt_at(opt, step):
    """SIGINT right after optimizer step ``step`` (1-based, counted over the run): fit checkpoints and returns."""
    real = opt.step

    def step_then_interrupt():
        real()
        if opt.steps == step:
            signal.raise_signal(signal.SIGINT)

    opt.step = step_then_interrupt


def _resume(path, make, data, trace=None, **kw):
    """Load ``path`` and finish the run: the scheduler is built again (on a throwaway optimizer) and fit takes
    the saved optimizer."""
    model = pc.load(path)
    _, sched, per = make(model)
    trace = trace or Trace()
    history = _fit(model, data, [trace, LearningRateScheduler(sched, per=per)], resume=model, **kw)
    return model, history, trace


@pytest.mark.parametrize("make", sweep(SCHEDULES, 3))
@pytest.mark.parametrize("stop", ["mid-epoch", "epoch-end", "both"])
def test_resumed_schedules_are_bit_for_bit(data, tmp_path, make, stop):
    full = tiny_model()
    opt, sched, per = make(full)
    trace = Trace()
    h_full = _fit(full, data, [trace, LearningRateScheduler(sched, per=per)], optimizer=opt)
    assert len(trace.seen) == TOTAL and len(h_full.history["lr"]) == EPOCHS

    path = tmp_path / "run.safetensors"
    first = tiny_model()
    opt, sched, per = make(first)
    seen = Trace()
    if stop == "epoch-end":  # a run of one epoch, continued to EPOCHS
        (x, y), _ = data
        first.fit(x, y, epochs=1, batch_size=BATCH, seed=3, progress=False, optimizer=opt,
                  callbacks=[seen, LearningRateScheduler(sched, per=per)], checkpoint_path=path)
    else:
        _interrupt_at(opt, STEPS_PER_EPOCH + 2 if stop == "mid-epoch" else STEPS_PER_EPOCH)
        h = _fit(first, data, [seen, LearningRateScheduler(sched, per=per)], optimizer=opt, checkpoint_path=path)
        assert h.interrupted
    saved = pc.load(path).checkpoint
    assert [c["type"] for c in saved["train_state"]["callbacks"]] == ["LearningRateScheduler"]
    if stop == "both":  # the epoch-end checkpoint, then a mid-epoch one, then the end
        model = pc.load(path)
        opt2 = checkpoint.optimizer_from_checkpoint(model)  # torch's habit: the optimizer, then its scheduler on it
        _, sched2, per = make(model, opt2)
        _interrupt_at(opt2, STEPS_PER_EPOCH + 2)
        h = _fit(model, data, [seen, LearningRateScheduler(sched2, per=per)], optimizer=opt2, resume=model,
                 checkpoint_path=path)
        assert h.interrupted and pc.load(path).checkpoint["train_state"]["step"] == 2
    resumed, h, rest = _resume(path, make, data, checkpoint_path=path)

    _assert_same_weights(resumed, full)
    assert seen.seen + rest.seen == trace.seen  # every step's rates and momentum, bit for bit
    assert h.history == h_full.history  # losses, accuracies and the per-epoch lr
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]
    final = pc.load(path)  # the finished run's checkpoint loads, and so does its optimizer (a rate of 0 included)
    again = checkpoint.optimizer_from_checkpoint(final)
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in full.optimizer.param_groups]


def test_learning_rate_sequence_per_epoch_is_torchs_loop():
    """per="epoch": epoch e trains with the schedule's value after e steps (torch: step() after each epoch)."""
    (x, y) = float_subset("train", 64)
    model = tiny_model()
    opt = pc.optim.SGD(model.parameters(), lr=0.1)
    sched = ls.StepLR(opt, step_size=2, gamma=0.1)
    trace = Trace()
    h = model.fit(x, y, epochs=5, batch_size=32, progress=False, optimizer=opt,
                  callbacks=[trace, LearningRateScheduler(sched)])
    want = [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1]
    assert h.history["lr"] == want
    assert [s[0][0] for s in trace.seen] == [lr for lr in want for _ in range(2)]
    assert sched.last_epoch == 4


def test_per_step_with_one_cycle_ends_exactly_at_total_steps(data):
    model = tiny_model()
    opt, sched, _ = _onecycle_groups_step(model)
    _fit(model, data, [LearningRateScheduler(sched, per="step")], optimizer=opt)
    assert sched.last_epoch == TOTAL  # one more step would be torch's ValueError


def _early_stopping_run(data, epochs, path=None, resume=None, model=None):
    (x, y), (xv, yv) = data
    model = model or tiny_model()
    stopper = EarlyStopping(monitor="val_loss", patience=1)
    best = ModelCheckpoint(path.parent / "best.safetensors", monitor="val_loss") if path else None
    callbacks = [stopper] + ([best] if best else [])
    opt = None if resume is not None else pc.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    h = model.fit(x, y, epochs=epochs, batch_size=BATCH, seed=0, progress=False, validation_data=(xv, yv),
                  optimizer=opt, callbacks=callbacks, checkpoint_path=path, resume=resume)
    return model, h, stopper, best


def test_early_stopping_resumed_stops_at_the_same_epoch(data, tmp_path):
    (tmp_path / "full").mkdir()
    full, h_full, stopper, _ = _early_stopping_run(data, 30, tmp_path / "full" / "ck.safetensors")
    stop = stopper.stopped_epoch
    assert stop is not None and 2 <= stop < 29, h_full.history["val_loss"]
    path = tmp_path / "ck.safetensors"
    _, _, first, _ = _early_stopping_run(data, stop, path)  # the run stops one epoch before its early stop
    assert first.stopped_epoch is None and first.wait >= 1
    saved = pc.load(path).checkpoint["train_state"]["callbacks"]
    assert [c["type"] for c in saved] == ["EarlyStopping", "ModelCheckpoint"]
    assert saved[0]["state"]["wait"] == first.wait  # the state after the last epoch's callbacks, not before
    model = pc.load(path)
    resumed, h, again, best = _early_stopping_run(data, 30, path, resume=model, model=model)
    assert again.stopped_epoch == stop and again.best_epoch == stopper.best_epoch
    assert best.best_epoch == stopper.best_epoch  # ModelCheckpoint kept its best value: no worse model saved
    assert h.history == h_full.history
    _assert_same_weights(resumed, full)


def test_a_run_early_stopping_ended_stays_ended(data, tmp_path):
    """Stopped with its best weights restored: the checkpoint holds them, and resuming trains nothing more."""
    (x, y), (xv, yv) = data
    path = tmp_path / "ck.safetensors"
    model = tiny_model()
    stopper = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    model.fit(x, y, epochs=30, batch_size=BATCH, seed=0, progress=False, validation_data=(xv, yv),
              optimizer=pc.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), callbacks=[stopper],
              checkpoint_path=path)
    assert stopper.stopped_epoch is not None and stopper.stopped_epoch < 29
    best = model.state_dict()
    saved = pc.load(path)
    _assert_same_weights(saved, model)
    epochs_before = saved.checkpoint["train_state"]["epoch"]
    again = EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    h = saved.fit(x, y, epochs=30, batch_size=BATCH, seed=0, progress=False, validation_data=(xv, yv),
                  callbacks=[again], checkpoint_path=path, resume=saved)
    assert len(h.history["loss"]) == epochs_before and again.stopped_epoch == stopper.stopped_epoch
    assert all(np.array_equal(v, best[k]) for k, v in pc.load(path).state_dict().items())


def test_monitors_start_afresh_in_each_new_fit(data, tmp_path):
    """As in Keras: a callback reused for a second fit does not carry its best value, wait or stop over."""
    (x, y), (xv, yv) = data
    model = tiny_model()
    stopper = EarlyStopping(monitor="val_loss", patience=0)
    keeper = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss")
    kw = dict(batch_size=BATCH, seed=0, progress=False, validation_data=(xv, yv), callbacks=[stopper, keeper])
    model.fit(x, y, epochs=6, optimizer=pc.optim.SGD(model.parameters(), lr=2.0), **kw)
    assert stopper.stop_training and stopper.best_epoch is not None
    h = model.fit(x, y, epochs=2, optimizer=pc.optim.SGD(model.parameters(), lr=1e-4), checkpoint_path=tmp_path / "ck.safetensors", **kw)
    assert len(h.history["loss"]) >= 1 and keeper.best_epoch in (0, 1) and stopper.best_epoch in (0, 1)


def test_callback_states_must_match_when_resuming(data, tmp_path):
    path = tmp_path / "ck.safetensors"
    model = tiny_model()
    opt, sched, _ = _onecycle_groups_step(model)
    (x, y), _ = data
    model.fit(x, y, epochs=1, batch_size=BATCH, seed=3, progress=False, optimizer=opt,
              callbacks=[LearningRateScheduler(sched, per="step")], checkpoint_path=path)

    def resume_with(callbacks):
        m = pc.load(path)
        return m.fit(x, y, epochs=2, batch_size=BATCH, seed=3, progress=False, callbacks=callbacks(m), resume=m)

    def scheduler(m, **kw):
        opt = pc.optim.AdamW(pc.optim.split_decay(m), lr=1e-3, weight_decay=0.05)
        return ls.OneCycleLR(opt, **{"max_lr": 0.01, "total_steps": TOTAL, **kw})

    cases = [
        (lambda m: None, r"had the callbacks with state \['LearningRateScheduler'\] and this fit has \(none\)"),
        (lambda m: [EarlyStopping(monitor="loss")], "same callbacks, in the same order"),
        (lambda m: [LearningRateScheduler(scheduler(m)), EarlyStopping(monitor="loss")], "same order"),
        (lambda m: [LearningRateScheduler(scheduler(m), per="epoch")], "per='step'"),
        (lambda m: [LearningRateScheduler(scheduler(m, total_steps=TOTAL + 1), per="step")], "total_steps"),
        (lambda m: [LearningRateScheduler(ls.StepLR(pc.optim.AdamW(m.parameters()), 2), per="step")], "OneCycleLR"),
        (lambda m: [LearningRateScheduler(ls.OneCycleLR(pc.optim.AdamW(m.parameters()), 0.01, TOTAL), per="step")],
         "parameter groups"),
    ]
    for callbacks, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            resume_with(callbacks)
        assert str(err.value).startswith("resume: ") and "\n" not in str(err.value)
    # a checkpoint written before callbacks had state resumes as before: the callbacks start afresh
    m = pc.load(path)
    del m.checkpoint["train_state"]["callbacks"]
    h = m.fit(x, y, epochs=2, batch_size=BATCH, seed=3, progress=False, resume=m,
              callbacks=[EarlyStopping(monitor="loss")])
    assert len(h.history["loss"]) == 2


def test_hooks_are_called_in_order_with_host_values_only(data):
    calls = []

    class Spy(Callback):
        def on_train_begin(self):
            calls.append(("train_begin", type(self.model.optimizer).__name__))

        def on_epoch_begin(self, epoch):
            calls.append(("epoch_begin", epoch))

        def on_train_batch_end(self, batch, logs):
            assert all(isinstance(v, int) for v in logs.values())
            calls.append(("batch_end", batch, logs["epoch"], logs["size"]))

        def on_epoch_end(self, epoch, logs):
            calls.append(("epoch_end", epoch))

    (x, y), _ = data
    tiny_model().fit(x[:40], y[:40], epochs=2, batch_size=32, progress=False, callbacks=[Spy()])
    per_epoch = lambda e: [("epoch_begin", e), ("batch_end", 0, e, 32), ("batch_end", 1, e, 8), ("epoch_end", e)]
    assert calls == [("train_begin", "Adam")] + per_epoch(0) + per_epoch(1)


def test_a_scheduler_of_another_optimizer_is_refused_and_arguments_are_checked(data):
    (x, y), _ = data
    model = tiny_model()
    sched = ls.StepLR(pc.optim.SGD(model.parameters(), lr=0.1), step_size=1)
    with pytest.raises(ValueError, match="another optimizer"):
        model.fit(x, y, epochs=1, progress=False, callbacks=[LearningRateScheduler(sched)])
    with pytest.raises(ValueError, match="per must be one of 'epoch', 'step'"):
        LearningRateScheduler(sched, per="batch")
    with pytest.raises(ValueError, match="portacnn.optim.lr_scheduler"):
        LearningRateScheduler(lambda epoch: 0.1)


def test_user_callbacks_with_state_are_saved_and_restored(data, tmp_path):
    class Counter(Callback):
        def __init__(self):
            self.epochs, self.loaded = 0, None

        def on_epoch_end(self, epoch, logs):
            self.epochs += 1

        def state_dict(self):
            return {"epochs": self.epochs, "note": ["any", {"json": 1.5}]}

        def load_state_dict(self, state):
            self.loaded = state
            self.epochs = state["epochs"]

    (x, y), _ = data
    path = tmp_path / "ck.safetensors"
    tiny_model().fit(x, y, epochs=2, batch_size=BATCH, progress=False, callbacks=[Counter()], checkpoint_path=path)
    model = pc.load(path)
    counter = Counter()
    model.fit(x, y, epochs=3, batch_size=BATCH, progress=False, callbacks=[counter], resume=model)
    assert counter.loaded == {"epochs": 2, "note": ["any", {"json": 1.5}]} and counter.epochs == 3

    class NotJson(Callback):
        def state_dict(self):
            return {"bad": float("inf")}

    with pytest.raises(pc.CheckpointError, match="must be a finite number"):
        tiny_model().fit(x, y, epochs=1, batch_size=BATCH, progress=False, callbacks=[NotJson()],
                         checkpoint_path=tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_portacnn_callbacks_is_the_one_public_home_of_the_callbacks():
    """Documented as portacnn.callbacks.*, defined in portacnn.training.callbacks; portacnn.training no longer
    lists them (its old names stay importable until portacnn.cli imports them from portacnn.callbacks)."""
    import portacnn.callbacks as cb
    import portacnn.training as tr

    for name in ("Callback", "EarlyStopping", "LambdaCallback", "LearningRateScheduler", "ModelCheckpoint"):
        assert getattr(cb, name) is getattr(tr.callbacks, name) and name in cb.__all__
        assert name not in tr.__all__ or name == "Callback"  # the protocol fit's messages name
        assert not hasattr(tr, name) or name == "Callback"  # one public home, no third import path
    assert not hasattr(tr, "held_out")  # the misleading name is gone: held_out_count says it returns a count
