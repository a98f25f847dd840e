"""Convolution in the memory layouts a CPU runs fast: the fast path behind :class:`portacnn.layers.Conv2D`.

The layer holds the math (im2col, one matmul, col2im, in NCHW order). This kernel computes the same
products with two equivalent column layouts, each giving the whole batch as one GEMM whose output buffer is
already the next activation in the same memory order (returned as a permuted NCHW view, no transpose copy):

Padding comes per side, ``((top, bottom), (left, right))``, and a window's taps ``dilation`` (dh, dw) apart:
both only change which slices the window primitives of :mod:`.windows` take.

* batch-last (narrow convs, ``out_channels < CHANNELS_LAST_FROM``): X = im2col_chwn(x) (K, Ho*Wo*N),
  Wm = W as (O, K)::

      forward:   Y = Wm @ X + b        (O, P): y in (O, Ho, Wo, N) memory order
      backward:  dWm = sum_rows dY_r @ X_r^T    db = sum_P dY    dX = col2im_chwn(Wm^T @ dY)

  Its im2col and col2im move runs of Wo*N values however few the channels; dWm is Ho GEMMs of Wo*N
  columns summed, and the forward product goes through ``short_wide_matmul``, because one GEMM with tiny O
  and K over ~10^5 columns runs at memory speed in OpenBLAS.

* channels-last (wide convs): X = im2col_nhwc(x) (N*Ho*Wo, kh*kw*C), Wm = W permuted to (O, kh, kw, C)::

      forward:   Y = X @ Wm^T + b      (P, O): y in (N, Ho, Wo, O) memory order
      backward:  dWm = dY^T @ X        db = sum_P dY        dX = col2im_nhwc(dY @ Wm)

  where dX is added one kernel offset at a time, dY @ Wm[:, block k] into offset k's window, so the
  (P, kh*kw*C) column gradient is never written and read back. On a CPU the columns X are made a few images
  at a time (:func:`portacnn.backend.cpu.cpu_block_bytes`), each block multiplied while in cache; backward
  makes them again for dWm, block by block.

The switch depends on the layer's shape only, never on the backend; both layouts give the layer's
reference results up to float rounding (tests run every conv with this kernel on and off). Measured effects
are in benchmarks/README.md.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .gemm import matmul, short_wide_matmul
from .registry import register
from .windows import batch_blocks, col2im_chwn, im2col_chwn, im2col_nhwc, pad_hw, taps

#: out_channels from which the channels-last single-GEMM layout is used (the crossover measured on CPU)
CHANNELS_LAST_FROM = 32
ALL_BACKENDS = ("numpy", "torch", "cupy", "array_api_strict")


def _wmat(w, channels_last: bool):
    """The weight (O, C, kh, kw) as (O, K), in the column order of the layout in use."""
    xp = array_namespace(w)
    if channels_last:
        w = xp.permute_dims(w, (0, 2, 3, 1))
    return xp.reshape(w, (w.shape[0], -1))


def _nhwc_blocks(x, kernel, padding, out_hw):
    """Channels-last input (N, Hp, Wp, C) (a view when unpadded) and the image blocks its columns are made in."""
    xp = array_namespace(x)
    xh = pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), *padding)
    (kh, kw), (ho, wo) = kernel, out_hw
    image_bytes = ho * wo * kh * kw * x.shape[1] * (xp.finfo(x.dtype).bits // 8)
    return xh, batch_blocks(x, x.shape[0], image_bytes)


def _chwn_columns(x, kernel, stride, padding, out_hw, dilation):
    """Batch-last columns (C*kh*kw, Ho*Wo*N) of the whole batch (a fresh contiguous (C, Hp, Wp, N) copy first,
    so the window slices read long runs)."""
    xp = array_namespace(x)
    xc = pad_hw(xp.permute_dims(x, (1, 2, 3, 0)), *padding, copy=True)
    return im2col_chwn(xc, kernel, stride, out_hw, dilation)


def _padded_hw(x_shape, padding):
    """(H + top + bottom, W + left + right) and the (rows, columns) slices of the real input inside it."""
    ((top, bottom), (left, right)), h, w = padding, x_shape[2], x_shape[3]
    return (top + h + bottom, left + w + right), (slice(top, top + h), slice(left, left + w))


@register(ALL_BACKENDS, "conv2d_forward")
def _generic_forward(x, w, b, stride, padding, out_hw, training, dilation=(1, 1)):
    """y (N, O, Ho, Wo) and what :func:`_generic_backward` needs (columns kept only while training and only
    when made in one piece)."""
    xp = array_namespace(x)
    (ho, wo), n, o = out_hw, x.shape[0], w.shape[0]
    kernel = (w.shape[2], w.shape[3])
    channels_last = o >= CHANNELS_LAST_FROM
    if channels_last:
        xh, blocks = _nhwc_blocks(x, kernel, padding, out_hw)
        wt = xp.matrix_transpose(_wmat(w, True))
        cols = None
        if len(blocks) == 1:
            cols = im2col_nhwc(xh, kernel, stride, out_hw, dilation)  # (N*Ho*Wo, kh*kw*C)
            y = xp.matmul(cols, wt)  # (N*Ho*Wo, O)
        else:  # block by block: columns made, multiplied and dropped while in cache
            y = xp.empty((n * ho * wo, o), dtype=x.dtype, device=device(x))
            for a, c in blocks:
                part = im2col_nhwc(xh[a:c, ...], kernel, stride, out_hw, dilation)
                y[a * ho * wo : c * ho * wo, :] = xp.matmul(part, wt)
        if b is not None:
            y += b  # y is fresh: add in place, no broadcast copy
        y = xp.permute_dims(xp.reshape(y, (n, ho, wo, o)), (0, 3, 1, 2))
    else:
        cols = _chwn_columns(x, kernel, stride, padding, out_hw, dilation)
        y = short_wide_matmul(_wmat(w, False), cols)  # (O, Ho*Wo*N)
        if b is not None:
            y += b[:, None]
        y = xp.permute_dims(xp.reshape(y, (o, ho, wo, n)), (3, 0, 1, 2))
    return y, (x, cols if training else None, stride, padding, out_hw, dilation)


@register(ALL_BACKENDS, "conv2d_backward")
def _generic_backward(saved, w, grad_out, need_input_grad):
    """``(dx or None, dw, db)`` for the forward pass that returned :func:`_generic_forward`'s ``saved``."""
    xp = array_namespace(grad_out)
    x, cols, stride, padding, out_hw, dilation = saved
    (ho, wo), (hp, wp), inner = out_hw, *_padded_hw(x.shape, padding)
    o, c, kh, kw = w.shape
    n = x.shape[0]
    if o >= CHANNELS_LAST_FROM:
        wm = _wmat(w, True)
        dy = xp.reshape(xp.permute_dims(grad_out, (0, 2, 3, 1)), (-1, o))  # (N*Ho*Wo, O); free if channels-last
        if cols is not None:
            dwm = xp.matmul(xp.matrix_transpose(dy), cols)  # (O, kh*kw*C)
        else:  # the columns again, block by block, each used while in cache
            xh, blocks = _nhwc_blocks(x, (kh, kw), padding, out_hw)
            dwm = None
            for a, e in blocks:
                part = im2col_nhwc(xh[a:e, ...], (kh, kw), stride, out_hw, dilation)
                part = xp.matmul(xp.matrix_transpose(dy[a * ho * wo : e * ho * wo, :]), part)
                dwm = part if dwm is None else dwm + part
        dw = xp.permute_dims(xp.reshape(dwm, (o, kh, kw, c)), (0, 3, 1, 2))
        db = xp.sum(dy, axis=0)
        if not need_input_grad:
            return None, dw, db
        dxh = _input_grad_nhwc(dy, wm, (n, hp, wp, c), (kh, kw), stride, out_hw, dilation)
        return xp.permute_dims(dxh[:, inner[0], inner[1], :], (0, 3, 1, 2)), dw, db
    if cols is None:
        cols = _chwn_columns(x, (kh, kw), stride, padding, out_hw, dilation)
    dy = xp.reshape(xp.permute_dims(grad_out, (1, 2, 3, 0)), (o, -1))  # (O, Ho*Wo*N); free if batch-last
    # dWm = dY @ X^T as Ho GEMMs (one per output row) summed: the same sums in products OpenBLAS runs fast
    per_row = matmul(xp.permute_dims(xp.reshape(cols, (-1, ho, wo * n)), (1, 0, 2)),
                        xp.permute_dims(xp.reshape(dy, (o, ho, wo * n)), (1, 2, 0)))  # (Ho, K, O)
    dw = xp.reshape(xp.matrix_transpose(xp.sum(per_row, axis=0)), w.shape)
    db = xp.sum(dy, axis=1)
    if not need_input_grad:
        return None, dw, db
    dcols = matmul(xp.matrix_transpose(_wmat(w, False)), dy)  # (C*kh*kw, Ho*Wo*N)
    dxc = col2im_chwn(dcols, (c, hp, wp, n), (kh, kw), stride, out_hw, dilation)
    return xp.permute_dims(dxc[:, inner[0], inner[1], :], (3, 0, 1, 2)), dw, db


def _input_grad_nhwc(dy, wm, padded_shape, kernel, stride, out_hw, dilation=(1, 1)):
    """Channels-last dx: for each kernel offset k = (i, j), add ``dy @ Wm[:, k-th C block]`` (N*Ho*Wo, C)
    into the window of offset k: the sums of col2im_nhwc(dy @ Wm) (equal up to BLAS rounding) without the
    (N*Ho*Wo, kh*kw*C) column gradient, every add running over contiguous rows of Wo*C values."""
    xp = array_namespace(dy)
    (kh, kw), (sh, sw), (ho, wo), (dh, dw) = kernel, stride, out_hw, dilation
    n, c = padded_shape[0], padded_shape[3]
    dxh = xp.zeros(padded_shape, dtype=dy.dtype, device=device(dy))
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            part = xp.reshape(xp.matmul(dy, wm[:, k * c : (k + 1) * c]), (n, ho, wo, c))
            dxh[:, taps(i * dh, sh, ho), taps(j * dw, sw, wo), :] += part
    return dxh
