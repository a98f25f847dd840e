"""Batch inference over Dask arrays: lazy, chunk by chunk, equal to in-process predictions, and the same
on a real ``dask.distributed`` cluster of worker processes."""

import os
import subprocess
import sys

import numpy as np
import pytest

import portacnn as pc
from portacnn import dask_inference

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


def _images(n=23, seed=5, dtype=np.float32):
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(dtype)


@pytest.fixture
def model():
    return pc.models.seed_cnn(seed=0)


@pytest.fixture
def chunk_log(monkeypatch):
    """Shapes of the chunks each Dask task hands to the model."""
    shapes = []
    real = dask_inference._predict_chunk

    def logging_chunk(chunk, *args, block_info=None):  # block_info: Dask passes it to a function that names it
        shapes.append(tuple(chunk.shape))
        return real(chunk, *args, block_info=block_info)

    monkeypatch.setattr(dask_inference, "_predict_chunk", logging_chunk)
    return shapes


def test_predict_returns_a_lazy_dask_array_computed_chunk_by_chunk(model, chunk_log):
    x = _images()
    computed = []

    def source_block(block):
        computed.append(block.shape[0])
        return block

    lazy = da.from_array(x, chunks=(8, 1, 28, 28)).map_blocks(source_block, dtype=x.dtype, meta=x[:0])
    proba, ids = model.predict_proba(lazy, batch_size=3), model.predict(lazy, batch_size=3)
    assert isinstance(proba, da.Array) and isinstance(ids, da.Array)
    assert computed == [] and chunk_log == []  # nothing ran yet
    assert proba.shape == (23, 10) and proba.chunks == ((8, 8, 7), (10,)) and proba.dtype == np.float32
    assert ids.shape == (23,) and ids.chunks == ((8, 8, 7),) and ids.dtype == np.int64
    got_proba, got_ids = dask.compute(proba, ids, scheduler="sync")
    assert sorted(chunk_log) == sorted([(8, 1, 28, 28), (8, 1, 28, 28), (7, 1, 28, 28)] * 2)  # never the whole array
    np.testing.assert_allclose(got_proba, model.predict_proba(x, batch_size=3), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got_ids, model.predict(x, batch_size=3))


def test_images_chunked_across_pixels_are_rechunked_to_whole_images(model, chunk_log):
    x = _images(10)
    got = model.predict_proba(da.from_array(x, chunks=(4, 1, 14, 7)))
    assert got.chunks == ((4, 4, 2), (10,))
    np.testing.assert_allclose(got.compute(scheduler="sync"), model.predict_proba(x), rtol=1e-6, atol=1e-7)
    assert all(shape[1:] == (1, 28, 28) for shape in chunk_log)


def test_float64_model_gives_float64_probabilities():
    model = pc.models.seed_cnn(seed=0, dtype=np.float64)
    x = _images(6, dtype=np.float64)
    got = model.predict_proba(da.from_array(x, chunks=4))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got.compute(scheduler="sync"), model.predict_proba(x), rtol=1e-12)


def test_model_is_rebuilt_once_per_worker_thread(model, monkeypatch):
    builds = []
    real = pc.Sequential.from_architecture.__func__

    def counting(cls, *args, **kwargs):
        builds.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(pc.Sequential, "from_architecture", classmethod(counting))
    monkeypatch.setattr(dask_inference, "_LOCAL", type(dask_inference._LOCAL)())
    model.predict(da.from_array(_images(20), chunks=4)).compute(scheduler="sync")
    assert len(builds) == 1  # five chunks, one thread, one build
    model.layers[-1].bias.data[...] = 1.0  # new weights: a new payload token, a new build
    model.predict(da.from_array(_images(20), chunks=4)).compute(scheduler="sync")
    assert len(builds) == 2


@pytest.mark.parametrize("make, match", [
    (lambda: da.zeros((4, 3, 28, 28), dtype=np.float32, chunks=2), r"x must have shape \(N, 1, H, W\)"),
    (lambda: da.zeros((4, 3, 28, 28), dtype=np.uint8, chunks=2), "x holds 3-channel images; the model reads grey"),
    (lambda: da.zeros((4, 28, 28), dtype=bool, chunks=2), "x has dtype bool"),
    (lambda: da.zeros((0, 1, 28, 28), dtype=np.float32, chunks=2), "x is empty"),
    (lambda: da.zeros((6, 1, 28, 28), dtype=np.float32, chunks=2)[da.arange(6) > 2], "unknown chunk sizes"),
])  # fmt: skip
def test_bad_dask_inputs_fail_at_call_time_without_computing(model, make, match):
    with pytest.raises(ValueError, match=match):
        model.predict(make())


def test_non_finite_values_fail_when_their_chunk_is_computed(model):
    x = _images(8)
    x[6, 0, 3, 3] = np.nan
    lazy = model.predict(da.from_array(x, chunks=4))
    with pytest.raises(ValueError, match="x holds 1 NaN or infinite values"):
        lazy.compute(scheduler="sync")


def _lying(x, chunks, computed_rows=None, dtype=None, pixels=None):
    """A Dask array declaring ``chunks`` rows per block of ``x`` whose blocks compute ``computed_rows[i]`` rows
    (and ``dtype``, and ``pixels`` rows of pixels) instead: what a buggy loader or a wrong chunks= gives."""
    declared = da.from_array(x, chunks=(chunks, 1, 28, 28))

    def block(b, block_info=None):
        (i, *_), ((start, stop), *_) = block_info[0]["chunk-location"], block_info[0]["array-location"]
        rows = stop - start if computed_rows is None else computed_rows[i]
        out = np.take(x, np.arange(start, start + rows), axis=0, mode="wrap")  # x's own rows, as declared or not
        out = out if pixels is None else out[:, :, :pixels]
        return out if dtype is None else out.astype(dtype)

    return declared.map_blocks(block, dtype=x.dtype, meta=x[:0])


LIES = {  # declared chunk sizes -> the rows each block computes
    "one short": ([4, 4, 4], [4, 4, 3]), "one long": ([4, 4, 4], [4, 5, 4]), "first empty": ([4, 4, 4], [0, 4, 4]),
    "all short": ([5, 5, 2], [4, 4, 1]), "shuffled sizes": ([3, 5, 4], [5, 3, 4]),
    "one image": ([1] * 12, [1] * 11 + [2]), "declared empty": ([0, 6, 6], [1, 6, 6]),
}


@pytest.mark.parametrize("probabilities", [False, True], ids=["predict", "predict_proba"])
@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_block_computing_other_rows_than_declared_is_refused_by_name(model, lie, probabilities):
    declared, computed = LIES[lie]
    x = _images(sum(declared))
    lazy = _lying(x, tuple(declared), computed)
    assert lazy.chunks[0] == tuple(declared)
    run = model.predict_proba if probabilities else model.predict
    bad = [i for i, (d, c) in enumerate(zip(declared, computed)) if d != c]
    with pytest.raises(ValueError, match=r"x's Dask block (\d+) \(rows \d+:\d+\) computed to shape \(\d+, 1, 28, "
                                         r"28\), not the \(\d+, 1, 28, 28\) its chunks declare; fix the code") as e:
        run(lazy).compute(scheduler="sync")
    assert int(str(e.value).split("block ")[1].split(" ")[0]) in bad and "\n" not in str(e.value)
    honest = _lying(x, tuple(declared))  # the same blocks computing what they declare: no error, the same result
    np.testing.assert_allclose(run(honest).compute(scheduler="sync"), run(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype, pixels, match", [
    (np.float64, None, "computed to dtype float64, not the float32 x declares"),
    (np.float16, None, "computed to dtype float16, not the float32 x declares"),
    (np.uint8, None, "computed to dtype uint8, not the float32 x declares"),
    (None, 27, r"computed to shape \(4, 1, 27, 28\), not the \(4, 1, 28, 28\)"),
])
def test_a_block_computing_another_dtype_or_image_size_is_refused(model, dtype, pixels, match):
    lazy = _lying(_images(8), 4, dtype=dtype, pixels=pixels)
    with pytest.raises(ValueError, match=r"x's Dask block \d \(rows \d:\d\) " + match):
        model.predict(lazy).compute(scheduler="sync")


def test_bad_batch_size(model):
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(da.from_array(_images(4), chunks=2), batch_size=0)


def test_evaluate_computes_each_dask_chunk_once(model):
    x = _images(17)
    y = np.random.default_rng(1).integers(0, 10, 17)
    computed = []

    def source_block(block):
        computed.append(block.shape[0])
        return block

    lazy = da.from_array(x, chunks=(6, 1, 28, 28)).map_blocks(source_block, dtype=x.dtype, meta=x[:0])
    with dask.config.set(scheduler="sync"):
        got = model.evaluate(lazy, da.from_array(y, chunks=6), batch_size=4)
    assert sorted(computed) == [5, 6, 6]
    expected = model.evaluate(x, y, batch_size=4)
    assert got["n"] == expected["n"] and got["accuracy"] == expected["accuracy"]
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_importing_and_using_portacnn_imports_neither_dask_nor_cupy():
    code = ("import sys, numpy as np, portacnn as pc\n"
            "m = pc.models.seed_cnn(seed=0)\n"
            "m.predict(np.zeros((2, 1, 28, 28), np.float32)); m.predict([[[[0.0] * 28] * 28]])\n"
            "bad = [name for name in ('dask', 'cupy', 'torch') if name in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_distributed_cluster_of_two_processes_equals_in_process(model):
    distributed = pytest.importorskip("distributed")
    x = _images(40)
    expected_proba, expected_ids = model.predict_proba(x, batch_size=7), model.predict(x, batch_size=7)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster, timeout=60) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        source = da.from_array(x, chunks=(10, 1, 28, 28))
        futures = client.compute([model.predict_proba(source, batch_size=7), model.predict(source, batch_size=7)])
        proba, ids = [f.result(timeout=120) for f in futures]
        pids = client.run(os.getpid)
        shipped = client.run(lambda: "portacnn.dask_inference" in sys.modules)
    assert len(set(pids.values()) | {os.getpid()}) == 3  # two worker processes besides this one
    assert list(shipped.values()) == [True, True]  # both received the model and ran chunks
    np.testing.assert_allclose(proba, expected_proba, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ids, expected_ids)


def test_dask_arrays_of_device_chunks_are_computed_then_copied(model):
    """Chunks that refuse numpy.asarray (array_api_strict on a second device, as CuPy's do) reach the model
    through the backend's host copy, never through numpy.asarray of the Dask array."""
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    x, y = _images(10), np.arange(10) % 10
    chunks = da.from_array(x, chunks=(5, 1, 28, 28)).map_blocks(lambda b: strict.asarray(b, device=dev),
                                                                dtype=x.dtype, meta=x[:0])
    assert model.evaluate(chunks, y, batch_size=5) == model.evaluate(x, y, batch_size=5)


def test_cached_worker_models_keep_no_activations(model):
    model.predict(da.from_array(_images(8), chunks=4)).compute(scheduler="sync")
    cached = [m for models in vars(dask_inference._LOCAL).values() for m in models.values()]
    assert cached
    for m in cached:
        assert all(not [k for k in vars(layer) if k.startswith("_")] for layer in m.layers)


@pytest.mark.parametrize("run", ["evaluate", "fit"])
@pytest.mark.parametrize("lie", sorted(set(LIES) - {"declared empty"}))  # an empty slice never computes its block
def test_evaluate_and_fit_refuse_blocks_computing_other_rows_than_declared(model, lie, run):
    """The loops that read a Dask array themselves (evaluate chunk by chunk, fit all at once) check what each block
    computed against its declared chunks, instead of blaming the labels or training on shifted rows."""
    declared, computed = LIES[lie]
    x = _images(sum(declared))
    y = np.arange(len(x)) % 10
    lazy = _lying(x, tuple(declared), computed)
    with pytest.raises(ValueError, match=r"x's Dask rows \d+:\d+ computed to shape \(\d+, 1, 28, 28\), not the "
                                         r"\(\d+, 1, 28, 28\) its chunks declare; fix the code that builds x"):
        if run == "evaluate":
            model.evaluate(lazy, y)
        else:
            model.fit(lazy, y, epochs=1, batch_size=4, progress=False)
    honest = _lying(x, tuple(declared))
    if run == "evaluate":  # the same blocks computing what they declare: the same result (to float rounding)
        got, want = model.evaluate(honest, y), model.evaluate(x, y)
        assert got["n"] == want["n"] and got["accuracy"] == want["accuracy"]
        assert abs(got["loss"] - want["loss"]) < 1e-6


def test_evaluate_refuses_a_block_of_another_dtype(model):
    with pytest.raises(ValueError, match=r"x's Dask rows 0:4 computed to dtype float64, not the float32 x declares"):
        model.evaluate(_lying(_images(8), 4, dtype=np.float64), np.zeros(8, int))


def test_fit_reads_a_dask_array_of_unknown_chunk_sizes_whole():
    x = _images(20)
    keep = np.ones(20, bool)
    keep[3] = False
    lazy = da.from_array(x, chunks=(7, 1, 28, 28))[da.from_array(keep, chunks=7)]
    assert any(c != c for c in lazy.shape)  # unknown chunk sizes (NaN)
    model = pc.Sequential([pc.layers.Flatten(), pc.layers.Dense(784, 10)], seed=0)
    model.fit(lazy, np.arange(19) % 10, epochs=1, batch_size=8, progress=False)


@pytest.mark.parametrize("layout", ["grey (N, H, W)", "channels-last", "channels-first"])
def test_raw_integer_dask_images_are_read_as_host_ones_are(layout):
    """Raw uint8 images in a Dask array, in any layout: fit reads them chunk by chunk (each chunk checked against
    the array's own layout, not the channels-first one the model reads), predict and predict_proba read them on
    the workers through the model's preprocessing (normalisation included), evaluate as host arrays."""
    from portacnn.preprocessing import Preprocessing

    rng = np.random.default_rng(3)
    channels = 1 if layout.startswith("grey") else 3
    shape = {"grey (N, H, W)": (20, 8, 8), "channels-last": (20, 8, 8, 3), "channels-first": (20, 3, 8, 8)}[layout]
    x, y = rng.integers(0, 256, shape, dtype=np.uint8), np.arange(20) % 3
    lazy = da.from_array(x, chunks=7)
    layers = [pc.layers.Conv2D(channels, 2, 3), pc.layers.ReLU(), pc.layers.Flatten(), pc.layers.Dense(72, 3)]
    model = pc.Sequential(layers, seed=0)
    model.preprocessing = Preprocessing.from_images(x, normalize=True)
    model.fit(lazy, y, epochs=1, batch_size=8, progress=False)
    np.testing.assert_array_equal(model.predict(lazy).compute(scheduler="sync"), model.predict(x))
    np.testing.assert_allclose(model.predict_proba(lazy).compute(scheduler="sync"), model.predict_proba(x),
                               rtol=1e-6, atol=1e-7)
    assert model.evaluate(lazy, y) == pytest.approx(model.evaluate(x, y), rel=1e-6)
