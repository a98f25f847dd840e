"""Optimizers with PyTorch's update rules (``torch.optim.SGD``, ``Adam``, ``AdamW``, ``RMSprop``), gradient
clipping (:func:`clip_grad_norm`) and learning-rate schedules (:mod:`portacnn.optim.lr_scheduler`).

They update each ``Parameter.data`` in place from its ``.grad`` using only the array-API namespace of
the data. Hyper-parameters are Python floats, which the standard keeps in the arrays' dtype.

Every optimizer takes either a flat list of parameters or torch-style parameter groups::

    opt = AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=1e-3)
    opt = AdamW(split_decay(model), lr=1e-3)            # the same split, made from a model

A group's own hyper-parameters override the constructor's (``opt.defaults``). ``opt.param_groups`` is the
list of groups (dicts; a learning-rate scheduler writes ``group["lr"]``), ``opt.params`` the flat list of
all parameters, group after group. ``opt.lr = x`` (and the other hyper-parameter attributes) reads the first
group and writes every group. Checkpoints keep every group (its parameters, hyper-parameters, name and the
keys schedulers write, such as ``initial_lr``), so a run with groups and a schedule resumes exactly.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..kernels import fast_path
from . import lr_scheduler


def _check(name, value, low=0.0, strict=False, high=None, high_open=False):
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if (bad or value < low or (strict and value == low)
            or (high is not None and (value > high or (high_open and value == high)))):
        rel = ">" if strict else ">="
        top = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"{name} must be a finite number {rel} {low}{top}; got {value!r}")
    return float(value)


def _hyperparameter(name):
    """``opt.<name>``: the first group's value; assigning sets it in the defaults and in every group."""

    def get(self):
        return self.param_groups[0][name]

    def set_(self, value):
        value = self._validate({**self.defaults, name: value})[name]
        self.defaults[name] = value
        for group in self.param_groups:
            group[name] = value

    return property(get, set_, doc=f"``{name}`` of the first parameter group; setting it sets every group's.")


class Optimizer:
    """Holds the parameter groups and per-parameter state; ``state_dict`` makes training resumable.

    Subclasses define ``_validate(hp) -> hp`` (checked, normalised hyper-parameters; ``ValueError`` naming
    the argument) and ``_update(p, state, t, group)``.
    """

    #: keys a group may carry besides hyper-parameters: a name, and what schedulers write (``initial_lr``;
    #: OneCycleLR's ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``); saved and restored with the groups
    _GROUP_EXTRA = ("name", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")

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

    def add_param_group(self, group: dict) -> None:
        """Add a group ``{"params": [...], <hyper-parameter>: value, ...}``; missing values come from the defaults."""
        if "params" not in group:
            raise ValueError("a parameter group needs a 'params' entry")
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        allowed = set(self.defaults) | set(self._GROUP_EXTRA) | {"params"}
        unknown = sorted(set(group) - allowed)
        if unknown:
            raise ValueError(f"parameter group has unknown keys {unknown}; known: {sorted(allowed - {'params'})}")
        seen = {id(p) for p in self.params}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group")
        hp = self._validate({**self.defaults, **{k: v for k, v in group.items() if k in self.defaults}})
        extra = {k: v for k, v in group.items() if k in self._GROUP_EXTRA}
        self.param_groups.append({"params": params, **hp, **extra})
        self.params.extend(params)
        if hasattr(self, "param_steps"):
            self.param_steps.extend([0] * len(params))

    def _validate(self, hp: dict) -> dict:
        return hp

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

        Accepts the older ``{"steps", "state"}`` form too (then the groups keep their hyper-parameters).
        """
        steps = d["steps"]
        if isinstance(steps, (list, tuple)):
            if len(steps) != len(self.params):
                raise ValueError(f"optimizer state has step counts for {len(steps)} parameters, not {len(self.params)}")
            param_steps = [int(t) for t in steps]
        else:  # a single count: every parameter was updated at every step
            param_steps = [int(steps)] * len(self.params)
        groups = d.get("param_groups")
        new_groups = None
        if groups is not None:
            sizes = [len(g["params"]) for g in self.param_groups]
            if [len(g.get("params", ())) for g in groups] != sizes:
                raise ValueError(f"optimizer state has parameter groups of sizes "
                                 f"{[len(g.get('params', ())) for g in groups]}, not {sizes}")
            new_groups = []
            for own, saved in zip(self.param_groups, groups):
                hp = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in self.defaults}
                hp = self._validate({**{k: own[k] for k in self.defaults}, **hp})
                extra = {k: v for k, v in saved.items() if k in self._GROUP_EXTRA}
                new_groups.append({**own, **hp, **extra})
        state = {}
        for key, value in d["state"].items():
            i, name = key.split(".", 1)
            i = int(i)
            if not 0 <= i < len(self.params) or tuple(value.shape) != tuple(self.params[i].data.shape):
                raise ValueError(f"optimizer state {key!r} does not fit the model's parameters")
            state.setdefault(i, {})[name] = asarray(value, self.params[i].data.dtype)
        self.param_steps = param_steps
        self.steps = max(self.param_steps, default=0)
        self.state = state
        if new_groups is not None:
            for own, new in zip(self.param_groups, new_groups):
                own.clear()
                own.update(new)


def _betas(name, betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name} betas must be a pair (beta1, beta2); got {betas!r}")
    try:
        return tuple(_check(f"{name} betas", b, high=1.0, high_open=True) for b in betas)
    except ValueError:
        raise ValueError(f"{name} betas must lie in [0, 1); got {betas!r}") from None


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay::

        g = grad + weight_decay * w
        b = g (first step), else momentum * b + g
        g = g + momentum * b if nesterov else b
        w = w - lr * g
    """

    lr, momentum, weight_decay, nesterov = (_hyperparameter(n) for n in ("lr", "momentum", "weight_decay", "nesterov"))

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    def _validate(self, hp):
        out = dict(lr=_check("SGD lr", hp["lr"], strict=True), momentum=_check("SGD momentum", hp["momentum"]),
                   weight_decay=_check("SGD weight_decay", hp["weight_decay"]), nesterov=bool(hp["nesterov"]))
        if out["nesterov"] and out["momentum"] == 0:
            raise ValueError("SGD nesterov=True needs momentum > 0")
        return out

    def _update(self, p, state, t, group):
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        g = p.grad
        if weight_decay:
            g = g + weight_decay * p.data
        if momentum:
            buf = state.get("momentum")
            buf = g if buf is None else momentum * buf + g
            state["momentum"] = buf
            g = g + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction and L2 weight decay added to the gradient::

        g = grad + weight_decay * w
        m = b1 * m + (1 - b1) * g          v = b2 * v + (1 - b2) * g^2
        w = w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    (``amsgrad``, ``maximize`` and torch's other flags are not offered.)
    """

    _decoupled = False  # AdamW: weight decay on the weights, not through the gradient
    lr, betas, eps, weight_decay = (_hyperparameter(n) for n in ("lr", "betas", "eps", "weight_decay"))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _validate(self, hp):
        name = type(self).__name__
        return dict(lr=_check(f"{name} lr", hp["lr"], strict=True), betas=_betas(name, hp["betas"]),
                    eps=_check(f"{name} eps", hp["eps"]), weight_decay=_check(f"{name} weight_decay", hp["weight_decay"]))

    def _update(self, p, state, t, group):
        xp = array_namespace(p.data)
        lr, (b1, b2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        g = p.grad
        if "m" not in state:
            state["m"] = xp.zeros_like(p.data)
            state["v"] = xp.zeros_like(p.data)
        fast = fast_path(p.data, "adam_update")  # a backend's one-pass version (kernels/): the same operations
        if fast is not None and fast(p.data, g, state["m"], state["v"], t, lr, b1, b2, eps, weight_decay,
                                     self._decoupled):
            return
        if weight_decay:
            if self._decoupled:
                p.data *= 1.0 - lr * weight_decay
            else:
                g = g + weight_decay * p.data
        m, v = state["m"], state["v"]
        m *= b1
        m += (1.0 - b1) * g
        g2 = g * g
        g2 *= 1.0 - b2
        v *= b2
        v += g2
        # the same operations as the formula above, in the same order, in place where a temporary would do
        denom = xp.sqrt(v)
        denom /= math.sqrt(1.0 - b2**t)
        denom += eps
        update = m / denom
        update *= lr / (1.0 - b1**t)
        p.data -= update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``::

        w = w * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * grad       v = b2 * v + (1 - b2) * grad^2
        w = w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton), as ``torch.optim.RMSprop``::

        g = grad + weight_decay * w
        s = alpha * s + (1 - alpha) * g^2                     (s, a, b start at 0)
        a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps      if centered
                                          d = sqrt(s) + eps            otherwise
        b = momentum * b + g / d;  w = w - lr * b              if momentum > 0
        w = w - lr * g / d                                     otherwise
    """

    lr, alpha, eps, weight_decay, momentum, centered = (
        _hyperparameter(n) for n in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"))

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _validate(self, hp):
        return dict(lr=_check("RMSprop lr", hp["lr"], strict=True), alpha=_check("RMSprop alpha", hp["alpha"], high=1.0),
                    eps=_check("RMSprop eps", hp["eps"]), weight_decay=_check("RMSprop weight_decay", hp["weight_decay"]),
                    momentum=_check("RMSprop momentum", hp["momentum"]), centered=bool(hp["centered"]))

    def _update(self, p, state, t, group):
        xp = array_namespace(p.data)
        alpha, momentum = group["alpha"], group["momentum"]
        g = p.grad
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if "squareavg" not in state:
            state["squareavg"] = xp.zeros_like(p.data)
        s = state["squareavg"]
        s *= alpha
        s += (1.0 - alpha) * (g * g)
        if group["centered"]:
            a = state.setdefault("gradavg", xp.zeros_like(p.data))
            a *= alpha
            a += (1.0 - alpha) * g
            denom = xp.sqrt(s - a * a)
        else:
            denom = xp.sqrt(s)
        denom += group["eps"]
        if momentum:
            b = state.setdefault("momentum", xp.zeros_like(p.data))
            b *= momentum
            b += g / denom
            p.data -= group["lr"] * b
        else:
            p.data -= group["lr"] * (g / denom)


def split_decay(model, weight_decay=None) -> list[dict]:
    """Two parameter groups of ``model`` (anything with ``.parameters()``, or a list of parameters):
    ``[{"params": weights}, {"params": biases, "weight_decay": 0.0}]`` where weights are the parameters with
    ``ndim >= 2`` (Conv2D and Dense kernels) and the rest (biases, other 1-D parameters) get no weight decay.
    ``weight_decay``, if given, is set on the first group; otherwise it takes the optimizer's.

    Note: the optimizer's flat parameter order is then weights first, not the model's order.
    """
    params = list(model.parameters() if hasattr(model, "parameters") else model)
    decay = [p for p in params if len(p.data.shape) >= 2]
    no_decay = [p for p in params if len(p.data.shape) < 2]
    first = {"params": decay} if weight_decay is None else {"params": decay, "weight_decay": weight_decay}
    return [first, {"params": no_decay, "weight_decay": 0.0}]


def clip_grad_norm(parameters, max_norm) -> object:
    """Scale the gradients in place so that their global L2 norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` (``norm_type=2``)::

        total = sqrt(sum over parameters of ||grad||^2)
        grad = grad * min(1, max_norm / (total + 1e-6))

    Returns ``total``, the norm before clipping, as a **0-d array on the gradients' device** (backend namespace
    and dtype of the gradients): the scaling is computed there too, so clipping never synchronises with the
    host; call ``float(...)`` (or the backend's ``to_numpy``) when the number is needed. Parameters whose
    ``grad`` is None are skipped; with no gradient at all it returns the Python float ``0.0``.
    ``parameters`` is a single parameter or an iterable of them (parameter-group dicts are accepted too).
    """
    max_norm = _check("clip_grad_norm max_norm", max_norm)
    if hasattr(parameters, "data"):
        parameters = [parameters]
    params = []
    for item in parameters:
        params.extend(item["params"] if isinstance(item, dict) else [item])
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    xp = array_namespace(*[p.grad for p in params])
    norms = [xp.sqrt(xp.sum(p.grad * p.grad)) for p in params]
    total = xp.sqrt(xp.sum(xp.stack(norms) ** 2)) if len(norms) > 1 else norms[0]
    coef = max_norm / (total + 1e-6)
    coef = xp.where(coef < 1.0, coef, xp.ones_like(coef))
    for p in params:
        p.grad = p.grad * coef
    return total


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "clip_grad_norm",
    "lr_scheduler",
    "split_decay",
]
