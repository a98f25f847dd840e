"""JAX's fast paths (portacnn.kernels.jax_fast) against the portable code on JAX (``PORTACNN_PORTABLE=1``) and
float64 NumPy references: BatchNorm forward and backward, Adam/AdamW steps, and whole networks. Convolution and
max pooling run the layer suites on jax with the fast paths on and off (tests/layers, ``fast_paths`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import portacnn as pc  # noqa: E402
from conftest import assert_close  # noqa: E402
from portacnn.kernels import fast_path, jax_fast  # noqa: E402
from portacnn.layers import BatchNorm1D, BatchNorm2D, Parameter  # noqa: E402

pytestmark = pytest.mark.slow  # JAX compiles each shape: the full run (CI) takes them, the fast loop does not

DTYPES = ["float32", "float64"]


def _portable(monkeypatch, on: bool):
    if on:
        monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    else:
        monkeypatch.delenv("PORTACNN_PORTABLE", raising=False)


def _bn_reference(x, w, b, g, eps):
    """float64 training-mode batch norm and its gradients, written out."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = xhat * w.reshape(shape) + b.reshape(shape)
    m = x.size // x.shape[1]
    db, dw = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    dx = (w / np.sqrt(var + eps)).reshape(shape) / m * (m * g - db.reshape(shape) - xhat * dw.reshape(shape))
    return y, mean, var, dx, dw, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer, shape", [(BatchNorm2D, (6, 3, 5, 4)), (BatchNorm1D, (7, 5))])
def test_batchnorm_fast_path_is_the_portable_math(monkeypatch, dtype, layer, shape):
    be = pc.get_backend("jax")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 3 + 1
    g = rng.standard_normal(shape)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    y_ref, mean_ref, var_ref, dx_ref, dw_ref, db_ref = _bn_reference(x, w, b, g, 1e-5)
    results = []
    for portable in (False, True):
        _portable(monkeypatch, portable)
        assert (fast_path(be.asarray(x, dtype=dtype), "batchnorm_forward_train") is None) == portable
        model = pc.Sequential([layer(shape[1])], input_shape=shape[1:], backend=be, dtype=dtype)
        model.load_state_dict({**model.state_dict(), "0.weight": w, "0.bias": b})
        y = model.forward(be.asarray(x, dtype=dtype), training=True)
        dx = model.backward(be.asarray(g, dtype=dtype))
        bn = model.layers[0]
        results.append([y, dx, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var])
    n = shape[0] * int(np.prod(shape[2:]))
    expected = [y_ref, dx_ref, dw_ref, db_ref, 0.9 * 0 + 0.1 * mean_ref, 0.9 + 0.1 * var_ref * n / (n - 1)]
    for what, fast, portable, want in zip(["y", "dx", "dw", "db", "running_mean", "running_var"], *results, expected):
        assert fast.dtype == getattr(jax.numpy, dtype), what
        assert_close(np.asarray(fast), want, dtype, err_msg=f"fast {what}")
        assert_close(np.asarray(portable), want, dtype, err_msg=f"portable {what}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, weight_decay", [("Adam", 0.0), ("Adam", 0.05), ("AdamW", 0.05)])
def test_adam_fast_path_is_the_portable_update(monkeypatch, dtype, cls, weight_decay):
    """Five steps with a rate that changes every step: the compiled update ends where the portable one ends (to
    rounding: XLA may fuse the operations), and the changing rate and bias corrections compile nothing new."""
    compiled_update = jax_fast._adam()
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs["mode"])
        return compiled_update(*args, **kwargs)

    monkeypatch.setattr(jax_fast, "_adam", lambda: counted)
    results = []
    for portable in (False, True):
        _portable(monkeypatch, portable)
        rng = np.random.default_rng(5)
        be = pc.get_backend("jax")
        params = [Parameter("w", be.asarray(rng.standard_normal((7, 5)), dtype=dtype)),
                  Parameter("b", be.asarray(rng.standard_normal(9), dtype=dtype))]
        opt = getattr(pc.optim, cls)(params, lr=3e-3, weight_decay=weight_decay)
        for step in range(5):
            opt.param_groups[0]["lr"] = 3e-3 / (step + 1)
            for p in params:
                p.grad = be.asarray(rng.standard_normal(tuple(p.data.shape)) * (step + 1), dtype=dtype)
            opt.step()
            if not portable and step == 0:
                compiled = compiled_update._cache_size()
        if not portable:
            assert compiled_update._cache_size() == compiled  # steps 2..5 compiled nothing new
            assert len(calls) == 10  # the compiled update ran: 5 steps x 2 parameters
        else:
            assert len(calls) == 10  # and the portable run did not call it
        results.append([p.data for p in params] + [s for st in opt.state.values() for s in st.values()])
    for fast, portable in zip(*results):
        assert fast.dtype == portable.dtype == getattr(jax.numpy, dtype)
        assert_close(np.asarray(fast), np.asarray(portable), dtype, rtol=1e-6 if dtype == "float32" else 1e-13)


@pytest.mark.parametrize("make", [pc.models.seed_cnn, pc.models.lenet5, pc.models.kannada_bn])
def test_networks_on_jax_give_the_same_results_with_and_without_fast_paths(monkeypatch, make):
    """Logits, input gradient and every parameter gradient in float64, then the weights after two Adam steps."""
    rng = np.random.default_rng(1)
    x, y = rng.random((6, 1, 28, 28)), rng.integers(0, 10, 6)
    results = []
    for portable in (False, True):
        _portable(monkeypatch, portable)
        model = make(backend="jax", seed=0, dtype="float64")
        opt = pc.optim.Adam(model.parameters())
        for _ in range(2):
            logits = model.forward(x, training=True)
            _, d = pc.losses.softmax_cross_entropy(logits, y)
            dx = model.backward(d)
            grads = [p.grad for p in model.parameters()]
            opt.step()
        results.append([logits, dx, *grads, *(p.data for p in model.parameters())])
    for fast, reference in zip(*results):
        assert_close(np.asarray(fast), np.asarray(reference), "float64", rtol=1e-9)
