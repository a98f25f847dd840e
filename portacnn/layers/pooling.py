"""What the 2-D pooling layers share: a window's geometry (kernel, stride, padding), checked once.

A window of kh x kw inputs every (sh, sw) pixels over the input padded by (ph, pw) on each side gives
``Ho = (H + 2*ph - kh) // sh + 1`` outputs down (likewise across); padding is at most half the window, as in
torch, so every window holds at least one real input.
"""

from __future__ import annotations

from array_api_extra import at

from ..kernels.windows import out_size, taps
from ..validation import Integer, NoneValue, Pair, check_all
from .base import Layer, check_input


def _fmt(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


class Pool2D(Layer):
    """Base of MaxPool2D and AvgPool2D: ``kernel_size``, ``stride`` (default: the kernel) and ``padding``."""

    RULES = {"kernel_size": Pair(Integer(1)), "stride": Pair(Integer(1)) | NoneValue(), "padding": Pair(Integer(0))}
    input_rank = 3

    def __init__(self, kernel_size, stride=None, padding=0):
        name = type(self).__name__
        args = check_all(name, dict(kernel_size=kernel_size, stride=stride, padding=padding), self.RULES)
        self.kernel_size, self.padding = args["kernel_size"], args["padding"]
        self.stride = self.kernel_size if args["stride"] is None else args["stride"]
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name} padding {_fmt(self.padding)} must be at most half its kernel size "
                             f"{_fmt(self.kernel_size)} (as in torch)")

    def config(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)

    def short(self):
        extra = [] if self.stride == self.kernel_size else [f"stride {self._side(self.stride)}"]
        extra += [] if self.padding == (0, 0) else [f"pad {self._side(self.padding)}"]
        return f"{type(self).__name__}({', '.join([self._side(self.kernel_size), *extra])})"

    def output_shape(self, shape):
        self.expect_rank(shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if shape[1] + 2 * ph < kh or shape[2] + 2 * pw < kw:  # what forward and torch need
            raise ValueError(f"its {kh}x{kw} window (padding {ph}x{pw}) does not fit the {shape[1]}x{shape[2]} input "
                             "(the padded input must be at least the kernel size)")
        return (shape[0], out_size(shape[1], kh, sh, ph), out_size(shape[2], kw, sw, pw))

    def window_sizes(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def cost(self, shape):
        c, h, w = shape
        _, ho, wo = self.output_shape(shape)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        return {"operations": c * ho * wo * kh * kw, "columns": 0,
                "temporaries": c * (h + 2 * ph) * (w + 2 * pw) if ph or pw else 0}

    def _offsets(self):
        return offsets(self.kernel_size)

    def _out_hw(self, x):
        """(Ho, Wo) for a batch ``x`` (N, C, H, W); a wrong rank or a window larger than the input is a ValueError."""
        check_input(self, x, 4, "(N, C, H, W)")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_hw = (out_size(x.shape[2], kh, sh, ph), out_size(x.shape[3], kw, sw, pw))
        if min(out_hw) <= 0:
            raise ValueError(f"{self!r}: input {tuple(x.shape[2:])} is smaller than the {kh}x{kw} window")
        return out_hw

    def _add_back(self, dxpad, i, j, g, out_hw):
        return add_back(dxpad, i, j, g, out_hw, self.kernel_size, self.stride)


def offsets(kernel) -> list[tuple[int, int]]:
    """The kernel offsets (i, j), row by row."""
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]


def add_back(dxpad, i, j, g, out_hw, kernel, stride):
    """``dxpad`` with ``g`` (N, C, Ho, Wo) added into the cells kernel offset (i, j) saw (col2im for one offset; in
    place where arrays are mutable, a new array on JAX); when windows do not overlap each cell is written once, so
    a plain assignment does."""
    (sh, sw), (kh, kw), (ho, wo) = stride, kernel, out_hw
    sl = (slice(None), slice(None), taps(i, sh, ho), taps(j, sw, wo))
    if sh >= kh and sw >= kw:
        return at(dxpad, sl).set(g)
    return at(dxpad, sl).add(g)
