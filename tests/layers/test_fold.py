"""Inference with BatchNorm folded into the convolution before it (portacnn.layers.fold): the same logits as
``forward(x, training=False)`` on every backend, with the fast paths on and off, the trained state untouched."""

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close, randomize_batchnorm, to_numpy
from portacnn.layers import BatchNorm2D, Conv2D, MaxPool2D, ReLU, Residual
from portacnn.layers.fold import folded


def _model(backend, dtype):
    layers = [Conv2D(3, 32, 3, padding=1, bias=False), BatchNorm2D(32), ReLU(), MaxPool2D(2),
              Residual([Conv2D(32, 32, 3, padding=1), BatchNorm2D(32, affine=False), ReLU(), Conv2D(32, 32, 1)],
                       shortcut=[Conv2D(32, 32, 1, bias=False), BatchNorm2D(32)]),
              ReLU(), Conv2D(32, 4, 3), BatchNorm2D(4)]
    return randomize_batchnorm(pc.Sequential(layers, backend=backend, dtype=dtype, seed=3))


def test_infer_equals_forward_in_inference(backend, dtype, fast_paths):
    model = _model(backend, dtype)
    x = backend.asarray(np.random.default_rng(0).standard_normal((5, 3, 12, 10)), dtype=dtype)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    want = to_numpy(backend, model.forward(x, training=False))
    got = model.infer(x)
    assert got.dtype == x.dtype and tuple(got.shape) == want.shape
    assert_close(to_numpy(backend, got), want, dtype, rtol=1e-5 if dtype == "float32" else 1e-12)
    for k, v in model.state_dict().items():  # folding never writes the trained parameters or buffers
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_folded_weights_are_the_formula():
    model = _model("numpy", "float64")
    conv, bn = model.layers[0], model.layers[1]
    w, b = folded(conv, bn)
    s = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(w, conv.weight.data * s[:, None, None, None], rtol=1e-15)
    np.testing.assert_allclose(b, bn.bias.data - bn.running_mean * s, rtol=1e-15)


def test_predict_and_evaluate_run_the_folded_pass(monkeypatch):
    model = _model("numpy", "float32")
    x = np.random.default_rng(1).standard_normal((7, 3, 12, 10)).astype(np.float32)
    calls = []
    real = model.infer
    monkeypatch.setattr(model, "infer", lambda xb: calls.append(len(xb)) or real(xb))
    model.predict_proba(x, batch_size=4)
    assert calls == [4, 3]
    with pytest.raises(RuntimeError, match="needs a successful forward"):
        model.backward(np.zeros((7, 4, 4, 3), np.float32))  # inference keeps nothing to back-propagate
