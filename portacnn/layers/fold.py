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
from .maxpool import MaxPool2D
from .relu import ReLU


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
    directly followed by a BatchNorm2D of its width run as one folded convolution, and a ReLU after a
    convolution applied in its epilogue where the backend can (:meth:`Conv2D.apply`), with a 2x2 max pool after
    that ReLU too (:meth:`Conv2D.apply_relu_pool`)."""
    i, n = 0, len(layers)
    while i < n:
        layer = layers[i]
        if type(layer) is not Conv2D:
            x = layer.infer(x)
            i += 1
            continue
        after = layers[i + 1] if i + 1 < n else None
        if type(after) is BatchNorm2D and after.num_features == layer.out_channels:
            w, b = folded(layer, after)
            i += 2
        else:
            w, b = layer.weight.data, None if layer.bias is None else layer.bias.data
            i += 1
        if i < n and type(layers[i]) is ReLU:
            y = layer.apply_relu_pool(x, w, b) if i + 1 < n and _pools_2x2(layers[i + 1]) else None
            if y is not None:  # the convolution, its ReLU and the pool after it in one pass
                x, i = y, i + 2
                continue
            x, fused = layer.apply(x, w, b, relu=True)
            if fused:
                i += 1
        else:
            x = layer.apply(x, w, b)
    return x


def _pools_2x2(layer):
    """Whether ``layer`` is a 2x2 max pool with stride 2 and no padding (each window one 2x2 block of outputs)."""
    return type(layer) is MaxPool2D and layer.kernel_size == (2, 2) and layer.stride == (2, 2) and \
        layer.padding == (0, 0)
