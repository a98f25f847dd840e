"""Rectified linear unit: y = max(x, 0); dx = dy * [x > 0] (the mask is kept in x's dtype)."""

from __future__ import annotations

from array_api_compat import array_namespace

from .base import Layer


class ReLU(Layer):
    """Element-wise max(x, 0). Works on any shape."""

    def forward(self, x, training=False):
        xp = array_namespace(x)
        self._mask = xp.astype(x > 0, x.dtype)
        return x * self._mask

    def backward(self, grad_out):
        return grad_out * self._mask
