"""Checkpoints: round trips on every backend, stored metadata, atomic writes, stale temporary files,
and every kind of unusable file (truncated, corrupted, other architecture, int tensors, pickles)."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest
from clihelp import assert_same_state, float_subset, tiny_model

import portacnn as pc
from portacnn import _atomic, checkpoint
from portacnn.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A seed_cnn after a few Adam steps, saved with optimizer and trainer state."""
    x, y = float_subset("train", 128)
    path = tmp_path_factory.mktemp("ck") / "model.safetensors"
    model = tiny_model()
    model.fit(x, y, epochs=1, batch_size=32, progress=False, checkpoint_path=path, checkpoint_extra={"note": "hi"})
    return model, path


def test_round_trip_through_every_backend(trained, tmp_path, backend):
    """numpy file -> load on B -> save from B -> load on numpy: the same state dict, bit for bit."""
    model, path = trained
    be = backend
    on_b = pc.load(path, backend=be)
    assert on_b.backend == be
    assert_same_state(on_b.state_dict(), model.state_dict())
    on_b.save(tmp_path / "back.safetensors")
    back = pc.load(tmp_path / "back.safetensors", backend="numpy")
    assert_same_state(back.state_dict(), model.state_dict())
    x, _ = float_subset("test", 50)
    np.testing.assert_array_equal(on_b.predict(x), model.predict(x))


def test_metadata_architecture_optimizer_and_training_state(trained):
    model, path = trained
    loaded = pc.load(path)
    assert loaded.architecture() == model.architecture()
    assert loaded.dtype == "float32" and loaded.seed == 0
    info = loaded.checkpoint
    assert info["optimizer"]["type"] == "adam" and info["optimizer"]["lr"] == 1e-3 and info["optimizer"]["steps"] == [4] * 6
    assert set(info["optimizer_state"]) == {f"{i}.{k}" for i in range(6) for k in ("m", "v")}
    state = info["train_state"]
    assert (state["epoch"], state["step"], state["batch_size"], state["seed"]) == (1, 0, 32, 0)
    assert state["history"]["loss"] and info["extra"] == {"note": "hi"}
    assert info["portacnn_version"] == pc.__version__
    opt = checkpoint.optimizer_from_checkpoint(loaded)
    assert isinstance(opt, pc.optim.Adam) and opt.steps == 4
    for i, s in opt.state.items():
        np.testing.assert_array_equal(np.asarray(s["m"]), np.asarray(model.optimizer.state[i]["m"]))


def test_float64_model_round_trip(tmp_path):
    m = tiny_model(dtype="float64")
    m.save(tmp_path / "m.safetensors")
    back = pc.load(tmp_path / "m.safetensors")
    assert back.dtype == "float64"
    assert_same_state(back.state_dict(), m.state_dict())
    assert pc.load(tmp_path / "m.safetensors", dtype="float32").dtype == "float32"


# -- atomic writes --------------------------------------------------------------------------------------
def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_save_leaves_no_temporary_file_and_normal_permissions(tmp_path):
    tiny_model().save(tmp_path / "m.safetensors")
    assert _temps(tmp_path) == []
    mode = (tmp_path / "m.safetensors").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's private 0o600


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    tiny_model(seed=1).save(path)
    before = path.read_bytes()

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        tiny_model(seed=2).save(path)
    assert path.read_bytes() == before and _temps(tmp_path) == []


def test_stale_temporary_files_are_ignored_and_cleaned(tmp_path):
    path = tmp_path / "m.safetensors"
    tiny_model().save(path)
    dead = tmp_path / ".m.safetensors.999999999.abc123.tmp"  # a writer killed mid-write (no such pid)
    alive = tmp_path / f".m.safetensors.{os.getppid()}.xyz.tmp"  # a writer that is still running
    other = tmp_path / ".other.safetensors.999999999.abc.tmp"
    for p in (dead, alive, other):
        p.write_bytes(b"half a checkpoint")
    assert pc.load(path).num_parameters() == 18002  # the loader never looks at them
    tiny_model().save(path)
    assert not dead.exists() and alive.exists() and other.exists()


# -- unusable files ------------------------------------------------------------------------------------
def _error(path, *fragments):
    with pytest.raises(CheckpointError) as err:
        pc.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    for f in fragments:
        assert f.lower() in msg.lower(), msg
    assert isinstance(err.value, ValueError)
    return msg


def test_missing_empty_and_truncated_files(trained, tmp_path):
    _, path = trained
    data = path.read_bytes()
    _error(tmp_path / "nope.safetensors", "no such")
    (tmp_path / "empty").write_bytes(b"")
    _error(tmp_path / "empty", "empty")
    for cut in (3, 8, 20, len(data) // 2, len(data) - 1):
        (tmp_path / f"cut{cut}").write_bytes(data[:cut])
        _error(tmp_path / f"cut{cut}", "truncated" if cut < 8 else "")


def test_flipped_bytes_in_header_and_in_data_are_detected(trained, tmp_path):
    _, path = trained
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    rng = np.random.default_rng(0)
    positions = list(rng.integers(8, 8 + header_len, 6)) + list(rng.integers(8 + header_len, len(data), 6))
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        p = tmp_path / f"flip{pos}.safetensors"
        p.write_bytes(bytes(bad))
        _error(p)
    bad = bytearray(data)
    bad[-5] ^= 1  # one bit in the last weight: only the checksum can tell
    (tmp_path / "bit.safetensors").write_bytes(bytes(bad))
    _error(tmp_path / "bit.safetensors", "checksum")


def _raw_safetensors(path, tensors, arch, **meta):
    from safetensors.numpy import save_file

    meta = {"format": checkpoint.FORMAT, "architecture": json.dumps(arch), "dtype": "float32", **meta}
    save_file(tensors, str(path), metadata=meta)
    return path


def test_tensors_of_another_architecture(tmp_path):
    lenet = pc.models.lenet5()
    seed_arch = tiny_model().architecture()
    p = _raw_safetensors(tmp_path / "lenet_as_seed.safetensors", lenet.state_dict(), seed_arch)
    _error(p, "do not match")
    # right keys, wrong shapes
    state = tiny_model().state_dict()
    state["4.weight"] = np.zeros((60, 300), np.float32)
    _error(_raw_safetensors(tmp_path / "shape.safetensors", state, seed_arch), "shape")
    # an architecture claiming enormous layers is refused before anything is allocated
    huge = [{"type": "Dense", "in_features": 10**6, "out_features": 10**6}]
    _error(_raw_safetensors(tmp_path / "huge.safetensors", {"0.weight": np.zeros((2, 2), np.float32)}, huge),
           "needs 1000001000000 parameters")


def test_int_tensors_nan_weights_and_foreign_safetensors(tmp_path):
    arch = tiny_model().architecture()
    state = tiny_model().state_dict()
    ints = {k: v.astype(np.int32) for k, v in state.items()}
    _error(_raw_safetensors(tmp_path / "int.safetensors", ints, arch), "int32")
    nan = dict(state)
    nan["0.bias"] = np.full_like(state["0.bias"], np.nan)
    _error(_raw_safetensors(tmp_path / "nan.safetensors", nan, arch), "nan")
    from safetensors.numpy import save_file

    save_file(state, str(tmp_path / "plain.safetensors"))
    _error(tmp_path / "plain.safetensors", "not a portacnn checkpoint")
    _error(_raw_safetensors(tmp_path / "arch.safetensors", state, [{"type": "Bogus"}]), "architecture")
    _error(_raw_safetensors(tmp_path / "seed.safetensors", state, arch, seed='"zero"'), "seed")
    _error(_raw_safetensors(tmp_path / "ts.safetensors", state, arch, train_state='{"epoch": -1}'), "training state")


class _Marker:
    """Unpickling this would create a file: the loader must never get that far."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickles_are_refused_without_being_run(tmp_path):
    marker = tmp_path / "PWNED"
    for proto in (0, 2, pickle.HIGHEST_PROTOCOL):
        p = tmp_path / f"evil{proto}.safetensors"
        p.write_bytes(pickle.dumps(_Marker(marker), protocol=proto))
        _error(p, "pickle is refused")
        (tmp_path / f"plain{proto}.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=proto))
        _error(tmp_path / f"plain{proto}.pkl", "pickle")
    assert not marker.exists()


def test_a_header_length_starting_with_any_byte_loads(tmp_path):
    """The 8-byte header length of a valid file may begin with 0x80 (a pickle's first byte) or '(' etc.:
    found by random SIGKILLs, whose checkpoints' headers vary in length with the saved metrics."""
    model = tiny_model()
    seen = set()
    for pad in range(256):
        path = checkpoint.save(model, tmp_path / f"m{pad}.safetensors", extra={"pad": "x" * pad})
        first = path.read_bytes()[:1]
        if first in (b"\x80", b"(", b"]", b"}", b"c"):
            seen.add(first)
            assert_same_state(pc.load(path).state_dict(), model.state_dict())
    assert b"\x80" in seen


def test_torch_save_files_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    _error(tmp_path / "model.pt", "pickle")
    torch.save(net.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    _error(tmp_path / "legacy.pt", "pickle")


def test_bad_backend_or_dtype_is_the_callers_error(trained):
    _, path = trained
    with pytest.raises(ValueError, match="unknown backend") as err:
        pc.load(path, backend="tensorflow")
    assert not isinstance(err.value, CheckpointError)
    with pytest.raises(ValueError, match="dtype"):
        pc.load(path, dtype="int8")


# -- optimizers with parameter groups ---------------------------------------------------------------------------
def test_parameter_groups_and_scheduler_keys_round_trip(tmp_path):
    """split_decay's groups (weights first: not the model's order), their hyper-parameters, names and the keys
    OneCycleLR writes, step counts and buffers come back as they were, on the loaded model's parameters."""
    from portacnn.optim import lr_scheduler

    x, y = float_subset("train", 64)
    model = tiny_model()
    groups = pc.optim.split_decay(model, weight_decay=0.1)
    groups[1]["name"] = "biases"
    opt = pc.optim.AdamW(groups, lr=1e-3)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=[0.01, 0.02], total_steps=10)
    model.fit(x, y, epochs=1, batch_size=16, progress=False, optimizer=opt,
              callbacks=[pc.callbacks.LearningRateScheduler(sched, per="step")])
    path = model.save(tmp_path / "m.safetensors", optimizer=opt)
    loaded = pc.load(path)
    saved = loaded.checkpoint["optimizer"]
    assert [g["params"] for g in saved["param_groups"]] == [[0, 2, 4], [1, 3, 5]]
    assert saved["lr"] == opt.lr and saved["steps"] == [4] * 6
    back = checkpoint.optimizer_from_checkpoint(loaded)
    index = {id(p): j for j, p in enumerate(loaded.parameters())}
    assert [[index[id(p)] for p in g["params"]] for g in back.param_groups] == [[0, 2, 4], [1, 3, 5]]
    for mine, theirs in zip(back.param_groups, opt.param_groups):
        assert {k: v for k, v in mine.items() if k != "params"} == {k: v for k, v in theirs.items() if k != "params"}
    assert back.param_groups[1]["name"] == "biases" and back.param_groups[0]["betas"][0] == opt.param_groups[0]["betas"][0]
    assert back.param_steps == opt.param_steps and back.steps == opt.steps
    for i, state in opt.state.items():
        for k, v in state.items():
            np.testing.assert_array_equal(np.asarray(back.state[i][k]), np.asarray(v))


def test_a_rate_scheduled_to_zero_saves_and_loads(tmp_path):
    model = tiny_model()
    opt = pc.optim.SGD(pc.optim.split_decay(model), lr=0.1, momentum=0.9)
    sched = pc.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    sched.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    back = checkpoint.optimizer_from_checkpoint(pc.load(model.save(tmp_path / "m.safetensors", optimizer=opt)))
    assert [g["lr"] for g in back.param_groups] == [0.0, 0.0] and back.param_groups[0]["initial_lr"] == 0.1


def test_an_optimizer_of_other_parameters_is_not_saved(tmp_path):
    model, other = tiny_model(), tiny_model()
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match="not this model's"):
        model.save(path, optimizer=pc.optim.Adam(other.parameters()))
    with pytest.raises(CheckpointError, match="hold 4 of the 6 parameters"):
        model.save(path, optimizer=pc.optim.Adam(model.parameters()[:4]))
    assert not path.exists()


def test_models_the_reader_must_infer_an_input_for_load_as_they_run(tmp_path):
    """Inputs a model without a stored shape takes, found through the layers' own rules: a non-square feature map
    (12 x 16), a Residual whose branches agree on even sides only, one whose sides that fit are not a range, and a
    pool before a Flatten (1 channel, not the Dense's features)."""
    from portacnn.layers import Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Residual

    cases = [
        ([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(4 * 12 * 16, 3)], (1, 33, 25)),
        ([Conv2D(1, 4, 3, padding=1), Residual([Conv2D(4, 4, 1, stride=2)], shortcut=[Conv2D(4, 4, 2, stride=2)]),
          Flatten(), Dense(4 * 14 * 14, 10)], (1, 28, 28)),
        ([MaxPool2D(2), Residual([Conv2D(1, 1, 5, stride=2), ReLU()], shortcut=[MaxPool2D(3, stride=3, padding=1)]),
          GlobalAvgPool2D(), Dense(1, 3)], (1, 28, 28)),
        ([MaxPool2D(2), Flatten(), Dense(196, 10)], (1, 29, 29)),
    ]
    for i, (layers, want) in enumerate(cases):
        model = pc.Sequential(layers, seed=0)
        assert checkpoint.check_architecture(model.architecture())["input_shape"] == want
        path = model.save(tmp_path / f"m{i}.safetensors")
        x = np.random.default_rng(i).random((2, *want), dtype=np.float32)
        np.testing.assert_array_equal(pc.load(path).predict_proba(x), model.predict_proba(x))


def test_fit_records_the_shape_of_the_images_it_trained_on(tmp_path):
    from portacnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

    x = np.random.default_rng(0).random((16, 1, 24, 32), dtype=np.float32)
    model = pc.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(4 * 12 * 16, 3)])
    model.fit(x, np.arange(16) % 3, epochs=1, batch_size=8, progress=False,
              callbacks=[pc.callbacks.ModelCheckpoint(tmp_path / "best.safetensors", monitor="loss")])
    assert model.input_shape == (1, 24, 32)
    assert pc.load(tmp_path / "best.safetensors").checkpoint["input_shape"] == (1, 24, 32)
