"""Conv2D on every backend: forward against naive float64 loops, backward against finite differences
(NumPy) and NumPy's gradients (other backends), forward and every gradient against torch.nn.Conv2d, with the
kernels' fast paths on and off; dilation and "same"/"valid" padding (asymmetric for even windows) included."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, single, sweep, to_numpy
from layerhelp import _pair, fd_check_layer, forward_np
from portacnn.layers import Conv2D


# ----------------------------------------------------------------------------------------------------
# Conv2D

CONV_CASES = [
    # N, C, H, W, out_channels, kernel_size, stride, padding, dilation
    pytest.param(2, 3, 7, 7, 4, 3, 1, 0, 1, id="k3"),
    pytest.param(2, 2, 6, 8, 3, (2, 3), 1, 0, 1, id="k2x3"),
    pytest.param(2, 3, 7, 7, 4, 3, 2, 1, 1, id="k3s2p1"),
    pytest.param(2, 3, 8, 6, 2, 3, 2, 1, 1, id="k3s2p1-even"),
    pytest.param(1, 2, 8, 7, 3, (3, 2), (2, 1), (1, 0), 1, id="k3x2s2x1p1x0"),
    pytest.param(2, 1, 8, 8, 2, 5, 1, 2, 1, id="k5p2"),
    pytest.param(2, 3, 5, 4, 2, 1, 1, 0, 1, id="k1"),
    pytest.param(2, 2, 8, 8, 3, 3, 3, 1, 1, id="k3s3p1"),
    pytest.param(1, 1, 9, 9, 2, 4, 2, 0, 1, id="k4s2"),
    # dilation, and "same" / "valid" padding ("same" with an even window pads one more row/column after)
    pytest.param(2, 2, 9, 9, 3, 3, 1, 0, 2, id="k3d2"),
    pytest.param(2, 2, 10, 9, 3, 3, 2, 1, (2, 1), id="k3s2p1d2x1"),
    pytest.param(1, 3, 8, 11, 2, (2, 3), (2, 1), (1, 2), (1, 2), id="k2x3s2x1p1x2d1x2"),
    pytest.param(2, 2, 7, 6, 3, 3, 1, "same", 1, id="same-k3"),
    pytest.param(2, 2, 7, 6, 3, 4, 1, "same", 1, id="same-k4-asym"),
    pytest.param(1, 2, 5, 6, 3, (2, 3), 1, "same", 1, id="same-k2x3-asym"),
    pytest.param(2, 2, 8, 7, 3, 3, 1, "same", 2, id="same-k3d2"),
    pytest.param(1, 2, 7, 8, 2, (2, 4), 1, "same", (3, 2), id="same-k2x4d3x2-asym"),
    pytest.param(2, 3, 8, 7, 4, 3, 2, "valid", 1, id="valid-k3s2"),
    pytest.param(1, 2, 9, 9, 3, 2, (1, 2), "valid", 3, id="valid-k2s1x2d3"),
    # wide convs (out_channels >= 32) may take a different code path (e.g. channels-last GEMM)
    pytest.param(2, 1, 6, 6, 32, 3, 1, 0, 1, id="wide-k3"),
    pytest.param(1, 2, 7, 6, 33, 3, 2, 1, 1, id="wide-k3s2p1"),
    pytest.param(1, 1, 6, 7, 32, (2, 3), (1, 2), (1, 0), 1, id="wide-k2x3s1x2p1x0"),
    pytest.param(2, 2, 9, 8, 32, 3, 1, 0, 2, id="wide-k3d2"),
    pytest.param(1, 2, 10, 9, 33, 3, (2, 1), 2, (2, 1), id="wide-k3s2x1p2d2x1"),
    pytest.param(1, 2, 7, 6, 32, 4, 1, "same", 1, id="wide-same-k4-asym"),
    pytest.param(2, 1, 7, 8, 32, (3, 2), 1, "same", 2, id="wide-same-k3x2d2-asym"),
    pytest.param(1, 2, 7, 7, 32, 2, 2, "valid", 1, id="wide-valid-k2s2"),
]


def conv_data(rng, N, C, H, W, O, k, dtype="float64"):
    kh, kw = _pair(k)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((O, C, kh, kw)) * 0.5).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("N,C,H,W,O,k,s,p,d", CONV_CASES)
def test_conv_forward_matches_oracle(fast_paths, backend, dtype, rng, N, C, H, W, O, k, s, p, d):
    x, w, b = conv_data(rng, N, C, H, W, O, k, dtype)
    layer = Conv2D(C, O, k, stride=s, padding=p, dilation=d)
    model = single(layer, backend, dtype, {"weight": w, "bias": b})
    expected = oracles.conv2d_forward(x, w, b, stride=s, padding=p, dilation=d)
    out, got = forward_np(model, backend, x, dtype)
    assert_on_backend(backend, out, dtype, shape=expected.shape)
    assert layer.output_shape((C, H, W)) == expected.shape[1:]
    assert_close(got, expected, dtype)


def test_conv_without_bias(backend, dtype, rng):
    x, w, _ = conv_data(rng, 2, 2, 6, 6, 3, 3, dtype)
    model = single(Conv2D(2, 3, 3, padding=1, bias=False), backend, dtype, {"weight": w})
    assert list(model.state_dict()) == ["0.weight"]
    assert [p.name for p in model.parameters()] == ["0.weight"]
    _, got = forward_np(model, backend, x, dtype)
    assert_close(got, oracles.conv2d_forward(x, w, None, padding=1), dtype)


@pytest.mark.parametrize("N,C,H,W,O,k,s,p,d", CONV_CASES)
def test_conv_backward_finite_differences(fast_paths, backend, rng, N, C, H, W, O, k, s, p, d):
    x, w, b = conv_data(rng, N, C, H, W, O, k)
    weights = {"weight": w, "bias": b}
    model = single(Conv2D(C, O, k, stride=s, padding=p, dilation=d), backend, "float64", weights)
    fd_check_layer(model, backend, x, weights)


def torch_conv_step(model, x, g, dtype):
    """Output, input gradient and parameter gradients (by state-dict key) of the torch twin of one-layer
    ``model`` for dL/dy = g."""
    import torch

    tmodel = oracles.torch_mirror(model, dtype)
    xt = torch.tensor(x, requires_grad=True)
    tmodel(xt).backward(torch.tensor(g))
    y = tmodel(xt).detach().numpy()
    return y, xt.grad.numpy(), {name: p.grad.numpy() for name, p in tmodel.named_parameters()}


TORCH_SAME_WARNING = "ignore:Using padding='same' with even kernel lengths"  # torch pads a copy first: fine


@pytest.mark.filterwarnings(TORCH_SAME_WARNING)
@pytest.mark.parametrize("N,C,H,W,O,k,s,p,d", CONV_CASES)
def test_conv_matches_torch(fast_paths, backend, dtype, rng, N, C, H, W, O, k, s, p, d):
    """Forward, input gradient and every parameter gradient equal torch.nn.Conv2d's (built from the layer's
    architecture, so its padding string and dilation reach torch as given) in float32 and float64."""
    pytest.importorskip("torch")
    x, w, b = conv_data(rng, N, C, H, W, O, k, dtype)
    model = single(Conv2D(C, O, k, stride=s, padding=p, dilation=d), backend, dtype, {"weight": w, "bias": b})
    out = model.forward(backend.asarray(x, dtype=dtype), training=True)
    g = rng.standard_normal(tuple(out.shape)).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    ty, tdx, tgrads = torch_conv_step(model, x, g, dtype)
    assert_on_backend(backend, out, dtype, shape=ty.shape)
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    assert_close(to_numpy(backend, out), ty, dtype, err_msg="output")
    assert_close(to_numpy(backend, dx), tdx, dtype, err_msg="input gradient")
    assert [q.name for q in model.parameters()] == list(tgrads)
    for q in model.parameters():
        assert_on_backend(backend, q.grad, dtype, shape=tgrads[q.name].shape)
        assert_close(to_numpy(backend, q.grad), tgrads[q.name], dtype, err_msg=f"gradient of {q.name}")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    padding=st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.sampled_from(["same", "valid"])),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    extra_h=st.integers(0, 5),
    extra_w=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_forward_random_configs_numpy(n, c, o, kh, kw, sh, sw, padding, dh, dw, extra_h, extra_w, seed):
    if padding == "same":
        sh = sw = 1  # torch allows "same" only unstrided
    rng = np.random.default_rng(seed)
    H, W = dh * (kh - 1) + 1 + extra_h, dw * (kw - 1) + 1 + extra_w  # the dilated window fits unpadded
    x, w, b = conv_data(rng, n, c, H, W, o, (kh, kw))
    layer = Conv2D(c, o, (kh, kw), stride=(sh, sw), padding=padding, dilation=(dh, dw))
    model = single(layer, pc.get_backend("numpy"), "float64", {"weight": w, "bias": b})
    got = pc.get_backend("numpy").to_numpy(model.forward(x, training=False))
    expected = oracles.conv2d_forward(x, w, b, stride=(sh, sw), padding=padding, dilation=(dh, dw))
    assert layer.output_shape((c, H, W)) == expected.shape[1:]
    if padding == "same":
        assert expected.shape[2:] == (H, W)
    assert_close(got, expected, "float64")


@pytest.mark.parametrize("padding, dilation, want", [
    (0, 1, (0, 0)), ((1, 2), 1, (1, 2)), ("same", 1, "same"), ("valid", (2, 3), "valid"), ([2, 0], [1, 2], (2, 0)),
])
def test_conv_config_keeps_padding_as_given_and_rebuilds_the_layer(padding, dilation, want):
    layer = Conv2D(2, 3, (3, 4), padding=padding, dilation=dilation)
    cfg = layer.config()
    assert cfg["padding"] == want and cfg["dilation"] == ((dilation, dilation) if isinstance(dilation, int)
                                                           else tuple(dilation))
    assert Conv2D(**cfg).config() == cfg
    assert Conv2D(**json.loads(json.dumps(cfg))).config() == cfg  # JSON-ready: lists come back as pairs
    model = pc.Sequential([layer], seed=0, workers=1)
    twin = pc.Sequential.from_architecture(json.loads(json.dumps(model.architecture())), workers=1)
    assert twin.layers[0].config() == cfg


@pytest.mark.parametrize("kernel, dilation, want", [
    (3, 1, ((1, 1), (1, 1))), (4, 1, ((1, 2), (1, 2))), ((2, 5), 1, ((0, 1), (2, 2))),
    (3, 2, ((2, 2), (2, 2))), ((2, 4), (3, 1), ((1, 2), (1, 2))), (1, 3, ((0, 0), (0, 0))),
])
def test_same_padding_splits_like_torch(rng, kernel, dilation, want):
    """"same" pads dilation*(k - 1) per axis, the odd one after (bottom/right), and keeps H x W."""
    assert oracles.conv_padding("same", kernel, dilation) == want
    x, w, b = conv_data(rng, 1, 1, 6, 7, 2, kernel)
    model = single(Conv2D(1, 2, kernel, padding="same", dilation=dilation), pc.get_backend("numpy"), "float64",
                   {"weight": w, "bias": b})
    y = model.forward(x)
    assert tuple(y.shape) == (1, 2, 6, 7) == (1, *model.layers[0].output_shape((1, 6, 7)))
    assert_close(y, oracles.conv2d_forward(x, w, b, padding="same", dilation=dilation), "float64")


@pytest.mark.parametrize("make, message", [
    (lambda: Conv2D(1, 2, 3, stride=2, padding="same"),
     r"^Conv2D padding 'same' needs stride 1 \(as in torch\); got stride=2: use stride=1"),
    (lambda: Conv2D(1, 2, 3, stride=(1, 2), padding="same"), r"^Conv2D padding 'same' .*stride=\(1, 2\)"),
    (lambda: Conv2D(1, 2, 3, padding="foo"),
     r"^Conv2D padding must be one of 'same', 'valid' or a non-negative int or a pair \(h, w\) of them; got 'foo'"),
    (lambda: Conv2D(1, 2, 3, padding="SAME"), r"^Conv2D padding must be one of 'same', 'valid'"),
    (lambda: Conv2D(1, 2, 3, padding=(1, -1)), r"^Conv2D padding must be .*got \(1, -1\)"),
    (lambda: Conv2D(1, 2, 3, dilation=0), r"^Conv2D dilation must be a positive int or a pair \(h, w\) of them; got 0"),
    (lambda: Conv2D(1, 2, 3, dilation=(1, -2)), r"^Conv2D dilation must be .*\(1, -2\)"),
    (lambda: Conv2D(1, 2, 3, dilation=1.5), r"^Conv2D dilation must be a positive int or a pair"),
    (lambda: Conv2D(1, 2, 3, dilation=(1, 2, 3)), r"^Conv2D dilation must be a positive int or a pair"),
    (lambda: Conv2D(1, 2, 3, bias="no"), r"^Conv2D bias must be True or False; got 'no'"),
    (lambda: Conv2D(True, 2, 3), r"^Conv2D in_channels must be a positive int; got True"),
])
def test_conv_bad_padding_or_dilation_is_a_one_line_error(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make, hw, message", [
    (lambda: Conv2D(1, 2, 3, dilation=3), (6, 9), r"input 6x9 padded to 6x9 is smaller than the 7x7 \(dilated\) kernel"),
    (lambda: Conv2D(1, 2, (2, 3), padding=(1, 0), dilation=(5, 1)), (3, 5), r"input 3x5 padded to 5x5 .* 6x3 .*kernel"),
    (lambda: Conv2D(1, 2, 5, padding="valid"), (4, 8), r"input 4x8 padded to 4x8 is smaller than the 5x5"),
])
def test_conv_input_smaller_than_the_dilated_kernel(backend, make, hw, message):
    model = single(make(), backend, "float32")
    with pytest.raises(ValueError, match=r"^Conv2D\(in_channels=1.*" + message + ".*use a larger input") as info:
        model.forward(backend.asarray(np.zeros((1, 1, *hw), dtype=np.float32)))
    assert "\n" not in str(info.value)


WIDE_CASES = [c for c in CONV_CASES if c.id.startswith("wide")] + [
    pytest.param(2, 3, 9, 8, 32, (3, 2), (2, 3), (2, 1), 1, id="wide-k3x2s2x3p2x1"),
]


@pytest.mark.parametrize("N,C,H,W,O,k,s,p,d", WIDE_CASES)
def test_wide_conv_input_grad_equals_col2im_of_the_column_gradient(backend, rng, N, C, H, W, O, k, s, p, d):
    """The channels-last backward adds dy @ Wm one kernel offset at a time instead of forming the column
    gradient dy @ Wm and running col2im_nhwc on it: the same sums (BLAS may round a narrower GEMM
    differently, so equal to float32 rounding, not bit for bit)."""
    from portacnn.kernels import conv as conv_kernel, windows

    x, w, b = conv_data(rng, N, C, H, W, O, k, "float32")
    layer = Conv2D(C, O, k, stride=s, padding=p, dilation=d)
    model = single(layer, backend, "float32", {"weight": w, "bias": b})
    assert O >= conv_kernel.CHANNELS_LAST_FROM
    out = model.forward(backend.asarray(x, dtype="float32"), training=True)
    dy = backend.asarray(rng.standard_normal(tuple(out.shape)), dtype="float32")
    dx = to_numpy(backend, model.backward(dy))

    xp, dyn = backend.xp, to_numpy(backend, dy)
    (kh, kw), ((top, bottom), (left, right)), out_hw = _pair(k), oracles.conv_padding(p, k, d), tuple(out.shape[2:])
    dy_rows = backend.asarray(np.ascontiguousarray(dyn.transpose(0, 2, 3, 1)).reshape(-1, O), dtype="float32")
    dcols = xp.matmul(dy_rows, conv_kernel._wmat(layer.weight.data, True))
    padded = (N, top + H + bottom, left + W + right, C)
    ref = to_numpy(backend, windows.col2im_nhwc(dcols, padded, (kh, kw), _pair(s), out_hw, _pair(d)))
    ref = ref[:, top : top + H, left : left + W, :].transpose(0, 3, 1, 2)
    assert_close(dx, ref, "float32")


@pytest.mark.parametrize("per_block", [1, 2])
@pytest.mark.parametrize("N,C,H,W,O,k,s,p,d", sweep(WIDE_CASES, 4, unpack=True))
def test_wide_conv_in_image_blocks_matches_oracles(backend, rng, monkeypatch, per_block, N, C, H, W, O, k, s, p, d):
    """On CPUs a wide conv makes its columns a few images at a time (forward, and again for the weight
    gradient, since the blocks are not kept). Forced to 1 or 2 images per block on 3 images (a ragged last
    block), forward still matches the float64 loops and backward the finite differences. This is the generic
    kernel (kernels/conv.py): NumPy runs it without its compiled kernels, torch runs its own operators."""
    if backend.name == "torch":
        pytest.skip("the torch backend computes convolutions with torch's own operators (kernels/torch_fast.py)")
    if backend.name == "jax":
        pytest.skip("the jax backend computes convolutions with JAX's own operators (kernels/jax_fast.py)")
    monkeypatch.setenv("PORTACNN_COMPILED", "0")
    N = 3
    x, w, b = conv_data(rng, N, C, H, W, O, k)
    layer = Conv2D(C, O, k, stride=s, padding=p, dilation=d)
    model = single(layer, backend, "float64", {"weight": w, "bias": b})
    expected = oracles.conv2d_forward(x, w, b, stride=s, padding=p, dilation=d)
    (kh, kw), (ho, wo) = _pair(k), expected.shape[2:]
    monkeypatch.setenv("PORTACNN_BLOCK_BYTES", str(per_block * ho * wo * kh * kw * C * 8))
    xb = backend.asarray(x, dtype="float64")
    from portacnn.kernels import conv as conv_kernel

    blocks = conv_kernel._nhwc_blocks(xb, (kh, kw), oracles.conv_padding(p, k, d), (ho, wo))[1]
    assert [hi - lo for lo, hi in blocks] == ([1, 1, 1] if per_block == 1 else [2, 1])
    out = model.forward(xb, training=True)
    assert layer._cache[1][1] is None  # the blocks' columns were not kept
    assert_close(to_numpy(backend, out), expected, "float64")
    if per_block == 2:  # the finite differences are slow; the ragged case covers both block shapes
        fd_check_layer(model, backend, x, {"weight": w, "bias": b})
