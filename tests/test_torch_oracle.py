"""PyTorch as the oracle: the same state dict in the equivalent torch.nn.Sequential must give the same
logits, loss, input gradient, every parameter gradient, and the same parameters after K optimizer steps
(SGD with momentum; Adam), on every portacnn backend, in float32 and float64."""

import numpy as np
import pytest

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, to_numpy
from portacnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

STEPS = 5
# Multi-step trajectories compound rounding differences; float32 needs more room than one pass.
TRAJ_RTOL = {"float32": 1e-4, "float64": 1e-9}


def _strided(backend, dtype):
    layers = [Conv2D(3, 4, 3, stride=2, padding=1), ReLU(), MaxPool2D(3, stride=2, padding=1), Flatten(), Dense(64, 10)]
    return pc.Sequential(layers, backend=backend, dtype=dtype, seed=0)


NETS = {  # the torch twin of each is built from its architecture() (oracles.torch_mirror), with its state dict
    "seed_cnn": (lambda be, dt: pc.models.seed_cnn(backend=be, dtype=dt, seed=0), (1, 28, 28)),
    "lenet5": (lambda be, dt: pc.models.lenet5(backend=be, dtype=dt, seed=0), (1, 28, 28)),
    "strided": (_strided, (3, 16, 16)),
}
NET_IDS = list(NETS)

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_pair(net, backend, dtype):
    build_pc, chw = NETS[net]
    model = build_pc(backend, dtype)
    return model, oracles.torch_mirror(model, dtype), chw


def batch(rng, chw, n=8, dtype="float32"):
    x = rng.standard_normal((n, *chw)).astype(dtype)
    y = rng.integers(0, 10, size=n)
    return x, y


def torch_step_grads(tmodel, x, y, dtype):
    xt = torch.tensor(x, dtype=TORCH_DTYPES[dtype], requires_grad=True)
    logits = tmodel(xt)
    logits.retain_grad()
    loss = F.cross_entropy(logits, torch.as_tensor(y))
    loss.backward()
    return logits, loss, xt


def pc_step_grads(model, backend, x, y, training=True):
    logits = model.forward(backend.asarray(x), training=training)
    loss, dlogits = pc.losses.softmax_cross_entropy(logits, backend.asarray(y))
    dx = model.backward(dlogits)
    return logits, loss, dlogits, dx


def compare_params(model, tmodel, dtype, rtol=None, what=""):
    tparams = dict(tmodel.named_parameters())
    for p in model.parameters():
        assert_close(to_numpy(model.backend, p.data), tparams[p.name].detach().numpy(), dtype, rtol=rtol,
                     err_msg=f"{what} {p.name}")


@pytest.mark.parametrize("net", NET_IDS)
def test_forward_backward_matches_torch(backend, dtype, net):
    rng = np.random.default_rng(0)
    model, tmodel, chw = make_pair(net, backend, dtype)
    x, y = batch(rng, chw, dtype=dtype)

    logits, loss, dlogits, dx = pc_step_grads(model, backend, x, y)
    t_logits, t_loss, xt = torch_step_grads(tmodel, x, y, dtype)

    assert_on_backend(backend, logits, dtype, shape=(8, 10))
    assert_on_backend(backend, loss, dtype, shape=())
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    assert_close(to_numpy(backend, logits), t_logits.detach().numpy(), dtype, err_msg="logits")
    assert_close(to_numpy(backend, loss), t_loss.item(), dtype, err_msg="loss")
    assert_close(to_numpy(backend, dlogits), t_logits.grad.numpy(), dtype, err_msg="dlogits")
    assert_close(to_numpy(backend, dx), xt.grad.numpy(), dtype, err_msg="input grad")
    tparams = dict(tmodel.named_parameters())
    assert [p.name for p in model.parameters()] == list(tparams)
    for p in model.parameters():
        assert_on_backend(backend, p.grad, dtype, shape=tuple(tparams[p.name].shape))
        assert_close(to_numpy(backend, p.grad), tparams[p.name].grad.numpy(), dtype, err_msg=f"grad {p.name}")


def _train_both(backend, dtype, net, make_opts):
    rng = np.random.default_rng(1)
    model, tmodel, chw = make_pair(net, backend, dtype)
    opt, topt = make_opts(model, tmodel)
    rtol = TRAJ_RTOL[dtype]
    for step in range(STEPS):
        x, y = batch(rng, chw, dtype=dtype)
        opt.zero_grad()
        topt.zero_grad()
        _, loss, _, _ = pc_step_grads(model, backend, x, y)
        _, t_loss, _ = torch_step_grads(tmodel, x, y, dtype)
        assert_close(to_numpy(backend, loss), t_loss.item(), dtype, rtol=rtol, err_msg=f"loss at step {step}")
        opt.step()
        topt.step()
        compare_params(model, tmodel, dtype, rtol=rtol, what=f"after step {step + 1}:")
        for p in model.parameters():
            assert_on_backend(backend, p.data, dtype)


@pytest.mark.parametrize("net", NET_IDS)
def test_sgd_momentum_steps_match_torch(backend, dtype, net):
    def opts(model, tmodel):
        return (pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9))  # fmt: skip

    _train_both(backend, dtype, net, opts)


@pytest.mark.parametrize("net", NET_IDS)
def test_adam_steps_match_torch(backend, dtype, net):
    def opts(model, tmodel):
        return (pc.optim.Adam(model.parameters(), lr=1e-3),
                torch.optim.Adam(tmodel.parameters(), lr=1e-3))  # fmt: skip

    _train_both(backend, dtype, net, opts)


def test_kannada_eval_forward_backward_matches_torch(backend, dtype):
    """Dropout disabled on both sides (portacnn training=False, torch eval()); backward must still work."""
    rng = np.random.default_rng(2)
    model = pc.models.kannada_cnn(backend=backend, dtype=dtype, seed=0)
    tmodel = oracles.torch_mirror(model, dtype)
    tmodel.eval()
    x, y = batch(rng, (1, 28, 28), n=2, dtype=dtype)

    logits, loss, dlogits, dx = pc_step_grads(model, backend, x, y, training=False)
    t_logits, t_loss, xt = torch_step_grads(tmodel, x, y, dtype)
    assert_close(to_numpy(backend, logits), t_logits.detach().numpy(), dtype, err_msg="logits")
    assert_close(to_numpy(backend, loss), t_loss.item(), dtype, err_msg="loss")
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    assert_close(to_numpy(backend, dx), xt.grad.numpy(), dtype, err_msg="input grad")
    tparams = dict(tmodel.named_parameters())
    for p in model.parameters():
        assert_close(to_numpy(backend, p.grad), tparams[p.name].grad.numpy(), dtype, err_msg=f"grad {p.name}")


def test_kannada_training_forward_uses_dropout(backend):
    """Sanity check that the comparison above is meaningful: training=True changes the logits."""
    rng = np.random.default_rng(2)
    model = pc.models.kannada_cnn(backend=backend, seed=0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    a = to_numpy(backend, model.forward(x, training=False))
    b = to_numpy(backend, model.forward(x, training=True))
    assert not np.allclose(a, b)
