"""Helpers shared by the layer tests: the one-layer finite-difference check (NumPy float64) and the
comparison of other backends with NumPy's gradients."""

import numpy as np

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, to_numpy

FD_RTOL = 1e-6  # central differences (eps=1e-6) of piecewise-linear maps in float64: error ~1e-9


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def forward_np(model, backend, x, dtype, training=False):
    out = model.forward(backend.asarray(x, dtype=dtype), training=training)
    return out, to_numpy(backend, out)


def fd_check_layer(model, backend, x, weights=None, seed=0):
    """Check d/d(input) and d/d(every parameter) of L = sum(out * R): against central finite differences on
    the NumPy backend, and against the NumPy backend's analytic gradients on every other backend (the
    finite differences run once, in float64, where they are cheap; as Chainer's backend-injected tests do).

    ``model`` is a float64 one-layer Sequential; ``weights`` the dict loaded into it (or None)."""
    rng = np.random.default_rng(seed)
    out = model.forward(backend.asarray(x, dtype="float64"), training=True)
    R = rng.standard_normal(tuple(out.shape))
    dx = model.backward(backend.asarray(R, dtype="float64"))
    assert_on_backend(backend, dx, "float64", shape=x.shape)
    dx = np.array(to_numpy(backend, dx), copy=True)
    grads = {p.name: np.array(to_numpy(backend, p.grad), copy=True) for p in model.parameters()}
    if backend.name != "numpy":
        twin = pc.Sequential.from_architecture(model.architecture(), backend="numpy", dtype="float64", workers=1)
        twin.load_state_dict(model.state_dict())
        twin.forward(x, training=True)
        assert_close(dx, twin.backward(R), "float64", err_msg="input gradient vs the NumPy backend")
        for p in twin.parameters():
            assert_close(grads[p.name], p.grad, "float64", err_msg=f"gradient of {p.name} vs the NumPy backend")
        return

    def loss_of_x(xv):
        return np.sum(to_numpy(backend, model.forward(backend.asarray(xv, dtype="float64"), training=True)) * R)

    num_dx = oracles.numeric_grad(loss_of_x, x)
    assert_close(dx, num_dx, rtol=FD_RTOL, err_msg="input gradient")

    weights = dict(weights or {})
    for name in list(weights):

        def loss_of_param(v, name=name):
            model.load_state_dict({f"0.{k}": (v if k == name else weights[k]) for k in weights})
            return loss_of_x(x)

        num = oracles.numeric_grad(loss_of_param, weights[name])
        assert_close(grads[f"0.{name}"], num, rtol=FD_RTOL, err_msg=f"gradient of 0.{name}")
    model.load_state_dict({f"0.{k}": v for k, v in weights.items()})
