"""CuPy's fast paths: BatchNorm and ReLU passes fused into single GPU kernels with ``cupy.fuse``.

On a GPU each element-wise pass is one kernel launch and one trip through device memory, so the portable
BatchNorm (5 passes forward, 6 backward, each allocating) costs far more than its arithmetic. Here each pass
is one fused kernel: forward = the two statistics reductions + one affine (+ ReLU) kernel; backward = two
reductions (the fused ReLU's mask recomputed from x, as the NumPy kernels do) + one kernel for dx.

The bodies (the ``*_body`` functions) are plain array expressions taking the array namespace as their first argument:
CuPy compiles ``body(cupy, ...)`` into one kernel with ``cupy.fuse``, and the tests run ``body(numpy, ...)`` on
the CPU (NumPy follows CuPy's conventions: same dtypes, ``.astype``, ``where``) against the layers' portable
math. Nothing here imports CuPy
until a CuPy array arrives. Reductions stay in the array's dtype (no float64 on the GPU): CuPy sums in a
tree, so float32 statistics keep float32 accuracy.
"""

from __future__ import annotations

import functools

from .registry import register


# -- the fused bodies (namespace first; array and scalar arguments only) ----------------------------------
def affine_body(xp, x, scale, shift):
    """``x * scale + shift`` (BatchNorm's output from its per-channel scale and shift)."""
    return x * scale + shift


def affine_relu_body(xp, x, scale, shift):
    """``max(x * scale + shift, 0)``: -inf gives 0, NaN stays NaN (as ``maximum``)."""
    y = x * scale + shift
    return xp.where(y <= 0, xp.zeros_like(y), y)


def masked_grad_body(xp, dy, x, scale, shift):
    """``dy`` times the fused ReLU's 0/1 mask ``[not x * scale + shift <= 0]`` (its output recomputed from x)."""
    return dy * xp.logical_not(x * scale + shift <= 0).astype(dy.dtype)


def bn_dx_body(xp, dy, a, mdb, x, mean, k):
    """BatchNorm's training input gradient ``a * (dy - mdb - (x - mean) * k)``."""
    return a * (dy - mdb - (x - mean) * k)


def bn_dx_relu_body(xp, dy, a, mdb, x, mean, k, scale, shift):
    """The same for the gradient masked by a fused ReLU (:func:`masked_grad_body`), in the same kernel."""
    g = dy * xp.logical_not(x * scale + shift <= 0).astype(dy.dtype)
    return a * (g - mdb - (x - mean) * k)


def relu_body(xp, x):
    return xp.where(x <= 0, xp.zeros_like(x), x)


def relu_grad_body(xp, y, dy):
    return dy * xp.logical_not(y <= 0).astype(dy.dtype)


@functools.lru_cache(maxsize=None)
def _fused(body):
    """``body`` bound to CuPy and compiled into one kernel (on first use)."""
    import cupy

    return cupy.fuse(functools.partial(body, cupy))


def _on(xp, body):
    """``body`` for namespace ``xp``: fused on CuPy, plain (several passes) elsewhere, for the tests."""
    if getattr(xp, "__name__", "").startswith("cupy"):
        return _fused(body)
    return functools.partial(body, xp)


# -- the primitives (the contracts of kernels/numpy_compiled.py) --------------------------------------------
def _axes_and_shape(x):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    return axes, (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batchnorm_forward_train(x, w, b, eps, relu=False):
    import array_api_compat

    xp = array_api_compat.array_namespace(x)
    axes, shape = _axes_and_shape(x)
    m = x.size // x.shape[1]
    mean = xp.mean(x, axis=axes)
    var = xp.mean((x - xp.reshape(mean, shape)) ** 2, axis=axes)  # two reductions; no (x - mean) array kept
    invstd = 1.0 / xp.sqrt(var + eps)  # a Python float keeps the array's dtype
    scale = invstd if w is None else invstd * w
    shift = -mean * scale if b is None else b - mean * scale
    scale, shift = xp.reshape(scale, shape), xp.reshape(shift, shape)
    y = _on(xp, affine_relu_body if relu else affine_body)(x, scale, shift)
    return y, mean, var, (x, mean, invstd, m, relu, scale, shift)


def batchnorm_forward_train_relu(x, w, b, eps):
    return batchnorm_forward_train(x, w, b, eps, relu=True)


def batchnorm_backward_train(saved, w, dy, need_input_grad):
    import array_api_compat

    x, mean, invstd, m, relu, scale, shift = saved
    xp = array_api_compat.array_namespace(dy)
    axes, shape = _axes_and_shape(x)
    g = _on(xp, masked_grad_body)(dy, x, scale, shift) if relu else dy
    db = xp.sum(g, axis=axes)
    dw = xp.sum(g * x, axis=axes) * invstd - mean * invstd * db  # sum(g * xhat)
    if not need_input_grad:
        return None, dw, db
    a = invstd if w is None else invstd * w
    r = lambda v: xp.reshape(v, shape)  # noqa: E731
    coef = (r(a), r(db / m), x, r(mean), r(invstd * dw / m))
    dx = _on(xp, bn_dx_relu_body)(dy, *coef, scale, shift) if relu else _on(xp, bn_dx_body)(dy, *coef)
    return dx, dw, db


def relu_forward(x):
    import array_api_compat

    return _on(array_api_compat.array_namespace(x), relu_body)(x)


def relu_backward(y, dy):
    import array_api_compat

    return _on(array_api_compat.array_namespace(dy), relu_grad_body)(y, dy)


PRIMITIVES = {"batchnorm_forward_train": batchnorm_forward_train,
              "batchnorm_forward_train_relu": batchnorm_forward_train_relu,
              "batchnorm_backward_train": batchnorm_backward_train,
              "relu_forward": relu_forward, "relu_backward": relu_backward}
for _name, _fn in PRIMITIVES.items():
    register("cupy", _name)(_fn)
