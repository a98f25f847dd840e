"""The base :class:`Optimizer`: parameter groups, per-parameter state, ``state_dict``, and the checks of its
hyper-parameters, live or saved.

A subclass declares its hyper-parameters once, as rules of :mod:`portacnn.validation` (``RULES``), with the
rules that tie several together in :meth:`Optimizer.check_together`, and the names of its per-parameter buffers
(``BUFFERS``). The same rules check the constructor's arguments, each group given to :meth:`add_param_group`,
an assignment ``opt.lr = x``, what :meth:`load_state_dict` loads and a description read back from a file
(:meth:`check_saved`), so a file never holds what the constructor refuses, nor is refused for what it accepts.
"""

from __future__ import annotations

import re

from ..validation import INT64_MAX, Integer, Name, Real, Rule, _short, check, check_all

#: parameter groups an optimizer may hold (split_decay makes 2; one per parameter is the most that is useful)
MAX_PARAM_GROUPS = 1024
#: update counts: at most what the int64 a trainer keeps them in holds
MAX_STEPS = INT64_MAX
#: a buffer's key in a state dict: "<parameter index>.<buffer name>", the index without leading zeros
_BUFFER_KEY = re.compile(r"(0|[1-9][0-9]{0,8})\.(.+)", re.DOTALL)


#: what a group may carry besides "params" and the hyper-parameters: a name, and the keys schedulers write
#: (``initial_lr``; OneCycleLR's ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``)
GROUP_EXTRA_RULES = {"name": Name(64), "initial_lr": Real(0), "max_lr": Real(0), "min_lr": Real(0),
                     "max_momentum": Real(0), "base_momentum": Real(0)}


def _hyperparameter(name):
    """``opt.<name>``: the first group's value; assigning sets it in the defaults and in every group, each group
    checked as a whole (so ``opt.momentum = 0`` is refused while a group has ``nesterov=True``)."""

    def get(self):
        return self.param_groups[0][name]

    def set_(self, value):
        value = self._validate({**self.defaults, name: value})[name]
        for group in self.param_groups:
            self._validate({**{k: group[k] for k in self.defaults}, name: value})
        self.defaults[name] = value
        for group in self.param_groups:
            group[name] = value

    return property(get, set_, doc=f"``{name}`` of the first parameter group; setting it sets every group's.")


def _check_fields(what: str, keys, required, optional=()) -> None:
    """``keys`` hold every one of ``required`` and nothing beyond ``required`` and ``optional``."""
    known = set(required) | set(optional)
    unknown, missing = sorted(str(k) for k in keys if k not in known), sorted(set(required) - set(keys))
    problems = ([f"has unknown fields {unknown}; known: {sorted(known)}"] if unknown else []) + \
        ([f"lacks fields {missing}"] if missing else [])
    if problems:
        raise ValueError(f"{what} " + " and ".join(problems))


def _check_partition(groups_params, n: int) -> None:
    """The groups' ``params`` (lists of indices) hold each of ``range(n)`` exactly once."""
    seen, total = set(), 0
    for g, params in enumerate(groups_params):
        if not isinstance(params, list):
            raise ValueError(f"param_groups[{g}] params must be a list of parameter indices; got {_short(params)}")
        total += len(params)
        if total > n:
            raise ValueError(f"'param_groups' hold more than the {n} parameters")
        for i in params:
            check(i, Integer(0, n - 1), f"each of param_groups[{g}] params")
            if i in seen:
                raise ValueError(f"parameter {i} is in more than one of 'param_groups'")
            seen.add(i)
    if total != n:
        raise ValueError(f"'param_groups' hold {total} of the {n} parameters; each must be in one group")


def _check_steps(steps, n: int) -> list[int]:
    """``steps``: one update count per parameter, or one count for all (an older form); gives the list."""
    if isinstance(steps, (list, tuple)):
        if len(steps) != n:
            raise ValueError(f"'steps' counts updates of {len(steps)} parameters; there are {n}")
        return [check(t, Integer(0, MAX_STEPS), "each of 'steps'") for t in steps]
    return [check(steps, Integer(0, MAX_STEPS), "'steps'")] * n


class Optimizer:
    """Holds the parameter groups and per-parameter state; ``state_dict`` makes training resumable.

    Subclasses declare ``RULES`` (hyper-parameter name -> rule), optionally :meth:`check_together`, and
    ``BUFFERS`` (the names of their per-parameter state arrays), and define ``_update(p, state, t, group)``.
    A subclass without ``RULES`` takes its hyper-parameters as given (and one without ``BUFFERS`` any buffer
    name); it may override ``_validate(hp) -> hp`` instead, as before.
    """

    #: hyper-parameter name -> rule of portacnn.validation; None: taken as given
    RULES: dict[str, Rule] | None = None
    #: names of the per-parameter state arrays; None: any
    BUFFERS: tuple[str, ...] | None = None
    #: keys a group may carry besides hyper-parameters (a name, and what schedulers write); saved and restored
    #: with the groups
    _GROUP_EXTRA = tuple(GROUP_EXTRA_RULES)

    def __init__(self, params, defaults=None):
        self.defaults = self._validate(dict(defaults or {}))
        items = list(params)
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        groups = items if all(isinstance(g, dict) for g in items) else [{"params": items}]
        if any(isinstance(g, dict) for g in items) and not all(isinstance(g, dict) for g in items):
            raise ValueError("optimizer params must be all parameters or all parameter-group dicts, not a mix")
        self.param_groups: list[dict] = []
        self.params: list = []
        for g in groups:
            self.add_param_group(g)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.state: dict[int, dict] = {}  # index in self.params -> named arrays
        self.steps = 0  # calls of step()
        self.param_steps = [0] * len(self.params)  # updates each parameter received (torch counts per parameter)

    @classmethod
    def check_hyperparameters(cls, hp: dict, what: str | None = None) -> dict:
        """``hp`` checked by ``RULES`` (every one present, no other) and :meth:`check_together`; returns them
        normalised (floats, bools, tuples), in ``RULES``' order. Messages name ``what`` (the class's name)."""
        what = what or cls.__name__
        if cls.RULES is None:
            return dict(hp)
        hp = check_all(what, hp, cls.RULES, required=cls.RULES)
        cls.check_together(hp, what)
        return {k: hp[k] for k in cls.RULES}

    @classmethod
    def check_together(cls, hp: dict, what: str) -> None:
        """The rules that tie hyper-parameters together (checked ``hp``); a ValueError naming ``what``."""

    def _validate(self, hp: dict) -> dict:
        return self.check_hyperparameters(hp)

    def add_param_group(self, group: dict) -> None:
        """Add a group ``{"params": [...], <hyper-parameter>: value, ...}``; missing values come from the defaults."""
        if "params" not in group:
            raise ValueError("a parameter group needs a 'params' entry")
        if len(self.param_groups) >= MAX_PARAM_GROUPS:
            raise ValueError(f"an optimizer holds at most {MAX_PARAM_GROUPS} parameter groups")
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        allowed = set(self.defaults) | set(self._GROUP_EXTRA) | {"params"}
        unknown = sorted(str(k) for k in set(group) - allowed)
        if unknown:
            raise ValueError(f"parameter group has unknown keys {unknown}; known: {sorted(allowed - {'params'})}")
        seen = {id(p) for p in self.params}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group")
        hp = self._validate({**self.defaults, **{k: v for k, v in group.items() if k in self.defaults}})
        extra = check_all("parameter group", {k: v for k, v in group.items() if k in GROUP_EXTRA_RULES},
                          GROUP_EXTRA_RULES)
        self.param_groups.append({"params": params, **hp, **extra})
        self.params.extend(params)
        if hasattr(self, "param_steps"):
            self.param_steps.extend([0] * len(params))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:  # like torch.optim, a parameter without a gradient is left alone
                    self.param_steps[i] += 1
                    self._update(p, self.state.setdefault(i, {}), self.param_steps[i], group)
                i += 1

    def _update(self, p, state, t, group):
        """Update ``p`` in place with ``group``'s hyper-parameters; ``t`` is how many updates ``p`` has now
        received (1 on the first)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The first group's hyper-parameters (JSON-able; what a checkpoint records)."""
        g = self.param_groups[0]
        return {k: list(g[k]) if isinstance(g[k], tuple) else g[k] for k in self.defaults}

    def state_dict(self, to_numpy) -> dict:
        """``{"steps": [per-parameter update counts], "state": {"<i>.<name>": host array},
        "param_groups": [{hyper-parameters..., "params": [flat indices]}]}``.

        ``to_numpy`` copies arrays to the host. ``param_groups`` is plain JSON; older saves lack it.
        """
        flat = {f"{i}.{k}": to_numpy(v) for i, s in self.state.items() for k, v in s.items()}
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            entry = {k: list(v) if isinstance(v, tuple) else v for k, v in g.items() if k != "params"}
            groups.append({**entry, "params": list(range(start, start + n))})
            start += n
        return {"steps": list(self.param_steps), "state": flat, "param_groups": groups}

    def load_state_dict(self, d, asarray) -> None:
        """Restore what :meth:`state_dict` saved; ``asarray`` moves host arrays to the parameters' backend.

        Everything is checked before anything changes, by the rules the constructor uses: the step counts, each
        saved group (its hyper-parameters, scheduler keys and name; its parameters those of this optimizer's
        group at the same place), each buffer (a known name, of an existing parameter, of its shape).
        Accepts the older ``{"steps", "state"}`` form too (then the groups keep their hyper-parameters).
        """
        n = len(self.params)
        param_steps = _check_steps(d["steps"], n)
        groups = d.get("param_groups")
        new_groups = None if groups is None else self._loaded_groups(groups)
        state = {}
        for key, value in d["state"].items():
            i, name = self._buffer_key(key, n, type(self).__name__)
            if tuple(value.shape) != tuple(self.params[i].data.shape):
                raise ValueError(f"optimizer state {key!r} does not fit the model's parameters")
            state.setdefault(i, {})[name] = asarray(value, self.params[i].data.dtype)
        self.param_steps = param_steps
        self.steps = max(self.param_steps, default=0)
        self.state = state
        if new_groups is not None:
            for own, new in zip(self.param_groups, new_groups):
                own.clear()
                own.update(new)

    def _loaded_groups(self, groups) -> list[dict]:
        """The saved ``param_groups`` checked and made into this optimizer's groups (not yet installed)."""
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else None
                       for g in groups] if isinstance(groups, list) else groups
        if saved_sizes != sizes:
            raise ValueError(f"optimizer state has parameter groups of sizes {_short(saved_sizes)}, not {sizes}")
        checked = []
        for g, (own, saved) in enumerate(zip(self.param_groups, groups)):
            where = f"{type(self).__name__} param_groups[{g}]"
            if self.RULES is None:  # hyper-parameters of the subclass's own kind: checked by its _validate
                hp = self._validate({**{k: own[k] for k in self.defaults},
                                     **{k: v for k, v in saved.items() if k in self.defaults}})
                extra = check_all(where, {k: v for k, v in saved.items() if k in GROUP_EXTRA_RULES}, GROUP_EXTRA_RULES)
                checked.append((hp, extra))
            else:
                checked.append(self._check_saved_group(saved, where)[1:])
        _check_partition([g["params"] for g in groups], len(self.params))
        start = 0
        for g, (saved, size) in enumerate(zip(groups, sizes)):
            if saved["params"] != list(range(start, start + size)):
                raise ValueError(f"optimizer state's param_groups[{g}] holds the parameters {_short(saved['params'])}; "
                                 f"this optimizer's holds {start}..{start + size - 1}")
            start += size
        return [{**own, **hp, **extra} for own, (hp, extra) in zip(self.param_groups, checked)]

    @classmethod
    def _buffer_key(cls, key, n: int, what: str) -> tuple[int, str]:
        """``"<i>.<name>"`` of a buffer of this kind of one of ``n`` parameters: (i, name)."""
        m = _BUFFER_KEY.fullmatch(key) if isinstance(key, str) else None
        if m is None or int(m.group(1)) >= n or (cls.BUFFERS is not None and m.group(2) not in cls.BUFFERS):
            names = "" if cls.BUFFERS is None else f" ({', '.join(cls.BUFFERS)})"
            raise ValueError(f"optimizer state {_short(key)} is not one of the {what} buffers{names} of the {n} "
                             "parameters")
        return int(m.group(1)), m.group(2)

    @classmethod
    def _check_saved_group(cls, group, where: str) -> tuple[list, dict, dict]:
        """One saved parameter group: exactly its hyper-parameters and "params", maybe a name and scheduler keys,
        each by its rule; returns (params, hyper-parameters, extra keys), normalised."""
        if not isinstance(group, dict):
            raise ValueError(f"{where} is not an object: {_short(group)}")
        _check_fields(where, group, set(cls.RULES) | {"params"}, GROUP_EXTRA_RULES)
        hp = cls.check_hyperparameters({k: group[k] for k in cls.RULES}, where)
        extra = check_all(where, {k: v for k, v in group.items() if k in GROUP_EXTRA_RULES}, GROUP_EXTRA_RULES)
        return group["params"], hp, extra

    @classmethod
    def check_saved(cls, spec, param_shapes, buffer_shapes) -> None:
        """A saved description of an optimizer of this class (``{"type", "steps", <hyper-parameters>,
        "param_groups"}`` as a checkpoint holds it, read from an untrusted file) and the shapes of its buffers
        (``{"<i>.<name>": shape}``), for parameters of ``param_shapes``, checked by the rules the constructor
        uses, before anything is built. A one-line ValueError names the first problem."""
        name = cls.__name__
        if not isinstance(spec, dict):
            raise ValueError(f"the {name} description is not an object: {_short(spec)}")
        _check_fields(name, spec, set(cls.RULES) | {"type", "steps"}, ("param_groups",))
        if spec["type"] != name.lower():
            raise ValueError(f"the description of a {_short(spec['type'])} optimizer is not one of a {name}")
        n = len(param_shapes)
        _check_steps(spec["steps"], n)
        cls.check_hyperparameters({k: spec[k] for k in cls.RULES}, name)  # the first group's (or the only one's)
        if "param_groups" in spec:
            groups = spec["param_groups"]
            if not isinstance(groups, list) or not 1 <= len(groups) <= MAX_PARAM_GROUPS:
                raise ValueError(f"'param_groups' must be a list of 1 to {MAX_PARAM_GROUPS} groups; got "
                                 f"{_short(groups)}")
            for g, group in enumerate(groups):
                cls._check_saved_group(group, f"{name} param_groups[{g}]")
            _check_partition([g["params"] for g in groups], n)
        for key, shape in buffer_shapes.items():
            i, _ = cls._buffer_key(key, n, name)
            if tuple(shape) != tuple(param_shapes[i]):
                raise ValueError(f"optimizer state {key!r} has shape {tuple(shape)}; its parameter has "
                                 f"{tuple(param_shapes[i])}")
