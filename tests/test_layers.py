"""Every layer on every backend: forward against naive float64 oracles, backward against central finite
differences (float64), dtype/device preservation, and ValueErrors for bad arguments and inputs.

Layers are tested standalone inside a one-layer ``pc.Sequential``; weights are set via load_state_dict.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, single, to_numpy
from portacnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

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


# ----------------------------------------------------------------------------------------------------
# dtype / device preservation for every layer, forward and backward

LAYER_CASES = [
    pytest.param(lambda: Conv2D(2, 3, 3, stride=2, padding=1), (2, 2, 7, 7), id="conv"),
    pytest.param(lambda: MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 7), id="maxpool"),
    pytest.param(lambda: MaxPool2D(2), (2, 2, 6, 6), id="maxpool2"),
    pytest.param(lambda: ReLU(), (2, 2, 4, 4), id="relu"),
    pytest.param(lambda: Flatten(), (2, 2, 4, 4), id="flatten"),
    pytest.param(lambda: Dense(5, 3), (4, 5), id="dense"),
    pytest.param(lambda: Dropout(0.3), (2, 2, 4, 4), id="dropout"),
]


@pytest.mark.parametrize("factory,shape", LAYER_CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_preserves_dtype_and_device(backend, dtype, rng, factory, shape, training):
    model = single(factory(), backend, dtype)
    for p in model.parameters():
        assert_on_backend(backend, p.data, dtype)
    x = backend.asarray(rng.standard_normal(shape), dtype=dtype)
    out = model.forward(x, training=training)
    assert_on_backend(backend, out, dtype)
    dx = model.backward(backend.asarray(np.ones(tuple(out.shape)), dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=shape)
    for p in model.parameters():
        assert_on_backend(backend, p.grad, dtype, shape=tuple(p.data.shape))


@pytest.mark.parametrize("factory,shape", LAYER_CASES)
def test_layer_accepts_numpy_input(backend, rng, factory, shape):
    model = single(factory(), backend, "float32")
    out = model.forward(rng.standard_normal(shape).astype(np.float32), training=False)
    assert_on_backend(backend, out, "float32")


# ----------------------------------------------------------------------------------------------------
# argument and input validation

BAD_CONSTRUCTORS = [
    pytest.param(lambda: Conv2D(1, -2, 3), "out_channels", id="conv-neg-out"),
    pytest.param(lambda: Conv2D(0, 2, 3), "in_channels", id="conv-zero-in"),
    pytest.param(lambda: Conv2D(1, 2, 0), "kernel_size", id="conv-zero-kernel"),
    pytest.param(lambda: Conv2D(1, 2, (3, -1)), "kernel_size", id="conv-neg-kernel-w"),
    pytest.param(lambda: Conv2D(1, 2, 3, stride=0), "stride", id="conv-zero-stride"),
    pytest.param(lambda: Conv2D(1, 2, 3, padding=-1), "padding", id="conv-neg-padding"),
    pytest.param(lambda: MaxPool2D(0), "kernel_size", id="pool-zero-kernel"),
    pytest.param(lambda: MaxPool2D(2, stride=0), "stride", id="pool-zero-stride"),
    pytest.param(lambda: MaxPool2D(2, padding=-1), "padding", id="pool-neg-padding"),
    pytest.param(lambda: Dense(0, 3), "in_features", id="dense-zero-in"),
    pytest.param(lambda: Dense(3, -1), "out_features", id="dense-neg-out"),
    pytest.param(lambda: Dropout(1.5), r"p|probability|rate", id="dropout-above-1"),
    pytest.param(lambda: Dropout(-0.1), r"p|probability|rate", id="dropout-negative"),
]


@pytest.mark.parametrize("factory,name", BAD_CONSTRUCTORS)
def test_bad_constructor_arguments(factory, name):
    with pytest.raises(ValueError, match=rf"\b({name})\b"):
        factory()


BAD_INPUTS = [  # the layer, a bad input shape, what the one-line message must say
    pytest.param(lambda: Conv2D(1, 2, 3), (1, 5, 5), r"Conv2D\(in_channels=1.*expects input of shape \(N, 1, H, W\); got shape \(1, 5, 5\)", id="conv-rank3"),
    pytest.param(lambda: Conv2D(1, 2, 3), (2, 3, 5, 5), r"Conv2D.*\(N, 1, H, W\); got shape \(2, 3, 5, 5\)", id="conv-channels"),
    pytest.param(lambda: MaxPool2D(2), (2, 4, 4), r"MaxPool2D.*\(N, C, H, W\); got shape \(2, 4, 4\)", id="pool-rank3"),
    pytest.param(lambda: MaxPool2D(2), (2, 1, 1, 4, 4), r"MaxPool2D.*got shape \(2, 1, 1, 4, 4\)", id="pool-rank5"),
    pytest.param(lambda: Dense(4, 2), (2, 1, 2, 2), r"Dense\(in_features=4.*got shape \(2, 1, 2, 2\)", id="dense-rank4"),
    pytest.param(lambda: Dense(4, 2), (2, 5), r"Dense\(in_features=4.*got shape \(2, 5\)", id="dense-features"),
]


@pytest.mark.parametrize("factory,shape,message", BAD_INPUTS)
def test_bad_input_shapes(backend, factory, shape, message):
    model = single(factory(), backend, "float32")
    with pytest.raises(ValueError, match=message) as info:
        model.forward(backend.asarray(np.zeros(shape, dtype=np.float32)), training=False)
    assert "\n" not in str(info.value)


def test_relu_of_infinities_and_nan_matches_torch_semantics(backend):
    x = np.array([[-np.inf, np.inf, np.nan, -1.0, 0.0, 2.0]], dtype=np.float32)
    out = to_numpy(backend, single(ReLU(), backend, "float32").forward(x))
    np.testing.assert_array_equal(out, np.array([[0.0, np.inf, np.nan, 0.0, 0.0, 2.0]], dtype=np.float32))
