"""Each optimizer's and scheduler's rules, declared once, hold everywhere: what the constructor refuses, a
parameter group, an assignment, ``load_state_dict`` and a saved description (``check_saved``,
``lr_scheduler.check_saved_state``) refuse too; what it accepts (lr 0 included) they accept."""

import copy
import inspect
import json

import numpy as np
import pytest

import portacnn as pc
from optimhelp import small_model
from portacnn.optim import OPTIMIZERS, check_saved
from portacnn.optim import lr_scheduler as ls

NAN, INF = float("nan"), float("inf")

#: a valid configuration of each optimizer, and the values the constructor refuses, argument by argument
OPTIMIZER_CASES = {
    "SGD": (dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=False), {
        "lr": [-1e-3, NAN, INF, True, "0.1", None],
        "momentum": [-0.5, NAN, True],
        "weight_decay": [-0.1, INF, False],
        "nesterov": [1, 0, "no", None, 1.0],
    }),
    "Adam": (dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), {
        "lr": [-1e-3, NAN, True],
        "betas": [(0.9, 1.0), (0.9,), (0.9, True), (-0.1, 0.9), "0.9,0.999", 0.9, (0.9, 0.99, 0.9)],
        "eps": [-1e-8, NAN, True],
        "weight_decay": [-0.1, INF],
    }),
    "AdamW": (dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), {
        "lr": [-1.0, INF, False],
        "betas": [(1.0, 0.9), [0.9], (0.9, NAN)],
        "eps": [-1.0],
        "weight_decay": [-1e-2, "0"],
    }),
    "RMSprop": (dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.5, centered=True), {
        "lr": [-0.1, NAN, True],
        "alpha": [-0.1, 1.5, True],
        "eps": [-1.0, INF],
        "weight_decay": [-1.0],
        "momentum": [-0.5, False],
        "centered": [1, "yes", None],
    }),
}
#: values that are bad only together
CROSS_CASES = [("SGD", {"nesterov": True, "momentum": 0.0})]

BAD_HYPERPARAMETERS = [pytest.param(name, {arg: value}, id=f"{name}-{arg}-{value!r}")
                       for name, (_, bad) in OPTIMIZER_CASES.items() for arg, values in bad.items()
                       for value in values] + \
                      [pytest.param(name, changes, id=f"{name}-{'-'.join(changes)}") for name, changes in CROSS_CASES]


def _params():
    return small_model(pc.get_backend("numpy"), "float64").parameters()


def _trained(name, params=None):
    """An optimizer of ``name`` in its valid configuration, in two groups, after two steps."""
    params = params or _params()
    opt = getattr(pc.optim, name)([{"params": params[:2], "name": "first"}, {"params": params[2:]}],
                                  **OPTIMIZER_CASES[name][0])
    for _ in range(2):
        for p in params:
            p.grad = np.ones_like(p.data)
        opt.step()
    return opt


def _saved(opt):
    """The description and buffer shapes a checkpoint keeps of ``opt`` (its parameters in its own order)."""
    state = opt.state_dict(np.asarray)
    spec = {"type": type(opt).__name__.lower(), "steps": state["steps"], **opt.hyperparameters(),
            "param_groups": json.loads(json.dumps(state["param_groups"]))}
    return spec, {k: tuple(v.shape) for k, v in state["state"].items()}, [tuple(p.data.shape) for p in opt.params]


def _load(opt, state):
    opt.load_state_dict(state, lambda v, dtype: np.asarray(v, dtype=dtype))


@pytest.mark.parametrize("name, changes", BAD_HYPERPARAMETERS)
def test_every_way_in_refuses_what_the_constructor_refuses(name, changes):
    cls = getattr(pc.optim, name)
    hp = {**OPTIMIZER_CASES[name][0], **changes}
    params = _params()
    with pytest.raises(ValueError):
        cls(params, **hp)
    with pytest.raises(ValueError):  # in a group
        cls([{"params": params[:2], **changes}, {"params": params[2:]}], **OPTIMIZER_CASES[name][0])
    opt = _trained(name)
    if len(changes) == 1:
        with pytest.raises(ValueError):  # an assignment opt.<arg> = value
            setattr(opt, *next(iter(changes.items())))
    # load_state_dict: the bad value in a saved group; nothing changes
    state = opt.state_dict(np.asarray)
    fresh = _trained(name)
    before = (copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in fresh.param_groups]),
              list(fresh.param_steps))
    bad = copy.deepcopy(state)
    bad["param_groups"][1].update(changes)
    with pytest.raises(ValueError):
        _load(fresh, bad)
    assert ([{k: v for k, v in g.items() if k != "params"} for g in fresh.param_groups], fresh.param_steps) == before
    _load(fresh, state)  # the good state still loads
    # check_saved: the bad value in the description, and in a group
    spec, buffers, shapes = _saved(opt)
    check_saved(spec, shapes, buffers)
    with pytest.raises(ValueError):
        check_saved({**spec, **changes}, shapes, buffers)
    groups = [dict(g) for g in spec["param_groups"]]
    groups[0].update(changes)
    with pytest.raises(ValueError, match=r"param_groups\[0\]"):
        check_saved({**spec, "param_groups": groups}, shapes, buffers)


@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
def test_rules_are_the_constructors_arguments_and_the_saved_fields(name):
    cls = getattr(pc.optim, name)
    arguments = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    assert list(cls.RULES) == arguments
    assert OPTIMIZERS[name.lower()] is cls
    spec, _, _ = _saved(_trained(name))
    assert set(spec) == set(cls.RULES) | {"type", "steps", "param_groups"}
    assert all(set(g) <= set(cls.RULES) | {"params", *cls._GROUP_EXTRA} for g in spec["param_groups"])
    buffers = {k.split(".", 1)[1] for k in _trained(name).state_dict(np.asarray)["state"]}
    assert buffers <= set(cls.BUFFERS)


@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
def test_lr_zero_is_accepted_everywhere(name):
    """A schedule may end at lr 0 (cosine annealing's last step): the constructor, a group, an assignment, a
    loaded state and a saved description all take it, as torch.optim does."""
    cls = getattr(pc.optim, name)
    params = _params()
    opt = cls(params, **{**OPTIMIZER_CASES[name][0], "lr": 0})
    assert opt.lr == 0.0 and isinstance(opt.lr, float)
    opt = _trained(name)
    opt.lr = 0.0
    spec, buffers, shapes = _saved(opt)
    check_saved(spec, shapes, buffers)
    fresh = _trained(name)
    _load(fresh, opt.state_dict(np.asarray))
    assert [g["lr"] for g in fresh.param_groups] == [0.0, 0.0]
    before = [p.data.copy() for p in fresh.params]
    for p in fresh.params:
        p.grad = np.ones_like(p.data)
    fresh.step()
    if name != "AdamW":  # AdamW's decay is lr * weight_decay: 0 too
        assert all(np.array_equal(a, p.data) for a, p in zip(before, fresh.params))


def _spec(name="adam"):
    return _saved(_trained({"adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop", "adamw": "AdamW"}[name]))


def _groups(spec, *params, **changes):
    return {**spec, "param_groups": [{**spec["param_groups"][0], "params": p, **changes} for p in params]}


SAVED_CASES = {
    "not an object": (lambda s, b: ("adam", b), "not an object"),
    "unknown type": (lambda s, b: ({**s, "type": "lamb"}, b), "unknown optimizer type 'lamb'"),
    "no type": (lambda s, b: ({k: v for k, v in s.items() if k != "type"}, b), "unknown optimizer type None"),
    "unknown field": (lambda s, b: ({**s, "amsgrad": True}, b), "unknown fields ['amsgrad']"),
    "missing field": (lambda s, b: ({k: v for k, v in s.items() if k != "eps"}, b), "lacks fields ['eps']"),
    "steps negative": (lambda s, b: ({**s, "steps": -1}, b), "'steps'"),
    "steps a float": (lambda s, b: ({**s, "steps": 2.0}, b), "'steps'"),
    "steps of other length": (lambda s, b: ({**s, "steps": [1, 2]}, b), "'steps' counts updates of 2 parameters"),
    "steps of bools": (lambda s, b: ({**s, "steps": [True] * 4}, b), "each of 'steps'"),
    "steps beyond int64": (lambda s, b: ({**s, "steps": 1 << 63}, b), "'steps'"),
    "groups not a list": (lambda s, b: ({**s, "param_groups": {"0": [0]}}, b), "'param_groups' must be a list"),
    "groups empty": (lambda s, b: ({**s, "param_groups": []}, b), "list of 1 to 1024 groups"),
    "groups too many": (lambda s, b: ({**s, "param_groups": [{}] * 1025}, b), "list of 1 to 1024 groups"),
    "group not an object": (lambda s, b: ({**s, "param_groups": [[0, 1, 2, 3]]}, b), "is not an object"),
    "group params not a list": (lambda s, b: (_groups(s, 4), b), "params must be a list"),
    "group index out of range": (lambda s, b: (_groups(s, [0, 1, 2, 4]), b), "params must be an int >= 0 and <= 3"),
    "group index a bool": (lambda s, b: (_groups(s, [True, 1, 2, 3]), b), "params must be an int"),
    "group index a float": (lambda s, b: (_groups(s, [0.0, 1, 2, 3]), b), "params must be an int"),
    "group index twice": (lambda s, b: (_groups(s, [0, 1], [1, 2]), b), "parameter 1 is in more than one"),
    "group missing a parameter": (lambda s, b: (_groups(s, [0, 1], [2]), b), "hold 3 of the 4 parameters"),
    "group of a huge list": (lambda s, b: (_groups(s, list(range(10**5))), b), "more than the 4 parameters"),
    "group unknown key": (lambda s, b: (_groups(s, [0, 1, 2, 3], evil=1), b), "unknown fields ['evil']"),
    "group of another optimizer's key": (lambda s, b: (_groups(s, [0, 1, 2, 3], momentum=0.9), b),
                                         "unknown fields ['momentum']"),
    "group initial_lr NaN": (lambda s, b: (_groups(s, [0, 1, 2, 3], initial_lr=NAN), b), "initial_lr"),
    "group max_lr negative": (lambda s, b: (_groups(s, [0, 1, 2, 3], max_lr=-1.0), b), "max_lr"),
    "group name a number": (lambda s, b: (_groups(s, [0, 1, 2, 3], name=5), b), "name must be a printable string"),
    "group name an escape": (lambda s, b: (_groups(s, [0, 1, 2, 3], name="w\x1b[2J"), b), "printable string"),
    "group lr an int beyond floats": (lambda s, b: (_groups(s, [0, 1, 2, 3], lr=10**400), b),
                                      "lr must be a finite number >= 0"),
    "buffer of no parameter": (lambda s, b: (s, {**b, "9.m": (3,)}), "'9.m'"),
    "buffer of another optimizer": (lambda s, b: (s, {**b, "0.momentum": b["0.m"]}), "'0.momentum'"),
    "buffer index with a leading zero": (lambda s, b: (s, {**b, "00.m": b["0.m"]}), "'00.m'"),
    "buffer key not a string": (lambda s, b: (s, {**b, 0: b["0.m"]}), "0"),
    "buffer of another shape": (lambda s, b: (s, {**b, "0.m": (1, 2)}), "has shape (1, 2)"),
}


@pytest.mark.parametrize("edit, fragment", list(SAVED_CASES.values()), ids=list(SAVED_CASES))
def test_check_saved_refuses_a_hostile_description_in_one_line(edit, fragment):
    spec, buffers, shapes = _spec()
    check_saved(spec, shapes, buffers)
    bad_spec, bad_buffers = edit(copy.deepcopy(spec), dict(buffers))
    with pytest.raises(ValueError) as info:
        check_saved(bad_spec, shapes, bad_buffers)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_check_saved_takes_the_older_forms():
    """Files written before groups were saved: no 'param_groups', one step count for all; betas a list."""
    spec, buffers, shapes = _spec()
    old = {k: v for k, v in spec.items() if k != "param_groups"}
    check_saved({**old, "steps": 3}, shapes, buffers)
    check_saved({**old, "betas": [0.9, 0.999]}, shapes, {})
    for kind in ("sgd", "rmsprop", "adamw"):
        spec, buffers, shapes = _spec(kind)
        check_saved(spec, shapes, buffers)


def test_load_state_dict_checks_steps_buffers_and_group_layout():
    opt = _trained("Adam")
    state = opt.state_dict(np.asarray)
    cases = [
        ({**state, "steps": [1, 2]}, "'steps' counts updates of 2"),
        ({**state, "steps": [1.5] * 4}, "each of 'steps'"),
        ({**state, "steps": -1}, "'steps'"),
        ({**state, "state": {**state["state"], "0.momentum": state["state"]["0.m"]}}, "'0.momentum'"),
        ({**state, "state": {**state["state"], "7.m": state["state"]["0.m"]}}, "'7.m'"),
        ({**state, "state": {**state["state"], "0.m": np.zeros(3)}}, "does not fit"),
        ({**state, "param_groups": state["param_groups"][:1]}, "sizes"),
        ({**state, "param_groups": [{**state["param_groups"][0], "params": [2, 3]},
                                    {**state["param_groups"][1], "params": [0, 1]}]}, "holds the parameters [2, 3]"),
        ({**state, "param_groups": [{**state["param_groups"][0], "params": [0.0, 1]}, state["param_groups"][1]]},
         "params must be an int"),
        ({**state, "param_groups": [{**state["param_groups"][0], "evil": 1}, state["param_groups"][1]]},
         "unknown fields ['evil']"),
        ({**state, "param_groups": [{k: v for k, v in state["param_groups"][0].items() if k != "eps"},
                                    state["param_groups"][1]]}, "lacks fields ['eps']"),
    ]
    for bad, fragment in cases:
        fresh = _trained("Adam")
        steps = list(fresh.param_steps)
        with pytest.raises(ValueError) as info:
            _load(fresh, bad)
        assert fragment in str(info.value), (fragment, str(info.value))
        assert fresh.param_steps == steps


def test_groups_are_checked_on_the_way_in_and_bounded():
    params = _params()
    with pytest.raises(ValueError, match="name must be a printable string"):
        pc.optim.SGD([{"params": params, "name": 3}])
    with pytest.raises(ValueError, match="initial_lr"):
        pc.optim.SGD([{"params": params, "initial_lr": -1.0}])
    opt = pc.optim.SGD(params[:1])
    opt.param_groups.extend([{"params": [], "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}]
                            * (pc.optim.MAX_PARAM_GROUPS - 1))
    with pytest.raises(ValueError, match="at most 1024 parameter groups"):
        opt.add_param_group({"params": params[1:]})


def test_an_assignment_is_checked_against_every_group():
    """``opt.momentum = 0`` is refused while a group has nesterov; nothing changes then."""
    params = _params()
    opt = pc.optim.SGD([{"params": params[:2], "nesterov": True}, {"params": params[2:]}], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        opt.momentum = 0.0
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9] and opt.defaults["momentum"] == 0.9


def test_a_subclass_without_rules_keeps_its_own_hyperparameters():
    class Plain(pc.optim.Optimizer):
        def _update(self, p, state, t, group):
            state["exp_avg_1"] = p.data * 0

    opt = Plain(_params(), {"lr": 0.1, "anything": "goes"})
    for p in opt.params:
        p.grad = np.ones_like(p.data)
    opt.step()
    fresh = Plain(_params(), {"lr": 0.1, "anything": "goes"})
    _load(fresh, opt.state_dict(np.asarray))
    assert set(fresh.state[0]) == {"exp_avg_1"} and fresh.param_groups[0]["anything"] == "goes"


# -- schedulers ------------------------------------------------------------------------------------------------


def _opt(name="SGD"):
    params = pc.Sequential([pc.layers.Dense(3, 2)], backend="numpy", dtype="float64", seed=0).parameters()
    return getattr(pc.optim, name)([{"params": [p], "lr": lr} for p, lr in zip(params, (0.1, 0.01))], lr=0.1)


def _sequential(o, milestones=(5,)):
    return ls.SequentialLR(o, [ls.LinearLR(o, start_factor=0.5, total_iters=5), ls.StepLR(o, 3)], list(milestones))


#: (make(optimizer, **arguments), valid arguments, {argument: values the constructor refuses}, argument -> field)
SCHEDULER_CASES = {
    "StepLR": (ls.StepLR, dict(step_size=3, gamma=0.5), {
        "step_size": [0, -1, 2.5, True, "3", None], "gamma": [-3.0, NAN, INF, True]}),
    "CosineAnnealingLR": (ls.CosineAnnealingLR, dict(T_max=10, eta_min=1e-4), {
        "T_max": [0, 1.5, False], "eta_min": [-1.0, NAN, "0"]}),
    "LinearLR": (ls.LinearLR, dict(start_factor=0.5, end_factor=1.0, total_iters=4), {
        "start_factor": [0.0, 1.5, True, -0.5], "end_factor": [-0.1, 1.1, NAN], "total_iters": [0, 2.0, None]}),
    "OneCycleLR": (ls.OneCycleLR, dict(max_lr=0.1, total_steps=20), {
        "total_steps": [0, 2.5, True], "pct_start": [-0.1, 1.5, NAN], "anneal_strategy": ["exp", 1, None],
        "cycle_momentum": ["yes", 1, 0]}),
    "SequentialLR": (_sequential, dict(milestones=[5]), {
        "milestones": [[0], [-1], [2.5], [True], [], [3, 4], "5", [5.0]]}),
}
FIELD = {"milestones": "_milestones"}
BAD_ARGUMENTS = [pytest.param(name, arg, value, id=f"{name}-{arg}-{value!r}")
                 for name, (_, _, bad) in SCHEDULER_CASES.items() for arg, values in bad.items() for value in values]


def _stepped(name, steps=4, **changes):
    make, kw, _ = SCHEDULER_CASES[name]
    o = _opt()
    sched = make(o, **{**kw, **changes})
    for _ in range(steps):
        o.step()
        sched.step()
    return sched


@pytest.mark.parametrize("name, arg, value", BAD_ARGUMENTS)
def test_scheduler_load_refuses_what_its_constructor_refuses(name, arg, value):
    make, kw, _ = SCHEDULER_CASES[name]
    with pytest.raises(ValueError):
        make(_opt(), **{**kw, arg: value})
    state = json.loads(json.dumps(_stepped(name).state_dict()))
    ls.check_saved_state(state)
    bad = {**copy.deepcopy(state), FIELD.get(arg, arg): value}
    fresh = _stepped(name, steps=1)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=FIELD.get(arg, arg)):
        fresh.load_state_dict(bad)
    assert fresh.state_dict() == before  # nothing changed
    with pytest.raises(ValueError, match=FIELD.get(arg, arg)):
        ls.check_saved_state(bad, "saved")
    fresh.load_state_dict(state)  # the good one loads
    assert fresh.get_last_lr() == _stepped(name).get_last_lr()


@pytest.mark.parametrize("name", list(SCHEDULER_CASES))
def test_scheduler_rules_name_its_arguments_and_state_fields(name):
    """Every argument of the constructor but the optimizer (and the per-group or nested ones) has a rule;
    every rule's field the state keeps is in it; no two schedulers name a field alike."""
    cls = getattr(ls, name)
    arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "optimizer", "schedulers"}
    declared = {FIELD.get(a, a) for a in arguments} - set(getattr(cls, "PER_GROUP", {}))
    assert declared == set(cls.RULES)
    state = _stepped(name).state_dict()
    assert set(cls.RULES) & set(state) == {k for k in cls.RULES if hasattr(_stepped(name), k)}
    fields = [k for c in ls.saved.SCHEDULERS for k in c.RULES]
    assert len(fields) == len(set(fields))


@pytest.mark.parametrize("field, value, fragment", [
    ("_last_lr", [0.1], "_last_lr has 1 rates; the optimizer has 2"),
    ("base_lrs", [0.1, 0.1, 0.1], "base_lrs has 3 rates"),
    ("_last_lr", [-0.1, 0.1], "_last_lr must be a finite number >= 0"),
    ("last_epoch", -2, "last_epoch"),
    ("_step_count", 1.5, "_step_count"),
    ("evil", 1, "unknown entries ['evil']"),
])
def test_scheduler_progress_fields_are_checked(field, value, fragment):
    state = {**_stepped("StepLR").state_dict(), field: value}
    with pytest.raises(ValueError) as info:
        _stepped("StepLR", steps=1).load_state_dict(state)
    assert fragment in str(info.value)


def test_one_cycle_phases_are_those_of_its_arguments():
    for three_phase in (False, True):
        sched = _stepped("OneCycleLR", three_phase=three_phase)
        state = json.loads(json.dumps(sched.state_dict()))
        ls.check_saved_state(state)
        fresh = _stepped("OneCycleLR", steps=0, three_phase=three_phase)
        fresh.load_state_dict(state)
        assert fresh._phases == sched._phases
        for edit in (lambda p: p[0].__setitem__(1, "params"), lambda p: p[0].__setitem__(0, 1e9), lambda p: p.pop(),
                     lambda p: p.append(p[0])):
            bad = copy.deepcopy(state)
            edit(bad["_phases"])
            with pytest.raises(ValueError, match="_phases"):
                fresh.load_state_dict(bad)
            with pytest.raises(ValueError, match="_phases"):
                ls.check_saved_state(bad)
        with pytest.raises(ValueError, match="_phases"):  # phases without the arguments they come from
            ls.check_saved_state({"_phases": state["_phases"]})


def test_one_cycle_state_of_another_kind_of_optimizer_is_refused():
    adam = ls.OneCycleLR(_opt("Adam"), max_lr=0.1, total_steps=20)
    sgd = ls.OneCycleLR(_opt("SGD"), max_lr=0.1, total_steps=20)
    with pytest.raises(ValueError, match="use_beta1"):
        sgd.load_state_dict(adam.state_dict())
    plain = ls.OneCycleLR(_opt(), max_lr=0.1, total_steps=20, cycle_momentum=False)
    plain.load_state_dict(sgd.state_dict())  # SGD has momentum: cycling it is fine
    with pytest.raises(ValueError, match="use_beta1"):
        ls.check_saved_state({**sgd.state_dict(), "use_beta1": 1})


def test_sequential_state_is_checked_whole_before_any_part_is_loaded():
    sched = _stepped("SequentialLR", steps=8)
    state = json.loads(json.dumps(sched.state_dict()))
    fresh = _stepped("SequentialLR", steps=1)
    before = (fresh.state_dict(), [s.state_dict() for s in fresh._schedulers])
    bad = copy.deepcopy(state)
    bad["_schedulers"][1]["gamma"] = -3  # the last one bad: the first must not be loaded either
    with pytest.raises(ValueError, match="gamma"):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="gamma"):
        ls.check_saved_state(bad)
    assert (fresh.state_dict(), [s.state_dict() for s in fresh._schedulers]) == before
    for inner in ([state["_schedulers"][0]], "x"):
        with pytest.raises(ValueError, match="SequentialLR state has"):
            fresh.load_state_dict({**state, "_schedulers": inner})
    with pytest.raises(ValueError, match="_milestones must have"):
        ls.check_saved_state({**state, "_milestones": [3, 6]})
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == sched.get_last_lr()


def test_a_state_with_an_int_beyond_floats_is_a_value_error():
    state = {**_stepped("StepLR").state_dict(), "gamma": 10**400}
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        ls.check_saved_state(state)
    with pytest.raises(ValueError, match="gamma must be a finite number"):
        _stepped("StepLR").load_state_dict(state)
    opt = _trained("SGD")
    bad = opt.state_dict(np.asarray)
    bad["param_groups"][0]["momentum"] = 10**400
    with pytest.raises(ValueError, match="momentum must be a finite number"):
        _load(_trained("SGD"), bad)