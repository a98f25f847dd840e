"""LeakyReLU, Sigmoid and Tanh on every backend: forward against torch and NumPy float64 references,
backward against the references and finite differences, edge values (NaN, +-inf, 0) as torch."""

import numpy as np
import pytest

from conftest import TORCH_IMPORTABLE, assert_close, assert_on_backend, single, to_numpy
from layerhelp import fd_check_layer, forward_np
from portacnn.layers import LeakyReLU, Sigmoid, Tanh

needs_torch = pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed")


# NumPy float64 references: (forward, d out / d in) of x
def _leaky(slope):
    return (lambda x: np.where(x > 0, x, slope * x)), (lambda x: np.where(x > 0, 1.0, slope))


def _sigmoid_ref(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


REFS = {
    "leaky": (lambda: LeakyReLU(), *_leaky(0.01)),
    "leaky-0.2": (lambda: LeakyReLU(0.2), *_leaky(0.2)),
    "leaky-neg": (lambda: LeakyReLU(-0.5), *_leaky(-0.5)),
    "sigmoid": (Sigmoid, _sigmoid_ref, lambda x: _sigmoid_ref(x) * (1 - _sigmoid_ref(x))),
    "tanh": (Tanh, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
}


def _torch_module(layer):
    from torch import nn

    if isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    return nn.Sigmoid() if isinstance(layer, Sigmoid) else nn.Tanh()


def _torch_forward_backward(layer, x, g):
    import torch

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = _torch_module(layer)(xt)
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("name", list(REFS))
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (4, 7)], ids=["4d", "2d"])
def test_forward_backward_match_numpy_reference(backend, dtype, rng, name, shape):
    make, fwd, deriv = REFS[name]
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    x.flat[:3] = 0.0  # exact zeros: the kink of LeakyReLU takes the negative side, as torch
    model = single(make(), backend, dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    assert_on_backend(backend, out, dtype, shape=shape)
    x64 = x.astype(np.float64)
    assert_close(to_numpy(backend, out), fwd(x64), dtype)
    g = rng.standard_normal(shape).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=shape)
    assert_close(to_numpy(backend, dx), g.astype(np.float64) * deriv(x64), dtype)


@needs_torch
@pytest.mark.parametrize("name", list(REFS))
def test_forward_backward_match_torch(backend, rng, name):
    make, _, _ = REFS[name]
    x = 4 * rng.standard_normal((2, 3, 4, 4))
    x.flat[:2] = 0.0
    g = rng.standard_normal(x.shape)
    layer = make()
    model = single(layer, backend, "float64")
    _, got = forward_np(model, backend, x, "float64", training=True)
    dx = to_numpy(backend, model.backward(backend.asarray(g, dtype="float64")))
    ty, tdx = _torch_forward_backward(layer, x, g)
    assert_close(got, ty, "float64")
    assert_close(dx, tdx, "float64")


@needs_torch
@pytest.mark.parametrize("name", list(REFS))
def test_edge_values_match_torch(backend, dtype, name):
    make, _, _ = REFS[name]
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 800.0, -800.0, 1e-30]], dtype=dtype)
    g = np.ones_like(x)
    layer = make()
    model = single(layer, backend, dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no such warnings on NumPy
        out = to_numpy(backend, model.forward(backend.asarray(x, dtype=dtype), training=True))
        dx = to_numpy(backend, model.backward(backend.asarray(g, dtype=dtype)))
    import torch

    xt = torch.tensor(x, requires_grad=True)
    y = _torch_module(layer).to(xt.dtype)(xt)
    y.backward(torch.tensor(g))
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-6, atol=0)  # NaN where torch has NaN
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-37)


@pytest.mark.parametrize("name", list(REFS))
def test_finite_differences(backend, rng, name):
    make, _, _ = REFS[name]
    x = rng.standard_normal((2, 2, 3, 3))
    x = np.where(np.abs(x) < 1e-2, 0.5, x)  # keep away from LeakyReLU's kink
    fd_check_layer(single(make(), backend, "float64"), backend, x)


@pytest.mark.parametrize("make", [LeakyReLU, Sigmoid, Tanh])
def test_contract(make):
    layer = make()
    assert layer.output_shape((3, 5, 7)) == (3, 5, 7) and layer.output_shape((9,)) == (9,)
    assert layer.row_separable and not layer.draws_random and layer.parameters() == [] and layer.buffers() == {}
    assert layer.input_channels is None and layer.out_features is None
    x = np.ones((2, 3), dtype=np.float32)
    layer.forward(x, training=True)
    twin = layer.replica()
    assert type(twin) is type(layer) and twin.config() == layer.config()
    layer.release()
    assert not [k for k in vars(layer) if k.startswith("_")]
    assert type(make(**layer.config())) is make


def test_leaky_relu_config_and_default():
    assert LeakyReLU().config() == {"negative_slope": 0.01}
    assert LeakyReLU(1).config() == {"negative_slope": 1.0}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1", None, True, [0.1]])
def test_leaky_relu_rejects_bad_slope(bad):
    with pytest.raises(ValueError, match="negative_slope"):
        LeakyReLU(bad)
