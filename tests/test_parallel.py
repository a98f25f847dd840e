"""Data-parallel shards (portacnn/parallel.py): a batch cut into row shards on CPU threads must give the
single-thread results up to float rounding (dropout masks exactly), deterministically, on every CPU
backend; the ``auto`` rule, BLAS thread handling and errors are checked on their own."""

from __future__ import annotations

import numpy as np
import pytest
from clihelp import assert_same_state, float_subset
from conftest import BACKEND_PARAMS, assert_close, make_backend, to_numpy

import portacnn as pc
from portacnn import parallel
from portacnn.backend import blas_threads
from portacnn.layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU
from portacnn.losses import softmax_cross_entropy
from portacnn.parallel import shard_spans


def _net(backend=None, workers=1, seed=0, dtype="float32"):
    """Both conv layouts (per-image and channels-last), pooling, two dropouts sharing one generator."""
    layers = [Conv2D(1, 4, 3, padding=1), ReLU(), Conv2D(4, 32, 3), ReLU(), MaxPool2D(2), Dropout(0.25),
              Flatten(), Dense(32 * 6 * 6, 16), ReLU(), Dropout(0.5), Dense(16, 10)]  # fmt: skip
    return pc.Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=workers)


def _step(model, x, y):
    """One forward/backward with the input gradient: (logits, dx, {name: grad}) on the host."""
    logits = model.forward(x, training=True)
    _, dlogits = softmax_cross_entropy(logits, model.backend.asarray(y))
    dx = model.backward(dlogits, input_grad=True)
    to = model.backend.to_numpy
    return to(logits), to(dx), {p.name: to(p.grad) for p in model.parameters()}


@pytest.mark.parametrize("n, shards", [(10, 1), (10, 2), (10, 3), (7, 7), (129, 2), (5, 4)])
def test_shard_spans_cover_the_batch_evenly(n, shards):
    spans = shard_spans(n, shards)
    assert len(spans) == shards and spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, in order
    sizes = [hi - lo for lo, hi in spans]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("name", [p for p in BACKEND_PARAMS if p.values[0] != "cupy"])  # with their marks
@pytest.mark.parametrize("workers", [2, 3])
def test_sharded_step_equals_one_thread(name, workers):
    """Logits, input gradient and every parameter gradient: equal to float32 rounding; the dropout
    generator ends in exactly the same state (the masks were the same draws)."""
    backend = make_backend(name)
    rng = np.random.default_rng(7)
    x = rng.random((11, 1, 15, 15), dtype=np.float32)
    y = rng.integers(0, 10, 11)
    one, many = _net(backend, workers=1), _net(backend, workers=workers)
    assert many.shards_for(x.shape) == workers
    a, b = _step(one, x, y), _step(many, x, y)
    assert_close(b[0], a[0], "float32", err_msg="logits")
    assert_close(b[1], a[1], "float32", err_msg="input gradient")
    for k in a[2]:
        assert_close(b[2][k], a[2][k], "float32", rtol=2e-5, err_msg=k)
    assert many.rng.bit_generator.state == one.rng.bit_generator.state


@pytest.mark.parametrize("name", [p for p in BACKEND_PARAMS if p.values[0] != "cupy"])  # with their marks
def test_dropout_masks_are_exactly_the_unsharded_ones(name):
    """Two dropout layers on one generator, no arithmetic but the masks: the outputs are bit-identical."""
    backend = make_backend(name)
    x = np.random.default_rng(3).random((9, 1, 6, 6), dtype=np.float32) + 1.0
    outs = []
    for workers in (1, 4):
        model = pc.Sequential([Dropout(0.5), Flatten(), Dropout(0.3)], backend=backend, seed=5, workers=workers)
        outs.append([to_numpy(backend, model.forward(x, training=True)) for _ in range(3)])  # 3 steps in a row
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
        assert 0 < np.count_nonzero(a) < a.size  # masks really dropped something


def test_training_with_workers_matches_one_thread_and_repeats_bit_for_bit():
    x, y = float_subset("train", 96)
    x = x[:, :, 6:21, 6:21]  # 15x15 crops keep the test fast
    runs = {}
    for key, workers in (("one", 1), ("two", 2), ("two again", 2)):
        model = _net(workers=workers, seed=1)
        h = model.fit(x, y, epochs=2, batch_size=32, seed=4, progress=False)
        runs[key] = (model.state_dict(), h.history)
    assert_same_state(runs["two"][0], runs["two again"][0])
    assert runs["two"][1] == runs["two again"][1]
    for k, v in runs["one"][0].items():
        assert_close(runs["two"][0][k], v, "float32", rtol=1e-4, err_msg=k)
    np.testing.assert_allclose(runs["two"][1]["loss"], runs["one"][1]["loss"], rtol=1e-4)


def test_resume_with_workers_is_bit_for_bit(tmp_path):
    x, y = float_subset("train", 64)
    x = x[:, :, 6:21, 6:21]
    full = _net(workers=2)
    full.fit(x, y, epochs=2, batch_size=16, seed=2, progress=False)
    first = _net(workers=2)
    first.fit(x, y, epochs=1, batch_size=16, seed=2, progress=False, checkpoint_path=tmp_path / "ck.safetensors")
    resumed = pc.load(tmp_path / "ck.safetensors")
    resumed.workers = 2
    resumed.fit(x, y, epochs=2, batch_size=16, seed=2, progress=False, resume=resumed)
    assert_same_state(resumed.state_dict(), full.state_dict())


def test_shards_see_weights_replaced_after_they_were_made():
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 15, 15), dtype=np.float32)
    model, other = _net(workers=3), _net(workers=1, seed=9)
    model.forward(x)  # replicas now exist
    model.load_state_dict(other.state_dict())
    assert_close(to_numpy(model.backend, model.forward(x)), to_numpy(other.backend, other.forward(x)), "float32")


def test_fewer_images_than_workers_uses_one_shard_per_image():
    model = _net(workers=8)
    x = np.zeros((3, 1, 15, 15), dtype=np.float32)
    assert model.shards_for(x.shape) == 3
    assert tuple(model.forward(x).shape) == (3, 10)


class _BlasProbe(Layer):
    """Identity that records NumPy's BLAS thread count while it runs (a layer pc does not know)."""

    seen: list = []

    def forward(self, x, training=False):
        _BlasProbe.seen.append(blas_threads())
        return x

    def backward(self, grad_out, need_input_grad=True):
        return grad_out


def test_blas_runs_one_thread_per_shard_and_is_restored():
    before = blas_threads()
    _BlasProbe.seen = []
    model = pc.Sequential([_BlasProbe(), Flatten(), Dense(4, 2)], workers=2)
    model.forward(np.ones((4, 1, 2, 2), dtype=np.float32))
    assert _BlasProbe.seen == [1, 1]
    assert blas_threads() == before


def test_an_error_inside_a_shard_reaches_the_caller_unchanged():
    model = _net(workers=2)
    with pytest.raises(ValueError, match=r"Conv2D.*expects input of shape \(N, 1, H, W\)"):
        model.forward(np.zeros((4, 3, 15, 15), dtype=np.float32))
    assert tuple(model.forward(np.zeros((4, 1, 15, 15), dtype=np.float32)).shape) == (4, 10)  # still usable


def test_backward_checks_the_rows_of_the_last_forward():
    model = _net(workers=2)
    model.forward(np.zeros((4, 1, 15, 15), dtype=np.float32), training=True)
    with pytest.raises(ValueError, match=r"gradient of shape \(3, 10\); the last forward pass returned shape \(4, 10\)"):
        model.backward(np.zeros((3, 10), dtype=np.float32))


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "two", None])
def test_bad_workers_values_are_value_errors(bad):
    with pytest.raises(ValueError, match="workers must be 'auto' or a positive integer"):
        _net(workers=bad)
    model = _net()
    with pytest.raises(ValueError, match="workers must be 'auto' or a positive integer"):
        model.workers = bad


@pytest.mark.parametrize("net, batch, threads, training, expected", [
    ("seed_cnn", 512, 2, True, 1),     # 256 images x 3,010 activations: too little work per shard
    ("seed_cnn", 2048, 2, True, 2),
    ("lenet5", 128, 2, True, 1),       # 64 images x 15,002 activations: too little
    ("lenet5", 512, 2, True, 2),
    ("lenet5", 512, 2, False, 1),      # inference does less element-wise work per activation
    ("kannada_cnn", 64, 2, True, 1),   # fewer than 64 images per shard
    ("kannada_cnn", 128, 2, True, 2),
    ("kannada_cnn", 128, 2, False, 2),
    ("kannada_cnn", 128, 1, True, 1),  # BLAS on one thread: the user asked for one core
    ("kannada_cnn", 512, 16, True, 8),  # never fewer than 64 images per shard
])  # fmt: skip
def test_auto_shards(monkeypatch, net, batch, threads, training, expected):
    monkeypatch.setattr(parallel, "blas_threads", lambda: threads)
    model = getattr(pc.models, net)()
    assert model.workers == "auto"
    assert model.shards_for((batch, 1, 28, 28), training=training) == expected


@pytest.mark.parametrize("name", ["array_api_strict", "torch"])
def test_auto_shards_only_on_numpy(monkeypatch, name):
    monkeypatch.setattr(parallel, "blas_threads", lambda: 2)
    model = pc.models.lenet5(backend=make_backend(name))
    assert model.shards_for((512, 1, 28, 28)) == 1


def test_explicit_workers_on_a_device_backend_is_a_clear_error():
    torch = pytest.importorskip("torch")
    model = _net(workers=2)
    model.backend = pc.Backend("torch", pc.get_backend("torch").xp, torch.device("meta"))  # a non-CPU device
    assert not model.backend.is_cpu
    with pytest.raises(ValueError, match="workers=2 splits batches across CPU threads.*use workers=1"):
        model.shards_for((8, 1, 15, 15))
    model.workers = "auto"
    assert model.shards_for((8, 1, 15, 15)) == 1


@pytest.mark.gpu
def test_cupy_never_shards_automatically():
    model = pc.models.kannada_cnn(backend="cupy")
    assert model.shards_for((512, 1, 28, 28)) == 1
    model.workers = 2
    with pytest.raises(ValueError, match="use workers=1"):
        model.shards_for((512, 1, 28, 28))
