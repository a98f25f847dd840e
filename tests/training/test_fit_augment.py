"""fit(augment=...): training batches only, the same draws on every backend, after a resume and in shards."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from clihelp import float_subset, tiny_model

import portacnn as pc
from conftest import assert_close, make_backend
from portacnn import augment
from portacnn.callbacks import Callback

N, BATCH = 96, 32
AFFINE = augment.Compose([augment.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5),
                          augment.RandomErasing(p=0.5)])


@pytest.fixture(scope="module")
def data():
    return float_subset("train", N)


def _fit(data, epochs=2, backend="numpy", dtype="float32", workers=1, **kw):
    model = tiny_model(backend=backend, dtype=dtype, workers=workers)
    model.fit(*data, epochs=epochs, batch_size=BATCH, progress=False, seed=4, **kw)
    return model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_augmented_runs_repeat_and_differ_from_plain_ones(data):
    a, b = _fit(data, augment=AFFINE), _fit(data, augment=AFFINE)
    assert _same(a, b)
    assert not _same(a, _fit(data))


def test_only_training_batches_are_augmented_with_a_stream_per_step(data):
    x, y = data
    tagged = np.broadcast_to(np.arange(N, dtype=np.float32)[:, None, None, None], x.shape).copy()
    calls = []

    def record(batch, rng):
        calls.append((np.asarray(batch)[:, 0, 0, 0].astype(int).tolist(), rng.random()))
        return batch

    model = tiny_model(workers=1)
    model.fit(tagged, y, epochs=2, batch_size=BATCH, validation_split=0.25, augment=record, progress=False, seed=4)
    training_rows = N - 24
    assert len(calls) == 2 * -(-training_rows // BATCH)  # one call per step, none for validation
    seen = sorted(r for rows, _ in calls[:3] for r in rows)
    held = sorted(set(range(N)) - set(seen))
    assert len(seen) == training_rows and len(held) == 24  # the held-out rows never reach the transform
    draws = [u for _, u in calls]
    assert len(set(draws)) == len(draws)  # every step its own generator
    expected = [np.random.default_rng([4, e, s, pc.training.loop.AUGMENT_STREAM]).random() for e in range(2)
                for s in range(3)]
    assert draws == expected


def test_same_draws_on_every_backend(data):
    ref = _fit(data, dtype="float64", augment=AFFINE)
    for name in ("array_api_strict", "torch", "jax"):
        if name not in pc.available_backends():
            continue
        other = _fit(data, backend=make_backend(name), dtype="float64", augment=AFFINE)
        for key, value in ref.state_dict().items():
            assert_close(other.state_dict()[key], value, "float64", rtol=1e-9, err_msg=f"{name} {key}")


def test_shards_augment_the_whole_batch_first(data):
    x, y = float_subset("train", 512)
    one = tiny_model(workers=1)
    two = tiny_model(workers=2)
    assert two.shards_for((256, 1, 28, 28)) == 2
    for m in (one, two):
        m.fit(x, y, epochs=1, batch_size=256, progress=False, augment=AFFINE)
    for key, value in one.state_dict().items():
        assert_close(two.state_dict()[key], value, "float32", rtol=1e-4, err_msg=key)


class _Interrupt(Callback):
    def on_train_batch_end(self, batch, logs):
        if logs["epoch"] == 1 and batch == 1:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_resumed_run_draws_what_an_unbroken_one_does(data, tmp_path):
    full = _fit(data, epochs=3, augment=AFFINE)
    path = tmp_path / "run.safetensors"
    part = tiny_model(workers=1)
    history = part.fit(*data, epochs=3, batch_size=BATCH, progress=False, seed=4, augment=AFFINE,
                       checkpoint_path=path, callbacks=[_Interrupt()])
    assert history.interrupted
    resumed = pc.load(path)
    resumed.workers = 1
    assert (resumed.checkpoint["train_state"]["epoch"], resumed.checkpoint["train_state"]["step"]) == (1, 2)
    resumed.fit(*data, epochs=3, batch_size=BATCH, progress=False, seed=4, augment=AFFINE, resume=resumed)
    assert _same(resumed, full)


def test_augment_must_be_callable(data):
    with pytest.raises(ValueError, match="augment must be a portacnn.augment transform"):
        _fit(data, epochs=1, augment="affine")
