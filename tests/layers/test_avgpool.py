"""AvgPool2D and GlobalAvgPool2D on every backend: forward against NumPy float64 loops and torch, backward
against the adjoint reference, finite differences, shapes, contract and argument checks."""

import numpy as np
import pytest

from conftest import TORCH_IMPORTABLE, assert_close, assert_on_backend, single, to_numpy
from layerhelp import fd_check_layer, forward_np
from portacnn.layers import AvgPool2D, GlobalAvgPool2D

needs_torch = pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def avgpool_ref(x, k, s=None, p=0):
    """y[n,c,i,j] = sum of the zero-padded window at (i*sh, j*sw) / (kh*kw) (count_include_pad=True)."""
    (kh, kw), (ph, pw) = _pair(k), _pair(p)
    sh, sw = _pair(k if s is None else s)
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            y[:, :, i, j] = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw].sum(axis=(2, 3)) / (kh * kw)
    return y


def avgpool_backward_ref(x_shape, g, k, s=None, p=0):
    """Each output's gradient spread evenly over its kh*kw window cells; padding's share dropped."""
    (kh, kw), (ph, pw) = _pair(k), _pair(p)
    sh, sw = _pair(k if s is None else s)
    n, c, h, w = x_shape
    gp = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            gp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw] += g[:, :, i : i + 1, j : j + 1] / (kh * kw)
    return gp[:, :, ph : ph + h, pw : pw + w]


POOL_CASES = [
    # N, C, H, W, kernel_size, stride, padding
    pytest.param(2, 2, 6, 6, 2, None, 0, id="k2"),
    pytest.param(2, 2, 7, 7, 2, None, 0, id="k2-odd"),
    pytest.param(2, 2, 7, 7, 3, 2, 0, id="k3s2"),
    pytest.param(2, 2, 7, 7, 3, 2, 1, id="k3s2p1"),
    pytest.param(1, 2, 7, 8, (2, 3), (2, 1), (1, 1), id="k2x3s2x1p1"),
    pytest.param(2, 1, 5, 5, 2, 1, 0, id="k2s1"),
    pytest.param(2, 2, 6, 6, 3, 3, 1, id="k3s3p1"),
    pytest.param(2, 2, 5, 5, 1, 2, 0, id="k1s2"),
]


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_avgpool_forward_backward_match_reference(backend, dtype, rng, N, C, H, W, k, s, p):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    layer = AvgPool2D(k, stride=s, padding=p)
    model = single(layer, backend, dtype)
    expected = avgpool_ref(x.astype(np.float64), k, s, p)
    out, got = forward_np(model, backend, x, dtype, training=True)
    assert_on_backend(backend, out, dtype, shape=expected.shape)
    assert layer.output_shape((C, H, W)) == expected.shape[1:]
    assert_close(got, expected, dtype)
    g = rng.standard_normal(expected.shape).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    assert_close(to_numpy(backend, dx), avgpool_backward_ref(x.shape, g.astype(np.float64), k, s, p), dtype)


@needs_torch
@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_avgpool_matches_torch(backend, rng, N, C, H, W, k, s, p):
    import torch

    x = rng.standard_normal((N, C, H, W))
    layer = AvgPool2D(k, stride=s, padding=p)
    model = single(layer, backend, "float64")
    _, got = forward_np(model, backend, x, "float64", training=True)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.AvgPool2d(layer.kernel_size, stride=layer.stride, padding=layer.padding)(xt)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.tensor(g))
    dx = to_numpy(backend, model.backward(backend.asarray(g, dtype="float64")))
    assert_close(got, yt.detach().numpy(), "float64")
    assert_close(dx, xt.grad.numpy(), "float64")


@pytest.mark.parametrize("N,C,H,W,k,s,p", POOL_CASES)
def test_avgpool_finite_differences(backend, rng, N, C, H, W, k, s, p):
    x = rng.standard_normal((N, C, H, W))
    fd_check_layer(single(AvgPool2D(k, stride=s, padding=p), backend, "float64"), backend, x)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 2, 1, 1), (3, 1, 7, 7)])
def test_global_avgpool_forward_backward(backend, dtype, rng, shape):
    x = rng.standard_normal(shape).astype(dtype)
    layer = GlobalAvgPool2D()
    model = single(layer, backend, dtype)
    out, got = forward_np(model, backend, x, dtype, training=True)
    assert_on_backend(backend, out, dtype, shape=shape[:2])
    assert layer.output_shape(shape[1:]) == (shape[1],)
    assert_close(got, x.astype(np.float64).mean(axis=(2, 3)), dtype)
    g = rng.standard_normal(shape[:2]).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=shape)
    expected = np.broadcast_to(g.astype(np.float64)[:, :, None, None] / (shape[2] * shape[3]), shape)
    assert_close(to_numpy(backend, dx), expected, dtype)
    if backend.name != "jax":  # JAX arrays are never writable
        dx[0, 0, 0, 0] = 1.0  # a writable array of its own, not a broadcast view


@needs_torch
def test_global_avgpool_matches_torch(backend, rng):
    import torch

    x = rng.standard_normal((2, 3, 5, 6))
    model = single(GlobalAvgPool2D(), backend, "float64")
    _, got = forward_np(model, backend, x, "float64", training=True)
    g = rng.standard_normal((2, 3))
    dx = to_numpy(backend, model.backward(backend.asarray(g, dtype="float64")))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())(xt)
    yt.backward(torch.tensor(g))
    assert_close(got, yt.detach().numpy(), "float64")
    assert_close(dx, xt.grad.numpy(), "float64")


def test_global_avgpool_finite_differences(backend, rng):
    fd_check_layer(single(GlobalAvgPool2D(), backend, "float64"), backend, rng.standard_normal((2, 3, 3, 4)))


@pytest.mark.parametrize("make", [lambda: AvgPool2D(3, 2, 1), GlobalAvgPool2D])
def test_contract(make):
    layer = make()
    assert layer.row_separable and not layer.draws_random and layer.parameters() == [] and layer.buffers() == {}
    assert layer.input_channels is None and layer.out_features is None
    x = np.random.default_rng(0).random((2, 3, 9, 8))
    y = layer.forward(x, training=True)
    assert tuple(y.shape[1:]) == layer.output_shape((3, 9, 8))
    twin = layer.replica()
    assert type(twin) is type(layer) and twin.config() == layer.config()
    layer.release()
    assert not [k for k in vars(layer) if k.startswith("_")]
    assert type(layer)(**layer.config()).config() == layer.config()


def test_avgpool_config_defaults():
    assert AvgPool2D(2).config() == {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
    assert AvgPool2D((2, 3), 1, (1, 0)).config() == {"kernel_size": (2, 3), "stride": (1, 1), "padding": (1, 0)}


@pytest.mark.parametrize("kwargs, name", [
    (dict(kernel_size=0), "kernel_size"),
    (dict(kernel_size=(2, -1)), "kernel_size"),
    (dict(kernel_size=2.0), "kernel_size"),
    (dict(kernel_size=(1, 2, 3)), "kernel_size"),
    (dict(kernel_size=True), "kernel_size"),
    (dict(kernel_size=2, stride=0), "stride"),
    (dict(kernel_size=2, stride="1"), "stride"),
    (dict(kernel_size=2, padding=-1), "padding"),
    (dict(kernel_size=2, padding=2), "padding"),
    (dict(kernel_size=(3, 2), padding=(1, 2)), "padding"),
])
def test_avgpool_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AvgPool2D(**kwargs)


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        AvgPool2D(2).forward(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="smaller than"):
        AvgPool2D(3).forward(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        GlobalAvgPool2D().forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no pixels"):
        GlobalAvgPool2D().forward(np.zeros((2, 4, 0, 3)))


# ----------------------------------------------------------------------------------------------------
# every new layer in one model: checkpoints (architecture validation) and the torch mirror

def _new_layers_model(backend="numpy", dtype="float64", seed=0):
    import portacnn as pc
    from portacnn.layers import Conv2D, Dense, LeakyReLU, Sigmoid, Tanh

    layers = [Conv2D(2, 4, 3, padding=1), LeakyReLU(0.1), AvgPool2D(3, 2, 1), Conv2D(4, 5, 3), Tanh(),
              AvgPool2D(2), Sigmoid(), GlobalAvgPool2D(), Dense(5, 6), LeakyReLU(), Dense(6, 3)]
    return pc.Sequential(layers, backend=backend, dtype=dtype, seed=seed, workers=1)


@pytest.mark.parametrize("input_shape", [None, (2, 11, 10)], ids=["inferred", "stored"])
def test_checkpoint_round_trip_with_every_new_layer(backend, tmp_path, rng, input_shape):
    import portacnn as pc

    model = _new_layers_model()
    x = rng.standard_normal((3, 2, 11, 10))
    expected = np.asarray(model.forward(x))
    path = model.save(tmp_path / "m.safetensors", input_shape=input_shape)
    back = pc.load(path, backend=backend)
    assert back.architecture() == model.architecture()
    assert back.dtype == "float64" and back.num_parameters() == model.num_parameters()
    got = back.forward(back.backend.asarray(x, dtype="float64"))
    assert_on_backend(back.backend, got, "float64", shape=(3, 3))
    assert_close(to_numpy(back.backend, got), expected, "float64")


def test_check_architecture_knows_the_new_layers():
    from portacnn import checkpoint

    arch = _new_layers_model().architecture()
    plan = checkpoint.check_architecture(arch, input_shape=(2, 11, 10))
    assert plan["output_shape"] == (3,)
    assert plan["parameters"] == _new_layers_model().num_parameters()
    assert checkpoint.check_architecture(arch)["input_shape"][0] == 2  # channels from the first convolution
    # without a convolution, the channels a GlobalAvgPool2D feeds a Dense layer are its in_features
    plan = checkpoint.check_architecture([{"type": "AvgPool2D", "kernel_size": 2}, {"type": "GlobalAvgPool2D"},
                                          {"type": "Dense", "in_features": 7, "out_features": 2}])
    assert plan["input_shape"][0] == 7 and plan["output_shape"] == (2,)
    plan = checkpoint.check_architecture([{"type": "Sigmoid"}, {"type": "Tanh"}, {"type": "LeakyReLU"}],
                                         input_shape=(5,))
    assert plan["output_shape"] == (5,) and plan["parameters"] == 0


@pytest.mark.parametrize("spec, message", [
    ({"type": "LeakyReLU", "negative_slope": float("nan")}, "negative_slope"),
    ({"type": "LeakyReLU", "negative_slope": "0.1"}, "negative_slope"),
    ({"type": "LeakyReLU", "slope": 0.1}, "unknown fields"),
    ({"type": "Sigmoid", "inplace": True}, "unknown fields"),
    ({"type": "AvgPool2D"}, "lacks fields"),
    ({"type": "AvgPool2D", "kernel_size": 2, "padding": 2}, "at most half"),
    ({"type": "AvgPool2D", "kernel_size": 2, "stride": 0}, "stride"),
    ({"type": "AvgPool2D", "kernel_size": 2000}, "MAX_INPUT_SIDE"),
    ({"type": "AvgPool2D", "kernel_size": 2, "count_include_pad": False}, "unknown fields"),
    ({"type": "GlobalAvgPool2D", "keepdim": True}, "unknown fields"),
])
def test_checkpoint_validator_refuses_bad_new_layer_fields(spec, message):
    from portacnn import checkpoint

    with pytest.raises(ValueError, match=message):
        checkpoint.check_architecture([spec], input_shape=(1, 8, 8))


def test_checkpoint_validator_checks_shapes_after_global_pooling():
    from portacnn import checkpoint

    with pytest.raises(ValueError, match="flat input"):
        checkpoint.check_architecture([{"type": "GlobalAvgPool2D"}, {"type": "AvgPool2D", "kernel_size": 2}],
                                      input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="flat input"):
        checkpoint.check_architecture([{"type": "GlobalAvgPool2D"}, {"type": "GlobalAvgPool2D"}],
                                      input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="expects 4 features but gets 3"):
        checkpoint.check_architecture([{"type": "GlobalAvgPool2D"}, {"type": "Dense", "in_features": 4,
                                                                     "out_features": 2}], input_shape=(3, 8, 8))


@needs_torch
def test_torch_mirror_of_every_new_layer(rng):
    import torch

    import oracles

    model = _new_layers_model()
    net = oracles.torch_mirror(model, "float64")
    x = rng.standard_normal((3, 2, 11, 10))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(np.asarray(model.forward(x)), expected, "float64")
