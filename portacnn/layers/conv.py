"""2-D convolution (cross-correlation, as in PyTorch) by im2col and ONE matmul.

Shapes: x (N, C, H, W), weight W (O, C, kh, kw), bias b (O,), y (N, O, Ho, Wo) with
``Ho = (H + 2*ph - kh) // sh + 1`` (likewise Wo). Two equivalent column layouts (see _windows.py), both
giving the whole batch as one GEMM and returning y as a permuted (N, O, Ho, Wo) view of the GEMM's
output buffer (NCHW semantics for every caller, no transpose copy; the next conv reads it in its own
layout for free when both use the same one):

* batch-last (narrow convs, O < 32): X = im2col_chwn(x) (K, P) = (C*kh*kw, Ho*Wo*N), Wm = W as (O, K)::

      forward:   Y = Wm @ X + b        (O, P): y in (O, Ho, Wo, N) memory order
      backward:  dWm = sum_rows dY_r @ X_r^T    db = sum_P dY    dX = col2im_chwn(Wm^T @ dY)

  Its im2col and col2im move runs of Wo*N values, however few the channels (a 1- or 6-channel input
  would give runs of 1-6 values channels-last), and dWm is computed as Ho GEMMs of Wo*N columns summed,
  since one GEMM with tiny O and K over ~10^5 columns runs at memory speed in OpenBLAS; for the same
  reason the forward product goes through ``short_wide_matmul`` (_gemm.py), which NumPy cuts into
  column blocks (seed_cnn's conv 2.7x faster, the same numbers to rounding).

* channels-last (wide convs, O >= 32): X = im2col_nhwc(x) (P, K) = (N*Ho*Wo, kh*kw*C), Wm = W permuted
  to (O, kh, kw, C) and reshaped to (O, K)::

      forward:   Y = X @ Wm^T + b      (P, O): y in (N, Ho, Wo, O) memory order
      backward:  dWm = dY^T @ X        db = sum_P dY        dX = col2im_nhwc(dY @ Wm)

  where dX is computed one kernel offset at a time, dY @ Wm[:, block k] added into offset k's window,
  so the (P, kh*kw*C) column gradient (85 MB per Kannada batch) is never written and read back. On a
  CPU the columns X themselves are made a few images at a time (about 4 MB, backend.cpu_block_bytes),
  each block multiplied while in cache and then dropped; backward makes them again for dWm, block by
  block (Kannada conv net: inference 1.36x, a training step ~1.05x faster, 85 MB less memory).

Measured on NumPy/OpenBLAS (2 cores): batch-last made LeNet-5's training step 1.8x faster than the
per-image GEMMs it replaced, and is 2x faster than channels-last for a 1-channel input; for the
Kannada net's 32->64 conv the two are within 10 % and channels-last is kept (its conv1 output feeds
conv2 without a transpose). The switch is a property of the layer shape only, never of the backend;
both layouts give the same numbers up to float rounding.

``x -> dx`` is the adjoint of im2col (col2im), so gradients match PyTorch's to rounding.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace, device

from ._gemm import short_wide_matmul
from ._windows import batch_blocks, col2im_chwn, im2col_chwn, im2col_nhwc, out_size, pad_hw
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

    #: out_channels from which the channels-last single-GEMM layout is used (measured crossover on CPU)
    CHANNELS_LAST_FROM = 32

    @property
    def channels_last(self) -> bool:
        return self.out_channels >= self.CHANNELS_LAST_FROM

    def _columns(self, x, out_hw):
        """Batch-last columns (C*kh*kw, Ho*Wo*N) of the whole batch (narrow convs)."""
        xp = array_namespace(x)
        ph, pw = self.padding
        # (C, Hp, Wp, N), always a fresh contiguous copy: the window slices then read long runs
        xc = pad_hw(xp.permute_dims(x, (1, 2, 3, 0)), ph, pw, copy=True)
        return im2col_chwn(xc, self.kernel_size, self.stride, out_hw)

    def _nhwc_blocks(self, x, out_hw):
        """Channels-last input (N, Hp, Wp, C) (a view when unpadded) and the image blocks its columns are
        made in: (N*Ho*Wo, kh*kw*C) floats for the whole batch would be 85 MB for the Kannada net's conv2,
        so on a CPU each block's columns are filled and multiplied while still in cache."""
        xp = array_namespace(x)
        xh = pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), *self.padding)
        (kh, kw), (ho, wo) = self.kernel_size, out_hw
        image_bytes = ho * wo * kh * kw * self.in_channels * (xp.finfo(x.dtype).bits // 8)
        return xh, batch_blocks(x, x.shape[0], image_bytes)

    def _wmat(self):
        """The weight as (O, K), in the column order of the layout in use."""
        xp, w = array_namespace(self.weight.data), self.weight.data
        if self.channels_last:
            w = xp.permute_dims(w, (0, 2, 3, 1))
        return xp.reshape(w, (self.out_channels, -1))

    def forward(self, x, training=False):
        xp = array_namespace(x)
        (ho, wo) = out_hw = self._geometry(x)
        n, o = x.shape[0], self.out_channels
        if self.channels_last:
            xh, blocks = self._nhwc_blocks(x, out_hw)
            wt = xp.matrix_transpose(self._wmat())
            cols = None
            if len(blocks) == 1:
                cols = im2col_nhwc(xh, self.kernel_size, self.stride, out_hw)  # (N*Ho*Wo, kh*kw*C)
                y = xp.matmul(cols, wt)  # (N*Ho*Wo, O)
            else:  # block by block: columns made, multiplied and dropped while in cache
                y = xp.empty((n * ho * wo, o), dtype=x.dtype, device=device(x))
                for a, b in blocks:
                    part = im2col_nhwc(xh[a:b, ...], self.kernel_size, self.stride, out_hw)
                    y[a * ho * wo : b * ho * wo, :] = xp.matmul(part, wt)
            if self.bias is not None:
                y += self.bias.data  # y is fresh: add in place, no broadcast copy
            y = xp.permute_dims(xp.reshape(y, (n, ho, wo, o)), (0, 3, 1, 2))
        else:
            cols = self._columns(x, out_hw)
            y = short_wide_matmul(self._wmat(), cols)  # (O, Ho*Wo*N)
            if self.bias is not None:
                y += self.bias.data[:, None]
            y = xp.permute_dims(xp.reshape(y, (o, ho, wo, n)), (3, 0, 1, 2))
        # training keeps the columns for backward (unless made in blocks); inference keeps only x, and
        # backward makes them again if asked
        self._cache = (x, cols if training else None, out_hw)
        return y

    def backward(self, grad_out, need_input_grad=True):
        xp = array_namespace(grad_out)
        x, cols, out_hw = self._cache
        (ph, pw), (kh, kw), c = self.padding, self.kernel_size, self.in_channels
        n, o, h, w = x.shape[0], self.out_channels, x.shape[2], x.shape[3]
        wm = self._wmat()
        if self.channels_last:
            dy = xp.reshape(xp.permute_dims(grad_out, (0, 2, 3, 1)), (-1, o))  # (N*Ho*Wo, O); free if channels-last
            if cols is not None:
                dw = xp.matmul(xp.matrix_transpose(dy), cols)  # (O, kh*kw*C)
            else:  # the columns again, block by block, each used while in cache
                xh, blocks = self._nhwc_blocks(x, out_hw)
                rows = out_hw[0] * out_hw[1]
                dw = None
                for a, b in blocks:
                    part = im2col_nhwc(xh[a:b, ...], self.kernel_size, self.stride, out_hw)
                    part = xp.matmul(xp.matrix_transpose(dy[a * rows : b * rows, :]), part)
                    dw = part if dw is None else dw + part
            self.weight.grad = xp.permute_dims(xp.reshape(dw, (o, kh, kw, c)), (0, 3, 1, 2))
            if self.bias is not None:
                self.bias.grad = xp.sum(dy, axis=0)
            if not need_input_grad:
                return None
            dxh = self._input_grad_nhwc(dy, wm, (n, h + 2 * ph, w + 2 * pw, c), out_hw)
            return xp.permute_dims(dxh[:, ph : ph + h, pw : pw + w, :], (0, 3, 1, 2))
        (ho, wo) = out_hw
        if cols is None:
            cols = self._columns(x, out_hw)
        dy = xp.reshape(xp.permute_dims(grad_out, (1, 2, 3, 0)), (o, -1))  # (O, Ho*Wo*N); free if batch-last
        # dWm = dY @ X^T as Ho GEMMs (one per output row, K x Wo*N times Wo*N x O) summed: OpenBLAS runs the
        # single product, tiny O and K over 10^5 columns, at memory speed; this is 2-4x faster (same sums)
        per_row = xp.matmul(xp.permute_dims(xp.reshape(cols, (-1, ho, wo * n)), (1, 0, 2)),
                            xp.permute_dims(xp.reshape(dy, (o, ho, wo * n)), (1, 2, 0)))  # (Ho, K, O)
        self.weight.grad = xp.reshape(xp.matrix_transpose(xp.sum(per_row, axis=0)), self.weight.data.shape)
        if self.bias is not None:
            self.bias.grad = xp.sum(dy, axis=1)
        if not need_input_grad:
            return None
        dcols = xp.matmul(xp.matrix_transpose(wm), dy)  # (C*kh*kw, Ho*Wo*N)
        dxc = col2im_chwn(dcols, (c, h + 2 * ph, w + 2 * pw, n), self.kernel_size, self.stride, out_hw)
        return xp.permute_dims(dxc[:, ph : ph + h, pw : pw + w, :], (3, 0, 1, 2))

    def _input_grad_nhwc(self, dy, wm, padded_shape, out_hw):
        """Channels-last dx: for each kernel offset k = (i, j), add ``dy @ Wm[:, k-th C block]`` (N*Ho*Wo, C)
        into the window of offset k. The same sums as col2im_nhwc(dy @ Wm) (the column adjoint; equal up to
        BLAS rounding), but the (N*Ho*Wo, kh*kw*C) column gradient is never materialised and every add
        runs over contiguous rows of Wo*C values (1.6-2x faster for the Kannada net's conv2 on NumPy)."""
        xp = array_namespace(dy)
        (kh, kw), (sh, sw), (ho, wo) = self.kernel_size, self.stride, out_hw
        n, c = padded_shape[0], padded_shape[3]
        dxh = xp.zeros(padded_shape, dtype=dy.dtype, device=device(dy))
        for i in range(kh):
            for j in range(kw):
                k = i * kw + j
                part = xp.reshape(xp.matmul(dy, wm[:, k * c : (k + 1) * c]), (n, ho, wo, c))
                dxh[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += part
        return dxh
