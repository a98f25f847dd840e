"""Edge cases against PyTorch (float64 and float32, every backend): non-finite and extreme logits, every
integer label dtype, max-pool padding that must never win, NaN gradients, ``input_grad=False``, aliasing,
negative strides. Without torch, each case is checked against the float64 NumPy references of oracles.py
or the expected values written here."""

import importlib.util

import numpy as np
import pytest

import oracles
import portacnn as pc
from portacnn import kernels
from conftest import single, to_numpy
from portacnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU

TORCH = importlib.util.find_spec("torch") is not None
INF = np.inf
# IEEE arithmetic on purpose: NumPy warns where it overflows to inf or makes NaN
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")


def _torch_loss(logits, labels):
    import torch

    z = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(labels, dtype=torch.int64))
    loss.backward()
    return loss.item(), z.grad.numpy()


def _reference_loss(logits, labels):
    """log-softmax in the logits' own dtype (so float32 overflows where torch's does), label picked by index."""
    if TORCH:
        return _torch_loss(logits, labels)
    z = np.asarray(logits)
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    n = z.shape[0]
    onehot = np.zeros_like(z)
    onehot[np.arange(n), labels] = 1
    return float(-np.mean(log_p[np.arange(n), labels])), (np.exp(log_p) - onehot) / n


def _loss(backend, logits, labels):
    loss, grad = pc.losses.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels))
    return float(to_numpy(backend, loss)), to_numpy(backend, grad)


def _cases(dtype):
    big = float(np.finfo(dtype).max) * 0.9
    rows = [
        ([[1.0, -INF, 0.5], [-INF, 2.0, -INF]], [0, 1]),        # a class at -inf: finite loss, zero gradient there
        ([[big, -big, 0.0]], [0]), ([[big, -big, 0.0]], [2]),   # the shift overflows to -inf for the second class
        ([[big, -big, 0.0]], [1]),                              # ... and that class is the label: loss inf
        ([[-big, -big, -big]], [2]), ([[3e-39, 0.0, -0.0]], [1]),
    ]
    return [(np.asarray(z, dtype=dtype), np.asarray(y)) for z, y in rows]


@pytest.mark.parametrize("case", range(6))
def test_loss_of_non_finite_and_extreme_logits_matches_torch(backend, dtype, case):
    logits, labels = _cases(dtype)[case]
    loss, grad = _loss(backend, logits, labels)
    ref_loss, ref_grad = _reference_loss(logits, labels)
    assert loss == pytest.approx(ref_loss, rel=1e-6) or (np.isinf(loss) and loss == ref_loss), (loss, ref_loss)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-7)
    assert not np.isnan(loss) and not np.any(np.isnan(grad))


def test_loss_of_rows_torch_makes_nan_is_nan(backend):
    for logits in ([[INF, 0.0, 0.0]], [[-INF, -INF, -INF]]):
        loss, grad = _loss(backend, np.asarray(logits, dtype=np.float32), np.asarray([0]))
        assert np.isnan(loss) and np.all(np.isnan(grad))
        if TORCH:
            assert np.isnan(_torch_loss(np.asarray(logits, dtype=np.float32), [0])[0])


@pytest.mark.parametrize("label_dtype", ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"])
def test_loss_takes_every_integer_label_dtype(backend, label_dtype):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 5))
    labels = rng.integers(0, 5, 7)
    loss, grad = _loss(backend, logits, labels.astype(label_dtype))
    ref_loss, ref_grad = oracles.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_uint64_labels_out_of_range_are_refused(backend):
    with pytest.raises(ValueError, match="labels must lie in 0..4"):
        pc.losses.softmax_cross_entropy(backend.asarray(np.zeros((2, 5))), backend.asarray(np.array([1, 2**63 + 1], np.uint64)))


# -- max-pool: padding never wins --------------------------------------------------------------------------
POOL_GEOMETRIES = [((2, 1, 1), (1, 1, 3, 3)), ((3, 2, 1), (2, 1, 5, 5)), ((2, 2, 1), (1, 2, 4, 5)), ((3, 1, 1), (1, 1, 4, 4))]


def _pool_case(kind, shape, dtype, rng):
    if kind == "all -inf":
        return np.full(shape, -INF, dtype=dtype)
    if kind == "all finfo.min":
        return np.full(shape, np.finfo(dtype).min, dtype=dtype)
    if kind == "-inf and finfo.min":
        return np.where(rng.random(shape) < 0.5, -INF, np.finfo(dtype).min).astype(dtype)
    x = rng.integers(-2, 2, shape).astype(dtype)  # many ties
    return x


def _pool_reference(x, g, k, s, p, nan="torch"):
    if TORCH:
        import torch

        t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        y = torch.nn.functional.max_pool2d(t, k, stride=s, padding=p)
        y.backward(torch.tensor(g, dtype=torch.float64))
        return y.detach().numpy(), t.grad.numpy()
    return oracles.maxpool2d_forward(x, k, s, p), oracles.maxpool2d_backward(x, g, k, s, p, nan="last")


@pytest.mark.parametrize("geometry, shape", POOL_GEOMETRIES)
@pytest.mark.parametrize("kind", ["all -inf", "all finfo.min", "-inf and finfo.min", "ties"])
def test_maxpool_padding_never_wins_a_tie_or_shows_in_the_output(backend, dtype, geometry, shape, kind):
    k, s, p = geometry
    rng = np.random.default_rng(1)
    x = _pool_case(kind, shape, dtype, rng)
    model = single(MaxPool2D(k, stride=s, padding=p), backend, dtype)
    y = to_numpy(backend, model.forward(x))
    g = np.arange(1, y.size + 1, dtype=dtype).reshape(y.shape)  # every output's gradient is distinguishable
    dx = to_numpy(backend, model.backward(g))
    ref_y, ref_dx = _pool_reference(x, g, k, s, p)
    np.testing.assert_array_equal(y, ref_y.astype(dtype))
    np.testing.assert_array_equal(dx, ref_dx.astype(dtype))
    assert dx.sum() == g.sum()  # no gradient lost to padding


@pytest.mark.parametrize("geometry, shape", POOL_GEOMETRIES)
def test_maxpool_nan_forward_matches_torch_and_its_gradient_is_documented(backend, dtype, geometry, shape):
    """Forward: NaN wins as in torch. Backward (documented difference): a window whose max is NaN passes no
    gradient; torch gives it to the window's last NaN. Everywhere else the gradients are torch's. The torch
    backend computes with torch's own max-pool (kernels/torch_fast.py), so there the NaN gradient is torch's."""
    k, s, p = geometry
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.25] = np.nan
    model = single(MaxPool2D(k, stride=s, padding=p), backend, dtype)
    y = to_numpy(backend, model.forward(x))
    g = np.arange(1, y.size + 1, dtype=dtype).reshape(y.shape)
    dx = to_numpy(backend, model.backward(g))
    ref_y, _ = _pool_reference(x, g, k, s, p)
    np.testing.assert_array_equal(y, ref_y.astype(dtype))
    nan = "last" if backend.name == "torch" and not kernels.portable_only() else "none"
    np.testing.assert_array_equal(dx, oracles.maxpool2d_backward(x, g, k, s, p, nan=nan).astype(dtype))
    if TORCH and nan == "none":
        # torch's gradient minus what its NaN windows handed to their last NaN is exactly portacnn's
        torch_dx = _pool_reference(x, g, k, s, p)[1]
        nan_part = oracles.maxpool2d_backward(x, g, k, s, p, nan="last") - oracles.maxpool2d_backward(x, g, k, s, p)
        np.testing.assert_array_equal(dx, (torch_dx - nan_part).astype(dtype))


def test_relu_gradient_at_nan_and_signed_zero_and_infinities_matches_torch(backend, dtype):
    x = np.array([[np.nan, 1.0, 0.0, -0.0, -INF, INF, -2.0]], dtype=dtype)
    model = single(ReLU(), backend, dtype)
    model.forward(x)
    dx = to_numpy(backend, model.backward(np.full(x.shape, 3.0, dtype=dtype)))
    expected = np.array([[3.0, 3.0, 0.0, 0.0, 0.0, 3.0, 0.0]], dtype=dtype)
    if TORCH:
        import torch

        t = torch.tensor(x, requires_grad=True)
        torch.relu(t).backward(torch.full(x.shape, 3.0, dtype=t.dtype))
        expected = t.grad.numpy()
    np.testing.assert_array_equal(dx, expected)


# -- input_grad=False --------------------------------------------------------------------------------------
FIRST_LAYERS = [
    pytest.param(lambda: [MaxPool2D(2), Flatten(), Dense(8, 3)], id="MaxPool2D"),
    pytest.param(lambda: [ReLU(), Flatten(), Dense(32, 3)], id="ReLU"),
    pytest.param(lambda: [Flatten(), Dense(32, 3)], id="Flatten"),
    pytest.param(lambda: [Dropout(0.5), Flatten(), Dense(32, 3)], id="Dropout"),
    pytest.param(lambda: [Conv2D(2, 2, 3), Flatten(), Dense(8, 3)], id="Conv2D"),
]


@pytest.mark.parametrize("layers", FIRST_LAYERS)
@pytest.mark.parametrize("workers", [1, 2])
def test_backward_without_input_grad_returns_none_whatever_the_first_layer(backend, layers, workers):
    if workers > 1 and not backend.is_cpu:
        pytest.skip("shards run on CPU backends only")
    model = pc.Sequential(layers(), backend=backend, dtype="float64", seed=0, workers=workers)
    x = np.random.default_rng(0).standard_normal((8, 2, 4, 4))
    logits = model.forward(x, training=True)
    grad = backend.xp.ones_like(logits)
    assert model.backward(grad, input_grad=False) is None
    assert all(p.grad is not None for p in model.parameters())
    model.forward(x, training=True)
    assert model.backward(grad, input_grad=True) is not None


# -- aliasing and strides ------------------------------------------------------------------------------------
def test_load_state_dict_copies_on_every_backend(backend):
    model = pc.models.seed_cnn(backend=backend, seed=0, workers=1)
    state = pc.models.seed_cnn(seed=1).state_dict()
    kept = {k: v.copy() for k, v in state.items()}
    model.load_state_dict(state)
    opt = pc.optim.SGD(model.parameters(), lr=0.5)
    x, y = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32), np.arange(4)
    loss, dlogits = pc.losses.softmax_cross_entropy(model.forward(x, training=True), y)
    model.backward(dlogits)
    opt.step()
    for key, value in state.items():
        np.testing.assert_array_equal(value, kept[key])


def test_negative_strides_reach_every_backend_and_the_optimizer_state(backend):
    model = pc.models.seed_cnn(backend=backend, seed=0, workers=1)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    flipped = x[:, :, ::-1, ::-1]
    np.testing.assert_array_equal(to_numpy(backend, model.forward(flipped)),
                                  to_numpy(backend, model.forward(np.ascontiguousarray(flipped))))
    state = {k: np.flip(v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    opt = pc.optim.Adam(model.parameters())
    steps = {"steps": [3] * len(opt.params),
             "state": {f"{i}.{name}": np.flip(np.abs(to_numpy(backend, p.data)))
                       for i, p in enumerate(opt.params) for name in ("m", "v")}}
    opt.load_state_dict(steps, lambda v, dtype: backend.asarray(v, dtype=dtype))
    assert to_numpy(backend, opt.state[0]["m"]).tolist() == steps["state"]["0.m"].tolist()
