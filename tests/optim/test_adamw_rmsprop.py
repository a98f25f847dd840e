"""AdamW and RMSprop against torch.optim on every backend, parameter groups (with and without weight decay,
split_decay), dtype/device preservation, hyper-parameter checks and state_dict round trips."""

import json

import numpy as np
import pytest
from conftest import assert_close, assert_on_backend
from optimhelp import grad_sequence, small_model, snapshot

import portacnn as pc

STEPS = 5

ADAMW_CONFIGS = [
    pytest.param(dict(), id="default"),
    pytest.param(dict(lr=1e-2, weight_decay=0.0), id="no-decay"),
    pytest.param(dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), id="betas-eps-decay"),
]

RMSPROP_CONFIGS = [
    pytest.param(dict(), id="plain"),
    pytest.param(dict(lr=1e-2, weight_decay=0.05), id="weight_decay"),
    pytest.param(dict(lr=1e-2, momentum=0.9), id="momentum"),
    pytest.param(dict(lr=1e-2, centered=True), id="centered"),
    pytest.param(dict(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.8, centered=True), id="all"),
]

CASES = [pytest.param("AdamW", c.values[0], id=f"AdamW-{c.id}") for c in ADAMW_CONFIGS] + [
    pytest.param("RMSprop", c.values[0], id=f"RMSprop-{c.id}") for c in RMSPROP_CONFIGS]




def _groups(items, decay_free):
    """Flat list, or two groups: indices in ``decay_free`` get weight_decay 0."""
    if decay_free is None:
        return list(items)
    return [{"params": [p for i, p in enumerate(items) if i not in decay_free]},
            {"params": [p for i, p in enumerate(items) if i in decay_free], "weight_decay": 0.0}]


def run_both(backend, dtype, name, hp, decay_free=None, seed=1):
    """K steps of portacnn and of torch.optim (float64) from the same weights and (dtype-rounded) gradients."""
    torch = pytest.importorskip("torch")
    model = small_model(backend, dtype)
    params = model.parameters()
    init = snapshot(backend, params)
    grads = grad_sequence(params, STEPS, seed=seed)
    opt = getattr(pc.optim, name)(_groups(params, decay_free), **hp)
    tparams = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in init]
    topt = getattr(torch.optim, name)(_groups(tparams, decay_free), **hp)
    got, want = [], []
    for step_grads in grads:
        for p, tp, g in zip(params, tparams, step_grads):
            g = g.astype(dtype)
            p.grad = backend.asarray(g, dtype=dtype)
            tp.grad = torch.tensor(g.astype(np.float64))
        opt.step()
        topt.step()
        for p in params:
            assert_on_backend(backend, p.data, dtype, shape=p.grad.shape)
        got.append(snapshot(backend, params))
        want.append([tp.detach().numpy().copy() for tp in tparams])
    return opt, got, want


def assert_histories(got, want, dtype):
    for step, (g, w) in enumerate(zip(got, want)):
        for i, (a, b) in enumerate(zip(g, w)):
            assert_close(a, b, dtype, err_msg=f"step {step + 1} param {i}")


@pytest.mark.parametrize("name, hp", CASES)
def test_matches_torch_optim(backend, dtype, name, hp):
    _, got, want = run_both(backend, dtype, name, hp)
    assert_histories(got, want, dtype)


@pytest.mark.parametrize("name, hp", [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1)),
                                      ("Adam", dict(lr=1e-2, weight_decay=0.1)),
                                      ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
                                      ("RMSprop", dict(lr=1e-2, weight_decay=0.1, momentum=0.5))],
                         ids=["SGD", "Adam", "AdamW", "RMSprop"])
def test_parameter_groups_without_decay_match_torch(backend, dtype, name, hp):
    """Biases (indices 1 and 3) in a group with weight_decay=0, as torch users write it."""
    opt, got, want = run_both(backend, dtype, name, hp, decay_free={1, 3})
    assert_histories(got, want, dtype)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert len(opt.params) == 4


def test_group_overrides_lr_and_matches_torch(backend):
    torch = pytest.importorskip("torch")
    model = small_model(backend, "float64")
    params = model.parameters()
    init = snapshot(backend, params)
    opt = pc.optim.AdamW([{"params": params[:2], "lr": 0.05}, {"params": params[2:]}], lr=1e-2)
    tparams = [torch.tensor(p, requires_grad=True) for p in init]
    topt = torch.optim.AdamW([{"params": tparams[:2], "lr": 0.05}, {"params": tparams[2:]}], lr=1e-2)
    for step_grads in grad_sequence(params, STEPS, seed=3):
        for p, tp, g in zip(params, tparams, step_grads):
            p.grad, tp.grad = backend.asarray(g, dtype="float64"), torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for a, tp in zip(snapshot(backend, params), tparams):
        assert_close(a, tp.detach().numpy(), "float64")


def test_split_decay(backend):
    model = small_model(backend, "float32")
    decay, no_decay = pc.optim.split_decay(model)
    assert [tuple(p.data.shape) for p in decay["params"]] == [(3, 2, 3, 3), (4, 12)]
    assert [tuple(p.data.shape) for p in no_decay["params"]] == [(3,), (4,)]
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    opt = pc.optim.AdamW(pc.optim.split_decay(model), lr=1e-3, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert pc.optim.split_decay(model, weight_decay=0.2)[0]["weight_decay"] == 0.2
    # biases stay put under pure decay (zero gradients), weights shrink by (1 - lr * wd)
    params = model.parameters()
    before = snapshot(backend, params)
    for p in params:
        p.grad = backend.xp.zeros_like(p.data)
    opt.step()
    after = snapshot(backend, params)
    np.testing.assert_allclose(after[1], before[1], rtol=0, atol=0)
    np.testing.assert_allclose(after[0], before[0] * (1 - 1e-3 * 0.05), rtol=1e-6)


def test_flat_list_api_is_unchanged():
    model = small_model(pc.get_backend("numpy"), "float32")
    opt = pc.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.5)
    assert len(opt.param_groups) == 1 and opt.params == model.parameters()
    assert opt.lr == 0.01 and opt.momentum == 0.5
    opt.lr = 0.02  # what the CLI's --lr does: every group follows
    assert [g["lr"] for g in opt.param_groups] == [0.02] and opt.defaults["lr"] == 0.02
    assert pc.optim.OPTIMIZERS["adamw"] is pc.optim.AdamW and pc.optim.OPTIMIZERS["rmsprop"] is pc.optim.RMSprop


@pytest.mark.parametrize("name, hp", [("AdamW", dict(lr=1e-2)), ("RMSprop", dict(momentum=0.9, centered=True)),
                                      ("SGD", dict(lr=0.1, momentum=0.9))], ids=["AdamW", "RMSprop", "SGD"])
def test_state_dict_resumes_with_groups(backend, name, hp):
    """Saving after 2 steps, loading into a fresh optimizer (with another lr) and continuing equals an
    uninterrupted run; the saved groups are JSON and restore the per-group hyper-parameters."""
    grads = grad_sequence(small_model(backend, "float64").parameters(), 4, seed=5)

    def feed(params, g):
        for p, gi in zip(params, g):
            p.grad = backend.asarray(gi, dtype="float64")

    model_a = small_model(backend, "float64")
    opt_a = getattr(pc.optim, name)(pc.optim.split_decay(model_a, weight_decay=0.01), **hp)
    for g in grads:
        feed(model_a.parameters(), g)
        opt_a.step()
    model_b = small_model(backend, "float64")
    opt_b = getattr(pc.optim, name)(pc.optim.split_decay(model_b, weight_decay=0.01), **hp)
    for g in grads[:2]:
        feed(model_b.parameters(), g)
        opt_b.step()
    saved = opt_b.state_dict(lambda v: np.asarray(backend.to_numpy(v)).copy())
    json.dumps(saved["param_groups"])
    opt_c = getattr(pc.optim, name)(pc.optim.split_decay(model_b), **{**hp, "lr": 0.5})
    opt_c.load_state_dict(saved, lambda v, dtype: backend.asarray(v, dtype=dtype))
    assert opt_c.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
    assert [g["weight_decay"] for g in opt_c.param_groups] == [0.01, 0.0]
    for g in grads[2:]:
        feed(model_b.parameters(), g)
        opt_c.step()
    for a, b in zip(snapshot(backend, model_a.parameters()), snapshot(backend, model_b.parameters())):
        assert_close(b, a, "float64")


def test_old_state_dict_format_still_loads():
    """A ``{"steps", "state"}`` dict as the previous version saved it (no param_groups)."""
    be = pc.get_backend("numpy")
    model = small_model(be, "float32")
    opt = pc.optim.Adam(model.parameters(), lr=1e-3)
    shapes = [tuple(p.data.shape) for p in model.parameters()]
    old = {"steps": 3, "state": {f"{i}.{k}": np.ones(s, np.float32) for i, s in enumerate(shapes) for k in "mv"}}
    opt.load_state_dict(old, lambda v, dtype: be.asarray(v, dtype=dtype))
    assert opt.param_steps == [3, 3, 3, 3] and opt.lr == 1e-3


BAD = [
    ("AdamW", dict(lr=True), "lr"), ("AdamW", dict(lr=-1.0), "lr"), ("AdamW", dict(betas=(0.9, True)), "betas"), ("AdamW", dict(eps=-1e-8), "eps"),
    ("AdamW", dict(weight_decay=-0.1), "weight_decay"), ("AdamW", dict(betas=(0.9, 1.0)), "betas"),
    ("AdamW", dict(betas=(0.9,)), "betas"), ("AdamW", dict(lr=float("nan")), "lr"),
    ("RMSprop", dict(centered=1), "centered"), ("RMSprop", dict(alpha=-0.1), "alpha"), ("RMSprop", dict(alpha=1.5), "alpha"),
    ("RMSprop", dict(eps=-1.0), "eps"), ("RMSprop", dict(weight_decay=-1.0), "weight_decay"),
    ("RMSprop", dict(momentum=-0.5), "momentum"), ("RMSprop", dict(lr="0.1"), "lr"),
]


@pytest.mark.parametrize("name, hp, arg", BAD, ids=[f"{n}-{a}-{i}" for i, (n, _, a) in enumerate(BAD)])
def test_bad_hyperparameters_are_value_errors(name, hp, arg):
    params = small_model(pc.get_backend("numpy"), "float32").parameters()
    with pytest.raises(ValueError, match=arg):
        getattr(pc.optim, name)(params, **hp)
    with pytest.raises(ValueError, match=arg):  # also inside a parameter group
        getattr(pc.optim, name)([{"params": params[:2], **hp}, {"params": params[2:]}])


def test_bad_groups_are_value_errors():
    params = small_model(pc.get_backend("numpy"), "float32").parameters()
    with pytest.raises(ValueError, match="more than one parameter group"):
        pc.optim.AdamW([{"params": params}, {"params": params[:1]}])
    with pytest.raises(ValueError, match="unknown keys.*weight_deacy"):
        pc.optim.AdamW([{"params": params, "weight_deacy": 0.0}])
    with pytest.raises(ValueError, match="'params'"):
        pc.optim.RMSprop([{"lr": 0.1}])
    with pytest.raises(ValueError, match="empty"):
        pc.optim.RMSprop([])
    with pytest.raises(ValueError, match="lr"):
        pc.optim.AdamW(params).lr = -1.0
