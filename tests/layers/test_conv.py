"""Conv2D on every backend: forward against naive float64 loops, backward against finite differences
(NumPy) and NumPy's gradients (other backends), with the kernels' fast paths on and off."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, single, to_numpy
from layerhelp import _pair, fd_check_layer, forward_np
from portacnn.layers import Conv2D


# ----------------------------------------------------------------------------------------------------
# Conv2D

CONV_CASES = [
    # N, C, H, W, out_channels, kernel_size, stride, padding
    pytest.param(2, 3, 7, 7, 4, 3, 1, 0, id="k3"),
    pytest.param(2, 2, 6, 8, 3, (2, 3), 1, 0, id="k2x3"),
    pytest.param(2, 3, 7, 7, 4, 3, 2, 1, id="k3s2p1"),
    pytest.param(2, 3, 8, 6, 2, 3, 2, 1, id="k3s2p1-even"),
    pytest.param(1, 2, 8, 7, 3, (3, 2), (2, 1), (1, 0), id="k3x2s2x1p1x0"),
    pytest.param(2, 1, 8, 8, 2, 5, 1, 2, id="k5p2"),
    pytest.param(2, 3, 5, 4, 2, 1, 1, 0, id="k1"),
    pytest.param(2, 2, 8, 8, 3, 3, 3, 1, id="k3s3p1"),
    pytest.param(1, 1, 9, 9, 2, 4, 2, 0, id="k4s2"),
    # wide convs (out_channels >= 32) may take a different code path (e.g. channels-last GEMM)
    pytest.param(2, 1, 6, 6, 32, 3, 1, 0, id="wide-k3"),
    pytest.param(1, 2, 7, 6, 33, 3, 2, 1, id="wide-k3s2p1"),
    pytest.param(1, 1, 6, 7, 32, (2, 3), (1, 2), (1, 0), id="wide-k2x3s1x2p1x0"),
]


def conv_data(rng, N, C, H, W, O, k, dtype="float64"):
    kh, kw = _pair(k)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((O, C, kh, kw)) * 0.5).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("N,C,H,W,O,k,s,p", CONV_CASES)
def test_conv_forward_matches_oracle(fast_paths, backend, dtype, rng, N, C, H, W, O, k, s, p):
    x, w, b = conv_data(rng, N, C, H, W, O, k, dtype)
    model = single(Conv2D(C, O, k, stride=s, padding=p), backend, dtype, {"weight": w, "bias": b})
    expected = oracles.conv2d_forward(x, w, b, stride=s, padding=p)
    out, got = forward_np(model, backend, x, dtype)
    assert_on_backend(backend, out, dtype, shape=expected.shape)
    assert_close(got, expected, dtype)


def test_conv_without_bias(backend, dtype, rng):
    x, w, _ = conv_data(rng, 2, 2, 6, 6, 3, 3, dtype)
    model = single(Conv2D(2, 3, 3, padding=1, bias=False), backend, dtype, {"weight": w})
    assert list(model.state_dict()) == ["0.weight"]
    assert [p.name for p in model.parameters()] == ["0.weight"]
    _, got = forward_np(model, backend, x, dtype)
    assert_close(got, oracles.conv2d_forward(x, w, None, padding=1), dtype)


@pytest.mark.parametrize("N,C,H,W,O,k,s,p", CONV_CASES)
def test_conv_backward_finite_differences(fast_paths, backend, rng, N, C, H, W, O, k, s, p):
    x, w, b = conv_data(rng, N, C, H, W, O, k)
    weights = {"weight": w, "bias": b}
    model = single(Conv2D(C, O, k, stride=s, padding=p), backend, "float64", weights)
    fd_check_layer(model, backend, x, weights)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ph=st.integers(0, 2),
    pw=st.integers(0, 2),
    extra_h=st.integers(0, 5),
    extra_w=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_forward_random_configs_numpy(n, c, o, kh, kw, sh, sw, ph, pw, extra_h, extra_w, seed):
    rng = np.random.default_rng(seed)
    H, W = kh + extra_h, kw + extra_w
    x, w, b = conv_data(rng, n, c, H, W, o, (kh, kw))
    model = single(Conv2D(c, o, (kh, kw), stride=(sh, sw), padding=(ph, pw)), pc.get_backend("numpy"), "float64",
                   {"weight": w, "bias": b})
    got = pc.get_backend("numpy").to_numpy(model.forward(x, training=False))
    assert_close(got, oracles.conv2d_forward(x, w, b, stride=(sh, sw), padding=(ph, pw)), "float64")


WIDE_CASES = [c for c in CONV_CASES if c.id.startswith("wide")] + [
    pytest.param(2, 3, 9, 8, 32, (3, 2), (2, 3), (2, 1), id="wide-k3x2s2x3p2x1"),
]


@pytest.mark.parametrize("N,C,H,W,O,k,s,p", WIDE_CASES)
def test_wide_conv_input_grad_equals_col2im_of_the_column_gradient(backend, rng, N, C, H, W, O, k, s, p):
    """The channels-last backward adds dy @ Wm one kernel offset at a time instead of forming the column
    gradient dy @ Wm and running col2im_nhwc on it: the same sums (BLAS may round a narrower GEMM
    differently, so equal to float32 rounding, not bit for bit)."""
    from portacnn.kernels import conv as conv_kernel, windows

    x, w, b = conv_data(rng, N, C, H, W, O, k, "float32")
    layer = Conv2D(C, O, k, stride=s, padding=p)
    model = single(layer, backend, "float32", {"weight": w, "bias": b})
    assert O >= conv_kernel.CHANNELS_LAST_FROM
    out = model.forward(backend.asarray(x, dtype="float32"), training=True)
    dy = backend.asarray(rng.standard_normal(tuple(out.shape)), dtype="float32")
    dx = to_numpy(backend, model.backward(dy))

    xp, dyn = backend.xp, to_numpy(backend, dy)
    (kh, kw), (ph, pw), out_hw = _pair(k), _pair(p), tuple(out.shape[2:])
    dy_rows = backend.asarray(np.ascontiguousarray(dyn.transpose(0, 2, 3, 1)).reshape(-1, O), dtype="float32")
    dcols = xp.matmul(dy_rows, conv_kernel._wmat(layer.weight.data, True))
    padded = (N, H + 2 * ph, W + 2 * pw, C)
    ref = to_numpy(backend, windows.col2im_nhwc(dcols, padded, (kh, kw), _pair(s), out_hw))
    ref = ref[:, ph : ph + H, pw : pw + W, :].transpose(0, 3, 1, 2)
    assert_close(dx, ref, "float32")


@pytest.mark.parametrize("per_block", [1, 2])
@pytest.mark.parametrize("N,C,H,W,O,k,s,p", WIDE_CASES)
def test_wide_conv_in_image_blocks_matches_oracles(backend, rng, monkeypatch, per_block, N, C, H, W, O, k, s, p):
    """On CPUs a wide conv makes its columns a few images at a time (forward, and again for the weight
    gradient, since the blocks are not kept). Forced to 1 or 2 images per block on 3 images (a ragged last
    block), forward still matches the float64 loops and backward the finite differences."""
    N = 3
    x, w, b = conv_data(rng, N, C, H, W, O, k)
    layer = Conv2D(C, O, k, stride=s, padding=p)
    model = single(layer, backend, "float64", {"weight": w, "bias": b})
    (kh, kw), ho, wo = _pair(k), *oracles.conv2d_forward(x[:1], w, b, stride=s, padding=p).shape[2:]
    monkeypatch.setenv("PORTACNN_BLOCK_BYTES", str(per_block * ho * wo * kh * kw * C * 8))
    xb = backend.asarray(x, dtype="float64")
    from portacnn.kernels import conv as conv_kernel

    blocks = conv_kernel._nhwc_blocks(xb, (kh, kw), _pair(p), (ho, wo))[1]
    assert [hi - lo for lo, hi in blocks] == ([1, 1, 1] if per_block == 1 else [2, 1])
    out = model.forward(xb, training=True)
    assert layer._cache[1][1] is None  # the blocks' columns were not kept
    assert_close(to_numpy(backend, out), oracles.conv2d_forward(x, w, b, stride=s, padding=p), "float64")
    if per_block == 2:  # the finite differences are slow; the ragged case covers both block shapes
        fd_check_layer(model, backend, x, {"weight": w, "bias": b})
