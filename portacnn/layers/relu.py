"""Rectified linear unit: y = max(x, 0); dx = dy * [not y <= 0] (y > 0 exactly when x > 0; mask in dy's dtype).

At the edges this is torch.relu: -inf gives 0, NaN stays NaN, and the gradient passes where y is NaN (the
mask is "not y <= 0", false only for y <= 0), as torch's threshold_backward does. One documented difference:
an infinite or NaN incoming gradient at a masked position gives NaN (0 * inf) where torch's select gives 0;
a multiply is several times cheaper than a select on NumPy, and such a gradient means training diverged.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from ..kernels import fast_path
from .base import Layer


class ReLU(Layer):
    """Element-wise max(x, 0). Works on any shape."""

    def fuse_after(self, before, x, training=False):
        """``before``'s output through this ReLU in one pass when ``before`` can fuse it (BatchNorm's fast path);
        this layer's backward then passes the gradient on, ``before`` applying the mask."""
        y = before.forward_then_relu(x, training)
        self._fused = y is not None
        if self._fused:
            self._y = y
        return y

    def fused_into_next(self):
        """The layer after this one computed this ReLU inside its own forward pass (``MaxPool2D.fuse_after``) and
        applies its mask in its backward: this layer passes gradients through until its next forward."""
        self._fused = True
        self._y = None

    def forward(self, x, training=False):
        self._fused = False
        fast = fast_path(x, "relu_forward")  # a backend's one-pass version (kernels/): the same values
        if fast is not None:
            self._y = y = fast(x)
            return y
        xp = array_namespace(x)
        # maximum, not x * mask: -inf must give 0 and NaN must stay NaN, as in torch.relu
        y = xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))
        self._y = y  # backward needs only the sign of the output: no mask is made
        return y

    def backward(self, grad_out, need_input_grad=True):
        if getattr(self, "_fused", False):  # a neighbour applies the mask (fuse_after)
            return grad_out
        fast = fast_path(grad_out, "relu_backward")
        if fast is not None:
            return fast(self._y, grad_out)
        xp = array_namespace(grad_out)
        # a 0/1 mask in the gradient's dtype: multiplying by it is far cheaper than where() on NumPy
        return grad_out * xp.astype(~(self._y <= 0), grad_out.dtype)
