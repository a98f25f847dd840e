"""JAX's fast path: a convolution computed by XLA's own (``jax.lax.conv_general_dilated``), for ``backend="jax"``.

Eager JAX runs the portable convolution as kh*kw slice copies, a stack and a matmul, and its input gradient as
kh*kw functional scatter-adds, each a new array; XLA has one kernel for the whole job on every device JAX runs on.

* ``conv2d_forward``: ``conv_general_dilated`` in NCHW/OIHW with the padding given per side (uneven "same"
  padding needs no extra pad), the bias added, under ``jax.jit`` (compiled once per shape and geometry).
* ``conv2d_backward``: the weight and input gradients as the VJP of that convolution (``jax.vjp``, jit-compiled
  per shape; without an input gradient XLA drops its computation), db = sum of grad_out over (N, Ho, Wo).

Both run at ``Precision.HIGHEST``: on GPUs and TPUs JAX's default float32 convolution may round its inputs to
TF32 or bfloat16, and the results must be the portable code's to float rounding (the convolution tests in
tests/layers/test_conv.py run on jax with the fast paths on and off, against float64 loops, finite differences and
torch). JAX is imported on the first call, never at import time.
"""

from __future__ import annotations

import functools

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
