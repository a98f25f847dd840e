"""Hyperbolic tangent, as torch.nn.Tanh:

    y  = tanh(x)
    dx = dy * (1 - y * y)                    (torch's tanh_backward, from the output alone)

+-inf gives +-1 (gradient 0), NaN stays NaN, as in torch.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import Layer


class Tanh(Layer):
    """Element-wise tanh; any shape."""

    def forward(self, x, training=False):
        y = array_namespace(x).tanh(x)
        self._y = y
        return y

    def backward(self, grad_out, need_input_grad=True):
        y = self._y
        return grad_out * (1 - y * y)
