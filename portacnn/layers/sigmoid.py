"""Logistic sigmoid, as torch.nn.Sigmoid:

    y  = 1 / (1 + exp(-x))
    dx = dy * y * (1 - y)                    (torch's sigmoid_backward, from the output alone)

Computed without overflow: with e = exp(-|x|) (in (0, 1]), y = 1 / (1 + e) for x >= 0 and e / (1 + e)
for x < 0, so no exp ever sees a large positive argument (and NumPy never warns). +inf gives 1, -inf
gives 0, NaN stays NaN, as in torch.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import Layer


class Sigmoid(Layer):
    """Element-wise logistic function; any shape."""

    def forward(self, x, training=False):
        xp = array_namespace(x)
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        self._y = y
        return y

    def backward(self, grad_out, need_input_grad=True):
        y = self._y
        return grad_out * ((1 - y) * y)
