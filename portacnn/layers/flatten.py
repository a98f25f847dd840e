"""Flatten (N, C, H, W) to (N, C*H*W) in C, H, W order (as torch.nn.Flatten); backward reshapes back."""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from .base import Layer


class Flatten(Layer):
    """Keep the batch axis, merge all others in row-major order."""

    def output_shape(self, shape):
        return (math.prod(shape),)

    def forward(self, x, training=False):
        if x.ndim < 2:
            raise ValueError(f"Flatten expects input of shape (N, ...); got shape {tuple(x.shape)}")
        self._shape = tuple(x.shape)
        return array_namespace(x).reshape(x, (x.shape[0], -1))

    def backward(self, grad_out, need_input_grad=True):
        return array_namespace(grad_out).reshape(grad_out, self._shape)
