"""Dropout: identity at inference, mask and scale while training, seeded draws equal on every backend."""

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close, assert_on_backend, single, to_numpy
from portacnn.layers import Dropout


# ----------------------------------------------------------------------------------------------------
# Dropout


def test_dropout_eval_is_identity(backend, dtype, rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    model = single(Dropout(0.5), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=False)
    assert_on_backend(backend, out, dtype, shape=x.shape)
    np.testing.assert_array_equal(to_numpy(backend, out), x)


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_dropout_training_mask_and_scale(backend, dtype, rng, p):
    x = (rng.uniform(0.5, 1.5, size=(40, 5, 10, 10)) * rng.choice([-1, 1], size=(40, 5, 10, 10))).astype(dtype)
    model = single(Dropout(p), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    assert_on_backend(backend, out, dtype, shape=x.shape)
    y = to_numpy(backend, out)
    kept = y != 0
    frac_dropped = 1.0 - kept.mean()
    # 20000 Bernoulli(p) draws: std <= 0.0036, so 0.02 is > 5 sigma
    assert abs(frac_dropped - p) < 0.02, frac_dropped
    scale = np.asarray(1.0 / (1.0 - p), dtype=np.float64)
    assert_close(y[kept], x[kept].astype(np.float64) * scale, dtype)

    g = rng.standard_normal(x.shape).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    dx = to_numpy(backend, dx)
    np.testing.assert_array_equal(dx[~kept], 0)  # same mask as the forward pass
    assert_close(dx[kept], g[kept].astype(np.float64) * scale, dtype)


def test_dropout_masks_differ_between_calls(backend):
    x = np.ones((8, 100), dtype=np.float32)
    model = single(Dropout(0.5), backend, "float32")
    a = to_numpy(backend, model.forward(backend.asarray(x), training=True)) != 0
    b = to_numpy(backend, model.forward(backend.asarray(x), training=True)) != 0
    assert not np.array_equal(a, b)


def test_dropout_same_seed_same_mask_across_backends(backend):
    x = np.ones((8, 100), dtype=np.float32)
    ref = single(Dropout(0.5), pc.get_backend("numpy"), "float32", seed=3)
    got = single(Dropout(0.5), backend, "float32", seed=3)
    a = np.asarray(pc.get_backend("numpy").to_numpy(ref.forward(x, training=True)))
    b = to_numpy(backend, got.forward(backend.asarray(x), training=True))
    np.testing.assert_array_equal(a, b)
