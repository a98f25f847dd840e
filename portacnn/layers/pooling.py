"""What the 2-D pooling layers share: a window's geometry (kernel, stride, padding), checked once.

A window of kh x kw inputs every (sh, sw) pixels over the input padded by (ph, pw) on each side gives
``Ho = (H + 2*ph - kh) // sh + 1`` outputs down (likewise across); padding is at most half the window, as in
torch, so every window holds at least one real input.
"""

from __future__ import annotations

from ..kernels.windows import out_size, taps
from .base import Layer, check_input, pair


class Pool2D(Layer):
    """Base of MaxPool2D and AvgPool2D: ``kernel_size``, ``stride`` (default: the kernel) and ``padding``."""

    def __init__(self, kernel_size, stride=None, padding=0):
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, f"{name} kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{name} stride")
        self.padding = pair(padding, f"{name} padding")
        if min(self.kernel_size + self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"{name} needs kernel_size and stride > 0 and padding >= 0; got kernel_size="
                             f"{kernel_size!r}, stride={stride!r}, padding={padding!r}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name} padding {self.padding} must be at most half the kernel size {self.kernel_size}")

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def output_shape(self, shape):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (shape[0], out_size(shape[1], kh, sh, ph), out_size(shape[2], kw, sw, pw))

    def _offsets(self):
        kh, kw = self.kernel_size
        return [(i, j) for i in range(kh) for j in range(kw)]

    def _out_hw(self, x):
        """(Ho, Wo) for a batch ``x`` (N, C, H, W); a wrong rank or a window larger than the input is a ValueError."""
        check_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = (out_size(x.shape[2], kh, sh, ph), out_size(x.shape[3], kw, sw, pw))
        if min(out_hw) <= 0:
            raise ValueError(f"{self!r}: input {tuple(x.shape[2:])} is smaller than the {kh}x{kw} window")
        return out_hw

    def _add_back(self, dxpad, i, j, g, out_hw):
        """Add ``g`` (N, C, Ho, Wo) into the cells of ``dxpad`` that kernel offset (i, j) saw (col2im for one
        offset); when windows do not overlap each cell is written once, so a plain assignment does."""
        (sh, sw), (kh, kw), (ho, wo) = self.stride, self.kernel_size, out_hw
        sl = (slice(None), slice(None), taps(i, sh, ho), taps(j, sw, wo))
        if sh >= kh and sw >= kw:
            dxpad[sl] = g
        else:
            dxpad[sl] += g
