"""MaxPool2D on every backend: forward against float64 loops, first-max routing, finite differences."""

import numpy as np
import pytest

import oracles
from conftest import assert_close, assert_on_backend, single, to_numpy
from layerhelp import fd_check_layer, forward_np
from portacnn.layers import MaxPool2D


# ----------------------------------------------------------------------------------------------------
# MaxPool2D

POOL_CASES = [
    # N, C, H, W, kernel_size, stride, padding
    pytest.param(2, 2, 6, 6, 2, None, 0, id="k2"),
    pytest.param(2, 2, 7, 7, 2, None, 0, id="k2-odd"),
    pytest.param(2, 2, 7, 7, 3, 2, 0, id="k3s2"),
    pytest.param(2, 2, 7, 7, 3, 2, 1, id="k3s2p1"),
    pytest.param(2, 2, 8, 8, 3, 2, 1, id="k3s2p1-even"),
    pytest.param(1, 2, 7, 8, (2, 3), (2, 1), (1, 1), id="k2x3s2x1p1"),
    pytest.param(2, 1, 5, 5, 2, 1, 0, id="k2s1"),
    pytest.param(2, 2, 6, 6, 3, 3, 1, id="k3s3p1"),
]


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_maxpool_forward_matches_oracle(fast_paths, backend, dtype, rng, N, C, H, W, k, s, p):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    model = single(MaxPool2D(k, stride=s, padding=p), backend, dtype)
    expected = oracles.maxpool2d_forward(x, k, s, p)
    out, got = forward_np(model, backend, x, dtype)
    assert_on_backend(backend, out, dtype, shape=expected.shape)
    np.testing.assert_array_equal(got, expected)  # max selects: exact in any dtype


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_maxpool_all_negative_input_ignores_padding(backend, dtype, rng, N, C, H, W, k, s, p):
    x = (-10.0 - np.abs(rng.standard_normal((N, C, H, W)))).astype(dtype)
    model = single(MaxPool2D(k, stride=s, padding=p), backend, dtype)
    _, got = forward_np(model, backend, x, dtype)
    np.testing.assert_array_equal(got, oracles.maxpool2d_forward(x, k, s, p))
    assert np.all(got <= -10.0)


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_maxpool_backward_ties_go_to_first_max(fast_paths, backend, dtype, rng, N, C, H, W, k, s, p):
    # values from {0, 1, 2}: most windows hold ties; the gradient must go to the first maximum
    x = rng.integers(0, 3, size=(N, C, H, W)).astype(dtype)
    model = single(MaxPool2D(k, stride=s, padding=p), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    g = rng.standard_normal(tuple(out.shape)).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    assert_close(to_numpy(backend, dx), oracles.maxpool2d_backward(x, g, k, s, p), dtype)


def test_maxpool_tie_explicit(backend, dtype):
    # one 2x2 window of equal values (grad to top-left) and one with the max twice at (0,1),(1,0)
    x = np.array([[[[1.0, 1.0, 0.0, 3.0], [1.0, 1.0, 3.0, 2.0]]]], dtype=dtype)
    model = single(MaxPool2D(2), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    np.testing.assert_array_equal(to_numpy(backend, out), [[[[1.0, 3.0]]]])
    dx = to_numpy(backend, model.backward(backend.asarray(np.array([[[[5.0, 7.0]]]]), dtype=dtype)))
    np.testing.assert_array_equal(dx, [[[[5.0, 0.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0]]]])


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_maxpool_backward_finite_differences(fast_paths, backend, rng, N, C, H, W, k, s, p):
    # distinct values at least 1e-3 apart: no ties, finite differences well defined
    x = rng.permutation(N * C * H * W).reshape(N, C, H, W) * 1e-2 + rng.uniform(-1e-3, 1e-3, (N, C, H, W))
    model = single(MaxPool2D(k, stride=s, padding=p), backend, "float64")
    fd_check_layer(model, backend, x)
