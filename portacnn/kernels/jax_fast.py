"""JAX's fast paths, for ``backend="jax"``: XLA's own convolution, and the reference math of the other hot
primitives compiled whole by ``jax.jit``.

Eager JAX runs each array operation as its own XLA call with a pass over memory: the portable convolution is kh*kw
slice copies, a stack and a matmul, a strided window view is a gather, BatchNorm is a dozen passes and an Adam
update ten. Compiled whole, each of these is one call with its passes fused.

* ``conv2d_forward`` / ``conv2d_backward``: ``jax.lax.conv_general_dilated`` in NCHW/OIHW with the padding given
  per side (uneven "same" padding needs no extra pad), the bias added; the weight and input gradients as the VJP
  of that convolution (``jax.vjp``; without an input gradient XLA drops its computation), db = sum of grad_out.
* ``maxpool2d_forward`` / ``maxpool2d_backward``: the layer's own reference math
  (:func:`portacnn.layers.maxpool.max_pool` and its backward: ties to the first maximum, padding never taking a
  gradient), jit-compiled.
* ``batchnorm_forward_train`` / ``batchnorm_backward_train``: the layer's formulas (mean, the biased variance of the
  centred input, xhat; db, dw and dx = (w * invstd / M) * (M * dy - db - xhat * dw)), jit-compiled.
* ``adam_update``: Adam/AdamW's update in the portable update's operations, jit-compiled; returns the new weights
  and buffers.

Everything is compiled once per shape and geometry, and runs at ``Precision.HIGHEST`` where a precision applies:
on GPUs and TPUs JAX's default float32 convolution may round its inputs to TF32 or bfloat16, and the results
must be the portable code's to float rounding (XLA may fuse and reorder the element-wise sums). The layer tests run
on jax with the fast paths on and off (``fast_paths`` fixture: convolution and pooling against float64 loops,
finite differences and torch), and tests/kernels/test_jax_fast.py checks BatchNorm, Adam and whole networks
against the portable code on JAX. JAX is imported on the first call, never at import time.
"""

from __future__ import annotations

import functools
import math

from .registry import register


@functools.lru_cache(maxsize=None)
def _compiled():
    """The jit-compiled forward and backward (built on first use: importing JAX takes a second)."""
    import jax
    import jax.numpy as jnp

    def conv(x, w, stride, padding, dilation):
        return jax.lax.conv_general_dilated(x, w, window_strides=stride, padding=padding, rhs_dilation=dilation,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                            precision=jax.lax.Precision.HIGHEST)

    def forward(x, w, b, stride, padding, dilation):
        y = conv(x, w, stride, padding, dilation)
        return y if b is None else y + b[None, :, None, None]

    def backward(x, w, grad_out, stride, padding, dilation, need_input_grad):
        _, vjp = jax.vjp(lambda x_, w_: conv(x_, w_, stride, padding, dilation), x, w)
        dx, dw = vjp(grad_out)
        return (dx if need_input_grad else None), dw, jnp.sum(grad_out, axis=(0, 2, 3))

    geometry = ("stride", "padding", "dilation")
    return (jax.jit(forward, static_argnames=geometry),
            jax.jit(backward, static_argnames=(*geometry, "need_input_grad")))


def _geometry(stride, padding, dilation):
    """Hashable static arguments: ((sh, sw), ((top, bottom), (left, right)), (dh, dw))."""
    return (tuple(int(s) for s in stride), tuple((int(a), int(b)) for a, b in padding),
            tuple(int(d) for d in dilation))


@register("jax", "conv2d_forward")
def conv2d_forward(x, w, b, stride, padding, out_hw, training, dilation=(1, 1)):
    """y (N, O, Ho, Wo) and ``saved`` = (x, geometry) for :func:`conv2d_backward` (kept in inference too, as the
    portable kernel does, so an input gradient can still be asked for)."""
    stride, padding, dilation = _geometry(stride, padding, dilation)
    y = _compiled()[0](x, w, b, stride=stride, padding=padding, dilation=dilation)
    if tuple(y.shape[2:]) != tuple(out_hw):
        raise ValueError(f"conv2d_forward: JAX computed an output of {tuple(y.shape[2:])}, the layer expected "
                         f"{tuple(out_hw)} (padding {padding}, stride {stride}, dilation {dilation})")
    return y, (x, (stride, padding, dilation))


@register("jax", "conv2d_backward")
def conv2d_backward(saved, w, grad_out, need_input_grad):
    """``(dx or None, dw, db)``: dw has w's shape, db = sum of grad_out over (N, Ho, Wo), dx the input's shape."""
    x, (stride, padding, dilation) = saved
    return _compiled()[1](x, w, grad_out, stride=stride, padding=padding, dilation=dilation,
                          need_input_grad=bool(need_input_grad))


# --- max pooling: the layer's reference math, compiled ---------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _pool():
    import jax

    from ..layers.maxpool import max_pool, max_pool_backward

    def forward(x, kernel, stride, padding, out_hw):
        y, saved = max_pool(x, kernel, stride, padding, out_hw)
        return y, saved[0]  # y and the padded input; the geometry stays on the host

    def backward(xpad, y, grad_out, geometry):
        return max_pool_backward((xpad, y, *geometry), grad_out)

    return (jax.jit(forward, static_argnames=("kernel", "stride", "padding", "out_hw")),
            jax.jit(backward, static_argnames=("geometry",)))


@register("jax", "maxpool2d_forward")
def maxpool2d_forward(x, kernel, stride, padding, out_hw):
    """``(y, saved)`` of :func:`portacnn.layers.maxpool.max_pool`, compiled."""
    kernel, stride, padding, out_hw = (tuple(int(v) for v in a) for a in (kernel, stride, padding, out_hw))
    y, xpad = _pool()[0](x, kernel=kernel, stride=stride, padding=padding, out_hw=out_hw)
    return y, (xpad, y, (kernel, stride, padding, out_hw, tuple(int(v) for v in x.shape[2:])))


@register("jax", "maxpool2d_backward")
def maxpool2d_backward(saved, grad_out):
    xpad, y, geometry = saved
    return _pool()[1](xpad, y, grad_out, geometry=geometry)


# --- batch normalisation: the layer's formulas, compiled -------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _batchnorm():
    import jax
    import jax.numpy as jnp

    def channels(v, ndim):
        return jnp.reshape(v, (1, v.shape[0]) + (1,) * (ndim - 2))

    def forward(x, w, b, eps):
        axes = (0,) + tuple(range(2, x.ndim))
        mean = jnp.mean(x, axis=axes)
        xc = x - channels(mean, x.ndim)
        var = jnp.mean(xc * xc, axis=axes)
        invstd = 1.0 / jnp.sqrt(var + eps)
        xhat = xc * channels(invstd, x.ndim)
        y = xhat if w is None else xhat * channels(w, x.ndim) + channels(b, x.ndim)
        return y, mean, var, xhat, invstd

    def backward(xhat, invstd, w, grad_out, need_input_grad):
        axes = (0,) + tuple(range(2, grad_out.ndim))
        db = jnp.sum(grad_out, axis=axes)
        dw = jnp.sum(grad_out * xhat, axis=axes)
        if not need_input_grad:
            return None, dw, db
        m = 1
        for a in axes:
            m *= grad_out.shape[a]
        scale = invstd if w is None else w * invstd
        inner = float(m) * grad_out - channels(db, grad_out.ndim) - xhat * channels(dw, grad_out.ndim)
        return inner * channels(scale / float(m), grad_out.ndim), dw, db

    return (jax.jit(forward, static_argnames=("eps",)), jax.jit(backward, static_argnames=("need_input_grad",)))


@register("jax", "batchnorm_forward_train")
def batchnorm_forward_train(x, w, b, eps):
    """Training-mode batch norm: ``(y, mean, var, saved)`` (mean and biased variance per channel)."""
    y, mean, var, xhat, invstd = _batchnorm()[0](x, w, b, eps=float(eps))
    return y, mean, var, (xhat, invstd)


@register("jax", "batchnorm_backward_train")
def batchnorm_backward_train(saved, w, grad_out, need_input_grad):
    """``(dx or None, dw, db)`` of training-mode batch norm."""
    xhat, invstd = saved
    return _batchnorm()[1](xhat, invstd, w, grad_out, need_input_grad=bool(need_input_grad))


# --- Adam -------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _adam():
    import jax
    import jax.numpy as jnp

    def update(w, g, m, v, b1, omb1, b2, omb2, bias2, eps, step, wd, mode):
        """The operations of :meth:`portacnn.optim.Adam._update`, in its order; every factor a Python float made on
        the host as the portable code makes it (``bias2`` = sqrt(1 - b2^t), ``step`` = lr / (1 - b1^t), ``wd`` =
        1 - lr * weight_decay for AdamW), traced (a schedule that changes them every step compiles nothing new)
        and rounded to w's dtype as NumPy rounds a Python float meeting a float32 array. ``mode``: 0 no weight
        decay, 1 Adam's (added to the gradient), 2 AdamW's."""
        b1, omb1, b2, omb2, bias2, eps, step, wd = (jnp.asarray(f, dtype=w.dtype)
                                                     for f in (b1, omb1, b2, omb2, bias2, eps, step, wd))
        if mode == 2:
            w = w * wd
        elif mode == 1:
            g = g + wd * w
        m = m * b1 + omb1 * g
        v = v * b2 + (g * g) * omb2
        denom = jnp.sqrt(v) / bias2 + eps
        return w - (m / denom) * step, m, v

    return jax.jit(update, static_argnames=("mode",))


@register("jax", "adam_update")
def adam_update(w, g, m, v, t, lr, b1, b2, eps, weight_decay, decoupled):
    """Adam/AdamW's step, compiled: the new ``(w, m, v)``."""
    mode = 0 if not weight_decay else 2 if decoupled else 1
    factors = (b1, 1.0 - b1, b2, 1.0 - b2, math.sqrt(1.0 - b2**t), eps, lr / (1.0 - b1**t),
               1.0 - lr * weight_decay if mode == 2 else weight_decay)
    return _adam()(w, g, m, v, *(float(f) for f in factors), mode=mode)
