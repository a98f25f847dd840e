"""torch's fast paths: the layers' primitives computed by torch's own kernels (ATen), for ``backend="torch"``.

On torch the portable array-API code runs each layer as many small element-wise ops and slice copies; these
call the one native kernel torch has for the job, on whatever device the tensors live (CPU or CUDA), in
their dtype:

* ``conv2d_forward`` / ``conv2d_backward``: ``conv2d`` and ``aten.convolution_backward``. Uneven padding
  ("same" with an even window) pads the extra rows/columns with ``F.pad`` and the even part in the
  convolution; the input gradient is cropped back to the input's shape.
* ``batchnorm_forward_train`` / ``batchnorm_backward_train``: the batch statistics from
  ``batch_norm_update_stats`` (mean and the BIASED variance itself, from one reduction; recovering the variance
  from ``native_batch_norm``'s ``invstd`` as ``1/invstd^2 - eps`` loses all its digits once var is near or
  below eps), y from ``native_batch_norm`` given those statistics, and ``aten.native_batch_norm_backward`` in
  training mode (dx with the batch statistics' dependence on x, dw = sum(dy * xhat), db = sum(dy)).
* ``relu_forward`` / ``relu_backward``: ``relu`` and ``aten.threshold_backward`` (dy where y > 0, else 0;
  dy passes where y is NaN, as in the portable "not y <= 0").
* ``maxpool2d_forward`` / ``maxpool2d_backward``: ``aten.max_pool2d_with_indices`` and its backward
  (ties go to the first maximum in the window, row by row, as the portable code; an output that is NaN sends
  its gradient to the last NaN of its window, where the portable code sends it nowhere: see
  :mod:`portacnn.layers.maxpool`).

Each returns what the portable primitive returns, to float rounding (the sums run in another order);
tests/kernels/test_torch_fast.py checks them against float64 references. torch is imported on the first call,
never at import time: portacnn imports torch only when the torch backend is asked for.

This module must be imported after :mod:`.conv`, which registers its own conv kernel for every backend
(torch included); importing :mod:`.conv` here first makes the order hold however the package lists them.
"""

from __future__ import annotations

from . import conv as _conv  # noqa: F401  (registers first, so the torch entries below replace its own)
from .registry import register

_TORCH = None


def _torch():
    """torch, imported on first use (a module global afterwards)."""
    global _TORCH
    if _TORCH is None:
        import torch

        _TORCH = torch
    return _TORCH


# --- convolution ---------------------------------------------------------------------------------------------


def _split_padding(padding):
    """((top, bottom), (left, right)) as the even part the convolution pads, (ph, pw), and the extra rows and
    columns ``F.pad`` adds first, (left, right, top, bottom) (all 0 when the padding is even)."""
    (top, bottom), (left, right) = padding
    ph, pw = min(top, bottom), min(left, right)
    return (ph, pw), (left - pw, right - pw, top - ph, bottom - ph)


@register("torch", "conv2d_forward")
def conv2d_forward(x, w, b, stride, padding, out_hw, training, dilation=(1, 1)):
    """y (N, O, Ho, Wo) by torch's conv2d, and ``saved`` = (the input the convolution saw, padding, stride,
    dilation, the extra padding) for :func:`conv2d_backward`; the input is kept in inference too (as the
    portable kernel does), so an input gradient can still be asked for."""
    torch = _torch()
    even, extra = _split_padding(padding)
    xin = torch.nn.functional.pad(x, extra) if any(extra) else x
    y = torch.ops.aten.convolution(xin, w, b, list(stride), list(even), list(dilation), False, [0, 0], 1)
    if tuple(y.shape[2:]) != tuple(out_hw):
        raise ValueError(f"conv2d_forward: torch computed an output of {tuple(y.shape[2:])}, the layer expected "
                         f"{tuple(out_hw)} (padding {padding}, stride {stride}, dilation {dilation})")
    return y, (xin, tuple(stride), even, tuple(dilation), extra)


@register("torch", "conv2d_backward")
def conv2d_backward(saved, w, grad_out, need_input_grad):
    """``(dx or None, dw, db)``: dw has w's shape, db = sum of grad_out over (N, Ho, Wo) (returned even when the
    layer has no bias), dx the input's shape."""
    torch = _torch()
    xin, stride, even, dilation, extra = saved
    dx, dw, db = torch.ops.aten.convolution_backward(
        grad_out, xin, w, [w.shape[0]], list(stride), list(even), list(dilation), False, [0, 0], 1,
        [bool(need_input_grad), True, True])
    if dx is not None and any(extra):
        left, right, top, bottom = extra
        dx = dx[:, :, top : dx.shape[2] - bottom, left : dx.shape[3] - right]
    return (dx if need_input_grad else None), dw, db


# --- batch normalisation -------------------------------------------------------------------------------------


@register("torch", "batchnorm_forward_train")
def batchnorm_forward_train(x, w, b, eps):
    """Training-mode batch norm of x (N, C, H, W) or (N, C): ``(y, mean, var, saved)``, mean and the biased
    variance per channel (C,) in x's dtype (``batch_norm_update_stats``: one pass, the variance itself), y
    normalised with exactly those statistics."""
    torch = _torch()
    mean, var = torch.batch_norm_update_stats(x, None, None, 0.0)
    y = torch.native_batch_norm(x, w, b, mean, var, False, 0.0, eps)[0]
    invstd = 1.0 / torch.sqrt(var + eps)  # as the layer's portable math
    return y, mean, var, (x, mean, invstd, eps)


@register("torch", "batchnorm_backward_train")
def batchnorm_backward_train(saved, w, grad_out, need_input_grad):
    """``(dx or None, dw, db)`` of training-mode batch norm: dw = sum(dy * xhat), db = sum(dy) over every axis
    but 1 (both returned even without affine parameters, w None), and dx = (w * invstd / M) * (M * dy - db -
    xhat * dw)."""
    torch = _torch()
    x, mean, invstd, eps = saved
    dx, dw, db = torch.ops.aten.native_batch_norm_backward(
        grad_out, x, w, None, None, mean, invstd, True, eps, [bool(need_input_grad), True, True])
    return (dx if need_input_grad else None), dw, db


# --- ReLU ----------------------------------------------------------------------------------------------------


@register("torch", "relu_forward")
def relu_forward(x):
    """max(x, 0) (NaN stays NaN, -inf gives 0)."""
    return _torch().relu(x)


@register("torch", "relu_backward")
def relu_backward(y, grad_out):
    """grad_out where not y <= 0 (y > 0, or NaN), else 0."""
    return _torch().ops.aten.threshold_backward(grad_out, y, 0)


# --- max pooling ---------------------------------------------------------------------------------------------


@register("torch", "maxpool2d_forward")
def maxpool2d_forward(x, kernel, stride, padding, out_hw):
    """y (N, C, Ho, Wo) and ``saved`` = (x, the argmax indices, the geometry) for :func:`maxpool2d_backward`;
    ``padding`` is (ph, pw) on both sides, at most half the kernel."""
    torch = _torch()
    geometry = (list(kernel), list(stride), list(padding))
    y, indices = torch.ops.aten.max_pool2d_with_indices(x, *geometry, [1, 1], False)
    if tuple(y.shape[2:]) != tuple(out_hw):
        raise ValueError(f"maxpool2d_forward: torch computed an output of {tuple(y.shape[2:])}, the layer expected "
                         f"{tuple(out_hw)} (kernel {kernel}, stride {stride}, padding {padding})")
    return y, (x, indices, geometry)


@register("torch", "maxpool2d_backward")
def maxpool2d_backward(saved, grad_out):
    """dx (x's shape): each output's gradient added to the input its maximum came from."""
    x, indices, geometry = saved
    return _torch().ops.aten.max_pool2d_with_indices_backward(grad_out, x, *geometry, [1, 1], False, indices)
