"""Winograd F(2x2, 3x3) (portacnn/kernels/winograd.py) against independent oracles: the weight transform
against G g G^T by einsum, the convolution against float64 loops (within a bound the im2col GEMM's own
rounding also meets), non-finite inputs against the portable path, and which convolutions take it."""

from __future__ import annotations

import numpy as np
import pytest

import portacnn as pc
from portacnn.kernels import compiled, winograd
from portacnn.layers import Conv2D

pytestmark = pytest.mark.skipif(not compiled.usable(), reason=f"compiled kernels not usable: {compiled.status()}")


def _direct64(x, w, b, pads, out_hw):
    """The convolution as a sum over the nine taps, in float64 (the oracle)."""
    (pt, pb), (pl, pr) = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho, wo = out_hw
    y = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i : i + ho, j : j + wo], w[:, :, i, j].astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_weight_transform_is_g_w_gt(dtype):
    w = np.random.default_rng(0).standard_normal((5, 3, 3, 3)).astype(dtype)
    u = winograd.transform_weights(w, np.dtype(dtype))
    want = np.einsum("ik,ockl,jl->ijco", winograd.G, w.astype(np.float64), winograd.G).reshape(16, 3, 5)
    assert u.dtype == np.dtype(dtype) and u.shape == (16, 3, 5)
    # computed in float64 and rounded once: within half a unit in the last place of dtype, beside float64's sums
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(u, want, rtol=eps / 2, atol=4 * np.finfo(np.float64).eps * np.abs(w).max())


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-14)])
@pytest.mark.parametrize("shape, pads, relu", [
    ((3, 16, 9, 7), ((1, 1), (1, 1)), False),  # odd sizes: the last tile row and column half outside
    ((2, 32, 8, 8), ((1, 1), (1, 1)), True),
    ((2, 17, 6, 5), ((0, 0), (2, 1)), False),  # no padding above, two on the left
    ((1, 20, 4, 4), ((2, 2), (0, 2)), True),
])
def test_the_convolution_equals_float64_loops(shape, pads, relu, dtype, tol):
    rng = np.random.default_rng(1)
    n, c, h, w = shape
    o = 24
    x = rng.standard_normal(shape).astype(dtype)
    wt = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    ho, wo = h + sum(pads[0]) - 2, w + sum(pads[1]) - 2
    geo = (3, 3, 1, 1, 1, 1, pads[0][0], pads[1][0], ho, wo)
    assert winograd.applies(c, geo)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    y = winograd.forward(xl, wt, b, geo, relu, blocks_for=lambda per_image: [(k, k + 1) for k in range(n)])
    assert y.dtype == np.dtype(dtype) and y.shape == (n, ho, wo, o)
    want = _direct64(x, wt, b, pads, (ho, wo)).transpose(0, 2, 3, 1)
    if relu:
        want = np.maximum(want, 0)
    # each output sums 9*C products: bound the error by the sum of their magnitudes
    scale = _direct64(np.abs(x), np.abs(wt), None, pads, (ho, wo)).transpose(0, 2, 3, 1) + np.abs(b)
    assert (np.abs(y - want) <= tol * scale).all(), np.max(np.abs(y - want) / scale)


def test_non_finite_inputs_give_non_finite_outputs_where_the_portable_conv_does(monkeypatch):
    """An inf or NaN input makes every output whose window holds it non-finite, and no other (inf - inf in the
    transforms may turn an inf into NaN, as in every Winograd implementation)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 9, 8)).astype(np.float32)
    x[0, 3, 0, 0] = np.inf
    x[0, 5, 4, 6] = -np.inf
    x[1, 0, 8, 3] = np.nan
    outs = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        layer = pc.Sequential([Conv2D(16, 20, 3, padding=1)], seed=0).layers[0]
        with np.errstate(invalid="ignore"):
            outs.append(np.asarray(layer.forward(x, False)))
    fast, ref = outs
    assert (~np.isfinite(ref)).sum() > 9
    np.testing.assert_array_equal(np.isfinite(fast), np.isfinite(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(fast[finite], ref[finite], rtol=2e-5, atol=2e-5 * np.abs(ref[finite]).max())


@pytest.mark.parametrize("c, k, stride, dilation, takes", [
    (16, 3, 1, 1, True), (64, 3, 1, 1, True),
    (8, 3, 1, 1, False),  # too few inputs: the im2col GEMM
    (32, 3, 2, 1, False), (32, 3, 1, 2, False), (32, 5, 1, 1, False), (32, 1, 1, 1, False),
])
def test_which_convolutions_take_it(c, k, stride, dilation, takes):
    geo = (k, k, stride, stride, dilation, dilation, 1, 1, 8, 8)
    assert winograd.applies(c, geo) is takes


def test_the_weight_gradient_transform_is_the_adjoint_of_the_weight_transform():
    """<T(w), U> == <w, T^T(U)> for the weight transform T and its adjoint (float64 dot products)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 5, 3, 3))
    ug = rng.standard_normal((16, 5, 6))
    tw = winograd.transform_weights(w, np.dtype(np.float64))
    back = compiled.kernels().winograd_weights_grad(ug, np.empty((6, 5, 3, 3)))
    np.testing.assert_allclose(np.sum(tw * ug), np.sum(w * back), rtol=1e-13)


@pytest.mark.parametrize("dtype, tol", [("float32", 2e-6), ("float64", 1e-14)])
@pytest.mark.parametrize("shape, pads, images_per_block", [
    ((5, 16, 9, 7), ((1, 1), (1, 1)), 1),  # odd sizes; one image a block, gathered into groups
    ((3, 20, 6, 6), ((0, 0), (2, 1)), 2),
    ((2, 32, 8, 8), ((1, 1), (1, 1)), 2),
])
def test_the_weight_gradient_equals_float64_loops(shape, pads, images_per_block, dtype, tol):
    rng = np.random.default_rng(4)
    n, c, h, w = shape
    o = 18
    x = rng.standard_normal(shape).astype(dtype)
    ho, wo = h + sum(pads[0]) - 2, w + sum(pads[1]) - 2
    dy = rng.standard_normal((n, o, ho, wo)).astype(dtype)
    geo = (3, 3, 1, 1, 1, 1, pads[0][0], pads[1][0], ho, wo)
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    dyl = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))
    spans = [(a, min(n, a + images_per_block)) for a in range(0, n, images_per_block)]
    dw, db = winograd.weight_grad(xl, dyl, geo, True, blocks_for=lambda per_image: spans)
    assert dw.dtype == db.dtype == np.dtype(dtype) and dw.shape == (o, c, 3, 3)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), *pads))
    want = np.zeros((o, c, 3, 3))
    scale = np.zeros((o, c, 3, 3))
    for i in range(3):
        for j in range(3):
            window = xp[:, :, i : i + ho, j : j + wo]
            want[:, :, i, j] = np.einsum("nohw,nchw->oc", dy.astype(np.float64), window)
            scale[:, :, i, j] = np.einsum("nohw,nchw->oc", np.abs(dy).astype(np.float64), np.abs(window))
    assert (np.abs(dw - want) <= tol * scale).all(), np.max(np.abs(dw - want) / scale)
    want_db = dy.astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(db, want_db, rtol=tol * 10, atol=tol * 10 * n * ho * wo)


@pytest.mark.parametrize("size", [8, 7, 9])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_conv_relu_and_2x2_pool_in_one_pass_give_the_three_layers_bits(size, batchnorm):
    """Inference runs conv (+ folded BatchNorm) + ReLU + MaxPool2D(2) as one Winograd pass, each pooling window
    one tile: the same bits as the layers one by one, NaN and infinities included; odd sizes drop the last half
    tile as the pool drops its last row."""
    from portacnn.layers import BatchNorm2D, MaxPool2D, ReLU
    from portacnn.layers.fold import run_infer

    rng = np.random.default_rng(5)
    convs = [Conv2D(16, 32, 3, padding=1, bias=not batchnorm)] + ([BatchNorm2D(32)] if batchnorm else [])
    model = pc.Sequential([*convs, ReLU(), MaxPool2D(2)], seed=0)
    if batchnorm:
        bn = model.layers[1]
        bn.running_mean[...] = rng.standard_normal(32).astype(np.float32)
        bn.running_var[...] = rng.random(32).astype(np.float32) + 0.5
    x = rng.standard_normal((3, 16, size, size)).astype(np.float32)
    x[0, 2, 3, 3], x[1, 0, 0, 0], x[2, 5, size - 1, 2] = np.nan, np.inf, -np.inf
    calls = []
    conv = model.layers[0]
    original = conv.apply_relu_pool
    conv.apply_relu_pool = lambda *a: calls.append(original(*a)) or calls[-1]
    with np.errstate(invalid="ignore"):
        fused = np.asarray(run_infer(model.layers, x))
        y = run_infer(model.layers[: len(convs)], x)  # the (folded) convolution alone
        relu, pool = model.layers[len(convs) :]
        one_by_one = np.asarray(pool.forward(relu.forward(y, False), False))
    assert calls and calls[0] is not None and fused.shape == (3, 32, size // 2, size // 2)
    assert np.isnan(fused).any()
    np.testing.assert_array_equal(fused, one_by_one)


@pytest.mark.parametrize("c, o, k, size", [(8, 24, 3, 8), (16, 8, 3, 8), (16, 24, 5, 8), (16, 24, 3, 1)])
def test_the_one_pass_pool_declines_what_it_does_not_compute(c, o, k, size):
    """Too few inputs, a narrow conv, another kernel size, an output under 2x2: None, and the layers run apart
    (a 1x1 output still gets the pool's own error)."""
    from portacnn.layers import MaxPool2D, ReLU

    conv = Conv2D(c, o, k, padding=k // 2)
    model = pc.Sequential([conv, ReLU(), MaxPool2D(2)], seed=0)
    x = np.random.default_rng(6).standard_normal((2, c, size, size)).astype(np.float32)
    assert conv.apply_relu_pool(x, conv.weight.data, conv.bias.data) is None
    if size >= 2:
        np.testing.assert_allclose(np.asarray(model.infer(x)), np.asarray(model.forward(x, False)), rtol=1e-6)
    else:
        with pytest.raises(ValueError):
            model.infer(x)
