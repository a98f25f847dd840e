"""Rectified linear unit: y = max(x, 0); dx = dy * [x > 0] (the mask is kept in x's dtype)."""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .base import Layer


class ReLU(Layer):
    """Element-wise max(x, 0). Works on any shape."""

    def forward(self, x, training=False):
        xp = array_namespace(x)
        self._mask = xp.astype(x > 0, x.dtype)
        # maximum, not x * mask: -inf must give 0 and NaN must stay NaN, as in torch.relu
        return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))

    def backward(self, grad_out, need_input_grad=True):
        return grad_out * self._mask
