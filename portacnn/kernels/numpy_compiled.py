"""The NumPy backend's compiled fast paths: layout and allocation around the loops of :mod:`.numba_kernels`.

Registered at the seam for ``"numpy"`` only while numba is usable (:func:`.compiled.usable`); otherwise, and
under ``PORTACNN_PORTABLE=1`` or ``PORTACNN_COMPILED=0``, the layers run their portable math. Each primitive
returns what its portable twin returns, to float rounding (the reductions here sum in float64, the portable
ones in the array's dtype); outputs keep the input's memory order (channels-last stays channels-last).

Primitives (the contracts the layers rely on; the torch backend registers the same names):

- ``batchnorm_forward_train(x, w, b, eps) -> (y, mean, var, saved)``: batch statistics per channel (mean and
  biased variance, (C,) in x's dtype) and ``y = (x - mean) / sqrt(var + eps) * w + b`` (w, b None: no affine);
- ``batchnorm_backward_train(saved, w, dy, need_input_grad) -> (dx or None, dw, db)``;
- ``relu_forward(x) -> y`` and ``relu_backward(y, dy) -> dx``;
- ``maxpool2d_forward(x, kernel, stride, padding, out_hw) -> (y, saved)`` and
  ``maxpool2d_backward(saved, dy) -> dx``; ``maxpool2d_forward_relu``: the same on max(x, 0), its backward applying
  the ReLU's mask (a ReLU followed by max pooling in one pass);
- ``conv2d_forward`` / ``conv2d_backward``: blocks of images made into columns and multiplied in cache on every
  core; narrow stride-1 convs as direct loops vectorised over the batch, on every core; 3x3 stride-1 convs
  by Winograd's F(2x2, 3x3) (:mod:`.winograd`, 2.25x fewer multiply-adds): the forward with 16 inputs or more,
  the input gradient with 16 outputs or more, the weight gradient with both; ``conv2d_forward_relu_pool``:
  inference's conv + ReLU + 2x2 max pool as one Winograd pass, each window one tile (None where that does not
  apply);
- ``adam_update``: Adam/AdamW in one pass.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from . import compiled, winograd
from .registry import register


def _k():
    return compiled.kernels()


def _view(x):
    """``(kind, view)`` of an (N, C) or (N, C, H, W) array sharing its memory: ``"rows"`` (R, C) for channels-last
    memory, ``"planes"`` (A, C, B) for NCHW or batch-last memory; other layouts are copied to NCHW first."""
    c = x.shape[1]
    if x.ndim == 2:
        return ("rows", x) if x.flags.c_contiguous else ("planes", np.ascontiguousarray(x.T).reshape(1, c, -1))
    last = x.transpose(0, 2, 3, 1)
    if last.flags.c_contiguous:
        return "rows", last.reshape(-1, c)
    if x.flags.c_contiguous:
        return "planes", x.reshape(x.shape[0], c, -1)
    first = x.transpose(1, 2, 3, 0)
    if first.flags.c_contiguous:
        return "planes", first.reshape(1, c, -1)
    return "planes", np.ascontiguousarray(x).reshape(x.shape[0], c, -1)


def _like(kind, view, x):
    """A new array shaped like ``x`` in the memory order of ``view`` and that view of it."""
    if kind == "rows" and x.ndim == 4:
        n, c, h, w = x.shape
        out = np.empty((n, h, w, c), dtype=x.dtype)
        return out.transpose(0, 3, 1, 2), out.reshape(-1, c)
    if kind == "rows":
        out = np.empty(x.shape, dtype=x.dtype)
        return out, out
    if view.shape[0] == 1 and x.shape[0] != 1 or x.ndim == 2:  # batch-last (or a transposed (N, C))
        if x.ndim == 2:
            out = np.empty((x.shape[1], x.shape[0]), dtype=x.dtype)
            return out.T, out.reshape(view.shape)
        n, c, h, w = x.shape
        out = np.empty((c, h, w, n), dtype=x.dtype)
        return out.transpose(3, 0, 1, 2), out.reshape(view.shape)
    out = np.empty(x.shape, dtype=x.dtype)
    return out, out.reshape(view.shape)


def _same_view(kind, like_view, a):
    """``a`` (same shape as the array ``like_view`` was made from) in the same view, copying when its memory
    order differs."""
    k2, v2 = _view(a)
    if k2 == kind and v2.shape == like_view.shape:
        return v2
    # bring a into the memory order of the reference view
    if kind == "rows":
        src = a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
        return np.ascontiguousarray(src).reshape(like_view.shape)
    if like_view.shape[0] == 1 and a.shape[0] != 1:
        src = a.transpose(1, 2, 3, 0) if a.ndim == 4 else a.T
        return np.ascontiguousarray(src).reshape(like_view.shape)
    return np.ascontiguousarray(a).reshape(like_view.shape)


#: elements one task of an element-wise pass or reduction handles: a fixed size, so that sums are made of the
#: same partial sums, added in the same order, whatever the thread count
CHUNK_ELEMENTS = 1 << 18


def _chunks(view):
    """[(start, stop), ...] along axis 0 of ``view`` in pieces of about :data:`CHUNK_ELEMENTS`."""
    n = view.shape[0]
    return _spans(n, max(1, CHUNK_ELEMENTS // max(1, view.size // max(1, n))))


def _spans(count, per):
    """[(start, stop), ...] covering 0..count in pieces of ``per``."""
    return [(a, min(count, a + per)) for a in range(0, count, per)]


def _map(fn, chunks, args, sliced):
    """``fn(*args)`` once per chunk, the arguments at positions ``sliced`` cut to the chunk's rows, on every core
    (:func:`portacnn.backend.cpu.run_tasks`); the chunks' results in chunk order."""
    from ..backend.cpu import run_tasks

    results = [None] * len(chunks)

    def task(t):
        a, b = chunks[t]
        results[t] = fn(*[v[a:b] if i in sliced else v for i, v in enumerate(args)])

    run_tasks(task, len(chunks), work=sum(args[i].size for i in sliced), blas=False)
    return results


def _reduce(fn, chunks, args, sliced):
    """The chunks' (s1, s2) float64 sums of :func:`_map`, added in chunk order."""
    parts = _map(fn, chunks, args, sliced)
    s1, s2 = parts[0][0].copy(), parts[0][1].copy()
    for p1, p2 in parts[1:]:
        s1 += p1
        s2 += p2
    return s1, s2


# -- BatchNorm -------------------------------------------------------------------------------------------
@register("numpy", "batchnorm_forward_train", when=compiled.usable)
def batchnorm_forward_train(x, w, b, eps, relu=False):
    k = _k()
    kind, xv = _view(x)
    rows = kind == "rows"
    m = xv.size // xv.shape[1]
    chunks = _chunks(xv)
    none = np.zeros(xv.shape[1], dtype=x.dtype)  # no ReLU mask: (sum x, sum x*x)
    s1, s2 = _reduce(k.sums_rows if rows else k.sums_planes, chunks, (xv, xv, False, none, none), {0, 1})
    mean64 = s1 / m
    var64 = np.maximum(s2 / m - mean64 * mean64, 0.0)
    invstd64 = 1.0 / np.sqrt(var64 + eps)
    scale64 = invstd64 if w is None else invstd64 * w.astype(np.float64)
    shift64 = -mean64 * scale64 + (0.0 if b is None else b.astype(np.float64))
    y, yv = _like(kind, xv, x)
    dt = x.dtype
    scale, shift = scale64.astype(dt), shift64.astype(dt)
    _map(k.affine_rows if rows else k.affine_planes, chunks, (xv, scale, shift, relu, yv), {0, 4})
    return y, mean64.astype(dt), var64.astype(dt), (kind, xv, chunks, mean64, invstd64, m, relu, scale, shift)


@register("numpy", "batchnorm_forward_train_relu", when=compiled.usable)
def batchnorm_forward_train_relu(x, w, b, eps):
    return batchnorm_forward_train(x, w, b, eps, relu=True)


@register("numpy", "batchnorm_backward_train", when=compiled.usable)
def batchnorm_backward_train(saved, w, dy, need_input_grad):
    k = _k()
    kind, xv, chunks, mean64, invstd64, m, relu, scale, shift = saved
    rows = kind == "rows"
    dyv = _same_view(kind, xv, dy)
    # a fused ReLU's mask is applied to dy inside both passes, recomputed from x (no read of its output)
    sdy, sdyx = _reduce(k.sums_rows if rows else k.sums_planes, chunks,
                        (dyv, xv, relu, scale, shift), {0, 1})
    db64 = sdy
    dw64 = (sdyx - mean64 * sdy) * invstd64
    dt = dy.dtype
    if not need_input_grad:
        return None, dw64.astype(dt), db64.astype(dt)
    a64 = invstd64 if w is None else invstd64 * w.astype(np.float64)
    dx, dxv = _like(kind, xv, dy)
    coef = (a64.astype(dt), (db64 / m).astype(dt), mean64.astype(dt), (invstd64 * dw64 / m).astype(dt))
    _map(k.bn_dx_rows if rows else k.bn_dx_planes, chunks, (dyv, xv, relu, scale, shift, *coef, dxv), {0, 1, 9})
    return dx, dw64.astype(dt), db64.astype(dt)


# -- ReLU ------------------------------------------------------------------------------------------------
def _flat(x):
    """A flat view of all of ``x``'s memory (None when its elements are not one contiguous block)."""
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if x.flags.f_contiguous:
        return x.reshape(-1, order="F")
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(-1)
    if x.ndim == 4 and x.transpose(1, 2, 3, 0).flags.c_contiguous:
        return x.transpose(1, 2, 3, 0).reshape(-1)
    return None


@register("numpy", "relu_forward", when=compiled.usable)
def relu_forward(x):
    xf = _flat(x)
    if xf is None:
        x = np.ascontiguousarray(x)
        xf = x.reshape(-1)
    out = np.empty_like(x)  # x's memory order
    _map(_k().relu, _chunks(xf), (xf, _flat(out)), {0, 1})
    return out


@register("numpy", "relu_backward", when=compiled.usable)
def relu_backward(y, dy):
    yf = _flat(y)
    if yf is None:
        return dy * ~(y <= 0)
    if dy.strides != y.strides:  # bring the gradient into y's memory order (one copy)
        same = np.empty_like(y)
        same[...] = dy
        dy = same
    out = np.empty_like(y)
    _map(_k().relu_backward, _chunks(yf), (yf, _flat(dy), _flat(out)), {0, 1, 2})
    return out


# -- max pooling -----------------------------------------------------------------------------------------
def _pool_view(x):
    """A contiguous 4-D view of x (N, C, H, W) with the window axes in the middle, (N, H, W, C), (C, H, W, N) or
    (N*C, H, W, 1) by its memory order (a copy only for other orders), and how to permute such an array back."""
    n, c, h, w = x.shape
    for perm, back in (((0, 2, 3, 1), (0, 3, 1, 2)), ((1, 2, 3, 0), (3, 0, 1, 2))):
        v = x.transpose(perm)
        if v.flags.c_contiguous:
            return v, back
    x = np.ascontiguousarray(x)
    return x.reshape(n * c, h, w, 1), None


def _pool_back(a, back, nchw_shape):
    return a.reshape(nchw_shape) if back is None else a.transpose(back)


@register("numpy", "maxpool2d_forward_relu", when=compiled.usable)
def maxpool2d_forward_relu(x, kernel, stride, padding, out_hw):
    """The max pooling of max(x, 0), the ReLU's output never made; its backward applies the ReLU's mask."""
    return maxpool2d_forward(x, kernel, stride, padding, out_hw, relu=True)


@register("numpy", "maxpool2d_forward", when=compiled.usable)
def maxpool2d_forward(x, kernel, stride, padding, out_hw, relu=False):
    v, back = _pool_view(x)
    (ho, wo), (kh, kw), (sh, sw), (ph, pw) = out_hw, kernel, stride, padding
    shape = (v.shape[0], ho, wo, v.shape[3])
    y = np.empty(shape, dtype=x.dtype)
    arg = np.empty(shape, dtype=np.int16 if kh * kw < 32768 else np.int32)
    _map(_k().maxpool_nhwc, _chunks(v), (v, kh, kw, sh, sw, ph, pw, relu, y, arg), {0, 8, 9})
    n, c = x.shape[:2]
    return _pool_back(y, back, (n, c, ho, wo)), (arg, y, relu, back, x.shape, kernel, stride, padding)


@register("numpy", "maxpool2d_backward", when=compiled.usable)
def maxpool2d_backward(saved, dy):
    arg, y, relu, back, x_shape, (kh, kw), (sh, sw), (ph, pw) = saved
    if back is None:
        dyv = np.ascontiguousarray(dy).reshape(arg.shape)
    else:
        dyv = dy.transpose([back.index(i) for i in range(4)])  # the forward's view order
        if not dyv.flags.c_contiguous:
            dyv = np.ascontiguousarray(dyv)
    shape = arg.shape[:1] + (x_shape[2], x_shape[3]) + arg.shape[3:]
    if (sh, sw) == (kh, kw) and (ph, pw) == (0, 0):  # the windows tile the input: one gather pass
        dx = np.empty(shape, dtype=dy.dtype)
        _map(_k().maxpool_backward_tiled_nhwc, _chunks(dyv), (dyv, arg, y, kh, kw, relu, dx), {0, 1, 2, 6})
    else:
        dx = np.zeros(shape, dtype=dy.dtype)
        _map(_k().maxpool_backward_nhwc, _chunks(dyv), (dyv, arg, y, kh, kw, sh, sw, ph, pw, relu, dx), {0, 1, 2, 10})
    return _pool_back(dx, back, x_shape)


# -- optimizer -----------------------------------------------------------------------------------------------
@register("numpy", "adam_update", when=compiled.usable)
def adam_update(w, g, m, v, t, lr, b1, b2, eps, weight_decay, decoupled):
    """Adam/AdamW's update of ``w``, ``m`` and ``v`` in place, one pass (the portable update makes ten); the same
    float operations in the same order, so the same bits. Returns ``(w, m, v)`` (the same arrays), or None for
    arrays it does not take (then the portable update runs)."""
    if not (w.flags.c_contiguous and g.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        return None
    dt = w.dtype.type
    mode = 0 if not weight_decay else 2 if decoupled else 1
    wd = dt(1.0 - lr * weight_decay) if mode == 2 else dt(weight_decay)
    _k().adam_update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), dt(b1), dt(1.0 - b1), dt(b2),
                     dt(1.0 - b2), dt(math.sqrt(1.0 - b2**t)), dt(eps), dt(lr / (1.0 - b1**t)), wd, mode)
    return w, m, v


# -- convolution, channels-last, in cache-sized blocks of images on every core ---------------------------------
#: bytes of columns one task makes and multiplies while they sit in its core's cache
CONV_BLOCK_BYTES = 1 << 20
#: narrow convolutions run as direct loops on batch-last arrays, vectorised over the batch (:func:`_direct_forward`):
#: those with fewer outputs than NARROW_BELOW, whose block GEMMs would be narrower than one AVX-512 vector of
#: float32 (LeNet-5's 1 -> 6, the tutorial net's 1 -> 2), and those with fewer than NARROW_UP_TO outputs on images of
#: at most SMALL_IMAGE output pixels (LeNet-5's 6 -> 16 on 10x10). A 16-output conv on larger images runs as
#: blocks: ResNet-20's 16-channel 3x3 convs on 32x32 (measured 2026-12-07, 2 threads, batch 128: inference
#: 296 -> 189 ms, a training step 781 -> 536 ms). A strided narrow conv runs the generic kernel (:mod:`.conv`),
#: one batch-last GEMM over the whole batch (the direct input gradient is a stride-1 convolution).
NARROW_BELOW = 16
NARROW_UP_TO = 32
SMALL_IMAGE = 256


_SCRATCH = threading.local()


def _scratch(shape, dtype):
    """A per-thread buffer of ``shape`` (reused from call to call, so a block's columns land in memory that is
    already mapped and often still in cache); its contents are undefined."""
    size = math.prod(shape)
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = _SCRATCH.buf = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def _channels_last(x):
    """x (N, C, H, W) as a contiguous (N, H, W, C) array (a view for channels-last activations)."""
    xl = x.transpose(0, 2, 3, 1)
    return xl if xl.flags.c_contiguous else np.ascontiguousarray(xl)


def _image_blocks(n, per_image_bytes):
    """[(first, stop), ...] image ranges of about :data:`CONV_BLOCK_BYTES` of columns each (or
    ``$PORTACNN_BLOCK_BYTES``, which sets every CPU kernel's block)."""
    from ..backend.cpu import block_bytes_override

    budget = block_bytes_override()
    budget = CONV_BLOCK_BYTES if budget is None else budget or (1 << 62)  # 0: the whole batch in one block
    return _spans(n, max(1, budget // max(1, per_image_bytes)))


def _pointwise(geo):
    """A 1x1 stride-1 unpadded conv: its input, channels-last, is its columns."""
    return geo[0] == geo[1] == 1 and geo[2:4] == (1, 1) and geo[6:8] == (0, 0)


def _geometry(x_shape, w_shape, stride, padding, out_hw, dilation):
    (ho, wo), (sh, sw), (dh, dw), ((pt, _), (pl, _)) = out_hw, stride, dilation, padding
    _, _, kh, kw = w_shape
    return kh, kw, sh, sw, dh, dw, pt, pl, ho, wo


@register("numpy", "conv2d_forward_relu", when=compiled.usable)
def conv2d_forward_relu(x, w, b, stride, padding, out_hw, training, dilation=(1, 1)):
    """max(conv(x), 0), the maximum taken block by block while the output is in cache (inference)."""
    return conv2d_forward(x, w, b, stride, padding, out_hw, training, dilation, relu=True)


@register("numpy", "conv2d_forward_relu_pool", when=compiled.usable)
def conv2d_forward_relu_pool(x, w, b, stride, padding, out_hw, dilation=(1, 1)):
    """max_pool_2x2(max(conv(x), 0)) with stride 2 (inference), or None where the conv is not computed by
    :mod:`.winograd` (the caller then runs the three layers): each 2x2 window is one Winograd tile, pooled while
    in cache, so the conv's output is never made."""
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    geo = _geometry(x.shape, w.shape, stride, padding, out_hw, dilation)
    if _narrow(o, geo) or not winograd.applies(c, geo) or min(geo[8], geo[9]) < 2:  # (the pool explains < 2)
        return None
    y = winograd.forward(_channels_last(x), w, b, geo, True, pool=True)
    return y.transpose(0, 3, 1, 2)


def _narrow(o, geo):
    """Whether a conv of ``o`` outputs runs as the direct loops or the generic kernel (:data:`NARROW_BELOW`)."""
    return o < NARROW_BELOW or (o < NARROW_UP_TO and geo[8] * geo[9] <= SMALL_IMAGE)


@register("numpy", "conv2d_forward", when=compiled.usable)
def conv2d_forward(x, w, b, stride, padding, out_hw, training, dilation=(1, 1), relu=False):
    """y = conv(x) as the generic kernel computes it (:mod:`.conv`, channels-last), each block of images made into
    columns and multiplied on one core while in its cache; nothing but x is kept for the backward pass."""
    from ..backend.cpu import run_tasks

    k = _k()
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    geo = _geometry(x.shape, w.shape, stride, padding, out_hw, dilation)
    kh, kw, ho, wo = geo[0], geo[1], geo[8], geo[9]
    kk = kh * kw * c
    narrow = _narrow(o, geo)
    if narrow and (geo[2], geo[3]) == (1, 1) and _flip_pads(padding, geo) is not None:
        return _direct_forward(x, w, b, padding, geo, relu)
    if narrow:  # strided: the generic kernel's batch-last GEMMs
        from .conv import _generic_forward

        y, saved = _generic_forward(x, w, b, stride, padding, out_hw, training, dilation)
        return (relu_forward(y) if relu else y), ("generic", saved)
    xl = _channels_last(x)
    blocks = _image_blocks(n, ho * wo * kk * x.itemsize)
    saved = ("blocks", (xl, x.shape, geo, blocks, b is not None))
    if winograd.applies(c, geo):
        y = winograd.forward(xl, w, b, geo, relu)
        return y.transpose(0, 3, 1, 2), saved
    wt = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kk, o))  # (K, O), K in (i, j, c) order
    y = np.empty((n, ho, wo, o), dtype=x.dtype)
    y2 = y.reshape(-1, o)

    pointwise = _pointwise(geo)  # 1x1, stride 1: x is the columns
    x2 = xl.reshape(-1, c) if pointwise else None
    bias = np.zeros(0, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)

    def task(t):
        a, e = blocks[t]
        if pointwise:
            cols = x2[a * ho * wo : e * ho * wo]
        else:
            cols = _scratch(((e - a) * ho * wo, kk), x.dtype)
            k.im2col_block(xl, a, e, *geo, cols)
        out = y2[a * ho * wo : e * ho * wo]
        np.matmul(cols, wt, out=out)
        if b is not None or relu:
            k.bias_relu_rows(out, bias, relu)

    run_tasks(task, len(blocks), work=n * ho * wo * kk * o // 16)
    return y.transpose(0, 3, 1, 2), saved


@register("numpy", "conv2d_backward", when=compiled.usable)
def conv2d_backward(saved, w, grad_out, need_input_grad):
    from ..backend.cpu import run_tasks

    kind, saved = saved
    k = _k()
    if kind == "narrow":
        return _narrow_backward(saved, w, grad_out, need_input_grad)
    if kind == "generic":
        from .conv import _generic_backward

        return _generic_backward(saved, w, grad_out, need_input_grad)
    xl, x_shape, geo, blocks, biased = saved
    kh, kw, ho, wo = geo[0], geo[1], geo[8], geo[9]
    n, c, h, wd = x_shape
    o = w.shape[0]
    kk = kh * kw * c
    dy4 = _channels_last(grad_out)
    dyl = dy4.reshape(-1, o)  # (N*Ho*Wo, O)
    flipped = _winograd_input_grad(geo, o, x_shape)
    if flipped is not None and winograd.applies(c, geo):  # both gradients by Winograd
        dw, db = winograd.weight_grad(xl, dy4, geo, biased)
        return (_winograd_dx(dy4, w, flipped) if need_input_grad else None), dw, db
    if flipped is not None and need_input_grad:  # dx by Winograd below: the blocks make the weight gradient only
        need_input_grad = False
    else:
        flipped = None
    parts = np.empty((len(blocks), o, kk), dtype=grad_out.dtype)
    bias_parts = np.empty((len(blocks), o), dtype=grad_out.dtype)
    dxl = np.empty((n, h, wd, c), dtype=grad_out.dtype) if need_input_grad else None
    wm = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o, kk))  # (O, K)

    pointwise = _pointwise(geo)  # 1x1, stride 1: x is the columns
    x2 = xl.reshape(-1, c) if pointwise else None
    dx2 = dxl.reshape(-1, c) if pointwise and need_input_grad else None

    def task(t):
        a, e = blocks[t]
        rows = slice(a * ho * wo, e * ho * wo)
        if pointwise:
            cols = x2[rows]
        else:
            cols = _scratch(((e - a) * ho * wo, kk), grad_out.dtype)
            k.im2col_block(xl, a, e, *geo, cols)
        dy = dyl[rows]
        np.matmul(dy.T, cols, out=parts[t])
        if biased:  # the bias gradient only for a biased conv (None otherwise: the layer has no bias to fill)
            np.sum(dy, axis=0, out=bias_parts[t])
        if pointwise and need_input_grad:
            np.matmul(dy, wm, out=dx2[rows])  # the column gradient is the input gradient
        elif need_input_grad:
            np.matmul(dy, wm, out=cols)  # the column gradient, in the same buffer
            k.col2im_block(cols, a, e, *geo, dxl)

    run_tasks(task, len(blocks), work=n * ho * wo * kk * o * (3 if need_input_grad else 2) // 16)
    dwm = parts[0] if len(blocks) == 1 else _ordered_sum(parts)
    dw = np.ascontiguousarray(dwm.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
    db = None if not biased else bias_parts[0] if len(blocks) == 1 else _ordered_sum(bias_parts)
    if flipped is not None:
        return _winograd_dx(dy4, w, flipped), dw, db
    return (None if dxl is None else dxl.transpose(0, 3, 1, 2)), dw, db


def _winograd_dx(dy4, w, flipped):
    """dx (an NCHW view of channels-last memory) by :func:`.winograd.forward` on channels-last dy4 with the kernel
    flipped and its channel axes swapped, geometry ``flipped`` (:func:`_winograd_input_grad`)."""
    wf = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, O, 3, 3)
    return winograd.forward(dy4, wf, None, flipped, False).transpose(0, 3, 1, 2)


def _winograd_input_grad(geo, o, x_shape):
    """The geometry of dx as a stride-1 convolution of dy with the flipped kernel (dy padded by the kernel's
    extent less the forward's padding, :func:`_flip_pads`; a negative padding skips dy's rows that saw only the
    forward's padding) when :mod:`.winograd` computes it, else None."""
    kh, kw, sh, sw, dh, dw, pt, pl = geo[:8]
    if (kh, kw, sh, sw, dh, dw) != (3, 3, 1, 1, 1, 1):
        return None
    flipped = (3, 3, 1, 1, 1, 1, 2 - pt, 2 - pl, x_shape[2], x_shape[3])
    return flipped if winograd.applies(o, flipped) else None


def _batch_last(x):
    """x (N, C, H, W) as a contiguous (C, H, W, N) array (a view for batch-last activations)."""
    xc = x.transpose(1, 2, 3, 0)
    return xc if xc.flags.c_contiguous else np.ascontiguousarray(xc)


def _padded_batch_last(x, pads):
    """x (N, C, H, W) as a contiguous batch-last (C, top + H + bottom, left + W + right, N) array, zeros around
    (a view of a batch-last activation when nothing is padded)."""
    (pt, pb), (pl, pr) = pads
    if pt == pb == pl == pr == 0:
        return _batch_last(x)
    n, c, h, w = x.shape
    out = np.zeros((c, pt + h + pb, pl + w + pr, n), dtype=x.dtype)
    out[:, pt : pt + h, pl : pl + w, :] = x.transpose(1, 2, 3, 0)
    return out


def _flip_pads(padding, geo):
    """The padding of dy that turns the input gradient into a stride-1 convolution of dy with the flipped kernel
    (the kernel's dilated extent less 1, less the forward's padding, on each side), or None when the forward pads
    more than that (the direct path is then not taken)."""
    kh, kw, dh, dw = geo[0], geo[1], geo[4], geo[5]
    (pt, pb), (pl, pr) = padding
    eh, ew = dh * (kh - 1), dw * (kw - 1)
    pads = ((eh - pt, eh - pb), (ew - pl, ew - pr))
    return None if min(pads[0] + pads[1]) < 0 else pads


def _direct(x, w, b, geo, relu, y, inside=None):
    """``y`` (O, Ho, Wo, N) = the direct conv of the padded batch-last ``x``, one task per output row; ``inside``:
    the ((first, stop), (first, stop)) rows and columns of x outside which it holds only zeros, whose taps are
    skipped (None: all of x is read, padding included)."""
    from ..backend.cpu import run_tasks

    k = _k()
    kh, kw, sh, sw, dh, dw = geo[:6]
    rows, cols = inside or ((0, x.shape[1]), (0, x.shape[2]))
    bias = np.zeros(w.shape[0], dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    work = y.size * w.shape[1] * kh * kw // 4
    spans = _task_spans(y.shape[1])
    run_tasks(lambda t: k.conv_chwn(x, w, bias, sh, sw, dh, dw, rows, cols, relu, *spans[t], y), len(spans),
              work=work, blas=False)
    return y


#: the direct convolutions' work is cut into this many tasks at most (whole output rows or channel pairs each,
#: so every number is computed by one task in one order whatever the thread count)
DIRECT_TASKS = 8


def _task_spans(count):
    """[(start, stop), ...]: 0..count in at most :data:`DIRECT_TASKS` nearly equal pieces."""
    per = -(-count // DIRECT_TASKS)
    return _spans(count, per)


def _direct_forward(x, w, b, padding, geo, relu):
    """y (a batch-last view) of a narrow conv by :func:`.numba_kernels.conv_chwn`; keeps the padded input."""
    n, ho, wo = x.shape[0], geo[8], geo[9]
    xc = _padded_batch_last(x, padding)
    y = np.empty((w.shape[0], ho, wo, n), dtype=x.dtype)
    _direct(xc, np.ascontiguousarray(w, dtype=x.dtype), b, geo, relu, y)
    return y.transpose(3, 0, 1, 2), ("narrow", (xc, x.shape, padding, geo, b is not None))


def _narrow_backward(saved, w, grad_out, need_input_grad):
    """dw by :func:`.numba_kernels.conv_chwn_dw` (one task per (output, input) channel pair); dx as the stride-1
    convolution of dy, padded by :func:`_flip_pads`, with the kernel flipped and its channel axes swapped:
    ``dx[c, h, w] = sum over (o, i, j) of w[o, c, kh-1-i, kw-1-j] * dy_padded[o, h + i*dh, w + j*dw]``."""
    from ..backend.cpu import run_tasks

    xc, x_shape, padding, geo, biased = saved
    o, c, kh, kw = w.shape
    k = _k()
    dyc = _batch_last(grad_out)  # (O, Ho, Wo, N)
    dw64 = np.empty(w.shape, dtype=np.float64)
    work = dyc.size * c * kh * kw // 4
    spans = _task_spans(((o + 1) // 2) * c)  # (output pair, input channel) tasks
    run_tasks(lambda t: k.conv_chwn_dw(xc, dyc, geo[4], geo[5], *spans[t], dw64), len(spans), work=work, blas=False)
    dw = dw64.astype(w.dtype)
    db = dyc.reshape(o, -1).sum(axis=1) if biased else None
    if not need_input_grad:
        return None, dw, db
    n, _, h, wd = x_shape
    (top, _), (left, _) = pads = _flip_pads(padding, geo)
    dyp = _padded_batch_last(dyc.transpose(3, 0, 1, 2), pads)
    wf = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3), dtype=grad_out.dtype)
    flipped = (kh, kw, 1, 1) + geo[4:8] + (h, wd)
    inside = ((top, top + geo[8]), (left, left + geo[9]))  # dy itself: the taps on its padding add nothing
    dx = _direct(dyp, wf, None, flipped, False, np.empty((c, h, wd, n), dtype=grad_out.dtype), inside)
    return dx.transpose(3, 0, 1, 2), dw, db


def _ordered_sum(parts):
    """Sum of the blocks' partial products in block order (the same result whatever thread made which)."""
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total
