"""2-D convolution (cross-correlation, as in PyTorch) by im2col and ONE matmul.

Shapes: x (N, C, H, W), weight W (O, C, kh, kw), bias b (O,), y (N, O, Ho, Wo). The input is padded by
pt rows at the top and pb at the bottom (likewise pl, pr across), and a window's taps are dilation dh rows
apart, so it spans eh = dh*(kh - 1) + 1 rows::

    y[n, o, r, s] = b[o] + sum_{c,i,j} W[o, c, i, j] * xpad[n, c, r*sh + i*dh, s*sw + j*dw]
    Ho = (H + pt + pb - eh) // sh + 1                                (likewise Wo)

``padding="valid"`` is no padding; ``"same"`` (stride 1 only) pads dh*(kh - 1) rows in all, pt = half of
that rounded down and pb the rest (an even window pads one more row at the bottom, one more column at
the right, as PyTorch), so that Ho = H. With K = C*kh*kw and P = Ho*Wo*N::

    X  = im2col(x)            (K, P)   column p holds the (padded, dilated) window of output pixel p
    Wm = W reshaped           (O, K)
    forward:   Y  = Wm @ X + b                  (O, P), then reshaped to (N, O, Ho, Wo)
    backward:  dW = dY @ X^T     db = sum_P dY     dX = col2im(Wm^T @ dY)

``col2im`` is the adjoint of ``im2col`` (each window's values added back where they came from), so the
gradients are PyTorch's to rounding. This reference math is what the tests check against the oracles; a
backend runs the same products in the memory layouts it computes fastest through the kernel registered at
the seam (:mod:`portacnn.kernels.conv`), and the tests run every conv with that kernel on and off.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..kernels import fast_path
from ..kernels.windows import col2im_chwn, im2col_chwn, out_size, pad_hw
from ..validation import Boolean, Integer, Options, Pair, check_all
from .base import Layer, Parameter, check_input, uniform


def _pads(sides) -> str:
    """Padding ((top, bottom), (left, right)) as "1x2", or "0+1x0+1" when a side differs."""
    return "x".join(str(a) if a == b else f"{a}+{b}" for a, b in sides)


class Conv2D(Layer):
    """Conv2D(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True), like
    torch.nn.Conv2d: ``padding`` is "same", "valid", an int or an (h, w) pair; ``dilation`` an int or a pair.

    Weights and bias start as U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels*kh*kw (PyTorch's
    default).
    """

    RULES = {"in_channels": Integer(1), "out_channels": Integer(1), "kernel_size": Pair(Integer(1)),
             "stride": Pair(Integer(1)), "padding": Options("same", "valid") | Pair(Integer(0)),
             "dilation": Pair(Integer(1)), "bias": Boolean()}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        args = check_all("Conv2D", dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                                        stride=stride, padding=padding, dilation=dilation, bias=bias), self.RULES)
        self.in_channels, self.out_channels = args["in_channels"], args["out_channels"]
        self.kernel_size, self.stride, self.dilation = args["kernel_size"], args["stride"], args["dilation"]
        self.padding, self.use_bias = args["padding"], args["bias"]
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError(f"Conv2D padding 'same' needs stride 1 (as in torch); got stride={stride!r}: use stride=1, "
                             "or give the padding as an int or pair")
        self.weight = self.bias = None

    def _extent(self):
        """The dilated kernel's size (dilation * (k - 1) + 1 per axis)."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))

    def padding_sides(self):
        """The padding per side, ((top, bottom), (left, right))."""
        if self.padding == "same":  # dilation*(k - 1) in all, the odd one at the bottom/right (as torch)
            return tuple((t // 2, t - t // 2) for t in (d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)))
        ph, pw = (0, 0) if self.padding == "valid" else self.padding
        return (ph, ph), (pw, pw)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                    stride=self.stride, padding=self.padding, dilation=self.dilation, bias=self.use_bias)

    def short(self):
        pad = (0, 0) if self.padding == "valid" else self.padding
        extra = [f"stride {self._side(self.stride)}"] if self.stride != (1, 1) else []
        extra += [f"pad {pad if pad == 'same' else self._side(pad)}"] if pad != (0, 0) else []
        extra += [f"dilation {self._side(self.dilation)}"] if self.dilation != (1, 1) else []
        extra += [] if self.use_bias else ["no bias"]
        (kh, kw), arrow = self.kernel_size, f"{self.in_channels}->{self.out_channels}"
        return f"Conv2D({', '.join([arrow, f'{kh}x{kw}', *extra])})"

    def initialize(self, rng, backend, dtype):
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt(self.in_channels * kh * kw)
        self.weight = Parameter("weight", uniform(rng, bound, (self.out_channels, self.in_channels, kh, kw), backend, dtype))
        if self.use_bias:
            self.bias = Parameter("bias", uniform(rng, bound, (self.out_channels,), backend, dtype))

    @property
    def input_channels(self) -> int:
        return self.in_channels

    input_rank = 3

    def output_shape(self, shape):
        self.expect_rank(shape)
        c, h, w = shape
        if c != self.in_channels:
            raise ValueError(f"expects {self.in_channels} input channels but gets {c}")
        (pt, pb), (pl, pr) = self.padding_sides()
        eh, ew = self._extent()
        if h + pt + pb < eh or w + pl + pr < ew:
            raise ValueError(f"its {eh}x{ew} window (padding {_pads(self.padding_sides())}) does not fit the {h}x{w} input "
                             "(the padded input must be at least the dilated kernel size)")
        return (self.out_channels, *(out_size(n, k, s, p, d) for n, k, s, p, d in
                                     zip(shape[1:], self.kernel_size, self.stride, self.padding_sides(), self.dilation)))

    def parameter_shapes(self):
        shapes = {"weight": (self.out_channels, self.in_channels, *self.kernel_size)}
        return {**shapes, "bias": (self.out_channels,)} if self.use_bias else shapes

    def window_sizes(self):
        return {"kernel_size": self.kernel_size, "dilated kernel": self._extent(), "stride": self.stride,
                "padding": tuple(max(side) for side in self.padding_sides())}

    def cost(self, shape):
        c, h, w = shape
        _, ho, wo = self.output_shape(shape)
        (pt, pb), (pl, pr) = self.padding_sides()
        k = c * self.kernel_size[0] * self.kernel_size[1]
        return {"operations": self.out_channels * ho * wo * k, "columns": k * ho * wo,
                "temporaries": c * (h + pt + pb) * (w + pl + pr) if pt + pb + pl + pr else 0}

    def _geometry(self, x):
        check_input(self, x, 4, f"(N, {self.in_channels}, H, W)", self.in_channels)
        ho, wo = (out_size(n, k, s, p, d) for n, k, s, p, d in
                  zip(x.shape[2:], self.kernel_size, self.stride, self.padding_sides(), self.dilation))
        if ho <= 0 or wo <= 0:
            (pt, pb), (pl, pr) = self.padding_sides()
            eh, ew = (d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))
            raise ValueError(f"{self!r}: input {x.shape[2]}x{x.shape[3]} padded to {x.shape[2] + pt + pb}x"
                             f"{x.shape[3] + pl + pr} is smaller than the {eh}x{ew} (dilated) kernel; use a larger "
                             "input, more padding or a smaller kernel_size or dilation")
        return ho, wo

    def forward(self, x, training=False):
        y, self._cache = self._convolve(x, self.weight.data, None if self.bias is None else self.bias.data, training)
        return y

    def apply(self, x, weight, bias=None, relu=False):
        """This convolution's output with other weights (W (O, C, kh, kw), b (O,) or None), keeping nothing for
        backward: what inference runs with a BatchNorm folded in (:mod:`.fold`). With ``relu``, ``(y, fused)``:
        a backend whose fast path applies a following ReLU while the output is in cache returns max(y, 0) and
        True; otherwise y and False (the caller applies the ReLU)."""
        if relu:
            fast = fast_path(x, "conv2d_forward_relu")
            if fast is not None:
                return fast(x, weight, bias, self.stride, self.padding_sides(), self._geometry(x), False, self.dilation)[0], True
            return self._convolve(x, weight, bias, False)[0], False
        return self._convolve(x, weight, bias, False)[0]

    def apply_relu_pool(self, x, weight, bias=None):
        """``max_pool_2x2(max(conv(x), 0))`` with stride 2 and other weights (like :meth:`apply`) in one pass where
        the backend's fast path computes each pooling window as one piece of the convolution; else None (the
        caller runs the convolution, the ReLU and the pool)."""
        fast = fast_path(x, "conv2d_forward_relu_pool")
        if fast is None:
            return None
        return fast(x, weight, bias, self.stride, self.padding_sides(), self._geometry(x), self.dilation)

    def _convolve(self, x, w, b, training):
        """(y, what backward needs) for weights ``w`` and bias ``b``."""
        out_hw = self._geometry(x)
        fast = fast_path(x, "conv2d_forward")
        if fast is not None:
            y, saved = fast(x, w, b, self.stride, self.padding_sides(), out_hw, training, self.dilation)
            return y, (fast_path(x, "conv2d_backward"), saved)
        xp = array_namespace(x)
        (ho, wo), n, o = out_hw, x.shape[0], self.out_channels
        xc = pad_hw(xp.permute_dims(x, (1, 2, 3, 0)), *self.padding_sides(), copy=True)  # (C, Hp, Wp, N)
        cols = im2col_chwn(xc, self.kernel_size, self.stride, out_hw, self.dilation)  # X: (K, Ho*Wo*N)
        y = xp.matmul(xp.reshape(w, (o, -1)), cols)  # Wm @ X: (O, Ho*Wo*N)
        if b is not None:
            y = y + b[:, None]
        return xp.permute_dims(xp.reshape(y, (o, ho, wo, n)), (3, 0, 1, 2)), (None, (x, cols, out_hw))

    def backward(self, grad_out, need_input_grad=True):
        fast, saved = self._cache
        if fast is not None:
            dx, dw, db = fast(saved, self.weight.data, grad_out, need_input_grad)
            self._set_grads(dw, db)
            return dx
        xp = array_namespace(grad_out)
        x, cols, out_hw = saved
        ((pt, pb), (pl, pr)), o, (c, h, w), n = self.padding_sides(), self.out_channels, x.shape[1:], x.shape[0]
        dy = xp.reshape(xp.permute_dims(grad_out, (1, 2, 3, 0)), (o, -1))  # dY: (O, Ho*Wo*N)
        self._set_grads(xp.reshape(xp.matmul(dy, xp.matrix_transpose(cols)), self.weight.data.shape),
                        xp.sum(dy, axis=1))
        if not need_input_grad:
            return None
        dcols = xp.matmul(xp.matrix_transpose(xp.reshape(self.weight.data, (o, -1))), dy)  # Wm^T @ dY
        dxc = col2im_chwn(dcols, (c, pt + h + pb, pl + w + pr, n), self.kernel_size, self.stride, out_hw,
                          self.dilation)
        return xp.permute_dims(dxc[:, pt : pt + h, pl : pl + w, :], (3, 0, 1, 2))

    def _set_grads(self, dw, db):
        self.weight.grad = dw
        if self.bias is not None:
            self.bias.grad = db
