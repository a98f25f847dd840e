"""The oracles are only worth what they compute: check them against PyTorch and known derivatives."""

import numpy as np
import pytest

import oracles


def test_numeric_grad_of_known_function():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4))
    x = rng.standard_normal((3, 4))
    g = oracles.numeric_grad(lambda v: np.sum(a * v**2) + np.sum(np.sin(v)), x)
    np.testing.assert_allclose(g, 2 * a * x + np.cos(x), rtol=1e-7, atol=1e-8)
    assert x.shape == g.shape


@pytest.mark.parametrize(
    "k,s,p", [(3, 1, 0), ((2, 3), 1, 0), (3, 2, 1), ((3, 2), (2, 1), (1, 0)), (4, 2, 0), (5, 1, 2)]
)
def test_conv_oracle_matches_torch(k, s, p):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    kh, kw = k if isinstance(k, tuple) else (k, k)
    x = rng.standard_normal((2, 3, 8, 7))
    w = rng.standard_normal((4, 3, kh, kw))
    b = rng.standard_normal(4)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=s, padding=p)
    np.testing.assert_allclose(oracles.conv2d_forward(x, w, b, s, p), want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 0), (3, 2, 1), ((2, 3), (2, 1), (1, 1)), (2, 1, 0), (3, 3, 1)])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_maxpool_oracle_matches_torch(k, s, p, ties):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=(2, 2, 7, 8)).astype(np.float64) if ties else rng.standard_normal((2, 2, 7, 8))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, k, stride=s, padding=p)
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(oracles.maxpool2d_forward(x, k, s, p), yt.detach().numpy())
    np.testing.assert_allclose(oracles.maxpool2d_backward(x, g, k, s, p), xt.grad.numpy(), rtol=1e-14, atol=1e-14)


def test_softmax_cross_entropy_oracle_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 7)) * 3
    y = rng.integers(0, 7, size=5)
    zt = torch.tensor(z, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(zt, torch.from_numpy(y))
    loss.backward()
    ref_loss, ref_grad = oracles.softmax_cross_entropy(z, y)
    np.testing.assert_allclose(ref_loss, loss.item(), rtol=1e-13)
    np.testing.assert_allclose(ref_grad, zt.grad.numpy(), rtol=1e-12, atol=1e-15)
