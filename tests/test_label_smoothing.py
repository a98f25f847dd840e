"""softmax_cross_entropy(..., label_smoothing=eps) against torch's cross_entropy, a NumPy float64
reference and finite differences, on every backend; non-finite logits as torch; eps validated."""

import numpy as np
import pytest

import oracles
import portacnn as pc
from conftest import TORCH_IMPORTABLE, assert_close, assert_on_backend, to_numpy

needs_torch = pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed")

EPS = [0.0, 0.05, 0.1, 0.5, 0.9]


def sce(backend, logits, labels, dtype, eps, **kwargs):
    return pc.losses.softmax_cross_entropy(backend.asarray(logits, dtype=dtype), backend.asarray(labels),
                                           label_smoothing=eps, **kwargs)


def smoothed_ref(logits, labels, eps):
    """Float64: q = (1 - eps) * onehot + eps / C; loss = mean_n -sum_c q log p; gradient (p - q) / N."""
    z = np.asarray(logits, dtype=np.float64)
    n, c = z.shape
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))
    q = np.full((n, c), eps / c)
    q[np.arange(n), labels] += 1 - eps
    return float(-np.sum(q * log_p) / n), (np.exp(log_p) - q) / n


def torch_ref(logits, labels, eps):
    import torch

    z = torch.tensor(np.asarray(logits, dtype=np.float64), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(labels), label_smoothing=eps)
    loss.backward()
    return loss.item(), z.grad.numpy()


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("n,c", [(1, 2), (6, 10), (8, 3)])
def test_matches_numpy_reference(backend, dtype, rng, n, c, eps):
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    labels = rng.integers(0, c, size=n)
    loss, d = sce(backend, logits, labels, dtype, eps)
    assert_on_backend(backend, loss, dtype, shape=())
    assert_on_backend(backend, d, dtype, shape=(n, c))
    ref_loss, ref_grad = smoothed_ref(logits, labels, eps)
    assert_close(to_numpy(backend, loss), ref_loss, dtype)
    assert_close(to_numpy(backend, d), ref_grad, dtype)


@needs_torch
@pytest.mark.parametrize("eps", EPS)
def test_matches_torch(backend, rng, eps):
    logits = rng.standard_normal((7, 5)) * 4
    labels = rng.integers(0, 5, size=7)
    loss, d = sce(backend, logits, labels, "float64", eps)
    ref_loss, ref_grad = torch_ref(logits, labels, eps)
    assert_close(to_numpy(backend, loss), ref_loss, "float64")
    assert_close(to_numpy(backend, d), ref_grad, "float64")


def test_zero_smoothing_is_exactly_the_plain_loss(backend, dtype, rng):
    logits = rng.standard_normal((6, 4)).astype(dtype)
    labels = rng.integers(0, 4, size=6)
    plain = pc.losses.softmax_cross_entropy(backend.asarray(logits, dtype=dtype), backend.asarray(labels))
    smooth = sce(backend, logits, labels, dtype, 0.0)
    for a, b in zip(plain, smooth):
        np.testing.assert_array_equal(to_numpy(backend, a), to_numpy(backend, b))
    ref_loss, _ = oracles.softmax_cross_entropy(logits, labels)
    assert_close(to_numpy(backend, smooth[0]), ref_loss, dtype)


@pytest.mark.parametrize("eps", [0.1, 0.7])
def test_finite_differences(backend, rng, eps):
    logits = rng.standard_normal((4, 5)) * 2
    labels = rng.integers(0, 5, size=4)
    _, d = sce(backend, logits, labels, "float64", eps)

    def f(z):
        return to_numpy(backend, sce(backend, z, labels, "float64", eps)[0])

    assert_close(to_numpy(backend, d), oracles.numeric_grad(f, logits), rtol=1e-7)


@pytest.mark.parametrize("eps", [0.1, 0.6])
def test_large_logits_are_stable(backend, dtype, rng, eps):
    logits = (rng.standard_normal((5, 6)) * 1e4).astype(dtype)
    logits[0] = 1e4
    labels = np.array([0, 3, 1, 2, 5])
    loss, d = sce(backend, logits, labels, dtype, eps)
    ref_loss, ref_grad = smoothed_ref(logits, labels, eps)
    assert np.isfinite(ref_loss)
    assert_close(to_numpy(backend, loss), ref_loss, dtype)
    assert_close(to_numpy(backend, d), ref_grad, dtype)


@needs_torch
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_non_finite_logits_as_torch(backend, dtype, eps):
    """-inf logits (not the label's): finite loss without smoothing, +inf with it (torch sums every log p);
    the gradient stays finite. A row with +inf or NaN gives NaN."""
    logits = np.array([[0.0, -np.inf, 1.0], [2.0, 1.0, 0.5]], dtype=dtype)
    labels = np.array([0, 1])
    loss, d = sce(backend, logits, labels, dtype, eps)
    ref_loss, ref_grad = torch_ref(logits, labels, eps)
    np.testing.assert_allclose(to_numpy(backend, loss), ref_loss, rtol=1e-6)
    assert np.all(np.isfinite(to_numpy(backend, d)))
    np.testing.assert_allclose(to_numpy(backend, d), ref_grad.astype(dtype), rtol=1e-6, atol=1e-7)
    for bad in (np.inf, np.nan):
        z = np.array([[0.0, bad, 1.0], [2.0, 1.0, 0.5]], dtype=dtype)
        with np.errstate(invalid="ignore"):  # +inf - +inf in the shift: the NaN torch gives too
            loss, _ = sce(backend, z, labels, dtype, eps)
        assert np.isnan(to_numpy(backend, loss)) and np.isnan(torch_ref(z, labels, eps)[0])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.1", None])
def test_bad_label_smoothing_is_a_value_error(backend, bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        sce(backend, np.zeros((2, 3)), np.array([0, 1]), "float64", bad)


def test_label_smoothing_accepts_numpy_scalars(backend):
    a = sce(backend, np.ones((2, 3)), np.array([0, 1]), "float64", np.float32(0.25))[0]
    b = sce(backend, np.ones((2, 3)), np.array([0, 1]), "float64", 0.25)[0]
    assert float(to_numpy(backend, a)) == pytest.approx(float(to_numpy(backend, b)), rel=1e-7)
