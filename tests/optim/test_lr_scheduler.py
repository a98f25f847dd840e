"""portacnn.optim.lr_scheduler against torch.optim.lr_scheduler: the same learning-rate sequence for 60 steps
(per parameter group), OneCycleLR's momentum / beta1 sequence and the training it drives, JSON-able state dicts
that resume the sequence, and argument checks."""

import json

import numpy as np
import pytest

import portacnn as pc
from portacnn.optim import lr_scheduler as ls

STEPS = 60
RTOL = 1e-12

# (portacnn/torch class name, kwargs for both)
CASES = [
    pytest.param("StepLR", dict(step_size=7), id="StepLR"),
    pytest.param("StepLR", dict(step_size=10, gamma=0.5), id="StepLR-gamma"),
    pytest.param("CosineAnnealingLR", dict(T_max=60), id="Cosine"),
    pytest.param("CosineAnnealingLR", dict(T_max=20, eta_min=1e-4), id="Cosine-restarts-eta_min"),
    pytest.param("LinearLR", dict(), id="LinearLR"),
    pytest.param("LinearLR", dict(start_factor=0.1, end_factor=0.5, total_iters=30), id="LinearLR-custom"),
    pytest.param("OneCycleLR", dict(max_lr=0.1, total_steps=60), id="OneCycle"),
    pytest.param("OneCycleLR", dict(max_lr=[0.1, 0.03], total_steps=61, pct_start=0.25, anneal_strategy="linear",
                                    div_factor=10.0, final_div_factor=100.0), id="OneCycle-linear-per-group"),
    pytest.param("OneCycleLR", dict(max_lr=0.2, total_steps=70, three_phase=True), id="OneCycle-three-phase"),
]


def _torch():
    return pytest.importorskip("torch")


def torch_optimizer(lrs=(0.1, 0.01), opt="SGD"):
    torch = _torch()
    groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    return getattr(torch.optim, opt)(groups, lr=lrs[0])


def pc_optimizer(lrs=(0.1, 0.01), opt="SGD"):
    params = pc.Sequential([pc.layers.Dense(3, 2)], backend="numpy", dtype="float64", seed=0).parameters()
    return getattr(pc.optim, opt)([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def torch_scheduler(name, opt, kw):
    torch = _torch()
    return getattr(torch.optim.lr_scheduler, name)(opt, **kw)


def torch_sequence(make, steps=STEPS):
    opt, sched = make()
    seq = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        seq.append(sched.get_last_lr())
    return seq, [g["lr"] for g in opt.param_groups]


def pc_sequence(make, steps=STEPS):
    opt, sched = make()
    seq = [sched.get_last_lr()]
    for _ in range(steps):
        opt.step()
        sched.step()
        seq.append(sched.get_last_lr())
        assert [g["lr"] for g in opt.param_groups] == seq[-1]
    return seq


def assert_same_sequence(got, want):
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=0, err_msg=f"step {step}")


@pytest.mark.parametrize("name, kw", CASES)
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_sequence_matches_torch(name, kw, opt_name):
    steps = kw.get("total_steps", STEPS)
    want, _ = torch_sequence(lambda: (o := torch_optimizer(opt=opt_name), torch_scheduler(name, o, kw)), steps)
    got = pc_sequence(lambda: (o := pc_optimizer(opt=opt_name), getattr(ls, name)(o, **kw)), steps)
    assert_same_sequence(got, want)


SEQUENTIAL = [
    pytest.param(lambda m, o: [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=50)],
                 [5], id="warmup-cosine"),
    pytest.param(lambda m, o: [m.LinearLR(o, start_factor=0.25, total_iters=4), m.StepLR(o, step_size=9, gamma=0.5),
                               m.CosineAnnealingLR(o, T_max=15, eta_min=1e-3)], [4, 30], id="three-schedulers"),
]


@pytest.mark.parametrize("make, milestones", SEQUENTIAL)
def test_sequential_matches_torch(make, milestones):
    torch = _torch()

    def t():
        o = torch_optimizer()
        return o, torch.optim.lr_scheduler.SequentialLR(o, make(torch.optim.lr_scheduler, o), milestones)

    def p():
        o = pc_optimizer()
        return o, ls.SequentialLR(o, make(ls, o), milestones)

    want, _ = torch_sequence(t)
    assert_same_sequence(pc_sequence(p), want)


RESUMABLE = [pytest.param(lambda o, c=c: getattr(ls, c.values[0])(o, **c.values[1]), id=c.id) for c in CASES] + [
    pytest.param(lambda o, s=s: ls.SequentialLR(o, s.values[0](ls, o), s.values[1]), id=f"Sequential-{s.id}")
    for s in SEQUENTIAL]


@pytest.mark.parametrize("make", RESUMABLE)
@pytest.mark.parametrize("k", [0, 3, 17])
def test_resume_continues_the_sequence(make, k):
    """k steps, save optimizer and scheduler (through JSON), build fresh ones, load, continue: the same rates
    as an uninterrupted run."""
    steps = 55
    full = pc_sequence(lambda: (o := pc_optimizer(), make(o)), steps)
    opt = pc_optimizer()
    sched = make(opt)
    for _ in range(k):
        opt.step()
        sched.step()
    opt_state = opt.state_dict(np.asarray)
    sched_state = json.loads(json.dumps(sched.state_dict()))
    opt2 = pc_optimizer()
    sched2 = make(opt2)
    opt2.load_state_dict({**opt_state, "param_groups": json.loads(json.dumps(opt_state["param_groups"]))},
                         lambda v, dtype: v)
    sched2.load_state_dict(sched_state)
    assert sched2.get_last_lr() == full[k]
    resumed = full[: k + 1]
    for _ in range(steps - k):
        opt2.step()
        sched2.step()
        resumed.append(sched2.get_last_lr())
    assert resumed == full  # bit for bit: the same float operations in the same order


def test_scheduler_sets_optimizer_lr_and_training_uses_it():
    opt = pc_optimizer(lrs=(0.1, 0.1))
    sched = ls.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert opt.lr == 0.05 and [g["lr"] for g in opt.param_groups] == [0.05, 0.05]
    p = opt.params[0]
    before = p.data.copy()
    p.grad = np.ones_like(p.data)
    opt.step()
    np.testing.assert_allclose(p.data, before - 0.05)


BAD = [
    (lambda o: ls.StepLR(o, step_size=0), "step_size"),
    (lambda o: ls.StepLR(o, step_size=2.5), "step_size"),
    (lambda o: ls.StepLR(o, step_size=2, gamma=-1.0), "gamma"),
    (lambda o: ls.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: ls.CosineAnnealingLR(o, T_max=5, eta_min=-1.0), "eta_min"),
    (lambda o: ls.LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: ls.LinearLR(o, start_factor=1.5), "start_factor"),
    (lambda o: ls.LinearLR(o, end_factor=-0.1), "end_factor"),
    (lambda o: ls.LinearLR(o, total_iters=0), "total_iters"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=0), "total_steps"),
    (lambda o: ls.OneCycleLR(o, max_lr=-0.1, total_steps=10), "max_lr"),
    (lambda o: ls.OneCycleLR(o, max_lr=[0.1], total_steps=10), "max_lr"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5), "pct_start"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=10, anneal_strategy="exp"), "anneal_strategy"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=10, div_factor=0.0), "div_factor"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=10, final_div_factor=-1.0), "final_div_factor"),
    (lambda o: ls.SequentialLR(o, [ls.StepLR(o, 2), ls.StepLR(o, 3)], []), "milestones"),
    (lambda o: ls.SequentialLR(o, [ls.StepLR(o, 2), ls.StepLR(pc_optimizer(), 3)], [4]), "schedulers"),
    (lambda o: ls.SequentialLR(o, [], []), "schedulers"),
]


@pytest.mark.parametrize("make, arg", BAD, ids=[f"{i}-{a}" for i, (_, a) in enumerate(BAD)])
def test_bad_arguments_are_value_errors(make, arg):
    with pytest.raises(ValueError, match=arg):
        make(pc_optimizer())


def test_one_cycle_past_total_steps_is_an_error_like_torch():
    opt = pc_optimizer()
    sched = ls.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps"):
        sched.step()


def test_not_an_optimizer_is_a_type_error():
    with pytest.raises(TypeError):
        ls.StepLR(object(), step_size=2)


# -- OneCycleLR's cycle_momentum (torch's default) ---------------------------------------------------------------
ONE_CYCLE = [
    pytest.param({"max_lr": 0.1, "total_steps": 40}, id="default"),
    pytest.param({"max_lr": [0.1, 0.03], "total_steps": 41, "pct_start": 0.25, "anneal_strategy": "linear",
                      "base_momentum": [0.8, 0.7], "max_momentum": [0.95, 0.9]}, id="linear-per-group"),
    pytest.param({"max_lr": 0.2, "total_steps": 50, "three_phase": True, "base_momentum": 0.5, "max_momentum": 0.99},
                 id="three-phase"),
    pytest.param({"max_lr": 0.1, "total_steps": 30, "cycle_momentum": False}, id="no-cycle"),
]
MOMENTUM_OPTIMIZERS = ["SGD", "Adam", "AdamW", "RMSprop"]


def momenta(opt):
    """Each group's momentum, or beta1 for Adam and AdamW (what OneCycleLR cycles)."""
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def one_cycle_trace(opt, sched, steps):
    seq = [(sched.get_last_lr(), momenta(opt))]
    for _ in range(steps):
        opt.step()
        sched.step()
        seq.append((sched.get_last_lr(), momenta(opt)))
    return seq


@pytest.mark.parametrize("kw", ONE_CYCLE)
@pytest.mark.parametrize("opt_name", MOMENTUM_OPTIMIZERS)
def test_one_cycle_momentum_sequence_equals_torchs(kw, opt_name):
    """The whole schedule, construction included: rates and momentum (beta1) of every group, bit for bit."""
    torch = _torch()
    t_opt = torch_optimizer(opt=opt_name)
    p_opt = pc_optimizer(opt=opt_name)
    want = one_cycle_trace(t_opt, torch.optim.lr_scheduler.OneCycleLR(t_opt, **kw), kw["total_steps"])
    got = one_cycle_trace(p_opt, ls.OneCycleLR(p_opt, **kw), kw["total_steps"])
    assert got == want
    for t_group, p_group in zip(t_opt.param_groups, p_opt.param_groups):
        for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
            assert (key in p_group) == (key in t_group) and p_group.get(key) == t_group.get(key), key
    if kw.get("cycle_momentum", True):
        assert len({m for _, ms in got for m in ms}) > 10  # it did cycle


def test_one_cycle_drives_training_as_torchs():
    """Six steps of AdamW (beta1 cycled) and of SGD (momentum cycled in from 0) on the same weights and
    gradients: the weights agree with torch's."""
    torch = _torch()
    from conftest import assert_close
    from optimhelp import grad_sequence, small_model, snapshot

    backend = pc.get_backend("numpy")
    for name, hp in (("AdamW", {"lr": 1e-3, "weight_decay": 0.05}), ("SGD", {"lr": 0.01})):
        model = small_model(backend, "float64")
        params = model.parameters()
        tparams = [torch.tensor(p, requires_grad=True) for p in snapshot(backend, params)]
        groups = lambda ps: [{"params": [ps[0], ps[2]]}, {"params": [ps[1], ps[3]], "weight_decay": 0.0}]
        opt, topt = getattr(pc.optim, name)(groups(params), **hp), getattr(torch.optim, name)(groups(tparams), **hp)
        kw = {"max_lr": [0.05, 0.02], "total_steps": 6, "pct_start": 0.4, "base_momentum": 0.8, "max_momentum": 0.92}
        sched, tsched = ls.OneCycleLR(opt, **kw), torch.optim.lr_scheduler.OneCycleLR(topt, **kw)
        for step, step_grads in enumerate(grad_sequence(params, 6, seed=5)):
            for p, tp, g in zip(params, tparams, step_grads):
                p.grad, tp.grad = backend.asarray(g, dtype="float64"), torch.from_numpy(g.copy())
            opt.step()
            topt.step()
            sched.step()
            tsched.step()
            assert momenta(opt) == momenta(topt) and sched.get_last_lr() == tsched.get_last_lr()
            for i, (a, tp) in enumerate(zip(snapshot(backend, params), tparams)):
                assert_close(a, tp.detach().numpy(), "float64", err_msg=f"{name} step {step + 1} param {i}")


def test_one_cycle_momentum_resumes_into_a_fresh_optimizer():
    """A scheduler restored from its state puts its rates and momentum into an optimizer built afresh (what
    fit's LearningRateScheduler does when it resumes)."""
    opt = pc_optimizer(opt="Adam")
    sched = ls.OneCycleLR(opt, max_lr=0.1, total_steps=20)
    for _ in range(7):
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    opt2 = pc_optimizer(opt="Adam")
    sched2 = ls.OneCycleLR(opt2, max_lr=0.1, total_steps=20)
    sched2.load_state_dict(state)
    sched2._write_groups()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert momenta(opt2) == momenta(opt)


def test_one_cycle_momentum_arguments():
    class Plain(pc.optim.Optimizer):  # neither momentum nor betas
        def _update(self, p, state, t, group):
            pass

    plain = Plain(pc_optimizer().params, {"lr": 0.1})
    with pytest.raises(ValueError, match="pass cycle_momentum=False"):
        ls.OneCycleLR(plain, max_lr=0.1, total_steps=10)
    assert ls.OneCycleLR(plain, max_lr=0.1, total_steps=10, cycle_momentum=False).get_last_lr()
    for opt_name, kw, match in [
        ("Adam", {"max_momentum": 1.0}, "max_momentum"),  # beta1 must stay below 1
        ("SGD", {"base_momentum": -0.1}, "base_momentum"),
        ("SGD", {"base_momentum": [0.8]}, "base_momentum has 1 values for 2 parameter groups"),
        ("SGD", {"cycle_momentum": "yes"}, "cycle_momentum"),
    ]:
        with pytest.raises(ValueError, match=match):
            ls.OneCycleLR(pc_optimizer(opt=opt_name), max_lr=0.1, total_steps=10, **kw)
    assert ls.OneCycleLR(pc_optimizer(opt="SGD"), max_lr=0.1, total_steps=10, max_momentum=1.5).get_last_lr()
