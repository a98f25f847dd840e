"""Leaky rectified linear unit, as torch.nn.LeakyReLU:

    y  = x              where x > 0,   else  a * x          (a = negative_slope)
    dx = dy             where x > 0,   else  a * dy

At the edges this is torch's leaky_relu: NaN stays NaN (x > 0 is false, a * NaN is NaN), -inf gives
a * -inf (-inf for a > 0, NaN for a = 0 as in torch), and the gradient at x = 0 is a * dy (torch's
``x > 0 ? dy : dy * a``). Backward reads the saved input, since for a <= 0 the output's sign does not
tell on which side of 0 the input was.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from ..validation import Real, check_all
from .base import Layer


class LeakyReLU(Layer):
    """LeakyReLU(negative_slope=0.01): element-wise, any shape."""

    RULES = {"negative_slope": Real()}  # any finite slope, as torch (negative and > 1 included)

    def __init__(self, negative_slope=0.01):
        self.negative_slope = check_all("LeakyReLU", dict(negative_slope=negative_slope), self.RULES)["negative_slope"]

    def config(self):
        return dict(negative_slope=self.negative_slope)

    def forward(self, x, training=False):
        xp = array_namespace(x)
        self._x = x
        return xp.where(x > 0, x, x * self.negative_slope)

    def backward(self, grad_out, need_input_grad=True):
        xp = array_namespace(grad_out)
        return xp.where(self._x > 0, grad_out, grad_out * self.negative_slope)
