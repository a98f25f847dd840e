"""SGD and Adam against hand-written float64 references of torch.optim's algorithms and against
torch.optim itself, on every backend; dtype/device preservation of the updated parameters."""

import numpy as np
import pytest

import oracles
import portacnn as pc
from conftest import assert_close, assert_on_backend, to_numpy
from optimhelp import grad_sequence, small_model, snapshot

STEPS = 5

SGD_CONFIGS = [
    pytest.param(dict(lr=0.1), id="plain"),
    pytest.param(dict(lr=0.1, momentum=0.9), id="momentum"),
    pytest.param(dict(lr=0.1, momentum=0.9, nesterov=True), id="nesterov"),
    pytest.param(dict(lr=0.1, weight_decay=0.05), id="weight_decay"),
    pytest.param(dict(lr=0.05, momentum=0.8, weight_decay=0.05, nesterov=True), id="all"),
]

ADAM_CONFIGS = [
    pytest.param(dict(lr=1e-3), id="default"),
    pytest.param(dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6), id="betas-eps"),
    pytest.param(dict(lr=1e-2, weight_decay=0.1), id="weight_decay"),
]




def run_reference(ref_step, init, grads, dtype, **hp):
    """Apply the float64 reference rule; grads are rounded to ``dtype`` exactly as fed to portacnn."""
    states = [{} for _ in init]
    params = [p.copy() for p in init]
    history = []
    for step_grads in grads:
        params = [ref_step(p, g.astype(dtype).astype(np.float64), s, **hp) for p, g, s in zip(params, step_grads, states)]
        history.append([p.copy() for p in params])
    return history


def run_portacnn(backend, dtype, opt_cls, grads, **hp):
    model = small_model(backend, dtype)
    params = model.parameters()
    opt = opt_cls(params, **hp)
    init = snapshot(backend, params)
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = backend.asarray(g, dtype=dtype)
        opt.step()
        for p in params:
            assert_on_backend(backend, p.data, dtype, shape=p.grad.shape)
        history.append(snapshot(backend, params))
    return model, init, history


@pytest.mark.parametrize(
    "opt_name, reference_step, hp",
    [pytest.param("SGD", oracles.sgd_step, c.values[0], id=f"SGD-{c.id}") for c in SGD_CONFIGS]
    + [pytest.param("Adam", oracles.adam_step, c.values[0], id=f"Adam-{c.id}") for c in ADAM_CONFIGS],
)
def test_optimizer_matches_reference(backend, dtype, opt_name, reference_step, hp):
    grads = grad_sequence(small_model(backend, dtype).parameters(), STEPS)
    model, init, got = run_portacnn(backend, dtype, getattr(pc.optim, opt_name), grads, **hp)
    want = run_reference(reference_step, init, grads, dtype, **hp)
    for step, (g, w) in enumerate(zip(got, want)):
        for i, (a, b) in enumerate(zip(g, w)):
            assert_close(a, b, dtype, err_msg=f"step {step + 1} param {i}")
    # the optimizer updated the model's own parameters
    for (name, value), a in zip(model.state_dict().items(), got[-1]):
        assert_close(value, a, dtype, err_msg=name)


def _torch_run(torch_opt_cls, init, grads, **hp):
    torch = pytest.importorskip("torch")
    tparams = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in init]
    opt = torch_opt_cls(tparams, **hp)
    history = []
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        history.append([p.detach().numpy().copy() for p in tparams])
    return history


@pytest.mark.parametrize("hp", SGD_CONFIGS)
def test_sgd_matches_torch_optim(backend, hp):
    torch = pytest.importorskip("torch")
    grads = grad_sequence(small_model(backend, "float64").parameters(), STEPS, seed=1)
    _, init, got = run_portacnn(backend, "float64", pc.optim.SGD, grads, **hp)
    want = _torch_run(torch.optim.SGD, init, grads, **hp)
    for step, (g, w) in enumerate(zip(got, want)):
        for i, (a, b) in enumerate(zip(g, w)):
            assert_close(a, b, "float64", err_msg=f"step {step + 1} param {i}")


@pytest.mark.parametrize("hp", ADAM_CONFIGS)
def test_adam_matches_torch_optim(backend, hp):
    torch = pytest.importorskip("torch")
    grads = grad_sequence(small_model(backend, "float64").parameters(), STEPS, seed=1)
    _, init, got = run_portacnn(backend, "float64", pc.optim.Adam, grads, **hp)
    want = _torch_run(torch.optim.Adam, init, grads, **hp)
    for step, (g, w) in enumerate(zip(got, want)):
        for i, (a, b) in enumerate(zip(g, w)):
            assert_close(a, b, "float64", err_msg=f"step {step + 1} param {i}")


def test_reference_formulas_match_torch():
    """Guard the hand-written references themselves (they are the oracle above)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    init = [rng.standard_normal((3, 4))]
    grads = [[rng.standard_normal((3, 4))] for _ in range(STEPS)]
    for hp_param in SGD_CONFIGS:
        hp = hp_param.values[0]
        ref = run_reference(oracles.sgd_step, init, grads, "float64", **hp)
        tor = _torch_run(torch.optim.SGD, init, grads, **hp)
        for a, b in zip(ref, tor):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-12)
    for hp_param in ADAM_CONFIGS:
        hp = hp_param.values[0]
        ref = run_reference(oracles.adam_step, init, grads, "float64", **hp)
        tor = _torch_run(torch.optim.Adam, init, grads, **hp)
        for a, b in zip(ref, tor):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("opt_cls", [pc.optim.SGD, pc.optim.Adam], ids=["SGD", "Adam"])
def test_zero_grad_clears_gradients(backend, opt_cls):
    model = small_model(backend, "float32")
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    out = model.forward(x, training=True)
    model.backward(backend.asarray(np.ones(tuple(out.shape), dtype=np.float32)))
    assert all(p.grad is not None for p in model.parameters())
    opt = opt_cls(model.parameters(), lr=0.01)
    opt.zero_grad()
    for p in model.parameters():
        assert p.grad is None or not np.any(to_numpy(backend, p.grad)), p.name


@pytest.mark.parametrize("opt_cls", [pc.optim.SGD, pc.optim.Adam], ids=["SGD", "Adam"])
def test_step_after_backward_moves_against_gradient(backend, opt_cls):
    """A small plain step after a real backward pass lowers the loss (end-to-end wiring)."""
    rng = np.random.default_rng(0)
    model = small_model(backend, "float64")
    x = rng.standard_normal((4, 2, 4, 4))
    y = backend.asarray(rng.integers(0, 4, size=4))
    opt = opt_cls(model.parameters(), lr=1e-3)
    loss0, d = pc.losses.softmax_cross_entropy(model.forward(x, training=True), y)
    model.backward(d)
    opt.step()
    loss1, _ = pc.losses.softmax_cross_entropy(model.forward(x, training=True), y)
    assert float(to_numpy(backend, loss1)) < float(to_numpy(backend, loss0))


@pytest.mark.parametrize(
    "opt_name,hp",
    [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=1e-2)), ("Adam", dict(lr=1e-2, weight_decay=0.1))],
    ids=["SGD-momentum", "Adam", "Adam-wd"],
)
def test_parameters_without_grad_are_skipped_like_torch(backend, opt_name, hp):
    """torch.optim skips a parameter whose .grad is None, and Adam's bias correction counts that
    parameter's own steps. Here the first parameter gets no gradient in the first two steps."""
    torch = pytest.importorskip("torch")
    model = small_model(backend, "float64")
    params = model.parameters()
    init = snapshot(backend, params)
    opt = getattr(pc.optim, opt_name)(params, **hp)
    tparams = [torch.tensor(p, requires_grad=True) for p in init]
    topt = getattr(torch.optim, opt_name)(tparams, **hp)
    grads = grad_sequence(params, STEPS, seed=4)
    for step, step_grads in enumerate(grads):
        for i, (p, tp, g) in enumerate(zip(params, tparams, step_grads)):
            frozen = i == 0 and step < 2
            p.grad = None if frozen else backend.asarray(g, dtype="float64")
            tp.grad = None if frozen else torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for i, (a, tp) in enumerate(zip(snapshot(backend, params), tparams)):
            assert_close(a, tp.detach().numpy(), "float64", err_msg=f"step {step + 1} param {i}")
