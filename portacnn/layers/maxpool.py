"""2-D max pooling as an element-wise maximum over the kh*kw strided window views.

forward:  y = max over offsets (i, j) of window(x_pad, i, j)     (x padded with -inf)
backward: each output's gradient goes to the FIRST input that attains its maximum, scanning the window
          row by row (what PyTorch does): offset by offset, the inputs equal to the max take the gradient
          still unclaimed (``rest``), which then drops to 0 there; added back slice by slice as in col2im.

Padding never wins: it is -inf, so an output equals a real input even when every real input in its window
is -inf (each window holds at least one, since padding <= kernel / 2), and padded cells are masked out of
the tie test, so the gradient goes to the first real input equal to the max, never to padding.

NaN (documented difference from PyTorch): the forward pass matches (NaN in a window gives NaN), but the
gradient of an output that is NaN reaches no input, because ``window == y`` is false for NaN. PyTorch's CPU
kernel hands it to the last NaN in the window. Matching that needs a second, reverse scan of every window
on every backward pass (about twice this layer's backward) for a case whose loss is NaN anyway. Likewise an
infinite or NaN incoming gradient spreads NaN over its window (0 * inf, inf - inf) where torch routes it to
one input: the gradient of a diverged step.

No argmax, gather or scatter is needed, so this stays inside the array-API standard, and for the usual
kernel == stride case it is also the fastest way NumPy has (no reshape to 6-D and reduce).
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from ..kernels import fast_path
from ..kernels.layout import in_layout_of
from ..kernels.windows import crop, pad, window
from .pooling import Pool2D, add_back, offsets
from .relu import ReLU


class MaxPool2D(Pool2D):
    """MaxPool2D(kernel_size, stride=None, padding=0), like torch.nn.MaxPool2d; stride defaults to kernel_size."""

    def forward(self, x, training=False):
        out_hw = self._out_hw(x)
        fast = fast_path(x, "maxpool2d_forward")  # a backend's one-pass version (kernels/): the same values
        y, saved = (fast or max_pool)(x, self.kernel_size, self.stride, self.padding, out_hw)
        self._cache = (fast_path(x, "maxpool2d_backward") if fast else max_pool_backward, saved)
        return y

    def fuse_after(self, before, x, training=False):
        """``self.forward(before.forward(x))`` in one pass when ``before`` is a ReLU and the backend's fast path
        pools max(x, 0) directly (the ReLU's output is never made); the ReLU then passes gradients through and
        this layer's backward applies its mask. Else None."""
        if type(before) is not ReLU:
            return None
        fast = fast_path(x, "maxpool2d_forward_relu")
        if fast is None:
            return None
        y, saved = fast(x, self.kernel_size, self.stride, self.padding, self._out_hw(x))
        self._cache = (fast_path(x, "maxpool2d_backward"), saved)
        before.fused_into_next()
        return y

    def backward(self, grad_out, need_input_grad=True):
        backward, saved = self._cache
        return backward(saved, grad_out)


def max_pool(x, kernel, stride, padding, out_hw):
    """The reference forward: ``(y, saved)`` for :func:`max_pool_backward`, y (N, C, Ho, Wo) the maximum over the
    kh*kw window views of x padded with -inf."""
    xp = array_namespace(x)
    xpad = pad(x, *padding, -float("inf"))
    y = None
    for i, j in offsets(kernel):
        v = window(xpad, i, j, out_hw, stride)
        y = v if y is None else xp.maximum(y, v)
    return y, (xpad, y, tuple(kernel), tuple(stride), tuple(padding), tuple(out_hw), tuple(x.shape[2:]))


def max_pool_backward(saved, grad_out):
    """The reference backward: dx (N, C, H, W), each output's gradient at the first input of its window (row by row)
    that equals its maximum."""
    xp = array_namespace(grad_out)
    xpad, y, kernel, stride, (ph, pw), (ho, wo), (h, w) = saved
    dxpad = xp.zeros_like(xpad)  # keeps xpad's memory layout on NumPy/torch (channels-last stays so)
    rest = in_layout_of(grad_out, y)  # gradient not yet handed out (becomes 0 where an offset took it)
    taken = offsets(kernel)
    for k, (i, j) in enumerate(taken):
        # a 0/1 mask in the gradient's dtype: multiplying by it is far cheaper than where() on NumPy
        hit = window(xpad, i, j, (ho, wo), stride) == y
        if ph or pw:  # a padded cell can equal y only when y is -inf: it must never take the gradient
            hit = hit & _real_cells(xp, i, j, (ho, wo), stride, (ph, pw), (h, w), device(y))
        g = rest * xp.astype(hit, grad_out.dtype)
        if k + 1 < len(taken):
            rest = rest - g  # exactly 0 where g took it all, unchanged elsewhere
        dxpad = add_back(dxpad, i, j, g, (ho, wo), kernel, stride)
    return crop(dxpad, ph, pw)


def _real_cells(xp, i, j, out_hw, stride, padding, in_hw, dev):
    """(Ho, Wo) booleans: which cells of offset (i, j)'s window view lie inside the unpadded input."""
    (ho, wo), (sh, sw), (ph, pw), (h, w) = out_hw, stride, padding, in_hw
    rows = xp.arange(ho, device=dev) * sh + i
    cols = xp.arange(wo, device=dev) * sw + j
    return ((rows >= ph) & (rows < ph + h))[:, None] & ((cols >= pw) & (cols < pw + w))[None, :]
