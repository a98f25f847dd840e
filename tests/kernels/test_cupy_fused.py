"""CuPy's fused BatchNorm/ReLU kernels (portacnn.kernels.cupy_fused), checked on the CPU.

Each fused body is a plain array expression taking the namespace first: CuPy compiles ``body(cupy, ...)``
into one kernel, and here the same body runs on NumPy (which shares CuPy's conventions: dtypes, ``.astype``,
``where``), through the primitives the layers call, against the layers' portable math. On a machine with a GPU the layer tests
run the fused kernels themselves (backend ``cupy``)."""

import subprocess
import sys

import numpy as np
import pytest

import portacnn as pc
from portacnn.kernels import cupy_fused, registry
from portacnn.layers import BatchNorm1D, BatchNorm2D, ReLU


def test_registered_for_cupy_only():
    for name, fn in cupy_fused.PRIMITIVES.items():
        assert registry._FAST_PATHS[("cupy", name)][0][0] is fn
        assert all(entry[0] is not fn for key, entries in registry._FAST_PATHS.items() if key[0] != "cupy"
                   for entry in entries)


def test_importing_portacnn_does_not_import_cupy():
    out = subprocess.run([sys.executable, "-c", "import sys, portacnn; print('cupy' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _reference(layer_cls, x, dy, relu, monkeypatch):
    """The portable BatchNorm (then ReLU) forward and backward, on NumPy in float64."""
    monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    layers = [layer_cls(x.shape[1])] + ([ReLU()] if relu else [])
    model = pc.Sequential(layers, dtype="float64", seed=0)
    bn = model.layers[0]
    bn.weight.data = np.linspace(0.5, 1.5, x.shape[1])
    bn.bias.data = np.linspace(-0.2, 0.3, x.shape[1])
    y = model.forward(x.astype(np.float64), training=True)
    dx = model.backward(dy.astype(np.float64))
    monkeypatch.delenv("PORTACNN_PORTABLE")
    return y, dx, bn.weight.grad, bn.bias.grad, bn.weight.data, bn.bias.data


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("layer_cls, shape", [(BatchNorm2D, (4, 3, 5, 6)), (BatchNorm1D, (9, 5))])
def test_fused_batchnorm_equals_the_portable_layer(dtype, relu, layer_cls, shape, monkeypatch):
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 2 + 0.3
    dy = rng.standard_normal(shape)
    y_ref, dx_ref, dw_ref, db_ref, w, b = _reference(layer_cls, x, dy, relu, monkeypatch)
    dt = getattr(xp, dtype)
    arr = lambda a: xp.asarray(np.asarray(a), dtype=dt)  # noqa: E731
    fwd = cupy_fused.batchnorm_forward_train_relu if relu else cupy_fused.batchnorm_forward_train
    y, mean, var, saved = fwd(arr(x), arr(w), arr(b), 1e-5)
    dx, dw, db = cupy_fused.batchnorm_backward_train(saved, arr(w), arr(dy), True)
    for got in (y, mean, var, dx, dw, db):
        assert got.dtype == dt  # float32 stays float32: no float64 on the GPU
    tol = 2e-5 if dtype == "float32" else 1e-11
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    np.testing.assert_allclose(np.asarray(mean), x.mean(axis=axes), rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(var), x.var(axis=axes), rtol=tol, atol=tol)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol * np.abs(want).max())
    assert cupy_fused.batchnorm_backward_train(saved, arr(w), arr(dy), False)[0] is None


def test_fused_relu_bodies_keep_the_portable_edge_cases():
    import array_api_compat.numpy as xp

    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -2.0, 3.0], dtype=np.float32)
    y = cupy_fused.relu_forward(xp.asarray(x))
    np.testing.assert_array_equal(y, [np.nan, 0, np.inf, 0, 0, 0, 3.0])
    dy = np.full_like(x, 2.0)
    np.testing.assert_array_equal(cupy_fused.relu_backward(y, dy), [2, 0, 2, 0, 0, 0, 2])
    assert y.dtype == np.float32


def test_a_cupy_namespace_gets_each_body_fused_once(monkeypatch):
    """The dispatch that only a GPU would otherwise reach: for a namespace named cupy, ``_on`` compiles the body
    bound to the ``cupy`` module through ``cupy.fuse`` (once, then cached) and calls the fused function. A stand-in
    ``cupy`` module (NumPy's functions plus a recording ``fuse``) takes CuPy's place."""
    import types

    fused = []
    fake = types.ModuleType("cupy")
    for name in ("where", "zeros_like", "logical_not"):
        setattr(fake, name, getattr(np, name))

    def fuse(fn):
        fused.append(fn)
        return lambda *args: ("fused", fn(*args))

    fake.fuse = fuse
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupy_fused._fused.cache_clear()
    try:
        x = np.array([-1.0, 0.0, 2.0, np.nan], dtype=np.float32)
        f = cupy_fused._on(fake, cupy_fused.relu_body)
        tag, y = f(x)
        assert tag == "fused" and y.dtype == np.float32
        np.testing.assert_array_equal(y, [0, 0, 2.0, np.nan])
        assert cupy_fused._on(fake, cupy_fused.relu_body) is f and len(fused) == 1  # compiled once
        assert fused[0].func is cupy_fused.relu_body and fused[0].args == (fake,)  # bound to the cupy module
        import array_api_compat.numpy as xp

        assert cupy_fused._on(xp, cupy_fused.relu_body)(x)[0] == 0  # any other namespace: the plain body
    finally:
        cupy_fused._fused.cache_clear()
