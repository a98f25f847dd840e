"""Global average pooling: (N, C, H, W) -> (N, C), the mean of each channel's feature map (torch's
``nn.AdaptiveAvgPool2d(1)`` followed by ``nn.Flatten()``, or ``x.mean((2, 3))``).

forward:  y[n, c] = (1 / (H*W)) * sum over h, w of x[n, c, h, w]
backward: dx[n, c, h, w] = dy[n, c] / (H*W)

NaN and infinities spread as in any mean (+inf and -inf in one map give NaN, as in torch).
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .base import Layer, check_input


class GlobalAvgPool2D(Layer):
    """GlobalAvgPool2D(): the mean over H and W of each image and channel."""

    input_rank = 3

    def output_shape(self, shape):
        self.expect_rank(shape)
        return (shape[0],)

    def cost(self, shape):
        return {"operations": shape[0] * shape[1] * shape[2], "temporaries": 0, "columns": 0}

    def forward(self, x, training=False):
        check_input(self, x, 4, "(N, C, H, W)")
        if x.shape[2] * x.shape[3] == 0:
            raise ValueError(f"{self!r}: input {tuple(x.shape[2:])} has no pixels to average")
        self._shape = tuple(x.shape)
        return array_namespace(x).mean(x, axis=(2, 3))

    def backward(self, grad_out, need_input_grad=True):
        xp = array_namespace(grad_out)
        n, c, h, w = self._shape
        g = grad_out / float(h * w)
        # a fresh array, not a broadcast view: the layer before may write into the gradient it gets
        return xp.zeros(self._shape, dtype=grad_out.dtype, device=device(grad_out)) + g[:, :, None, None]
