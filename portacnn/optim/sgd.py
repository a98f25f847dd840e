"""Stochastic gradient descent, as ``torch.optim.SGD``."""

from __future__ import annotations

from ..validation import Boolean, Real
from .optimizer import Optimizer, _hyperparameter


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay::

        g = grad + weight_decay * w
        b = g (first step), else momentum * b + g
        g = g + momentum * b if nesterov else b
        w = w - lr * g
    """

    RULES = {"lr": Real(0), "momentum": Real(0), "weight_decay": Real(0), "nesterov": Boolean()}
    BUFFERS = ("momentum",)
    lr, momentum, weight_decay, nesterov = (_hyperparameter(n) for n in RULES)

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))

    @classmethod
    def check_together(cls, hp, what):
        if hp["nesterov"] and hp["momentum"] == 0:
            raise ValueError(f"{what} nesterov needs momentum > 0; got nesterov=True with momentum 0")

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
