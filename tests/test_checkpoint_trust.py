"""Checkpoints that trust nothing: hostile files with a VALID SHA-256 (recomputed with the module's own digest,
so only the architecture or a field is hostile) must each be one line of CheckpointError naming the file and
the problem, fast and before anything large is allocated; unsigned files need an explicit opt-out; every
checkpoint ``save`` writes loads (the zoo, both dtypes, with optimizer and training state)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clihelp import assert_same_state, float_subset

import portacnn as pc
from portacnn import checkpoint
from portacnn.checkpoint import CheckpointError
from portacnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

FAST_S = 1.0  # every refusal: well under a second (they take milliseconds)
CLI_EXTRA = {"model": "seed", "epochs": 3, "protocol": "full", "limit": 64, "data": None}


# -- crafting files -------------------------------------------------------------------------------------------
def _read(path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
    return load_file(str(path)), meta


def _write(path, tensors, meta, sign=True):
    """A safetensors file with ``meta``; its sha256 recomputed with checkpoint._digest (valid) unless ``sign`` is
    False (then none is stored)."""
    from safetensors.numpy import save_file

    meta = {k: v for k, v in meta.items() if k != "sha256"}
    if sign:
        meta["sha256"] = checkpoint._digest(tensors, meta)
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def _shapes(arch):
    shapes = {}
    for i, spec in enumerate(arch):
        if spec["type"] == "Conv2D":
            k = spec["kernel_size"]
            # (1, 1) for a kernel_size that is not one: the file must be refused for it, not for its weights
            kh, kw = (k, k) if isinstance(k, int) else tuple(k) if isinstance(k, list) and len(k) == 2 else (1, 1)
            shapes[f"{i}.weight"] = (spec["out_channels"], spec["in_channels"], kh, kw)
            shapes[f"{i}.bias"] = (spec["out_channels"],)
        elif spec["type"] == "Dense":
            shapes[f"{i}.weight"] = (spec["out_features"], spec["in_features"])
            shapes[f"{i}.bias"] = (spec["out_features"],)
    return shapes


def _craft(path, arch, input_shape=None, **meta):
    """A signed checkpoint of ``arch`` with small finite weights of exactly the shapes it implies."""
    rng = np.random.default_rng(0)
    tensors = {k: rng.uniform(-0.1, 0.1, s).astype(np.float32) for k, s in _shapes(arch).items()}
    base = {"format": checkpoint.FORMAT, "format_version": "1", "architecture": json.dumps(arch),
            "dtype": "float32", "seed": "0"}
    if input_shape is not None:
        base["input_shape"] = json.dumps(input_shape)
    return _write(path, tensors, {**base, **meta})


def _refused(path, *fragments, **load_kwargs):
    """pc.load(path) is one line of CheckpointError naming the file and every fragment, within FAST_S."""
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        pc.load(path, **load_kwargs)
    elapsed = time.perf_counter() - start
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    for f in fragments:
        assert f.lower() in msg.lower(), msg
    assert elapsed < FAST_S, (elapsed, msg)
    return msg


def conv(i, o, k, **kw):
    return {"type": "Conv2D", "in_channels": i, "out_channels": o, "kernel_size": k, **kw}


def pool(k, **kw):
    return {"type": "MaxPool2D", "kernel_size": k, **kw}


def dense(i, o):
    return {"type": "Dense", "in_features": i, "out_features": o}


RELU, FLAT = {"type": "ReLU"}, {"type": "Flatten"}
# the two crafted cases of the report: a valid file whose first forward would ask for 149 GiB (the padded copy
# of one 28x28 image: 200028^2 floats), and a 3000-pixel pooling window (9e6 window offsets: 80 s per image)
PAD_100000 = [conv(1, 2, 3, padding=100000), RELU, FLAT, dense(10, 10)]
POOL_3000 = [conv(1, 2, 5), RELU, pool(3000, padding=1500), FLAT, dense(2, 10)]


# -- hostile architectures (valid SHA-256) -------------------------------------------------------------------------
ARCH_CASES = {
    "conv padding 100000": (PAD_100000, None, "padding 100000x100000 exceeds MAX_INPUT_SIDE"),
    "pool window 3000": (POOL_3000, None, "kernel_size 3000x3000 exceeds MAX_INPUT_SIDE"),
    "pool padding over half the window": ([pool(4, padding=3), FLAT], None, "at most half"),
    "stride beyond the largest image": ([conv(1, 2, 3, stride=5000), FLAT], None, "stride 5000x5000 exceeds"),
    "window of 40000 cells": ([conv(1, 1, 200, padding=100), FLAT], [1, 256, 256], "MAX_WINDOW"),
    "window wider than its input": ([conv(1, 2, 5), pool(100, stride=100, padding=10), FLAT, dense(2, 10)], [1, 28, 28],
                                    "does not fit the 24x24 input"),
    "window that fits no input": ([pool([1000, 1]), pool([1000, 1]), FLAT], None, "fits no input"),
    "activation memory": ([conv(1, 512, 1), FLAT], [1, 1024, 1024], "MAX_ACTIVATION_BYTES"),
    "operations": ([conv(64, 64, 1), pool(128, stride=1, padding=64), FLAT], [64, 512, 512], "MAX_OPERATIONS"),
    "no input fits the first Dense": ([conv(1, 2, 5), pool(2), FLAT, dense(2 * 1031, 10)], None, "no input image up to"),
    "stored input does not fit the Dense": ([conv(1, 2, 5), pool(2), FLAT, dense(288, 10)], [1, 30, 30],
                                            "expects 288 features but gets 338"),
    "channels do not chain": ([conv(1, 2, 3), conv(3, 4, 3), FLAT], None, "expects 3 input channels but gets 2"),
    "Dense on images": ([conv(1, 2, 3), dense(1352, 10)], None, "a Flatten must come before it"),
    "conv after Flatten": ([FLAT, dense(784, 16), conv(1, 2, 3)], None, "flat input"),
    "too many layers": ([RELU] * (checkpoint.MAX_LAYERS + 1), None, "MAX_LAYERS"),
    "unknown field": ([conv(1, 2, 3, groups=2), FLAT], None, "unknown fields ['groups']"),
    "same with a stride": ([conv(1, 2, 3, padding="same", stride=2), FLAT], None, "'same' needs stride 1"),
    "unknown padding word": ([conv(1, 2, 3, padding="full"), FLAT], None, "padding must be one of 'same', 'valid'"),
    "dilated kernel too large": ([conv(1, 2, 3, dilation=600), FLAT], None, "dilated kernel 1201x1201 exceeds"),
    "bias not a bool": ([conv(1, 2, 3, bias="no"), FLAT], None, "bias must be true or false"),
    "kernel of 3 sides": ([conv(1, 2, [3, 3, 3]), FLAT], None, "kernel_size must be"),
    "float kernel": ([conv(1, 2, 3.0), FLAT], None, "kernel_size must be"),
    "dropout p of 1": ([FLAT, {"type": "Dropout", "p": 1.0}], None, "p must be a finite number >= 0 and < 1"),
    "unknown layer": ([{"type": "Lambda", "code": "os.system('x')"}], None, "not a known layer"),
    "empty architecture": ([], None, "non-empty list"),
    "input_shape of 2 values": ([conv(1, 2, 3), FLAT], [1, 28], "input_shape"),
    "input_shape beyond the largest side": ([conv(1, 2, 3), FLAT], [1, 2000, 28], "MAX_INPUT_SIDE"),
    "input_shape with a zero": ([conv(1, 2, 3), FLAT], [1, 0, 28], "input_shape"),
    "input_shape of other channels": ([conv(1, 2, 3), FLAT], [3, 28, 28], "expects 1 input channels but gets 3"),
}


@pytest.mark.parametrize("arch, input_shape, fragment", list(ARCH_CASES.values()), ids=list(ARCH_CASES))
def test_hostile_architectures_are_refused_fast(tmp_path, arch, input_shape, fragment):
    path = _craft(tmp_path / "hostile.safetensors", arch, input_shape)
    _refused(path, "architecture" if "input_shape" not in fragment else "", fragment)
    _refused(path, fragment, allow_unsigned=True)  # the opt-out is about the checksum only


CHILD = r"""
import resource, sys, time
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import numpy as np
import portacnn as pc
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    model = pc.load(sys.argv[1])
except pc.CheckpointError as e:
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"REFUSED {time.perf_counter() - start:.3f} {grown} {e}")
    sys.exit(0)
model.forward(np.zeros((1, 1, 28, 28), np.float32))  # what a regression would run: killed by the limit or the timeout
print("LOADED")
sys.exit(1)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and ru_maxrss in KiB: Linux")
@pytest.mark.parametrize("arch", [PAD_100000, POOL_3000], ids=["padding-100000", "pool-window-3000"])
def test_crafted_cases_are_refused_under_a_1gb_address_space(tmp_path, arch):
    """In a child capped at 1 GB of address space and 60 s: a regression fails here instead of eating the machine."""
    path = _craft(tmp_path / "hostile.safetensors", arch)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(1 << 30)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("REFUSED"), proc.stdout + proc.stderr
    _, seconds, grown_kib, msg = proc.stdout.split(" ", 3)
    assert float(seconds) < FAST_S and int(grown_kib) < 8 * 1024, proc.stdout  # under a second, a few MB
    assert str(path) in msg and "architecture" in msg


# -- the SHA-256 is mandatory ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A seed_cnn after one epoch of Adam on 64 images, saved by fit with optimizer, training state and CLI-like extra."""
    x, y = float_subset("train", 64)
    path = tmp_path_factory.mktemp("trust") / "model.safetensors"
    model = pc.models.seed_cnn(seed=0)
    model.fit(x, y, epochs=1, batch_size=16, progress=False, checkpoint_path=path, checkpoint_extra=CLI_EXTRA)
    return model, path


def _flip_exponent_bit(tensors, key="4.weight", index=(3, 7)):
    """The top exponent bit of one float32 weight: 0.05 becomes ~1.7e37, still finite."""
    bad = {k: v.copy() for k, v in tensors.items()}
    bits = bad[key].view(np.uint32)
    bits[index] ^= np.uint32(1 << 30)
    assert np.isfinite(bad[key][index]) and abs(bad[key][index]) > 1e30
    return bad


def test_unsigned_files_are_refused_unless_allowed(trained, tmp_path):
    model, path = trained
    tensors, meta = _read(path)
    unsigned = _write(tmp_path / "unsigned.safetensors", tensors, meta, sign=False)
    msg = _refused(unsigned, "no SHA-256 checksum", "allow_unsigned=True")
    assert "portacnn.load(path, allow_unsigned=True)" in msg
    loaded = pc.load(unsigned, allow_unsigned=True)
    assert_same_state(loaded.state_dict(), model.state_dict())
    assert loaded.checkpoint["train_state"]["epoch"] == 1


def test_a_flipped_exponent_bit_with_and_without_the_checksum(trained, tmp_path):
    _, path = trained
    tensors, meta = _read(path)
    flipped = _flip_exponent_bit(tensors)
    # with the key: the stored checksum no longer matches, and no opt-out accepts that
    signed = _write(tmp_path / "signed.safetensors", tensors, meta)
    data = bytearray(signed.read_bytes())
    original, bad = tensors["4.weight"].tobytes(), flipped["4.weight"].tobytes()
    at = data.index(original)
    data[at : at + len(bad)] = bad
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    _refused(tmp_path / "flipped.safetensors", "checksum")
    _refused(tmp_path / "flipped.safetensors", "checksum", allow_unsigned=True)
    # without the key: refused by default (it used to load silently)...
    unsigned = _write(tmp_path / "flipped-unsigned.safetensors", flipped, meta, sign=False)
    _refused(unsigned, "no SHA-256 checksum")
    # ...and the documented opt-out loads it as it is: nothing can tell a flipped bit then
    loaded = pc.load(unsigned, allow_unsigned=True)
    assert abs(loaded.state_dict()["4.weight"][3, 7]) > 1e30


def test_a_malformed_checksum_is_a_mismatch(trained, tmp_path):
    _, path = trained
    tensors, meta = _read(path)
    for i, value in enumerate(["", "0" * 64, meta["sha256"].upper(), meta["sha256"] + "\n"]):
        from safetensors.numpy import save_file

        p = tmp_path / f"sum{i}.safetensors"
        save_file(tensors, str(p), metadata={**meta, "sha256": value})
        _refused(p, "checksum", allow_unsigned=True)


# -- schema of optimizer, train_state, extra and the other fields ----------------------------------------------------
def _edit_json(field, edit):
    def apply(tensors, meta):
        value = json.loads(meta[field])
        new = edit(value)
        meta[field] = json.dumps(value if new is None else new)
    return apply


def ts(**changes):
    return _edit_json("train_state", lambda s: s.update(changes))


def hist(**changes):
    return _edit_json("train_state", lambda s: s["history"].update(changes))


def opt(**changes):
    return _edit_json("optimizer", lambda o: o.update(changes))


def extra(**changes):
    return _edit_json("extra", lambda e: e.update(changes))


def _drop(field, key):
    return _edit_json(field, lambda d: [d.pop(key)] and None)


def _set(field, value):
    def apply(tensors, meta):
        meta[field] = value
    return apply


def _sgd(**changes):
    """An SGD description (and no buffers) in place of the Adam one, with ``changes``."""
    def apply(tensors, meta):
        steps = json.loads(meta["optimizer"])["steps"]
        meta["optimizer"] = json.dumps({"type": "sgd", "steps": steps, "lr": 0.05, "momentum": 0.9,
                                        "weight_decay": 0.0, "nesterov": False, **changes})
        for k in [k for k in tensors if k.startswith("optim.")]:
            del tensors[k]
    return apply


def _tensor(key, value):
    def apply(tensors, meta):
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    return apply


def _rng(state):
    return ts(rng=state)


def grp(index=0, **changes):
    """The optimizer's parameter group ``index`` (the fixture's Adam has one, of the 6 parameters) with ``changes``."""
    return _edit_json("optimizer", lambda o: o["param_groups"][index].update(changes))


def _popped(d, key):
    del d[key]


def groups(value):
    return opt(param_groups=value)


def _two_groups(first, second):
    """Two copies of the saved group holding the parameter indices ``first`` and ``second``."""
    def edit(o):
        g = o["param_groups"][0]
        o["param_groups"] = [{**g, "params": first}, {**g, "params": second}]
    return _edit_json("optimizer", edit)


def cbs(*entries):
    return ts(callbacks=list(entries))


def cb(kind, state):
    return {"type": kind, "state": state}


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = {"x": value}
    return value


EARLY = {"monitor": "val_loss", "mode": "min", "best": -0.5, "best_epoch": 0, "wait": 0, "stopped_epoch": None}
STEPLR = {"step_size": 1, "gamma": 0.5, "base_lrs": [0.1], "last_epoch": 1, "_step_count": 2, "_last_lr": [0.05]}
LRS = {"per": "epoch", "offset": 0, "scheduler": {"type": "StepLR", "state": STEPLR}}


def lrs(**changes):
    return cb("LearningRateScheduler", {**LRS, **changes})


def sched(**changes):
    return lrs(scheduler={"type": "StepLR", "state": {**STEPLR, **changes}})


SCHEMA_CASES = {
    # train_state: what fit(resume=...) reads
    "train_state batch_size 0": (ts(batch_size=0), "training state", "batch_size"),
    "train_state batch_size huge": (ts(batch_size=1 << 40), "training state", "batch_size"),
    "train_state seen 0 with step 3": (ts(step=3, seen=0), "training state", "'seen' (0)"),
    "train_state seen beyond step * batch": (ts(step=1, seen=17, loss_sum=1.0), "training state", "'seen' (17)"),
    "train_state epoch negative": (ts(epoch=-1), "training state", "epoch"),
    "train_state epoch beyond MAX_EPOCHS": (ts(epoch=checkpoint.MAX_EPOCHS + 1), "training state", "epoch"),
    "train_state epoch a float": (ts(epoch=1.0), "training state", "'epoch' must be an int >= 0"),
    "train_state epoch a bool": (ts(epoch=True), "training state", "'epoch' must be an int >= 0"),
    "train_state step a string": (ts(step="0"), "training state", "'step' must be a non-negative 64-bit int"),
    "train_state correct beyond seen": (ts(step=1, seen=16, correct=17, loss_sum=30.0), "training state", "correct"),
    "train_state counter beyond int64": (ts(step=1 << 63), "training state", "step"),
    "train_state loss_sum NaN": (ts(loss_sum=float("nan")), "training state", "loss_sum"),
    "train_state loss_sum a string": (ts(loss_sum="1"), "training state", "loss_sum"),
    "train_state loss before any image": (ts(loss_sum=2.5), "training state", "loss_sum"),
    "train_state seed negative": (ts(seed=-1), "training state", "seed"),
    "train_state unknown field": (ts(evil=1), "training state", "unknown fields ['evil']"),
    "train_state missing field": (_drop("train_state", "rng"), "training state", "missing fields ['rng']"),
    "train_state not an object": (_set("train_state", "[1, 2]"), "training state", "not an object"),
    "train_state not JSON": (_set("train_state", "{epoch: 1"), "train_state", "not valid JSON"),
    "history not a dict": (ts(history=[[0.5]]), "training state", "history"),
    "history of strings": (hist(loss=["0.5"]), "training state", "history['loss']"),
    "history of numbers, not lists": (hist(loss=0.5), "training state", "history['loss']"),
    "history NaN": (hist(loss=[float("nan")]), "training state", "history['loss']"),
    "history infinite": (hist(loss=[float("inf")]), "training state", "history['loss']"),
    "history longer than epoch": (hist(loss=[0.5, 0.4]), "training state", "history['loss'] has 2 values"),
    "history shorter than epoch": (hist(accuracy=[]), "training state", "history['accuracy'] has 0 values"),
    "history unknown key": (hist(evil=[1.0]), "training state", "'history' must hold"),
    "history without accuracy": (_edit_json("train_state", lambda s: [s["history"].pop("accuracy")] and None),
                                 "training state", "'history' must hold"),
    "history val_loss alone": (hist(val_loss=[0.5]), "training state", "'history' must hold"),
    "history accuracy above 1": (hist(accuracy=[1.5]), "training state", "history['accuracy']"),
    "epoch_times not a list": (ts(epoch_times=3.0), "training state", "epoch_times"),
    "epoch_times negative": (ts(epoch_times=[-1.0]), "training state", "epoch_times"),
    "rng not an object": (_rng("PCG64"), "training state", "rng"),
    "rng another generator": (_rng({"bit_generator": "MT19937", "state": {"key": [0] * 624, "pos": 0}}),
                              "training state", "rng"),
    "rng without state": (_rng({"bit_generator": "PCG64"}), "training state", "rng"),
    "rng with a string state": (_rng({"bit_generator": "PCG64", "state": "x", "has_uint32": 0, "uinteger": 0}),
                                "training state", "rng"),
    "rng with a 200-bit state": (_rng({"bit_generator": "PCG64", "state": {"state": 1 << 200, "inc": 1},
                                       "has_uint32": 0, "uinteger": 0}), "training state", "rng"),
    # optimizer: exactly its hyper-parameters, each of its type and range
    "optimizer unknown type": (opt(type="lamb"), "optimizer", "unknown optimizer type"),
    "optimizer without type": (_drop("optimizer", "type"), "optimizer", "unknown optimizer type"),
    "optimizer unknown key": (opt(amsgrad=True), "optimizer", "unknown fields ['amsgrad']"),
    "optimizer missing key": (_drop("optimizer", "eps"), "optimizer", "lacks fields ['eps']"),
    "optimizer not an object": (_set("optimizer", '"adam"'), "optimizer", "not an object"),
    "lr negative": (opt(lr=-1e-3), "optimizer", "lr must be a finite number >= 0"),
    "lr a string": (opt(lr="0.001"), "optimizer", "lr must be a finite number"),
    "lr NaN": (opt(lr=float("nan")), "optimizer", "lr must be a finite number"),
    "lr infinite": (opt(lr=float("inf")), "optimizer", "lr must be a finite number"),
    "betas of 1": (opt(betas=[1.0, 0.9]), "optimizer", "betas"),
    "betas of one value": (opt(betas=[0.9]), "optimizer", "betas must be a list (a finite number >= 0 and < 1"),
    "betas a string": (opt(betas="0.9,0.999"), "optimizer", "betas must be a list"),
    "eps negative": (opt(eps=-1.0), "optimizer", "eps"),
    "weight_decay null": (opt(weight_decay=None), "optimizer", "weight_decay"),
    "steps negative": (opt(steps=-1), "optimizer", "'steps'"),
    "steps of other length": (opt(steps=[1, 2]), "optimizer", "'steps' counts updates of 2 parameters"),
    "steps of floats": (opt(steps=[1.5] * 6), "optimizer", "'steps'"),
    "sgd nesterov without momentum": (_sgd(nesterov=True, momentum=0.0), "optimizer", "nesterov needs momentum"),
    "sgd nesterov a string": (_sgd(nesterov="yes"), "optimizer", "nesterov must be true or false"),
    "sgd momentum negative": (_sgd(momentum=-0.5), "optimizer", "momentum"),
    "sgd with adam keys": (_sgd(betas=[0.9, 0.99]), "optimizer", "unknown fields ['betas']"),
    "buffer of no parameter": (_tensor("optim.99.m", np.zeros(2, np.float32)), "optimizer", "'99.m' is not one of the adam buffers"),
    "buffer of another optimizer": (_tensor("optim.0.momentum", np.zeros((2, 1, 5, 5), np.float32)), "optimizer",
                                    "'0.momentum' is not one of the adam buffers"),
    "buffer index with a leading zero": (_tensor("optim.00.m", np.zeros((2, 1, 5, 5), np.float32)), "optimizer",
                                         "'00.m' is not one of the adam buffers"),
    "buffer of another shape": (_tensor("optim.0.m", np.zeros((2, 1, 3, 3), np.float32)), "optimizer", "shape"),
    "buffers without an optimizer": (lambda t, m: m.pop("optimizer"), "optimizer buffers", "no optimizer description"),
    # optimizer parameter groups: hyper-parameters as above, scheduler keys, a partition of the parameters
    "param_groups not a list": (groups({"0": [0]}), "optimizer", "'param_groups' must be a list"),
    "param_groups empty": (groups([]), "optimizer", "'param_groups' must be a list of 1 to"),
    "param_groups too many": (groups([{}] * (checkpoint.MAX_PARAM_GROUPS + 1)), "optimizer", "1 to 1024 groups"),
    "group not an object": (groups([[0, 1, 2, 3, 4, 5]]), "optimizer", "param_groups[0] is not an object"),
    "group params not a list": (grp(params=6), "optimizer", "param_groups[0] params must be a list"),
    "group index out of range": (grp(params=[0, 1, 2, 3, 4, 6]), "optimizer", "params must be an int >= 0 and <= 5; got 6"),
    "group index negative": (grp(params=[-1, 1, 2, 3, 4, 5]), "optimizer", "params must be an int >= 0 and <= 5; got -1"),
    "group index a float": (grp(params=[0.0, 1, 2, 3, 4, 5]), "optimizer", "params must be an int"),
    "group index a bool": (grp(params=[True, 1, 2, 3, 4, 5]), "optimizer", "params must be an int"),
    "group index a string": (grp(params=["0", 1, 2, 3, 4, 5]), "optimizer", "params must be an int"),
    "group index twice in a group": (grp(params=[0, 0, 2, 3, 4, 5]), "optimizer", "parameter 0 is in more than one"),
    "group index in two groups": (_two_groups([0, 1, 2], [2, 3, 4]), "optimizer", "parameter 2 is in more than one"),
    "groups missing a parameter": (_two_groups([0, 1, 2], [3, 4]), "optimizer", "hold 5 of the 6 parameters"),
    "group of a huge list": (grp(params=list(range(10**5))), "optimizer", "hold more than the 6 parameters"),
    "group unknown key": (grp(evil=1), "optimizer", "param_groups[0] has unknown fields ['evil']"),
    "group of another optimizer's key": (grp(momentum=0.9), "optimizer", "unknown fields ['momentum']"),
    "group without lr": (_edit_json("optimizer", lambda o: _popped(o["param_groups"][0], "lr")), "optimizer",
                         "lacks fields ['lr']"),
    "group lr negative": (grp(lr=-0.1), "optimizer", "param_groups[0] lr must be a finite number >= 0"),
    "group lr a string": (grp(lr="0.1"), "optimizer", "param_groups[0] lr must be a finite number"),
    "group betas of 1": (grp(betas=[1.0, 0.999]), "optimizer", "param_groups[0] betas"),
    "group eps infinite": (grp(eps=float("inf")), "optimizer", "param_groups[0] eps"),
    "group initial_lr NaN": (grp(initial_lr=float("nan")), "optimizer", "initial_lr must be a finite number"),
    "group max_lr negative": (grp(max_lr=-1.0), "optimizer", "max_lr must be a finite number >= 0"),
    "group base_momentum a list": (grp(base_momentum=[0.85]), "optimizer", "base_momentum must be a finite number"),
    "group name a number": (grp(name=5), "optimizer", "param_groups[0] name must be a printable string"),
    "group name with an escape": (grp(name="w\x1b[2J"), "optimizer", "name must be a printable string"),
    # train_state callbacks: a bounded list of bounded JSON states, portacnn's own checked field by field
    "callbacks not a list": (ts(callbacks={"EarlyStopping": {}}), "training state", "field 'callbacks' must be a list"),
    "callbacks too many": (ts(callbacks=[cb("A", {})] * (checkpoint.MAX_CALLBACKS + 1)), "training state",
                           "at most 64 callback states"),
    "callback not an object": (cbs(5), "training state", "callbacks[0] must be an object"),
    "callback with another key": (cbs({**cb("A", {}), "code": "import os"}), "training state", "callbacks[0] must be"),
    "callback type a path": (cbs(cb("../evil", {})), "training state", "type must be a class name"),
    "callback type a number": (cbs(cb(3, {})), "training state", "type must be a class name"),
    "callback type too long": (cbs(cb("A" * 65, {})), "training state", "type must be a class name"),
    "callback state a list": (cbs(cb("A", [1])), "training state", "callbacks[0] (A) state must be an object"),
    "callback state NaN": (cbs(cb("A", {"x": float("nan")})), "training state", "must be a finite number"),
    "callback state infinite": (cbs(cb("A", {"x": [1.0, float("-inf")]})), "training state", "finite number"),
    "callback state huge int": (cbs(cb("A", {"x": 1 << 70})), "training state", "must be a 64-bit int"),
    "callback state too deep": (cbs(cb("A", _nested(40))), "training state", "nested more than 16 levels"),
    "callback state too many values": (cbs(cb("A", {"x": [0] * 200_000})), "training state", "more than 100000 values"),
    "callback state long string": (cbs(cb("A", {"x": "y" * 5000})), "training state", "more than 4096 characters"),
    "callback state long key": (cbs(cb("A", {"k" * 100: 1})), "training state", "a key that is not a printable name"),
    "early stopping without wait": (cbs(cb("EarlyStopping", {k: v for k, v in EARLY.items() if k != "wait"})),
                                    "training state", "is missing field(s) ['wait']"),
    "early stopping wait negative": (cbs(cb("EarlyStopping", {**EARLY, "wait": -1})), "training state", "wait must be"),
    "early stopping wait beyond the epochs": (cbs(cb("EarlyStopping", {**EARLY, "wait": 5})), "training state",
                                              "wait must be an int >= 0 and <= 1; got 5"),
    "early stopping wait a float": (cbs(cb("EarlyStopping", {**EARLY, "wait": 0.0})), "training state", "wait must be an int"),
    "early stopping best epoch not finished": (cbs(cb("EarlyStopping", {**EARLY, "best_epoch": 1})), "training state",
                                               "best_epoch must be an int >= 0 and <= 0 or None; got 1"),
    "early stopping best a string": (cbs(cb("EarlyStopping", {**EARLY, "best": "0.5"})), "training state", "best"),
    "early stopping mode unknown": (cbs(cb("EarlyStopping", {**EARLY, "mode": "up"})), "training state", "mode"),
    "early stopping monitor an escape": (cbs(cb("EarlyStopping", {**EARLY, "monitor": "\x1b]0;x\x07"})),
                                         "training state", "monitor must be a printable string"),
    "model checkpoint with a wait": (cbs(cb("ModelCheckpoint", EARLY)), "training state", "got unknown field(s) ['stopped_epoch', 'wait']"),
    "scheduler per batch": (cbs(lrs(per="batch")), "training state", "per must be one of 'epoch', 'step'"),
    "scheduler offset a float": (cbs(lrs(offset=1.5)), "training state", "offset must be a 64-bit int or none"),
    "scheduler missing": (cbs(cb("LearningRateScheduler", {"per": "epoch", "offset": 0})), "training state",
                          "is missing field(s) ['scheduler']"),
    "scheduler type a path": (cbs(lrs(scheduler={"type": "a/b", "state": STEPLR})), "training state",
                              "scheduler type must be a class name"),
    "scheduler state a list": (cbs(lrs(scheduler={"type": "StepLR", "state": [1]})), "training state",
                               "scheduler state must be an object"),
    "scheduler rate negative": (cbs(sched(_last_lr=[-0.1])), "training state", "_last_lr must be a finite number >= 0"),
    "scheduler base rate a string": (cbs(sched(base_lrs=["0.1"])), "training state", "base_lrs must be a finite"),
    "scheduler rates not a list": (cbs(sched(_last_lr=0.1)), "training state", "_last_lr must be a list"),
    "scheduler last_epoch below -1": (cbs(sched(last_epoch=-2)), "training state", "last_epoch must be"),
    "scheduler step count a float": (cbs(sched(_step_count=2.0)), "training state", "_step_count must be a non-negative 64-bit int"),
    "sequential schedulers not a list": (cbs(sched(_schedulers={"a": 1})), "training state", "_schedulers must be a list"),
    "sequential inner rate NaN": (cbs(sched(_schedulers=[{**STEPLR, "_last_lr": [float("nan")]}])), "training state",
                                  "['_schedulers'][0]['_last_lr'][0] must be a finite number"),
    "history lr negative": (hist(lr=[-0.1]), "training state", "history['lr']"),
    "history lr longer than epoch": (hist(lr=[0.1, 0.1]), "training state", "history['lr'] has 2 values"),
    # extra: free-form, but the CLI's keys typed and bounded
    "extra not an object": (_set("extra", "[1]"), "extra", "not an object"),
    "extra epochs 0": (extra(epochs=0), "extra", "'epochs'"),
    "extra epochs huge": (extra(epochs=10**12), "extra", "'epochs'"),
    "extra epochs a string": (extra(epochs="5"), "extra", "'epochs' must be an int >= 1"),
    "extra epochs a bool": (extra(epochs=True), "extra", "'epochs' must be an int >= 1"),
    "extra limit negative": (extra(limit=-1), "extra", "'limit'"),
    "extra limit a float": (extra(limit=1.5), "extra", "'limit' must be a positive 64-bit int"),
    "extra protocol unknown": (extra(protocol="../../etc"), "extra", "'protocol'"),
    "extra model a number": (extra(model=123), "extra", "'model'"),
    "extra model with a terminal escape": (extra(model="seed\x1b]0;pwned\x07"), "extra", "'model'"),
    "extra model empty": (extra(model=""), "extra", "'model'"),
    "extra data a number": (extra(data=5), "extra", "'data'"),
    "extra data too long": (extra(data="x" * 5000), "extra", "'data'"),
    # the other metadata fields
    "seed negative": (_set("seed", "-1"), "seed"),
    "seed a string": (_set("seed", '"zero"'), "seed"),
    "dtype float16": (_set("dtype", "float16"), "'dtype'"),
    "format version 2": (_set("format_version", "2"), "format version"),
    "version with a newline": (_set("portacnn_version", "0.1\n\x1b[2J"), "portacnn_version"),
    "architecture not JSON": (_set("architecture", "[{"), "architecture", "not valid JSON"),
    "weights of another shape": (_tensor("4.weight", np.zeros((60, 300), np.float32)), "do not match", "shape"),
    "a weight missing": (_tensor("6.bias", None), "do not match", "it needs 18002 parameters but the file holds 17992"),
    "a weight renamed": (lambda t, m: t.update({"6.bias2": t.pop("6.bias")}), "do not match",
                         "missing keys ['6.bias'], unexpected keys ['6.bias2']"),
    "an unexpected tensor": (_tensor("evil", np.zeros(3, np.float32)), "do not match", "unexpected keys ['evil']"),
    "an integer buffer": (_tensor("optim.0.m", np.zeros((2, 1, 5, 5), np.int32)), "int32"),
    "an infinite weight": (_tensor("0.bias", np.array([np.inf, 0.0], np.float32)), "NaN or infinite"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES.values()), ids=list(SCHEMA_CASES))
def test_schema_violations_are_refused_at_load(trained, tmp_path, case):
    edit, *fragments = case
    tensors, meta = _read(trained[1])
    edit(tensors, meta)
    path = _write(tmp_path / "hostile.safetensors", tensors, meta)
    _refused(path, *fragments)


def test_every_schema_case_starts_from_a_file_that_loads(trained, tmp_path):
    """The baseline the cases edit is valid, re-signed it still loads, and the SGD baseline does too."""
    tensors, meta = _read(trained[1])
    assert pc.load(_write(tmp_path / "same.safetensors", tensors, meta)).checkpoint["extra"] == CLI_EXTRA
    _sgd()(tensors, meta)
    model = pc.load(_write(tmp_path / "sgd.safetensors", tensors, meta))
    assert isinstance(checkpoint.optimizer_from_checkpoint(model), pc.optim.SGD)


def test_valid_callback_states_and_old_optimizer_descriptions_load(trained, tmp_path):
    """The states the hostile cases start from load, and so does a file written before groups were saved (no
    'param_groups', one step count for all): one group of every parameter, in the model's order."""
    tensors, meta = _read(trained[1])
    ts(callbacks=[cb("EarlyStopping", EARLY), cb("LearningRateScheduler", LRS), cb("Mine", {"any": [1, "x", None]})],
       history={**json.loads(meta["train_state"])["history"], "lr": [0.1]})(tensors, meta)
    loaded = pc.load(_write(tmp_path / "ok.safetensors", tensors, meta))
    assert [c["type"] for c in loaded.checkpoint["train_state"]["callbacks"]] == ["EarlyStopping", "LearningRateScheduler",
                                                                                 "Mine"]
    tensors, meta = _read(trained[1])
    new = checkpoint.optimizer_from_checkpoint(pc.load(trained[1]))
    _edit_json("optimizer", lambda o: _popped(o, "param_groups"))(tensors, meta)
    old = checkpoint.optimizer_from_checkpoint(pc.load(_write(tmp_path / "old.safetensors", tensors, meta)))
    assert len(old.param_groups) == 1 and old.param_steps == new.param_steps and old.hyperparameters() == new.hyperparameters()
    for i, s in new.state.items():
        assert all(np.array_equal(np.asarray(s[k]), np.asarray(old.state[i][k])) for k in s)
    opt(steps=1)(tensors, meta)  # the oldest files: one count for every parameter
    assert checkpoint.optimizer_from_checkpoint(pc.load(_write(tmp_path / "oldest.safetensors", tensors, meta))).steps == 1


def test_extra_is_free_form_json_and_data_is_only_a_record(trained, tmp_path):
    tensors, meta = _read(trained[1])
    run = {**CLI_EXTRA, "data": "/nonexistent/../../etc/shadow", "limit": None, "note": {"any": ["json", 1, None]}}
    meta["extra"] = json.dumps(run)
    loaded = pc.load(_write(tmp_path / "extra.safetensors", tensors, meta))
    assert loaded.checkpoint["extra"] == run  # stored as given; load never opens it


def test_header_and_tensor_count_limits(tmp_path):
    arch = [FLAT, dense(4, 2)]
    big = _craft(tmp_path / "big.safetensors", arch, extra=json.dumps({"pad": "x" * (checkpoint._MAX_HEADER + 1)}))
    _refused(big, "header", "exceeds")
    tensors = {f"optim.0.m{i}": np.zeros(1, np.float32) for i in range(checkpoint.MAX_TENSORS)}
    tensors.update({"1.weight": np.zeros((2, 4), np.float32), "1.bias": np.zeros(2, np.float32)})
    many = _write(tmp_path / "many.safetensors", tensors,
                  {"format": checkpoint.FORMAT, "architecture": json.dumps(arch), "dtype": "float32"})
    _refused(many, "MAX_TENSORS")


# -- what save writes, load loads -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", sorted(pc.models.MODELS))
def test_zoo_round_trip_with_optimizer_and_training_state(tmp_path, name, dtype):
    x, y = float_subset("train", 24)
    model = pc.models.MODELS[name](dtype=dtype, seed=1, input_shape=(1, 28, 28))  # resnet20's default is 3x32x32
    path = tmp_path / "ck.safetensors"
    # interrupted mid-epoch would be the same code path; a finished epoch with a partial last batch here
    model.fit(x, y, epochs=1, batch_size=16, seed=3, progress=False, checkpoint_path=path,
              checkpoint_extra={**CLI_EXTRA, "model": name})
    loaded = pc.load(path)  # signed, no opt-out needed
    assert loaded.dtype == dtype and loaded.architecture() == model.architecture()
    assert_same_state(loaded.state_dict(), model.state_dict())
    info = loaded.checkpoint
    assert info["input_shape"] == (1, 28, 28)  # the zoo's input, stored
    assert info["train_state"]["epoch"] == 1 and info["extra"]["model"] == name
    opt = checkpoint.optimizer_from_checkpoint(loaded)
    assert isinstance(opt, pc.optim.Adam) and opt.param_steps == model.optimizer.param_steps
    history = loaded.fit(x, y, epochs=2, batch_size=16, seed=3, progress=False, resume=loaded, checkpoint_path=path)
    assert len(history.history["loss"]) == 2
    assert pc.load(path).checkpoint["train_state"]["epoch"] == 2


def test_sgd_round_trip_and_a_model_without_a_known_input(tmp_path):
    x, y = float_subset("train", 24)
    model = pc.Sequential([Conv2D(1, 3, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 13 * 13, 10)], seed=0)
    opt = pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    path = tmp_path / "custom.safetensors"
    model.fit(x, y, epochs=1, batch_size=8, optimizer=opt, progress=False, checkpoint_path=path)
    loaded = pc.load(path)
    assert loaded.checkpoint["input_shape"] == (1, 28, 28)  # fit stores the shape it trained on
    assert model.input_shape == (1, 28, 28)  # fit records the images it trained on
    fresh = pc.Sequential([Conv2D(1, 3, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 13 * 13, 10)], seed=0)
    plain = tmp_path / "plain.safetensors"
    fresh.save(plain)
    _, meta = _read(plain)
    assert "input_shape" not in meta  # not the zoo, not trained, not given: nothing is made up
    assert pc.load(plain).checkpoint["input_shape"] is None
    assert checkpoint.check_architecture(model.architecture())["input_shape"] == (1, 29, 29)  # (26 or 27)//2 == 13
    restored = checkpoint.optimizer_from_checkpoint(loaded)
    assert isinstance(restored, pc.optim.SGD) and restored.nesterov
    # an explicit input shape is stored, and kept when the loaded model is saved again
    model.save(path, input_shape=(1, 28, 28))
    pc.load(path).save(tmp_path / "again.safetensors")
    assert pc.load(tmp_path / "again.safetensors").checkpoint["input_shape"] == (1, 28, 28)


def test_save_refuses_what_load_would_refuse_and_writes_nothing(tmp_path):
    model = pc.models.seed_cnn()
    path = tmp_path / "m.safetensors"
    cases = [
        (dict(extra={"epochs": 0}), "'epochs'"),
        (dict(input_shape=(1, 30, 30)), "expects 288 features but gets 338"),
        (dict(train_state={"epoch": 0}), "training state"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(CheckpointError, match="not saved") as err:
            model.save(path, **kwargs)
        assert fragment in str(err.value) and str(path) in str(err.value)
        assert not path.exists()
    with pytest.raises(ValueError, match=r"x.shape\[1:\]"):
        model.save(path, input_shape=(8, 1, 28, 28))

    class Lion(pc.optim.SGD):
        pass

    with pytest.raises(CheckpointError, match="unknown optimizer type 'lion'"):
        model.save(path, optimizer=Lion(model.parameters()))
    model.save(path.with_name("ok.safetensors"), input_shape=(1, 29, 29))  # another input that fits: saved
    model.layers[0].weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["ok.safetensors"]


def test_limits_are_generous_for_real_models():
    """The zoo at its stored input, and VGG-16 at 224x224 in float64, fit every cap."""
    for make in pc.models.MODELS.values():
        model = make()
        plan = checkpoint.check_architecture(model.architecture(), model.input_shape, "float64")
        assert plan["activation_bytes"] < 16 * 2**20 and plan["operations"] < 5 * 10**7
    vgg, c = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            vgg.append(pool(2))
        else:
            vgg += [conv(c, v, 3, padding=1), RELU]
            c = v
    vgg += [FLAT, dense(25088, 4096), RELU, dense(4096, 4096), RELU, dense(4096, 1000)]
    plan = checkpoint.check_architecture(vgg, (3, 224, 224), "float64")
    assert plan["activation_bytes"] < checkpoint.MAX_ACTIVATION_BYTES and plan["operations"] < checkpoint.MAX_OPERATIONS
    assert math.isclose(plan["operations"], 1.55e10, rel_tol=0.02)
    assert checkpoint.check_architecture(vgg, None)["input_shape"] == (3, 255, 255)  # inferred from the 25088 features


def test_a_raised_limit_admits_a_trusted_file(tmp_path, monkeypatch):
    path = _craft(tmp_path / "wide.safetensors", [conv(1, 512, 1), FLAT], [1, 1024, 1024])
    msg = _refused(path, "MAX_ACTIVATION_BYTES")
    assert "raise portacnn.checkpoint.MAX_ACTIVATION_BYTES" in msg
    monkeypatch.setattr(checkpoint, "MAX_ACTIVATION_BYTES", 8 << 30)
    assert pc.load(path).checkpoint["input_shape"] == (1, 1024, 1024)


# -- sizes checked from the header, before the tensors are read ---------------------------------------------------
def _header_only_checkpoint(path, declared_bytes, extra_file_bytes=0):
    """A header that declares one float32 weight tensor of ``declared_bytes`` for the seed net's architecture,
    the file made sparse to that size (plus ``extra_file_bytes``): nothing large is ever written to disk."""
    import struct

    meta = {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION,
            "architecture": json.dumps(pc.models.seed_cnn().architecture()), "dtype": "float32", "seed": "0"}
    header = {"__metadata__": meta, "0.weight": {"dtype": "F32", "shape": [declared_bytes // 4],
                                                  "data_offsets": [0, declared_bytes]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + declared_bytes + extra_file_bytes)
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and ru_maxrss in KiB: Linux")
@pytest.mark.parametrize("declared, extra, fragment", [
    (512 << 20, 0, "more than its architecture's 18002 parameters"),
    (1024, 512 << 20, "its header describes"),
])  # fmt: skip
def test_file_sizes_are_checked_from_the_header_before_reading(tmp_path, declared, extra, fragment):
    """A 512 MiB (sparse) checkpoint is refused from its header alone, in a child capped at 300 MB."""
    path = _header_only_checkpoint(tmp_path / "big.safetensors", declared, extra)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(300 << 20)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("REFUSED"), proc.stdout + proc.stderr
    assert fragment in proc.stdout
