"""Inference with BatchNorm folded into the convolution before it, as deployment toolchains do.

In inference a BatchNorm2D is a fixed per-channel affine map, so after a Conv2D it can be merged into the
convolution's weights (``s = gamma / sqrt(running_var + eps)``; gamma = 1 and beta = 0 without affine)::

    bn(conv(x)) = s * (W * x + b - running_mean) + beta = (s W) * x + (s (b - running_mean) + beta)
    W' = W * s[o]          b' = s * (b - running_mean) + beta          (b = 0 when the conv has no bias)

which saves the BatchNorm's pass over memory (and the conv's bias add costs nothing more). The folded arrays
are computed at each call from the current parameters and buffers, in the model's dtype and on its device;
the trained parameters are never touched. The result equals ``forward(x, training=False)`` to float
rounding (tests check it on every backend).
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .batchnorm import BatchNorm2D
from .conv import Conv2D


def folded(conv: Conv2D, bn: BatchNorm2D):
    """``(W', b')`` of ``bn(conv(x))`` in inference (module docstring)."""
    w = conv.weight.data
    xp = array_namespace(w)
    s = 1.0 / xp.sqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.data
    b = -bn.running_mean if conv.bias is None else conv.bias.data - bn.running_mean
    b = b * s
    if bn.bias is not None:
        b = b + bn.bias.data
    return w * xp.reshape(s, (-1, 1, 1, 1)), b


def run_infer(layers, x):
    """``x`` through ``layers`` for inference (each layer's :meth:`~portacnn.layers.Layer.infer`), every Conv2D
    directly followed by a BatchNorm2D of its width run as one folded convolution."""
    i = 0
    while i < len(layers):
        layer = layers[i]
        after = layers[i + 1] if i + 1 < len(layers) else None
        if type(layer) is Conv2D and type(after) is BatchNorm2D and after.num_features == layer.out_channels:
            x = layer.apply(x, *folded(layer, after))
            i += 2
            continue
        x = layer.infer(x)
        i += 1
    return x
