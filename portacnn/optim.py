"""Optimizers with PyTorch's update rules (``torch.optim.SGD`` and ``torch.optim.Adam``).

They update each ``Parameter.data`` in place from its ``.grad`` using only the array-API namespace of
the data. Hyper-parameters are Python floats, which the standard keeps in the arrays' dtype.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace


def _check(name, value, low=0.0, strict=False):
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < low or (strict and value == low):
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {rel} {low}; got {value!r}")
    return float(value)


class Optimizer:
    """Holds the parameters and per-parameter state; ``state_dict`` makes training resumable."""

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        self.state: dict[int, dict] = {}  # index in self.params -> named arrays
        self.steps = 0  # calls of step()
        self.param_steps = [0] * len(self.params)  # updates each parameter received (torch counts per parameter)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:  # like torch.optim, a parameter without a gradient is left alone
                self.param_steps[i] += 1
                self._update(p, self.state.setdefault(i, {}), self.param_steps[i])

    def _update(self, p, state, t):
        """Update ``p`` in place; ``t`` is how many updates ``p`` has now received (1 on the first)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def state_dict(self, to_numpy) -> dict:
        """``{"steps": [per-parameter update counts], "state": {"<i>.<name>": host array}}``.

        ``to_numpy`` copies arrays to the host.
        """
        flat = {f"{i}.{k}": to_numpy(v) for i, s in self.state.items() for k, v in s.items()}
        return {"steps": list(self.param_steps), "state": flat}

    def load_state_dict(self, d, asarray) -> None:
        """Restore what :meth:`state_dict` saved; ``asarray`` moves host arrays to the parameters' backend."""
        steps = d["steps"]
        if isinstance(steps, (list, tuple)):
            if len(steps) != len(self.params):
                raise ValueError(f"optimizer state has step counts for {len(steps)} parameters, not {len(self.params)}")
            self.param_steps = [int(t) for t in steps]
        else:  # a single count: every parameter was updated at every step
            self.param_steps = [int(steps)] * len(self.params)
        self.steps = max(self.param_steps, default=0)
        self.state = {}
        for key, value in d["state"].items():
            i, name = key.split(".", 1)
            i = int(i)
            if not 0 <= i < len(self.params) or tuple(value.shape) != tuple(self.params[i].data.shape):
                raise ValueError(f"optimizer state {key!r} does not fit the model's parameters")
            self.state.setdefault(i, {})[name] = asarray(value, self.params[i].data.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay::

        g = grad + weight_decay * w
        b = g (first step), else momentum * b + g
        g = g + momentum * b if nesterov else b
        w = w - lr * g
    """

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params)
        self.lr = _check("SGD lr", lr, strict=True)
        self.momentum = _check("SGD momentum", momentum)
        self.weight_decay = _check("SGD weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("SGD nesterov=True needs momentum > 0")

    def hyperparameters(self):
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)

    def _update(self, p, state, t):
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            buf = state.get("momentum")
            buf = g if buf is None else self.momentum * buf + g
            state["momentum"] = buf
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction and L2 weight decay added to the gradient::

        g = grad + weight_decay * w
        m = b1 * m + (1 - b1) * g          v = b2 * v + (1 - b2) * g^2
        w = w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = _check("Adam lr", lr, strict=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam betas must be a pair (beta1, beta2); got {betas!r}")
        self.betas = tuple(_check("Adam beta", b) for b in betas)
        if not all(b < 1.0 for b in self.betas):
            raise ValueError(f"Adam betas must lie in [0, 1); got {betas!r}")
        self.eps = _check("Adam eps", eps)
        self.weight_decay = _check("Adam weight_decay", weight_decay)

    def hyperparameters(self):
        return dict(lr=self.lr, betas=list(self.betas), eps=self.eps, weight_decay=self.weight_decay)

    def _update(self, p, state, t):
        xp = array_namespace(p.data)
        b1, b2 = self.betas
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if "m" not in state:
            state["m"] = xp.zeros_like(p.data)
            state["v"] = xp.zeros_like(p.data)
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
        denom += self.eps
        update = m / denom
        update *= self.lr / (1.0 - b1**t)
        p.data -= update


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
