"""2-D convolution (cross-correlation, as in PyTorch) by im2col and one batched matmul.

Shapes: x (N, C, H, W), weight W (O, C, kh, kw), bias b (O,), y (N, O, Ho, Wo) with
``Ho = (H + 2*ph - kh) // sh + 1`` (likewise Wo). With X = im2col(x) of shape (N, C*kh*kw, Ho*Wo) and
Wm = W reshaped to (O, C*kh*kw):

    forward:   Y[n] = Wm @ X[n] + b
    backward:  dWm = sum_n dY[n] @ X[n]^T        db = sum_{n, pixels} dY
               dX[n] = Wm^T @ dY[n]              dx = col2im(dX)
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ._windows import col2im, crop, im2col, out_size, pad
from .base import Layer, Parameter, check_input, pair, positive, uniform


class Conv2D(Layer):
    """Conv2D(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True), like torch.nn.Conv2d.

    Weights and bias start as U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels*kh*kw (PyTorch's
    default).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        self.in_channels = positive(in_channels, "Conv2D in_channels")
        self.out_channels = positive(out_channels, "Conv2D out_channels")
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        self.padding = pair(padding, "Conv2D padding")
        if min(self.kernel_size + self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(
                f"Conv2D needs kernel_size and stride > 0 and padding >= 0; got kernel_size={kernel_size!r}, "
                f"stride={stride!r}, padding={padding!r}"
            )
        self.use_bias = bool(bias)
        self.weight = self.bias = None

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, padding=self.padding, bias=self.use_bias)

    def initialize(self, rng, backend, dtype):
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt(self.in_channels * kh * kw)
        self.weight = Parameter("weight", uniform(rng, bound, (self.out_channels, self.in_channels, kh, kw), backend, dtype))
        if self.use_bias:
            self.bias = Parameter("bias", uniform(rng, bound, (self.out_channels,), backend, dtype))

    def _geometry(self, x):
        check_input(self, x, 4, f"(N, {self.in_channels}, H, W)", self.in_channels)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        h, w = x.shape[2], x.shape[3]
        ho, wo = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
        if ho <= 0 or wo <= 0:
            raise ValueError(f"{self!r}: input {h}x{w} (padded by {ph},{pw}) is smaller than the {kh}x{kw} kernel")
        return ho, wo

    def forward(self, x, training=False):
        xp = array_namespace(x)
        out_hw = self._geometry(x)
        cols = im2col(pad(x, *self.padding), self.kernel_size, self.stride, out_hw)
        w = xp.reshape(self.weight.data, (self.out_channels, -1))
        y = xp.matmul(w, cols)  # (N, O, Ho*Wo)
        if self.bias is not None:
            y = y + self.bias.data[:, None]
        # training keeps the columns for backward; inference keeps only x and recomputes them if asked
        self._cache = (x, cols if training else None, out_hw)
        return xp.reshape(y, (x.shape[0], self.out_channels, *out_hw))

    def backward(self, grad_out):
        xp = array_namespace(grad_out)
        x, cols, out_hw = self._cache
        if cols is None:
            cols = im2col(pad(x, *self.padding), self.kernel_size, self.stride, out_hw)
        n = x.shape[0]
        dy = xp.reshape(grad_out, (n, self.out_channels, -1))
        w = xp.reshape(self.weight.data, (self.out_channels, -1))
        dw = xp.sum(xp.matmul(dy, xp.matrix_transpose(cols)), axis=0)
        self.weight.grad = xp.reshape(dw, self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = xp.sum(dy, axis=(0, 2))
        dcols = xp.matmul(xp.matrix_transpose(w), dy)  # (N, C*kh*kw, Ho*Wo)
        ph, pw = self.padding
        padded = (n, self.in_channels, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)
        return crop(col2im(dcols, padded, self.kernel_size, self.stride, out_hw), ph, pw)
