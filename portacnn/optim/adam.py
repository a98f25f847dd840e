"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW`` (AdamW: Adam with decoupled weight decay)."""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..kernels import fast_path
from ..validation import Real, Tuple
from .optimizer import Optimizer, _hyperparameter


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction and L2 weight decay added to the gradient::

        g = grad + weight_decay * w
        m = b1 * m + (1 - b1) * g          v = b2 * v + (1 - b2) * g^2
        w = w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    (``amsgrad``, ``maximize`` and torch's other flags are not offered.)
    """

    RULES = {"lr": Real(0), "betas": Tuple(Real(0, 1, high_open=True), Real(0, 1, high_open=True)), "eps": Real(0),
             "weight_decay": Real(0)}
    BUFFERS = ("m", "v")
    _decoupled = False  # AdamW: weight decay on the weights, not through the gradient
    lr, betas, eps, weight_decay = (_hyperparameter(n) for n in RULES)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, state, t, group):
        xp = array_namespace(p.data)
        lr, (b1, b2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        g = p.grad
        if "m" not in state:
            state["m"] = xp.zeros_like(p.data)
            state["v"] = xp.zeros_like(p.data)
        fast = fast_path(p.data, "adam_update")  # a backend's one-pass version (kernels/): the same operations
        done = None if fast is None else fast(p.data, g, state["m"], state["v"], t, lr, b1, b2, eps, weight_decay,
                                              self._decoupled)
        if done is not None:  # the updated (w, m, v): the same arrays on NumPy (in place), new ones on JAX
            p.data, state["m"], state["v"] = done
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
        state["m"], state["v"] = m, v  # the same arrays where they are mutable; JAX's ops made new ones


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``::

        w = w * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * grad       v = b2 * v + (1 - b2) * grad^2
        w = w - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
