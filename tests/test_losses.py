"""softmax_cross_entropy against a float64 oracle and finite differences, stability, validation."""

import numpy as np
import pytest

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, to_numpy


def sce(backend, logits, labels, dtype):
    return pc.losses.softmax_cross_entropy(backend.asarray(logits, dtype=dtype), backend.asarray(labels))


@pytest.mark.parametrize("n,c", [(1, 2), (6, 10), (8, 3)])
def test_loss_matches_oracle(backend, dtype, rng, n, c):
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    labels = rng.integers(0, c, size=n)
    loss, dlogits = sce(backend, logits, labels, dtype)
    assert_on_backend(backend, loss, dtype, shape=())
    assert_on_backend(backend, dlogits, dtype, shape=(n, c))
    ref_loss, ref_grad = oracles.softmax_cross_entropy(logits, labels)
    assert_close(to_numpy(backend, loss), ref_loss, dtype)
    assert_close(to_numpy(backend, dlogits), ref_grad, dtype)


def test_loss_of_equal_logits_is_log_c(backend, dtype):
    loss, dlogits = sce(backend, np.full((4, 10), 2.5), np.array([0, 3, 9, 9]), dtype)
    assert_close(to_numpy(backend, loss), np.log(10.0), dtype)
    expected = np.full((4, 10), 0.1)
    expected[[0, 1, 2, 3], [0, 3, 9, 9]] -= 1.0
    assert_close(to_numpy(backend, dlogits), expected / 4, dtype)


def test_gradient_rows_sum_to_zero(backend, dtype, rng):
    logits = rng.standard_normal((5, 7)).astype(dtype)
    _, d = sce(backend, logits, rng.integers(0, 7, size=5), dtype)
    assert_close(to_numpy(backend, d).sum(axis=1), np.zeros(5), dtype, atol=10 * float(np.finfo(dtype).eps))


def test_loss_finite_differences(backend, rng):
    logits = rng.standard_normal((4, 5)) * 2
    labels = rng.integers(0, 5, size=4)
    _, d = sce(backend, logits, labels, "float64")

    def f(z):
        return to_numpy(backend, sce(backend, z, labels, "float64")[0])

    num = oracles.numeric_grad(f, logits)
    assert_close(to_numpy(backend, d), num, rtol=1e-7)


def test_large_logits_are_stable(backend, dtype, rng):
    logits = (rng.standard_normal((6, 10)) * 1e4).astype(dtype)
    logits[0] = 1e4  # all equal, large
    logits[1, 3] = -1e4
    labels = np.array([0, 3, 1, 2, 5, 9])
    loss, dlogits = sce(backend, logits, labels, dtype)
    loss_np, d_np = to_numpy(backend, loss), to_numpy(backend, dlogits)
    assert np.isfinite(loss_np) and np.all(np.isfinite(d_np))
    ref_loss, ref_grad = oracles.softmax_cross_entropy(logits, labels)
    assert np.isfinite(ref_loss)
    assert_close(loss_np, ref_loss, dtype)
    assert_close(d_np, ref_grad, dtype)


def test_labels_as_int32(backend, rng):
    logits = rng.standard_normal((3, 4))
    labels = np.array([1, 0, 3], dtype=np.int32)
    loss, d = sce(backend, logits, labels, "float64")
    ref_loss, ref_grad = oracles.softmax_cross_entropy(logits, labels)
    assert_close(to_numpy(backend, loss), ref_loss)
    assert_close(to_numpy(backend, d), ref_grad)


@pytest.mark.parametrize(
    "logits_shape,labels",
    [
        pytest.param((4, 3), [0, 1, 2], id="batch-mismatch"),
        pytest.param((3, 3), [0, 1, 3], id="label-too-large"),
        pytest.param((3, 3), [0, -1, 2], id="label-negative"),
        pytest.param((3,), [0, 1, 2], id="logits-rank1"),
        pytest.param((3, 3, 1), [0, 1, 2], id="logits-rank3"),
        pytest.param((3, 3), [[0], [1], [2]], id="labels-rank2"),
    ],
)
def test_bad_arguments(backend, logits_shape, labels):
    logits = np.zeros(logits_shape, dtype=np.float32)
    with pytest.raises(ValueError) as info:
        sce(backend, logits, np.array(labels, dtype=np.int64), "float32")
    assert str(info.value).strip()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_rows_of_a_larger_batch(backend, dtype, rng, smoothing):
    """batch_rows=N: the given rows' terms of a batch of N rows: the gradient rows are those of the whole batch's
    bit for bit, and the parts' losses add up to the batch's (what an MPI rank computes)."""
    logits = (rng.standard_normal((7, 10)) * 3).astype(dtype)
    labels = rng.integers(0, 10, size=7)
    f = pc.losses.softmax_cross_entropy
    whole, dwhole = f(backend.asarray(logits, dtype=dtype), backend.asarray(labels), label_smoothing=smoothing)
    parts = [f(backend.asarray(logits[s], dtype=dtype), backend.asarray(labels[s]), label_smoothing=smoothing,
               batch_rows=7) for s in (slice(0, 4), slice(4, 7))]
    np.testing.assert_array_equal(np.concatenate([to_numpy(backend, d) for _, d in parts]), to_numpy(backend, dwhole))
    assert_close(sum(float(to_numpy(backend, loss)) for loss, _ in parts), float(to_numpy(backend, whole)), dtype)
    assert_close(to_numpy(backend, parts[0][1]), oracles.softmax_cross_entropy(logits[:4], labels[:4])[1] * 4 / 7
                 if smoothing == 0 else to_numpy(backend, dwhole)[:4], dtype)
    for bad in (3, 0, 2.0, True, "7"):
        with pytest.raises(ValueError, match="batch_rows must be an integer of at least the 4 rows given"):
            f(backend.asarray(logits[:4], dtype=dtype), backend.asarray(labels[:4]), batch_rows=bad)
