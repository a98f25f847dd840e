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

from ..kernels.windows import crop, pad, window
from .pooling import Pool2D


class AvgPool2D(Pool2D):
    """AvgPool2D(kernel_size, stride=None, padding=0), like torch.nn.AvgPool2d; stride defaults to kernel_size."""

    def forward(self, x, training=False):
        out_hw = self._out_hw(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
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
        kh, kw = self.kernel_size
        g = grad_out / float(kh * kw)
        dxpad = xp.zeros(padded_shape, dtype=grad_out.dtype, device=device(grad_out))
        for i, j in self._offsets():
            dxpad = self._add_back(dxpad, i, j, g, (ho, wo))
        return crop(dxpad, *self.padding)

