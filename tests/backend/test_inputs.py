"""Dtypes and arrays from every library that can be imported here, through every conversion path.

The CuPy backend once failed at its first call because ``numpy_dtype`` parsed ``str(numpy.float32)``; the
GPU tests were skipped and the CPU backends happened to pass dtypes whose ``str()`` contains a dot, so
nothing noticed. These tests need no GPU: they feed the dtype objects CuPy uses (NumPy scalar classes and
``np.dtype`` instances) to every backend, run a stand-in backend that treats every array the way CuPy's
does (host arrays always copied in, results always copied out), and use array_api_strict arrays on a second
device as the foreign device arrays that, like CuPy's, refuse ``numpy.asarray``.
"""

import importlib.util

import array_api_compat
import numpy as np
import pytest

import portacnn as pc
from conftest import assert_on_backend
from portacnn.backend import Backend, asarray_like, numpy_dtype, to_host

strict = pytest.importorskip("array_api_strict")
TORCH = importlib.util.find_spec("torch") is not None
DASK = importlib.util.find_spec("dask") is not None
needs_torch = pytest.mark.skipif(not TORCH, reason="torch is not installed")
needs_dask = pytest.mark.skipif(not DASK, reason="dask is not installed (pip install 'portacnn[dask]')")

DEVICE1 = strict.Device("device1")
STANDARD_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                   "float16", "float32", "float64", "complex64", "complex128")  # the array-API standard's


# -- dtype objects of every namespace -------------------------------------------------------------------
def _namespaces():
    """(id, module) of every array namespace importable here whose dtypes are attributes named like the
    standard's."""
    import array_api_compat.numpy as compat_numpy

    out = [("numpy", np), ("array_api_compat.numpy", compat_numpy), ("array_api_strict", strict)]
    if TORCH:
        import array_api_compat.torch as compat_torch
        import torch

        out += [("torch", torch), ("array_api_compat.torch", compat_torch)]
    if importlib.util.find_spec("cupy") is not None:
        try:
            import cupy

            out.append(("cupy", cupy))
        except Exception:  # a broken CUDA install: nothing to take dtypes from
            pass
    return out


NAMESPACES = _namespaces()
DTYPE_CASES = [pytest.param(ns, name, id=f"{nid}-{name}") for nid, ns in NAMESPACES for name in STANDARD_DTYPES
               if getattr(ns, name, None) is not None]


@pytest.mark.parametrize("ns, name", DTYPE_CASES)
def test_numpy_dtype_maps_every_namespace_dtype_object(ns, name):
    assert numpy_dtype(getattr(ns, name)) == np.dtype(name)


@pytest.mark.parametrize("name", ["float32", "float64", "int64", "uint8", "bool"])
def test_numpy_dtype_maps_every_spelling_numpy_cupy_and_dask_use(name):
    # cupy.float32 *is* numpy.float32 (a scalar class); CuPy and Dask arrays carry np.dtype instances
    spellings = [name, np.dtype(name), np.dtype(name).type, np.dtype(name).str, np.empty(0, name).dtype]
    if DASK:
        import dask.array as da

        spellings.append(da.zeros(3, dtype=name).dtype)
    for spelling in spellings:
        assert numpy_dtype(spelling) == np.dtype(name), spelling


def test_numpy_dtype_of_python_types_follows_numpy():
    assert numpy_dtype(float) == np.dtype("float64")
    assert numpy_dtype(int) == np.dtype(int)
    assert numpy_dtype(bool) == np.dtype(bool)


@pytest.mark.parametrize("bad", ["float32'>", "torch.float32", "no_such_dtype", None, 3, object(), [np.float32]])
def test_numpy_dtype_refuses_what_is_not_a_dtype(bad):
    with pytest.raises(ValueError) as info:
        numpy_dtype(bad)
    assert "\n" not in str(info.value)


def _spellings(name):
    """One dtype written the way each library writes it."""
    out = [name, np.dtype(name), np.dtype(name).type, getattr(strict, name)]
    if TORCH:
        import torch

        out.append(getattr(torch, name))
    return out


@pytest.mark.parametrize("name", ["float32", "float64", "int64"])
def test_backend_dtype_of_every_spelling_is_the_namespace_dtype(backend, name):
    for spelling in _spellings(name):
        got = backend.dtype(spelling)
        assert got == getattr(backend.xp, name), spelling
        x = backend.xp.zeros((2,), dtype=got, device=backend.device)
        assert_on_backend(backend, x, name)


# -- arrays of every library -------------------------------------------------------------------------
def _host():
    return (np.arange(24, dtype=np.float64).reshape(2, 3, 4) - 7.5) * 0.25


def _inputs():
    """(id, make) pairs: every kind of array a user may pass, each holding ``_host()``'s values."""
    cases = [
        ("numpy", lambda h: h),
        ("numpy-float32", lambda h: h.astype(np.float32)),
        ("numpy-negative-strides", lambda h: np.flip(h, axis=-1).copy()[..., ::-1]),
        ("numpy-non-contiguous", lambda h: np.repeat(h, 2, axis=-1)[..., ::2]),
        ("list", lambda h: h.tolist()),
        ("tuple", lambda h: tuple(map(tuple, (tuple(r) for r in h.tolist())))),
        ("strict-cpu", lambda h: strict.asarray(h)),
        ("strict-device1", lambda h: strict.asarray(h, device=DEVICE1)),
    ]
    if TORCH:
        import torch

        cases += [
            ("torch", lambda h: torch.from_numpy(h)),
            ("torch-requires-grad", lambda h: torch.from_numpy(h).requires_grad_(True)),
            ("torch-negative-view", lambda h: -torch.from_numpy(-h).neg().neg()),
        ]
    if DASK:
        import dask.array as da

        cases.append(("dask", lambda h: da.from_array(h, chunks=2)))
    return [pytest.param(make, id=i) for i, make in cases]


INPUTS = _inputs()


@pytest.mark.parametrize("make", INPUTS)
def test_to_host_reads_every_library(make):
    host = _host()
    got = to_host(make(host))
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, host.astype(got.dtype))


@pytest.mark.parametrize("make", INPUTS)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_backend_asarray_moves_every_library_with_every_dtype_spelling(backend, make, dtype_name):
    host = _host()
    for spelling in _spellings(dtype_name):
        x = backend.asarray(make(host), dtype=spelling)
        assert_on_backend(backend, x, dtype_name, shape=host.shape)
        np.testing.assert_array_equal(backend.to_numpy(x), host.astype(dtype_name))


@pytest.mark.parametrize("make", INPUTS)
def test_backend_asarray_without_dtype_keeps_the_values(backend, make):
    x = backend.asarray(make(_host()))
    assert array_api_compat.array_namespace(x) is not None
    np.testing.assert_array_equal(backend.to_numpy(x), _host())


def test_asarray_of_own_array_is_the_same_object(backend):
    x = backend.asarray(np.ones((2, 2), dtype=np.float32))
    assert backend.asarray(x) is x
    assert backend.asarray(x, dtype="float32") is x
    assert backend.asarray(x, dtype=np.float32) is x
    assert asarray_like(x, x) is x


def test_asarray_of_own_library_on_another_device_moves_it():
    be = pc.get_backend("array_api_strict")  # CPU_DEVICE
    x = be.asarray(strict.asarray(_host(), device=DEVICE1), dtype=np.float32)
    assert x.device == be.device and x.dtype == strict.float32


@pytest.mark.parametrize("make", INPUTS)
def test_asarray_like_follows_the_reference_backend_and_device(backend, make):
    ref = backend.xp.zeros((1,), dtype=backend.dtype("float64"), device=backend.device)
    x = asarray_like(make(_host()), ref)
    assert array_api_compat.device(x) == backend.device
    np.testing.assert_array_equal(backend.to_numpy(x), _host())


@pytest.mark.parametrize("bad, what", [
    ("abc", "strings"), (["1.0", "2.0"], "strings"), ([[1.0, 2.0], [3.0]], "cannot be read"),
    (np.array([object(), 1.0], dtype=object), "Python objects"), (np.array([1 + 2j]), "complex"),
    (np.array([True, False]), "bool"),
])  # fmt: skip
def test_asarray_refuses_what_is_not_real_numbers_in_one_line(backend, bad, what):
    with pytest.raises(ValueError) as info:
        backend.asarray(bad, dtype="float32", what="images")
    msg = str(info.value)
    assert msg.startswith("images ") and what in msg and "\n" not in msg, msg


def test_asarray_refuses_floats_as_integers():
    with pytest.raises(ValueError, match="labels has dtype float64; expected integers"):
        pc.get_backend("numpy").asarray([1.5, 2.0], dtype="int64", what="labels")


# -- the CuPy conventions, on the CPU ------------------------------------------------------------------
@pytest.fixture
def cupy_like():
    """A backend that treats arrays the way the CuPy backend does: it is never the home of a NumPy array,
    so every parameter, batch and mask is copied in through the host path with NumPy scalar classes as
    dtypes (``cupy.float32 is numpy.float32``) and read back through ``to_host``. On the code before the
    fix, building any model on it failed exactly as ``backend="cupy"`` did."""
    import array_api_compat.numpy as xp

    return Backend("cupy-conventions", xp, "cpu")


@pytest.mark.parametrize("dtype_spelling", ["float32", np.float32, np.dtype("float32"), "float64", np.float64])
def test_model_builds_trains_and_predicts_under_cupy_conventions(cupy_like, dtype_spelling):
    model = pc.models.seed_cnn(backend=cupy_like, dtype=dtype_spelling, seed=0, workers=1)
    name = numpy_dtype(dtype_spelling).name
    assert model.dtype == name
    reference = pc.models.seed_cnn(dtype=name, seed=0, workers=1)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, reference.state_dict()[key])
    rng = np.random.default_rng(0)
    x, y = rng.random((24, 1, 28, 28)).astype(name), rng.integers(0, 10, 24)
    for m in (model, reference):
        m.fit(x, y, epochs=1, batch_size=8, progress=False)
    np.testing.assert_array_equal(model.predict_proba(x), reference.predict_proba(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_raw_images_are_read_under_cupy_conventions_in_the_models_dtype(cupy_like, dtype):
    """What a CuPy model does with raw uint8 images, run on the host: the layout, scaling and per-channel
    normalisation happen on the model's side in its dtype (no float64 in a float32 model), and train and predict
    as on NumPy, bit for bit."""
    from portacnn.inputs import images
    from portacnn.preprocessing import Preprocessing

    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (16, 12, 12, 3), dtype=np.uint8)  # channels-last colour
    y = rng.integers(0, 10, 16)
    prep = Preprocessing.from_images(raw, normalize=True)
    models = [pc.models.seed_cnn(backend=b, dtype=dtype, seed=0, workers=1, input_shape=(3, 12, 12))
              for b in (cupy_like, None)]
    batch = None
    for m in models:
        m.preprocessing = prep
        batch = images(raw, m).rows(slice(0, 4)) if batch is None else batch
        m.fit(raw, y, epochs=1, batch_size=8, progress=False)
    assert batch.dtype == np.dtype(dtype) and batch.shape == (4, 3, 12, 12)
    np.testing.assert_allclose(batch, prep.to_model_input(raw[:4], dtype), rtol=0, atol=0)
    np.testing.assert_array_equal(models[0].predict_proba(raw), models[1].predict_proba(raw))


@pytest.mark.parametrize("dtype_spelling", [np.float32, np.dtype("float64"), "float32", "float64"])
def test_sequential_accepts_numpy_dtype_objects(backend, dtype_spelling):
    model = pc.models.lenet5(backend=backend, dtype=dtype_spelling, seed=0)
    name = numpy_dtype(dtype_spelling).name
    assert model.dtype == name
    for p in model.parameters():
        assert_on_backend(backend, p.data, name)
    model.to(backend, dtype=np.float64)
    assert model.dtype == "float64"


@pytest.mark.parametrize("bad", ["float16", np.int8, np.dtype("complex64"), "float32'>"])
def test_sequential_refuses_other_dtypes(bad):
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        pc.models.seed_cnn(dtype=bad)


# -- models fed from every library ----------------------------------------------------------------------
def _images(n=13, seed=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _image_inputs():
    """Every kind of image batch a user may pass (same values as the NumPy array)."""
    cases = [("list", lambda x: x.tolist()), ("strict-cpu", lambda x: strict.asarray(x)),
             ("strict-device1", lambda x: strict.asarray(x, device=DEVICE1)),
             ("numpy-negative-strides", lambda x: np.flip(x, axis=-1).copy()[..., ::-1])]
    if TORCH:
        import torch

        cases.append(("torch", lambda x: torch.from_numpy(x)))
    if DASK:
        import dask.array as da

        cases.append(("dask", lambda x: da.from_array(x, chunks=5)))
    return [pytest.param(make, id=i) for i, make in cases]


IMAGE_INPUTS = _image_inputs()


def _computed(a):
    return a.compute() if hasattr(a, "compute") else a


@pytest.mark.parametrize("make", IMAGE_INPUTS)
def test_predictions_from_any_library_equal_those_from_numpy(backend, make):
    model = pc.models.seed_cnn(backend=backend, seed=0)
    x, y = _images()
    expected_proba, expected = model.predict_proba(x, batch_size=5), model.predict(x, batch_size=5)
    source = make(x)
    proba = _computed(model.predict_proba(source, batch_size=5))
    if hasattr(source, "compute"):  # computed in a Dask worker thread on a rebuilt model: equal to rounding
        np.testing.assert_allclose(proba, expected_proba, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(proba, expected_proba)
    np.testing.assert_array_equal(_computed(model.predict(source, batch_size=5)), expected)
    np.testing.assert_array_equal(backend.to_numpy(model.forward(source)), backend.to_numpy(model.forward(x)))
    assert model.evaluate(source, make(y) if not isinstance(source, list) else y.tolist(), batch_size=5) == \
        model.evaluate(x, y, batch_size=5)


@pytest.mark.parametrize("make", IMAGE_INPUTS)
def test_fit_from_any_library_equals_fit_from_numpy(make):
    x, y = _images(24)
    models = [pc.models.seed_cnn(seed=0, workers=1) for _ in range(2)]
    models[0].fit(x, y, epochs=1, batch_size=8, progress=False, validation_data=(x, y))
    labels = y.tolist() if isinstance(make(x[:1]), list) else make(y)
    models[1].fit(make(x), labels, epochs=1, batch_size=8, progress=False, validation_data=(make(x), labels))
    for key, value in models[0].state_dict().items():
        np.testing.assert_array_equal(models[1].state_dict()[key], value)


def test_device_images_are_fetched_one_batch_at_a_time(monkeypatch):
    """A foreign device array (strict on device1, standing in for CuPy on a NumPy model) crosses one
    batch at a time: every transfer holds at most batch_size images."""
    from portacnn.backend import convert

    sizes = []
    real = convert.HOST_COPIES["array_api_strict"]

    def counting(x):
        sizes.append(int(x.shape[0]))
        return real(x)

    monkeypatch.setitem(convert.HOST_COPIES, "array_api_strict", counting)
    x, y = _images(20)
    model = pc.models.seed_cnn(seed=0, workers=1)
    model.predict(strict.asarray(x, device=DEVICE1), batch_size=8)
    assert sizes == [8, 8, 4]
    sizes.clear()
    model.fit(strict.asarray(x, device=DEVICE1), y, epochs=1, batch_size=8, shuffle=True, progress=False)
    assert sizes == [8, 8, 4]


@pytest.mark.parametrize("bad, what", [
    ("abc", "strings"), ([[[[0.1, 0.2]]], [[[0.3]]]], "cannot be read"),
    (np.zeros((2, 1, 28, 28), dtype=object), "Python objects"), (np.zeros((2, 1, 28, 28), complex), "complex"),
    (np.zeros((2, 1, 28, 28), bool), "bool"),
])  # fmt: skip
def test_forward_and_predict_refuse_non_images_naming_the_input(bad, what):
    model = pc.models.seed_cnn(seed=0)
    for call in (model.forward, model.predict, model.predict_proba):
        with pytest.raises(ValueError) as info:
            call(bad)
        msg = str(info.value)
        assert msg.startswith("x ") and "\n" not in msg, msg
    with pytest.raises(ValueError, match="^x "):
        model.fit(bad, [0, 1], epochs=1, progress=False)


def test_labels_from_any_library_and_bad_labels():
    model = pc.models.seed_cnn(seed=0)
    x, y = _images(6)
    expected = model.evaluate(x, y)
    assert model.evaluate(x, y.tolist()) == expected
    assert model.evaluate(x, strict.asarray(y, device=DEVICE1)) == expected
    with pytest.raises(ValueError, match="^y "):
        model.evaluate(x, ["a"] * 6)
    with pytest.raises(ValueError, match="^y must hold integer class ids"):
        model.evaluate(x, y.astype(np.float64))


# -- state dicts from every library --------------------------------------------------------------------
@pytest.mark.parametrize("make", INPUTS)
def test_load_state_dict_takes_every_library_and_copies(backend, make):
    model = pc.models.seed_cnn(backend=backend, seed=0)
    source = pc.models.seed_cnn(seed=1).state_dict()
    if isinstance(make(_host()), (list, tuple)):
        given = {k: v.tolist() for k, v in source.items()}
    else:
        given = {k: make(v.astype(np.float64)) for k, v in source.items()}
    model.load_state_dict(given)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, source[key])


def test_load_state_dict_never_aliases_the_callers_arrays():
    model = pc.models.seed_cnn(seed=0)
    state = pc.models.seed_cnn(seed=1).state_dict()
    kept = {k: v.copy() for k, v in state.items()}
    model.load_state_dict(state)
    x, y = _images(16)
    model.fit(x, y, epochs=1, batch_size=8, progress=False)
    for key, value in state.items():
        np.testing.assert_array_equal(value, kept[key])  # training did not write into the caller's dict
    state["0.weight"][...] = 0
    assert np.any(model.state_dict()["0.weight"] != 0)


def test_load_state_dict_refuses_non_numbers_naming_the_key():
    model = pc.models.seed_cnn(seed=0)
    state = {k: v.tolist() for k, v in model.state_dict().items()}
    state["4.bias"] = ["x"] * 60
    with pytest.raises(ValueError, match="state dict entry '4.bias'"):
        model.load_state_dict(state)


# -- the GPU itself (skipped without one) ---------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("make", [p for p in INPUTS if p.id != "dask"] + [pytest.param(None, id="cupy")])
def test_cupy_backend_takes_every_library(make):
    import cupy

    be = pc.get_backend("cupy")
    host = _host()
    source = cupy.asarray(host) if make is None else make(host)
    for spelling in _spellings("float32"):
        x = be.asarray(source, dtype=spelling)
        assert isinstance(x, cupy.ndarray) and x.dtype == np.float32
        np.testing.assert_array_equal(x.get(), host.astype(np.float32))
    model = pc.models.seed_cnn(backend="numpy", seed=0)
    x, _ = _images()
    np.testing.assert_array_equal(model.predict_proba(cupy.asarray(x)), model.predict_proba(x))


def test_on_host_tells_views_from_transfers():
    from portacnn.backend import on_host

    assert on_host(np.zeros(2)) and on_host([1.0, 2.0])
    assert not on_host(strict.asarray([1.0], device=DEVICE1))
    if TORCH:
        import torch

        assert on_host(torch.zeros(2))
