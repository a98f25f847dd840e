"""fit / evaluate / predict: History, metrics against hand computations, determinism across backends,
exact resume (API), divergence, Ctrl-C, progress bars, host syncs, argument checks. Tiny data throughout."""

from __future__ import annotations

import math
import signal
import sys

import numpy as np
import pytest
from clihelp import assert_same_state, float_subset, tiny_model
from conftest import make_backend

import portacnn as pc
from portacnn.training import loop as training
from portacnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from portacnn.training import History, TrainingDiverged

N, BATCH = 256, 32


@pytest.fixture(scope="module")
def small():
    return float_subset("train", N), float_subset("test", 100)


def _dropout_model(seed=0, backend=None):
    """A small net with dropout, so resuming must also restore the model's random generator."""
    layers = [Conv2D(1, 2, 5), ReLU(), MaxPool2D(2), Flatten(), Dropout(0.3), Dense(288, 10)]
    return pc.Sequential(layers, backend=backend, seed=seed)


# -- History, evaluate, predict -----------------------------------------------------------------------
def test_fit_returns_history_with_per_epoch_metrics(small):
    (x, y), (xv, yv) = small
    model = tiny_model()
    h = model.fit(x, y, epochs=2, batch_size=BATCH, validation_data=(xv, yv), progress=False)
    assert isinstance(h, History)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in h.history.values())
    assert all(math.isfinite(v) for vs in h.history.values() for v in vs)
    assert all(0.0 <= a <= 1.0 for a in h.history["accuracy"] + h.history["val_accuracy"])
    assert h.history["loss"][1] < h.history["loss"][0]  # it learns something
    assert len(h.epoch_times) == 2 and not h.interrupted
    # the validation metrics are exactly what evaluate reports after the last epoch
    ev = model.evaluate(xv, yv)
    assert ev["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-6)
    assert ev["accuracy"] == h.history["val_accuracy"][-1]
    assert isinstance(model.optimizer, pc.optim.Adam) and model.optimizer.lr == 1e-3  # the default
    assert h.to_dict()["history"] is h.history


def test_fit_without_validation_has_only_training_metrics(small):
    (x, y), _ = small
    h = tiny_model().fit(x[:64], y[:64], epochs=1, batch_size=BATCH, progress=False)
    assert set(h.history) == {"loss", "accuracy"}


def test_evaluate_matches_a_hand_computation(small):
    _, (xv, yv) = small
    model = tiny_model()
    logits = np.asarray(model.forward(xv), dtype=np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    want_loss = float(-logp[np.arange(len(yv)), yv].mean())
    want_acc = float((logits.argmax(1) == yv).mean())
    for bs in (7, 1000):
        r = model.evaluate(xv, yv, batch_size=bs)
        assert r["n"] == len(yv)
        assert r["loss"] == pytest.approx(want_loss, rel=1e-5)
        assert r["accuracy"] == pytest.approx(want_acc)


def test_predict_and_predict_proba(small):
    _, (xv, yv) = small
    model = tiny_model()
    proba = model.predict_proba(xv)
    assert proba.shape == (len(xv), 10) and isinstance(proba, np.ndarray) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    pred = model.predict(xv, batch_size=13)
    assert pred.dtype == np.int64 and pred.shape == (len(xv),)
    np.testing.assert_array_equal(pred, proba.argmax(1))
    np.testing.assert_array_equal(pred, model.predict(xv, batch_size=1000))


@pytest.mark.parametrize("name", ["array_api_strict", "torch", "jax"])
def test_backend_arrays_as_inputs_equal_host_inputs(small, name):
    (x, y), (xv, yv) = small
    be = make_backend(name)
    ref, dev = tiny_model(), tiny_model(backend=be)
    ref.fit(x[:64], y[:64], epochs=1, batch_size=BATCH, progress=False)
    dev.fit(be.asarray(x[:64]), be.asarray(y[:64]), epochs=1, batch_size=BATCH, progress=False)
    a, b = ref.evaluate(xv, yv), dev.evaluate(be.asarray(xv), be.asarray(yv))
    assert b["n"] == a["n"] and b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    np.testing.assert_array_equal(dev.predict(be.asarray(xv)), ref.predict(xv))


# -- determinism --------------------------------------------------------------------------------------
def test_same_seed_same_run_bit_for_bit_and_other_seed_differs(small):
    (x, y), _ = small
    runs = []
    for seed in (3, 3, 4):
        m = tiny_model()
        h = m.fit(x[:128], y[:128], epochs=1, batch_size=BATCH, seed=seed, progress=False)
        runs.append((h.history, m.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert_same_state(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1]["0.weight"], runs[2][1]["0.weight"])  # other batch order


def test_same_seed_same_history_and_weights_on_every_backend(small):
    """numpy vs array_api_strict (non-default device) vs torch vs jax: one small epoch, same numbers (float32)."""
    (x, y), (xv, yv) = small
    results = {}
    for name in ("numpy", "array_api_strict", "torch", "jax"):
        if name in ("torch", "jax") and name not in pc.available_backends():
            continue
        m = tiny_model(backend=make_backend(name))
        h = m.fit(x[:128], y[:128], epochs=1, batch_size=BATCH, validation_data=(xv, yv), seed=5, progress=False)
        results[name] = (h.history, m.state_dict())
    ref_hist, ref_state = results.pop("numpy")
    for name, (hist, state) in results.items():
        for k in ref_hist:
            np.testing.assert_allclose(hist[k], ref_hist[k], rtol=2e-5, err_msg=f"{name} {k}")
        for k in ref_state:
            scale = float(np.abs(ref_state[k]).max())
            np.testing.assert_allclose(state[k], ref_state[k], rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name} {k}")


def test_shuffle_false_visits_samples_in_order(small):
    (x, y), _ = small
    a, b = tiny_model(), tiny_model()
    a.fit(x[:64], y[:64], epochs=1, batch_size=BATCH, shuffle=False, seed=0, progress=False)
    b.fit(x[:64], y[:64], epochs=1, batch_size=BATCH, shuffle=False, seed=99, progress=False)
    assert_same_state(a.state_dict(), b.state_dict())  # the seed only drives the order


# -- exact resume through the API -----------------------------------------------------------------------
def test_resume_at_epoch_boundary_is_bit_for_bit(small, tmp_path):
    (x, y), (xv, yv) = small
    full = _dropout_model()
    h_full = full.fit(x, y, epochs=2, batch_size=BATCH, validation_data=(xv, yv), seed=1, progress=False)

    first = _dropout_model()
    first.fit(x, y, epochs=1, batch_size=BATCH, validation_data=(xv, yv), seed=1, progress=False,
              checkpoint_path=tmp_path / "ck.safetensors")
    resumed = pc.load(tmp_path / "ck.safetensors")
    assert resumed.checkpoint["train_state"]["epoch"] == 1
    h = resumed.fit(x, y, epochs=2, batch_size=BATCH, validation_data=(xv, yv), seed=1, progress=False,
                    resume=resumed)
    assert_same_state(resumed.state_dict(), full.state_dict())
    assert h.history == h_full.history


def test_two_runs_resumed_from_one_loaded_model_train_alike(small, tmp_path):
    """Resuming leaves the loaded checkpoint as it was: its optimizer buffers are copied, not updated in place
    (a second model resumed from it trained on moments the first run had already moved)."""
    (x, y), _ = small
    _dropout_model().fit(x, y, epochs=1, batch_size=BATCH, seed=1, progress=False,
                         checkpoint_path=tmp_path / "ck.safetensors")
    run = pc.load(tmp_path / "ck.safetensors")
    saved = {k: np.array(v) for k, v in run.checkpoint["optimizer_state"].items()}
    a, b = _dropout_model(seed=7), _dropout_model(seed=8)
    a.fit(x, y, epochs=2, batch_size=BATCH, seed=1, progress=False, resume=run)
    for key, value in saved.items():
        np.testing.assert_array_equal(run.checkpoint["optimizer_state"][key], value, err_msg=key)
    b.fit(x, y, epochs=2, batch_size=BATCH, seed=1, progress=False, resume=run)
    assert_same_state(a.state_dict(), b.state_dict())


def test_resume_mid_epoch_after_ctrl_c_is_bit_for_bit(small, tmp_path):
    """SIGINT after the 3rd step: fit saves a step-level checkpoint and returns; resuming finishes exactly."""
    (x, y), _ = small
    full = _dropout_model()
    full.fit(x, y, epochs=2, batch_size=BATCH, seed=2, progress=False)

    model = _dropout_model()
    opt = pc.optim.Adam(model.parameters(), lr=1e-3)
    step = opt.step

    def step_then_interrupt():
        step()
        if opt.steps == 11:  # epoch 2, step 3
            signal.raise_signal(signal.SIGINT)

    opt.step = step_then_interrupt
    ck = tmp_path / "ck.safetensors"
    h = model.fit(x, y, epochs=2, batch_size=BATCH, seed=2, optimizer=opt, progress=False, checkpoint_path=ck)
    assert h.interrupted and len(h.history["loss"]) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    saved = pc.load(ck)
    assert (saved.checkpoint["train_state"]["epoch"], saved.checkpoint["train_state"]["step"]) == (1, 3)
    h2 = saved.fit(x, y, epochs=2, batch_size=BATCH, seed=2, progress=False, resume=saved)
    assert not h2.interrupted and len(h2.history["loss"]) == 2
    assert_same_state(saved.state_dict(), full.state_dict())


def test_resume_refuses_other_batch_size_or_seed_and_weights_only_files(small, tmp_path):
    (x, y), _ = small
    m = tiny_model()
    m.fit(x[:64], y[:64], epochs=1, batch_size=BATCH, seed=0, progress=False, checkpoint_path=tmp_path / "a.st")
    saved = pc.load(tmp_path / "a.st")
    with pytest.raises(ValueError, match="batch_size"):
        saved.fit(x[:64], y[:64], epochs=2, batch_size=16, progress=False, resume=saved)
    m.save(tmp_path / "w.st")
    weights_only = pc.load(tmp_path / "w.st")
    with pytest.raises(ValueError, match="no training state"):
        weights_only.fit(x[:64], y[:64], epochs=2, progress=False, resume=weights_only)


# -- divergence ----------------------------------------------------------------------------------------
def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(small, tmp_path):
    (x, y), _ = small
    ck = tmp_path / "ck.safetensors"
    model = tiny_model()
    good = {}

    def poison(epoch, logs):
        if epoch == 0:
            good["bytes"] = ck.read_bytes()
            w = model.layers[0].weight.data
            w[0, 0, 0, 0] = np.nan  # as if an update had blown up
    with pytest.raises(TrainingDiverged, match="diverged") as err:
        model.fit(x, y, epochs=3, batch_size=BATCH, progress=False, checkpoint_path=ck, on_epoch_end=poison)
    assert str(ck) in str(err.value)
    assert ck.read_bytes() == good["bytes"]  # the previous epoch's file is untouched
    assert pc.load(ck).checkpoint["train_state"]["epoch"] == 1


def test_huge_learning_rate_diverges_without_writing_a_checkpoint(small, tmp_path):
    (x, y), _ = small
    model = tiny_model()
    ck = tmp_path / "ck.safetensors"
    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged, match="lower the learning rate"):
        model.fit(x, y, epochs=2, batch_size=BATCH, optimizer=pc.optim.SGD(model.parameters(), lr=1e30),
                  progress=False, checkpoint_path=ck)
    assert not ck.exists()


# -- progress bar and host syncs ---------------------------------------------------------------------------
def test_progress_bar_on_a_terminal_and_one_line_per_epoch_elsewhere(small, capsys, monkeypatch):
    (x, y), _ = small
    tiny_model().fit(x[:64], y[:64], epochs=2, batch_size=BATCH, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()  # not a terminal (a notebook, a log): no bar, no silence
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: loss ") and lines[1].startswith("epoch 2/2: ")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    tiny_model().fit(x[:64], y[:64], epochs=2, batch_size=BATCH, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err and "acc" in err
    tiny_model().fit(x[:64], y[:64], epochs=1, batch_size=BATCH, progress=False)
    assert capsys.readouterr().err == ""
    # Keras' verbose: 0 nothing, 2 a line per epoch even on a terminal, 1 the bar (also in a Jupyter kernel)
    tiny_model().fit(x[:64], y[:64], epochs=1, batch_size=BATCH, verbose=0)
    assert capsys.readouterr().err == ""
    tiny_model().fit(x[:64], y[:64], epochs=2, batch_size=BATCH, verbose=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2: loss ")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)

    class ZMQInteractiveShell:  # what get_ipython() returns inside a notebook kernel
        pass

    fake = type(sys)("IPython")
    fake.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    tiny_model().fit(x[:64], y[:64], epochs=1, batch_size=BATCH, verbose=1)
    assert "loss=" in capsys.readouterr().err  # the tqdm bar's postfix, not a plain line
    with pytest.raises(ValueError, match="fit verbose must be an int >= 0 and <= 2 or None; got 3"):
        tiny_model().fit(x[:64], y[:64], epochs=1, verbose=3)


def test_a_model_is_a_sequence_of_its_layers():
    model = tiny_model()
    assert len(model) == 7 and model[0] is model.layers[0] and model[-1] is model.layers[-1]
    assert list(model) == model.layers and model[1:3] == model.layers[1:3]


def test_one_host_sync_per_logged_step_and_one_forward_per_batch(small, monkeypatch):
    (x, y), _ = small
    model = tiny_model(backend="torch" if "torch" in pc.available_backends() else "numpy")
    calls = {"to_host": 0, "forward": 0}
    real_to_host, real_forward = training.to_host, model.forward

    def counting_to_host(a, *args, **kwargs):
        calls["to_host"] += 1
        return real_to_host(a, *args, **kwargs)

    def counting_forward(*args, **kw):
        calls["forward"] += 1
        return real_forward(*args, **kw)

    monkeypatch.setattr(training, "to_host", counting_to_host)
    monkeypatch.setattr(pc.training.evaluation, "to_host", counting_to_host)  # check_labels
    monkeypatch.setattr(model, "forward", counting_forward)
    model.fit(x, y, epochs=1, batch_size=BATCH, log_every=3, progress=False)  # 8 steps: logs at 3, 6, 8
    assert calls["forward"] == N // BATCH
    assert calls["to_host"] == 1 + 3  # the labels once (checked on the host), then one per logged step


# -- argument checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs"), ({"epochs": -1}, "epochs"), ({"epochs": 1.5}, "epochs"), ({"epochs": True}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -8}, "batch_size"), ({"log_every": 0}, "log_every"),
])  # fmt: skip
def test_fit_rejects_bad_arguments(small, kwargs, match):
    (x, y), _ = small
    with pytest.raises(ValueError, match=match):
        tiny_model().fit(x[:8], y[:8], progress=False, **{"epochs": 1, **kwargs})


@pytest.mark.parametrize("lr", [True, -1e-3, float("nan"), float("inf")])  # lr 0 is allowed, as in torch
def test_optimizers_reject_bad_learning_rates(lr):
    m = tiny_model()
    for opt in (pc.optim.Adam, pc.optim.SGD):
        with pytest.raises(ValueError, match="lr"):
            opt(m.parameters(), lr=lr)


def test_bad_images_and_labels_are_clear_value_errors(small):
    (x, y), _ = small
    m = tiny_model()
    bad_x = x[:8].copy()
    bad_x[0, 0, 0, 0] = np.nan
    bad_x[1, 0, 3, 3] = np.inf
    cases = [
        (lambda: m.fit(bad_x, y[:8], epochs=1, progress=False), "2 NaN or infinite"),
        (lambda: m.evaluate(bad_x, y[:8]), "NaN or infinite"),
        (lambda: m.predict(bad_x), "NaN or infinite"),
        (lambda: m.fit(x[:8], y[:7], epochs=1, progress=False), r"shape \(8,\)"),
        (lambda: m.fit(x[:8], np.full(8, 10), epochs=1, progress=False), "0..9"),
        (lambda: m.evaluate(x[:8], -np.ones(8, dtype=np.int64)), "0..9"),
        (lambda: m.fit(x[:8], y[:8].astype(np.float32), epochs=1, progress=False), "integer"),
        (lambda: m.predict(x[:8, 0]), "preprocess"),  # (N, H, W): missing channel axis
        (lambda: m.predict(np.repeat(x[:8], 3, axis=1)), r"\(N, 1, H, W\)"),  # 3 channels
        (lambda: m.predict((x[:8] * 300).astype(np.int32)), "0..255"),  # raw pixels beyond 8 bits
        (lambda: m.predict((x[:8, :, :20] * 255).astype(np.uint8)), "20x28 images"),  # raw, another size
        (lambda: m.predict(x[:0]), "empty"),
        (lambda: m.predict(np.zeros((2, 1, 32, 32), np.float32)), "Dense"),  # wrong image size
        (lambda: m.evaluate(x[:8], y[:8], batch_size=0), "batch_size"),
        (lambda: m.fit(x[:8], y[:8], epochs=1, progress=False, validation_data=(bad_x, y[:8])), "validation"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_float64_training_runs():
    x, y = float_subset("train", 64)
    m = tiny_model(dtype="float64")
    h = m.fit(x, y, epochs=1, batch_size=BATCH, progress=False)
    assert math.isfinite(h.history["loss"][0]) and m.predict_proba(x).dtype == np.float64


# -- callbacks and the training state ------------------------------------------------------------------
def test_callbacks_see_every_epoch_and_can_stop_the_run(small, tmp_path):
    (x, y), _ = small

    class StopAfterTwo(pc.training.Callback):
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, logs):
            self.seen.append((epoch, sorted(logs)))
            self.stop_training = epoch == 1

    stopper, calls = StopAfterTwo(), []
    ckpt = tmp_path / "m.safetensors"
    history = tiny_model().fit(x[:64], y[:64], epochs=5, batch_size=BATCH, progress=False, callbacks=[stopper],
                               on_epoch_end=lambda e, logs: calls.append(e), checkpoint_path=ckpt,
                               checkpoint_every=10, validation_data=(x[:32], y[:32]))
    assert stopper.seen == [(0, ["accuracy", "loss", "val_accuracy", "val_loss"])] * 1 + [(1, ["accuracy", "loss",
                                                                                             "val_accuracy", "val_loss"])]
    assert calls == [0, 1] and len(history.history["loss"]) == 2
    assert pc.load(ckpt).checkpoint["train_state"]["epoch"] == 2  # the stopped run's checkpoint holds its last epoch
    with pytest.raises(ValueError, match="callbacks must be portacnn.training.Callback"):
        tiny_model().fit(x[:64], y[:64], epochs=1, progress=False, callbacks=[print])


def test_the_checkpoint_holds_exactly_the_train_state_fields(small, tmp_path):
    from portacnn.train_state import TrainState

    (x, y), _ = small
    ckpt = tmp_path / "m.safetensors"
    tiny_model().fit(x[:64], y[:64], epochs=1, batch_size=BATCH, progress=False, checkpoint_path=ckpt)
    saved = pc.load(ckpt).checkpoint["train_state"]
    assert set(saved) == set(TrainState.REQUIRED | TrainState.OPTIONAL)
    assert TrainState.from_json(saved).to_json() == saved


def test_validation_split_holds_out_the_same_seeded_images(small):
    (x, y), _ = small
    history = tiny_model().fit(x[:100], y[:100], epochs=1, batch_size=BATCH, progress=False, validation_split=0.2)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    seen = []
    model = tiny_model()
    real, real_infer = model.forward, model.infer
    model.forward = lambda xb, training=False: seen.append((int(xb.shape[0]), training)) or real(xb, training)
    model.infer = lambda xb: seen.append((int(xb.shape[0]), False)) or real_infer(xb)  # validation: inference
    model.fit(x[:100], y[:100], epochs=1, batch_size=BATCH, progress=False, validation_split=0.2)
    assert sum(n for n, training in seen if training) == 80 and sum(n for n, t in seen if not t) == 20
    for bad in (0.0 - 1, 1.0, 1.5, True, "a"):
        with pytest.raises(ValueError, match="validation_split"):
            tiny_model().fit(x[:100], y[:100], epochs=1, progress=False, validation_split=bad)
    with pytest.raises(ValueError, match="not both"):
        tiny_model().fit(x[:100], y[:100], epochs=1, progress=False, validation_split=0.1,
                         validation_data=(x[:10], y[:10]))


def test_early_stopping_restores_the_best_weights_and_model_checkpoint_keeps_the_best(small, tmp_path):
    (x, y), (xt, yt) = small
    model = tiny_model()
    stopper = pc.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    best = pc.callbacks.ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss")
    # an absurd learning rate after the first epochs makes the validation loss worse: training stops early
    history = model.fit(x, y, epochs=30, batch_size=BATCH, progress=False, validation_data=(xt, yt),
                        optimizer=pc.optim.SGD(model.parameters(), lr=0.5, momentum=0.9), callbacks=[stopper, best])
    val = history.history["val_loss"]
    assert stopper.stopped_epoch is not None and len(val) == stopper.stopped_epoch + 1 < 30
    assert stopper.best_epoch == best.best_epoch == int(np.nanargmin(val))
    restored = model.evaluate(xt, yt)["loss"]
    assert restored == pytest.approx(min(val), rel=1e-6)
    assert pc.load(tmp_path / "best.safetensors").evaluate(xt, yt)["loss"] == pytest.approx(min(val), rel=1e-6)
    with pytest.raises(ValueError, match="monitors 'val_loss', which fit does not report"):
        tiny_model().fit(x[:64], y[:64], epochs=1, progress=False, callbacks=[pc.callbacks.EarlyStopping()])


def test_models_pickle_and_deep_copy_without_their_caches(small):
    import copy
    import pickle

    (x, y), _ = small
    model = tiny_model()
    model.fit(x[:64], y[:64], epochs=1, batch_size=BATCH, progress=False)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not [k for layer in twin.layers for k in vars(layer) if k.startswith("_")]  # no activations copied
        np.testing.assert_array_equal(twin.predict_proba(x[:8]), model.predict_proba(x[:8]))
        assert twin.backend == model.backend and twin.rng is not model.rng
        twin.layers[0].weight.data[...] = 0
        assert np.any(model.layers[0].weight.data != 0)  # the copy is independent


@pytest.mark.parametrize("make_optimizer", [
    lambda p: pc.optim.AdamW(p, lr=3e-3, weight_decay=0.05),
    lambda p: pc.optim.RMSprop(p, lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-4),
], ids=["adamw", "rmsprop"])  # fmt: skip
def test_resume_with_adamw_and_rmsprop_is_bit_for_bit(small, tmp_path, make_optimizer):
    (x, y), _ = small
    full = tiny_model()
    full.fit(x[:96], y[:96], epochs=2, batch_size=BATCH, progress=False, optimizer=make_optimizer(full.parameters()))
    first = tiny_model()
    ckpt = tmp_path / "m.safetensors"
    first.fit(x[:96], y[:96], epochs=1, batch_size=BATCH, progress=False, optimizer=make_optimizer(first.parameters()),
              checkpoint_path=ckpt)
    resumed = pc.load(ckpt)
    resumed.fit(x[:96], y[:96], epochs=2, batch_size=BATCH, progress=False, resume=resumed)
    assert type(resumed.optimizer) is type(full.optimizer)
    for key, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def test_optimizers_with_parameter_groups_are_checkpointed_and_resume_bit_for_bit(small, tmp_path):
    """split_decay's two groups (weights first, then biases: not the model's order) survive save and load."""
    (x, y), _ = small

    def make(model):
        return pc.optim.AdamW(pc.optim.split_decay(model), lr=2e-3, weight_decay=0.05)

    full = tiny_model()
    full.fit(x[:96], y[:96], epochs=2, batch_size=BATCH, progress=False, optimizer=make(full))
    first = tiny_model()
    ckpt = tmp_path / "m.safetensors"
    first.fit(x[:96], y[:96], epochs=1, batch_size=BATCH, progress=False, optimizer=make(first), checkpoint_path=ckpt)
    resumed = pc.load(ckpt)
    groups = resumed.checkpoint["optimizer"]["param_groups"]
    assert [g["params"] for g in groups] == [[0, 2, 4], [1, 3, 5]] and [g["weight_decay"] for g in groups] == [0.05, 0.0]
    resumed.fit(x[:96], y[:96], epochs=2, batch_size=BATCH, progress=False, resume=resumed)
    assert [len(g["params"]) for g in resumed.optimizer.param_groups] == [3, 3]
    for key, value in full.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)
