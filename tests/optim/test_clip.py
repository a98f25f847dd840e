"""portacnn.optim.clip_grad_norm against torch.nn.utils.clip_grad_norm_ on every backend: the returned total
norm (a 0-d array on the gradients' device, in their dtype) and the clipped gradients."""

import numpy as np
import pytest
from conftest import assert_close, assert_on_backend, to_numpy

import portacnn as pc
from portacnn.layers import Conv2D, Dense, Flatten


def small_model(backend, dtype):
    return pc.Sequential([Conv2D(2, 3, 3), Flatten(), Dense(12, 4)], backend=backend, dtype=dtype, seed=7)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3, 0.0], ids=["clips", "clips-a-little", "no-clip", "zero"])
def test_matches_torch(backend, dtype, max_norm):
    torch = pytest.importorskip("torch")
    params = small_model(backend, dtype).parameters()
    rng = np.random.default_rng(0)
    grads = [(0.3 * rng.standard_normal(tuple(p.data.shape))).astype(dtype) for p in params]
    for p, g in zip(params, grads):
        p.grad = backend.asarray(g, dtype=dtype)
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g.astype(np.float64))
    want = float(torch.nn.utils.clip_grad_norm_(tparams, max_norm))
    total = pc.optim.clip_grad_norm(params, max_norm)
    assert_on_backend(backend, total, dtype, shape=())
    assert_close(to_numpy(backend, total), want, dtype)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_on_backend(backend, p.grad, dtype, shape=tp.shape)
        assert_close(to_numpy(backend, p.grad), tp.grad.numpy(), dtype, err_msg=f"param {i}")


def test_norm_is_global_and_at_most_max_norm(backend):
    params = small_model(backend, "float64").parameters()
    for p in params:
        p.grad = backend.xp.ones_like(p.data)
    n = sum(int(np.prod(tuple(p.data.shape))) for p in params)
    total = pc.optim.clip_grad_norm(params, 1.0)
    np.testing.assert_allclose(float(to_numpy(backend, total)), np.sqrt(n), rtol=1e-12)
    after = np.sqrt(sum(np.sum(to_numpy(backend, p.grad) ** 2) for p in params))
    assert after <= 1.0 and after > 1.0 - 1e-5


def test_skips_missing_grads_and_accepts_groups_and_single_parameter():
    be = pc.get_backend("numpy")
    params = small_model(be, "float64").parameters()
    params[0].grad = np.full(params[0].data.shape, 2.0)
    total = pc.optim.clip_grad_norm([{"params": params[:2]}, {"params": params[2:]}], 1.0)
    np.testing.assert_allclose(float(total), 2.0 * np.sqrt(params[0].data.size))
    assert params[1].grad is None
    assert float(pc.optim.clip_grad_norm(params[0], 10.0)) == pytest.approx(1.0, rel=1e-5)
    assert pc.optim.clip_grad_norm(params[1:], 1.0) == 0.0  # no gradients at all


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_max_norm_is_a_value_error(bad):
    params = small_model(pc.get_backend("numpy"), "float32").parameters()
    with pytest.raises(ValueError, match="max_norm"):
        pc.optim.clip_grad_norm(params, bad)
