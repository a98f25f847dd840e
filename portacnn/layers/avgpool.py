"""2-D average pooling as a sum over the kh*kw strided window views, as torch.nn.AvgPool2d with its
defaults (count_include_pad=True, ceil_mode=False): padding counts as zeros and the divisor is always kh*kw.

forward:  y = (1 / (kh*kw)) * sum over offsets (i, j) of window(x_pad, i, j)       (x padded with 0)
backward: dx_pad[window (i, j)] += dy / (kh*kw) for every offset (i, j); dx = crop(dx_pad)

With ceil_mode=False and padding <= kernel / 2 every window ends inside the padded input, so torch's
divisor is kh*kw for every output too. NaN and infinities spread as in any sum (a window holding +inf
and -inf gives NaN, as in torch).
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from ..kernels.windows import crop, out_size, pad, taps, window
from .base import Layer, check_input, pair


class AvgPool2D(Layer):
    """AvgPool2D(kernel_size, stride=None, padding=0), like torch.nn.AvgPool2d; stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = pair(kernel_size, "AvgPool2D kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "AvgPool2D stride")
        self.padding = pair(padding, "AvgPool2D padding")
        if min(self.kernel_size) <= 0:
            raise ValueError(f"AvgPool2D kernel_size must be positive; got {kernel_size!r}")
        if min(self.stride) <= 0:
            raise ValueError(f"AvgPool2D stride must be positive; got {stride!r}")
        if min(self.padding) < 0:
            raise ValueError(f"AvgPool2D padding must be >= 0; got {padding!r}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"AvgPool2D padding {self.padding} must be at most half the kernel size {self.kernel_size}")

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def output_shape(self, shape):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (shape[0], out_size(shape[1], kh, sh, ph), out_size(shape[2], kw, sw, pw))

    def _offsets(self):
        kh, kw = self.kernel_size
        return [(i, j) for i in range(kh) for j in range(kw)]

    def forward(self, x, training=False):
        check_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = (out_size(x.shape[2], kh, sh, ph), out_size(x.shape[3], kw, sw, pw))
        if min(out_hw) <= 0:
            raise ValueError(f"{self!r}: input {tuple(x.shape[2:])} is smaller than the {kh}x{kw} window")
        xpad = pad(x, ph, pw, 0)
        total = None
        for i, j in self._offsets():
            v = window(xpad, i, j, out_hw, self.stride)
            total = v if total is None else total + v
        self._shape = (tuple(xpad.shape), out_hw)
        return total / float(kh * kw)

    def backward(self, grad_out, need_input_grad=True):
        xp = array_namespace(grad_out)
        padded_shape, (ho, wo) = self._shape
        (sh, sw), (kh, kw) = self.stride, self.kernel_size
        g = grad_out / float(kh * kw)
        dxpad = xp.zeros(padded_shape, dtype=grad_out.dtype, device=device(grad_out))
        disjoint = sh >= kh and sw >= kw  # windows do not overlap: each slice write touches fresh cells
        for i, j in self._offsets():
            sl = (slice(None), slice(None), taps(i, sh, ho), taps(j, sw, wo))
            if disjoint:
                dxpad[sl] = g
            else:
                dxpad[sl] += g
        return crop(dxpad, *self.padding)

