"""torch's fast paths (portacnn.kernels.torch_fast) against independent float64 NumPy references of each
primitive's contract: conv2d, training-mode batch norm, ReLU and max pooling, forward and backward."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import portacnn as pc  # noqa: E402
from portacnn import kernels  # noqa: E402
from portacnn.kernels import torch_fast  # noqa: E402

DTYPES = ["float32", "float64"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PRIMITIVES = ["conv2d_forward", "conv2d_backward", "batchnorm_forward_train", "batchnorm_backward_train",
              "relu_forward", "relu_backward", "maxpool2d_forward", "maxpool2d_backward"]


def _t(a, dtype, dev="cpu"):
    return torch.as_tensor(np.asarray(a), dtype=getattr(torch, dtype), device=dev)


def _np(t):
    return t.detach().cpu().numpy().astype(np.float64)


def _close(got, want, dtype, what, scale=None):
    """Equal to rounding: 1e-5 (float32) or 1e-10 (float64) relative, with an absolute floor that much of
    ``scale``, by default the largest value (sums with cancellation lose relative digits on their small
    elements, not on the size of the terms they sum)."""
    tol = 1e-5 if dtype == "float32" else 1e-10
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if scale is None:
        scale = max(float(np.max(np.abs(want))), 1e-30) if want.size else 1.0
    np.testing.assert_allclose(_np(got), want, rtol=tol, atol=tol * scale, err_msg=what)


def _check_tensor(t, like, shape=None):
    assert isinstance(t, torch.Tensor)
    assert t.dtype == like.dtype and t.device == like.device
    if shape is not None:
        assert tuple(t.shape) == tuple(shape)


# --- references (float64 NumPy, straight from the contracts) --------------------------------------------------


def _taps(start, step, count):
    return slice(start, start + step * (count - 1) + 1, step)


def _conv_out_hw(hw, kernel, stride, padding, dilation):
    return tuple((n + p[0] + p[1] - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(hw, kernel, stride, padding, dilation))


def ref_conv(x, w, b, stride, padding, dilation, dy):
    """y, dx, dw, db of y[n,o,r,s] = b[o] + sum W[o,c,i,j] * xpad[n, c, r*sh + i*dh, s*sw + j*dw]."""
    (n, c, h, wd), (o, _, kh, kw) = x.shape, w.shape
    ho, wo = _conv_out_hw((h, wd), (kh, kw), stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), padding[0], padding[1]))
    y = np.zeros((n, o, ho, wo))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None), _taps(i * dilation[0], stride[0], ho),
                  _taps(j * dilation[1], stride[1], wo))
            patch = xp[sl]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, patch)
            dxp[sl] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    (pt, _), (pl, _) = padding
    return y, dxp[:, :, pt : pt + h, pl : pl + wd], dw, dy.sum(axis=(0, 2, 3))


def ref_batchnorm(x, w, b, eps, dy):
    """y, mean, biased var, dx, dw, db of training-mode batch norm (statistics over every axis but 1)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    wv = np.ones(x.shape[1]) if w is None else w
    y = xhat * wv.reshape(shape) + (0.0 if b is None else b.reshape(shape))
    db, dw = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    dx = (wv * invstd / m).reshape(shape) * (m * dy - db.reshape(shape) - xhat * dw.reshape(shape))
    return y, mean, var, dx, dw, db


def ref_maxpool(x, kernel, stride, padding, dy):
    """y and dx of max pooling over a -inf padded input; each output's gradient goes to the FIRST real input of
    its window (row by row) equal to its maximum."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    real = np.pad(np.ones((h, wd), bool), ((ph, ph), (pw, pw)))
    sls = [(i, j, (slice(None), slice(None), _taps(i, sh, ho), _taps(j, sw, wo))) for i in range(kh) for j in range(kw)]
    y = np.max([xp[sl] for _, _, sl in sls], axis=0)
    dxp, rest = np.zeros_like(xp), dy.copy()
    for i, j, sl in sls:
        hit = (xp[sl] == y) & real[sl[2:]]
        dxp[sl] += np.where(hit, rest, 0.0)
        rest = np.where(hit, 0.0, rest)
    return y, dxp[:, :, ph : ph + h, pw : pw + wd]


# --- registration --------------------------------------------------------------------------------------------


def test_fast_path_returns_the_torch_kernels():
    x = torch.zeros(1)
    for name in PRIMITIVES:
        assert kernels.fast_path(x, name) is getattr(torch_fast, name), name
    for name in PRIMITIVES:  # no other backend gets torch's kernels (conv.py's stays registered for them)
        assert kernels.fast_path(np.zeros(1, np.float32), name) is not getattr(torch_fast, name), name
    assert kernels.fast_path(np.zeros(1, np.float32), "conv2d_forward") is not None


def test_portable_switch_turns_the_torch_kernels_off(monkeypatch):
    monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    for name in PRIMITIVES:
        assert kernels.fast_path(torch.zeros(1), name) is None


def test_importing_the_module_does_not_import_torch():
    code = "import sys, portacnn, portacnn.kernels.torch_fast; sys.exit(3 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- convolution ---------------------------------------------------------------------------------------------

CONV_GEOMETRIES = [  # (N, C, H, W, O, kernel, stride, padding ((top, bottom), (left, right)), dilation)
    (3, 1, 28, 28, 4, (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 6, 14, 14, 8, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    (2, 32, 10, 10, 33, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    (2, 3, 11, 9, 5, (3, 2), (2, 3), ((1, 1), (0, 0)), (1, 1)),
    (1, 4, 7, 7, 3, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 2, 9, 12, 3, (4, 3), (3, 2), ((1, 1), (1, 1)), (1, 1)),
    (2, 3, 12, 11, 4, (3, 3), (1, 1), ((0, 0), (0, 0)), (2, 2)),  # dilated
    (2, 4, 13, 10, 6, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 3)),  # dilated, strided, asymmetric padding
    (1, 2, 8, 9, 3, (4, 4), (1, 1), ((1, 2), (1, 2)), (1, 1)),  # "same" for an even window
    (2, 5, 9, 9, 2, (2, 3), (1, 1), ((1, 2), (2, 2)), (3, 2)),  # "same", dilated: (1, 2) = 3*(2-1) split
    (2, 3, 7, 8, 4, (2, 2), (1, 1), ((1, 0), (0, 1)), (1, 1)),  # more padding at the top than the bottom
    (1, 3, 7, 6, 2, (1, 1), (1, 1), ((0, 0), (0, 0)), (3, 2)),  # 1x1: dilation changes nothing
    (2, 3, 5, 5, 2, (5, 5), (2, 2), ((0, 0), (0, 0)), (1, 1)),  # the window is the whole input: 1x1 output
]


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES,
                         ids=lambda g: "x".join(map(str, g[:5])) + f"-k{g[5]}-s{g[6]}-p{g[7]}-d{g[8]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dev", DEVICES)
def test_conv2d_equals_the_reference(geometry, dtype, bias, dev):
    n, c, h, w, o, kernel, stride, padding, dilation = geometry
    rng = np.random.default_rng(hash(geometry) % 2**32)
    x, wt = rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, *kernel))
    b = rng.standard_normal(o) if bias else None
    out_hw = _conv_out_hw((h, w), kernel, stride, padding, dilation)
    dy = rng.standard_normal((n, o, *out_hw))
    xt, wtt, bt, dyt = (None if a is None else _t(a, dtype, dev) for a in (x, wt, b, dy))
    # the reference from the values the kernel saw (float32-rounded for float32)
    y_ref, dx_ref, dw_ref, db_ref = ref_conv(_np(xt), _np(wtt), None if b is None else _np(bt), stride, padding,
                                             dilation, _np(dyt))

    y, saved = torch_fast.conv2d_forward(xt, wtt, bt, stride, padding, out_hw, True, dilation)
    _check_tensor(y, xt, (n, o, *out_hw))
    _close(y, y_ref, dtype, "y")
    dx, dw, db = torch_fast.conv2d_backward(saved, wtt, dyt, True)
    for got, want, like in ((dx, dx_ref, xt), (dw, dw_ref, wtt), (db, db_ref, dyt[0, :, 0, 0])):
        _check_tensor(got, like, want.shape)
        _close(got, want, dtype, "gradient")
    # without the input gradient; from a non-contiguous incoming gradient (a permuted channels-last copy)
    dyt_cl = dyt.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    none, dw2, db2 = torch_fast.conv2d_backward(saved, wtt, dyt_cl, False)
    assert none is None
    _close(dw2, dw_ref, dtype, "dw (channels-last dy)")
    _close(db2, db_ref, dtype, "db (channels-last dy)")


def test_conv2d_inference_forward_still_allows_an_input_gradient():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((2, 4, 6, 7))
    padding = ((1, 1), (1, 1))
    y, saved = torch_fast.conv2d_forward(_t(x, "float64"), _t(w, "float64"), None, (1, 1), padding, (6, 7), False)
    y_ref, dx_ref, _, _ = ref_conv(x, w, None, (1, 1), padding, (1, 1), dy)
    _close(y, y_ref, "float64", "y")
    _close(torch_fast.conv2d_backward(saved, _t(w, "float64"), _t(dy, "float64"), True)[0], dx_ref, "float64", "dx")


def test_conv2d_rejects_a_wrong_output_size():
    x, w = torch.zeros(1, 1, 6, 6), torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="expected"):
        torch_fast.conv2d_forward(x, w, None, (1, 1), ((0, 0), (0, 0)), (5, 4), True)


@pytest.mark.parametrize("padding", [1, "same", "valid"])
@pytest.mark.parametrize("kernel", [3, 4])
def test_conv2d_layer_with_and_without_the_fast_path(monkeypatch, padding, kernel):
    """The Conv2D layer on torch computes through this kernel, and gives what its portable math gives."""
    x = np.random.default_rng(3).standard_normal((3, 2, 9, 8))
    results = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        layer = pc.layers.Conv2D(2, 5, kernel, padding=padding, dilation=(1, 2))
        backend = pc.backend.get_backend("torch")
        layer.initialize(np.random.default_rng(0), backend, backend.dtype("float64"))
        xt = _t(x, "float64")
        y = layer.forward(xt, training=True)
        assert (layer._cache[0] is torch_fast.conv2d_backward) == (portable == "0")
        dx = layer.backward(_t(np.random.default_rng(4).standard_normal(tuple(y.shape)), "float64"))
        results.append([_np(t) for t in (y, dx, layer.weight.grad, layer.bias.grad)])
    for got, want in zip(*results):
        _close(torch.as_tensor(got), want, "float64", "layer")


# --- batch normalisation -------------------------------------------------------------------------------------

BN_SHAPES = [(8, 5, 7, 6), (3, 4, 1, 1), (2, 3, 5, 3), (64, 32, 4, 4), (16, 10), (2, 3), (300, 7)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dev", DEVICES)
def test_batchnorm_equals_the_reference(shape, dtype, affine, channels_last, dev):
    if channels_last and len(shape) != 4:
        pytest.skip("channels-last is a rank-4 layout")
    rng = np.random.default_rng(sum(shape))
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, per_channel) + rng.uniform(-2, 2, per_channel)
    w, b = (rng.uniform(0.5, 2.0, c), rng.standard_normal(c)) if affine else (None, None)
    dy = rng.standard_normal(shape)
    xt, dyt = _t(x, dtype, dev), _t(dy, dtype, dev)
    if channels_last:
        xt, dyt = (t.contiguous(memory_format=torch.channels_last) for t in (xt, dyt))
    wt, bt = (None, None) if w is None else (_t(w, dtype, dev), _t(b, dtype, dev))
    eps = 1e-5
    y_ref, mean_ref, var_ref, dx_ref, dw_ref, db_ref = ref_batchnorm(_np(xt), None if w is None else _np(wt),
                                                                     None if b is None else _np(bt), eps, _np(dyt))
    y, mean, var, saved = torch_fast.batchnorm_forward_train(xt, wt, bt, eps)
    _check_tensor(y, xt, shape)
    for got, want, what in ((y, y_ref, "y"), (mean, mean_ref, "mean"), (var, var_ref, "var")):
        _check_tensor(got, xt, want.shape)
        _close(got, want, dtype, what)
    dx, dw, db = torch_fast.batchnorm_backward_train(saved, wt, dyt, True)
    # dx is a difference of terms of the size of w * invstd * dy (nearly all of it cancels when M = 2)
    dx_scale = float(np.max(np.abs(1.0 if w is None else _np(wt)) / np.sqrt(var_ref + eps)) * np.max(np.abs(dy)))
    for got, want, what, scale in ((dx, dx_ref, "dx", dx_scale), (dw, dw_ref, "dw", None), (db, db_ref, "db", None)):
        _check_tensor(got, xt, want.shape)
        _close(got, want, dtype, what, scale)
    none, dw2, db2 = torch_fast.batchnorm_backward_train(saved, wt, dyt, False)
    assert none is None
    _close(dw2, dw_ref, dtype, "dw")
    _close(db2, db_ref, dtype, "db")


@pytest.mark.parametrize("std", [1e-4, 1e-3, 1.0])
def test_batchnorm_variance_keeps_its_digits_below_eps(std):
    """var (which the layer feeds into running_var) matches mean((x - mean)^2) to float32 rounding even when it
    is far below eps, where 1/invstd^2 - eps would keep none of its digits."""
    rng = np.random.default_rng(5)
    x = _t(rng.standard_normal((32, 3, 6, 6)) * std + 0.25, "float32")
    _, mean_ref, var_ref, *_ = ref_batchnorm(_np(x), None, None, 1e-5, np.zeros(x.shape))
    _, mean, var, _ = torch_fast.batchnorm_forward_train(x, None, None, 1e-5)
    np.testing.assert_allclose(_np(var), var_ref, rtol=1e-4 if std < 1e-2 else 1e-5)
    np.testing.assert_allclose(_np(mean), mean_ref, rtol=1e-6)


# --- ReLU ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 7), (9, 10), (11,)])
@pytest.mark.parametrize("dev", DEVICES)
def test_relu_equals_the_reference(dtype, shape, dev):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    x.flat[::5] = 0.0  # exact zeros: no gradient there
    x.flat[1] = -np.inf
    dy = rng.standard_normal(shape)
    xt, dyt = _t(x, dtype, dev), _t(dy, dtype, dev)
    y = torch_fast.relu_forward(xt)
    _check_tensor(y, xt, shape)
    np.testing.assert_array_equal(_np(y), np.maximum(_np(xt), 0.0))
    dx = torch_fast.relu_backward(y, dyt)
    _check_tensor(dx, xt, shape)
    np.testing.assert_array_equal(_np(dx), np.where(_np(xt) > 0, _np(dyt), 0.0))


def test_relu_passes_nan_as_the_portable_layer():
    x = torch.tensor([float("nan"), -1.0, 0.0, 2.0, -float("inf")])
    y = torch_fast.relu_forward(x)
    assert torch.isnan(y[0]) and y[1:].tolist() == [0.0, 0.0, 2.0, 0.0]
    assert torch_fast.relu_backward(y, torch.full_like(x, 3.0)).tolist() == [3.0, 0.0, 0.0, 3.0, 0.0]


# --- max pooling ---------------------------------------------------------------------------------------------

POOL_GEOMETRIES = [  # (N, C, H, W, kernel, stride, padding)
    (2, 3, 8, 8, (2, 2), (2, 2), (0, 0)),
    (2, 3, 9, 7, (2, 2), (2, 2), (0, 0)),  # odd sizes: the last row/column dropped
    (1, 4, 9, 9, (3, 3), (2, 2), (1, 1)),  # overlapping windows, padded
    (2, 2, 10, 7, (3, 2), (1, 2), (1, 1)),
    (3, 2, 6, 5, (1, 1), (1, 1), (0, 0)),
    (2, 3, 7, 11, (4, 3), (3, 1), (2, 0)),
    (1, 2, 5, 5, (5, 5), (1, 1), (0, 0)),  # the window is the whole input
]


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES,
                         ids=lambda g: "x".join(map(str, g[:4])) + f"-k{g[4]}-s{g[5]}-p{g[6]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dev", DEVICES)
def test_maxpool2d_equals_the_reference(geometry, dtype, ties, channels_last, dev):
    """Small integers make many ties: each must send its gradient to the window's first maximum."""
    n, c, h, w, kernel, stride, padding = geometry
    rng = np.random.default_rng(h * w)
    x = rng.integers(-2, 3, (n, c, h, w)).astype(float) if ties else rng.standard_normal((n, c, h, w))
    if padding != (0, 0):
        x[0, 0] = -np.inf  # a whole image of -inf: the gradient must go to a real input, never to padding
    out_hw = ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)
    dy = rng.standard_normal((n, c, *out_hw))
    xt, dyt = _t(x, dtype, dev), _t(dy, dtype, dev)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    y_ref, dx_ref = ref_maxpool(_np(xt), kernel, stride, padding, _np(dyt))
    y, saved = torch_fast.maxpool2d_forward(xt, kernel, stride, padding, out_hw)
    _check_tensor(y, xt, (n, c, *out_hw))
    np.testing.assert_array_equal(_np(y), y_ref)
    dx = torch_fast.maxpool2d_backward(saved, dyt)
    _check_tensor(dx, xt, x.shape)
    _close(dx, dx_ref, dtype, "dx")
    # from a non-contiguous incoming gradient
    dx2 = torch_fast.maxpool2d_backward(saved, dyt.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
    _close(dx2, dx_ref, dtype, "dx (channels-last dy)")


def test_maxpool2d_rejects_a_wrong_output_size():
    with pytest.raises(ValueError, match="expected"):
        torch_fast.maxpool2d_forward(torch.zeros(1, 1, 6, 6), (2, 2), (2, 2), (0, 0), (3, 2))


# --- through the layers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["kannada_cnn", "kannada_bn"])
def test_training_step_with_and_without_the_torch_kernels(monkeypatch, net):
    """A whole training step's logits, parameter gradients, input gradient and BatchNorm running statistics on
    backend torch, float64: the same with torch's kernels (as far as the layers call them) and without."""
    rng = np.random.default_rng(6)
    x, labels = rng.standard_normal((6, 1, 28, 28)), rng.integers(0, 10, 6)
    results = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        model = getattr(pc.models, net)(backend="torch", dtype="float64", seed=1)
        for layer in model.layers:  # no dropout: the two runs must see the same network
            if type(layer).__name__ == "Dropout":
                layer.p = 0.0
        logits = model.forward(model.backend.asarray(x, dtype="float64"), training=True)
        _, d = pc.losses.softmax_cross_entropy(logits, model.backend.asarray(labels), check=False)
        dx = model.backward(d)
        state = model.state_dict()
        results.append([_np(logits), _np(dx)] + [_np(p.grad) for p in model.parameters()]
                       + [np.asarray(state[k], np.float64) for k in sorted(state) if "running" in k])
    assert len(results[0]) == len(results[1])
    for got, want in zip(*results):
        _close(torch.as_tensor(got), want, "float64", "training step")
