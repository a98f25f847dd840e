"""Cross-backend training trajectories: the same seed and the same host-generated batches must give the
same losses and weights on every backend as on NumPy (bit-identical when the backend is NumPy itself)."""

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close, to_numpy

STEPS = 10
TRAJ_RTOL = {"float32": 1e-4, "float64": 1e-9}


def train(backend, dtype, steps=STEPS, seed=0):
    """seed_cnn, SGD(momentum=0.9), batches of 8 from one host generator; returns losses and weights."""
    model = pc.models.seed_cnn(backend=backend, dtype=dtype, seed=seed)
    opt = pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = np.random.default_rng(1234)
    losses = []
    for _ in range(steps):
        x = data.standard_normal((8, 1, 28, 28)).astype(np.float32)
        y = data.integers(0, 10, size=8)
        logits = model.forward(x, training=True)
        loss, dlogits = pc.losses.softmax_cross_entropy(logits, model.backend.asarray(y))
        opt.zero_grad()
        model.backward(dlogits)
        opt.step()
        losses.append(float(to_numpy(model.backend, loss)))
    return np.array(losses), model.state_dict()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_trajectory_matches_numpy(backend, dtype):
    ref_losses, ref_state = train("numpy", dtype)
    losses, state = train(backend, dtype)
    assert np.all(np.isfinite(losses))
    if backend.name == "numpy":  # same library, same inputs: deterministic to the bit
        np.testing.assert_array_equal(losses, ref_losses)
        for k in ref_state:
            np.testing.assert_array_equal(state[k], ref_state[k], err_msg=k)
        return
    rtol = TRAJ_RTOL[dtype]
    assert_close(losses, ref_losses, dtype, rtol=rtol, err_msg="losses")
    for k in ref_state:
        assert_close(state[k], ref_state[k], dtype, rtol=rtol, err_msg=k)


def test_training_makes_progress_on_fixed_batch(backend):
    """Guards the trajectory test against a trivially 'equal' frozen model: weights must move and the
    loss on a repeated batch must fall."""
    model = pc.models.seed_cnn(backend=backend, seed=0)
    init = model.state_dict()
    opt = pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = np.random.default_rng(0)
    x = data.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = model.backend.asarray(data.integers(0, 10, size=8))
    losses = []
    for _ in range(STEPS):
        loss, d = pc.losses.softmax_cross_entropy(model.forward(x, training=True), y)
        opt.zero_grad()
        model.backward(d)
        opt.step()
        losses.append(float(to_numpy(model.backend, loss)))
    assert losses[-1] < 0.5 * losses[0], losses
    for k, v in model.state_dict().items():
        assert not np.array_equal(v, init[k]), k
