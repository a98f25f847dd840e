"""ReLU, Flatten and Dense on every backend against oracles and finite differences."""

import numpy as np

from conftest import assert_close, assert_on_backend, single, to_numpy
from layerhelp import fd_check_layer, forward_np
from portacnn.layers import Dense, Flatten, ReLU


# ----------------------------------------------------------------------------------------------------
# ReLU, Flatten, Dense


def test_relu_forward_backward(backend, dtype, rng):
    x = rng.standard_normal((3, 2, 4, 5)).astype(dtype)
    x[0, 0, 0, :3] = 0.0  # exact zeros: gradient 0 there, as PyTorch
    model = single(ReLU(), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    assert_on_backend(backend, out, dtype, shape=x.shape)
    np.testing.assert_array_equal(to_numpy(backend, out), np.maximum(x, 0))
    g = rng.standard_normal(x.shape).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    np.testing.assert_array_equal(to_numpy(backend, dx), np.where(x > 0, g, 0).astype(dtype))


def test_relu_on_2d_input(backend, dtype, rng):
    x = rng.standard_normal((4, 7)).astype(dtype)
    model = single(ReLU(), backend, dtype)
    _, got = forward_np(model, backend, x, dtype)
    np.testing.assert_array_equal(got, np.maximum(x, 0))


def test_relu_finite_differences(backend, rng):
    x = rng.standard_normal((2, 2, 3, 3))
    x = np.where(np.abs(x) < 1e-2, 0.5, x)  # keep away from the kink
    fd_check_layer(single(ReLU(), backend, "float64"), backend, x)


def test_flatten_forward_backward(backend, dtype, rng):
    x = rng.standard_normal((3, 2, 4, 5)).astype(dtype)
    model = single(Flatten(), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    assert_on_backend(backend, out, dtype, shape=(3, 40))
    np.testing.assert_array_equal(to_numpy(backend, out), x.reshape(3, -1))  # C, H, W order
    g = rng.standard_normal((3, 40)).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    np.testing.assert_array_equal(to_numpy(backend, dx), g.reshape(x.shape))


def dense_data(rng, n, fin, fout, dtype="float64"):
    x = rng.standard_normal((n, fin)).astype(dtype)
    w = (rng.standard_normal((fout, fin)) * 0.5).astype(dtype)
    b = rng.standard_normal(fout).astype(dtype)
    return x, w, b


def test_dense_forward_matches_oracle(backend, dtype, rng):
    x, w, b = dense_data(rng, 5, 7, 4, dtype)
    model = single(Dense(7, 4), backend, dtype, {"weight": w, "bias": b})
    out, got = forward_np(model, backend, x, dtype)
    assert_on_backend(backend, out, dtype, shape=(5, 4))
    expected = x.astype(np.float64) @ w.astype(np.float64).T + b
    assert_close(got, expected, dtype)


def test_dense_without_bias(backend, dtype, rng):
    x, w, _ = dense_data(rng, 3, 6, 2, dtype)
    model = single(Dense(6, 2, bias=False), backend, dtype, {"weight": w})
    assert list(model.state_dict()) == ["0.weight"]
    _, got = forward_np(model, backend, x, dtype)
    assert_close(got, x.astype(np.float64) @ w.astype(np.float64).T, dtype)


def test_dense_finite_differences(backend, rng):
    x, w, b = dense_data(rng, 4, 6, 3)
    weights = {"weight": w, "bias": b}
    fd_check_layer(single(Dense(6, 3), backend, "float64", weights), backend, x, weights)


def test_dense_backward_closed_form(backend, dtype, rng):
    x, w, b = dense_data(rng, 5, 7, 4, dtype)
    model = single(Dense(7, 4), backend, dtype, {"weight": w, "bias": b})
    model.forward(backend.asarray(x, dtype=dtype), training=True)
    g = rng.standard_normal((5, 4)).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    assert_close(to_numpy(backend, dx), g64 @ w64, dtype)
    grads = {p.name: p.grad for p in model.parameters()}
    for name, expected in (("0.weight", g64.T @ x64), ("0.bias", g64.sum(0))):
        assert_on_backend(backend, grads[name], dtype, shape=expected.shape)
        assert_close(to_numpy(backend, grads[name]), expected, dtype, err_msg=name)
