"""RMSprop, as ``torch.optim.RMSprop``."""

from __future__ import annotations

from array_api_compat import array_namespace

from ..validation import Boolean, Real
from .optimizer import Optimizer, _hyperparameter


class RMSprop(Optimizer):
    """RMSprop (Hinton), as ``torch.optim.RMSprop``::

        g = grad + weight_decay * w
        s = alpha * s + (1 - alpha) * g^2                     (s, a, b start at 0)
        a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps      if centered
                                          d = sqrt(s) + eps            otherwise
        b = momentum * b + g / d;  w = w - lr * b              if momentum > 0
        w = w - lr * g / d                                     otherwise
    """

    RULES = {"lr": Real(0), "alpha": Real(0, 1), "eps": Real(0), "weight_decay": Real(0), "momentum": Real(0),
             "centered": Boolean()}
    BUFFERS = ("squareavg", "momentum", "gradavg")
    lr, alpha, eps, weight_decay, momentum, centered = (_hyperparameter(n) for n in RULES)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _update(self, p, state, t, group):
        xp = array_namespace(p.data)
        alpha, momentum = group["alpha"], group["momentum"]
        g = p.grad
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        if "squareavg" not in state:
            state["squareavg"] = xp.zeros_like(p.data)
        # in place where arrays are mutable; on JAX each augmented assignment makes a new array, so every
        # buffer is stored back into ``state``
        s = state["squareavg"]
        s *= alpha
        s += (1.0 - alpha) * (g * g)
        state["squareavg"] = s
        if group["centered"]:
            a = state.setdefault("gradavg", xp.zeros_like(p.data))
            a *= alpha
            a += (1.0 - alpha) * g
            state["gradavg"] = a
            denom = xp.sqrt(s - a * a)
        else:
            denom = xp.sqrt(s)
        denom += group["eps"]
        if momentum:
            b = state.setdefault("momentum", xp.zeros_like(p.data))
            b *= momentum
            b += g / denom
            state["momentum"] = b
            p.data -= group["lr"] * b
        else:
            p.data -= group["lr"] * (g / denom)
