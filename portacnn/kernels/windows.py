"""Sliding windows inside the array-API standard: padding, window views, im2col and col2im.

The standard has no ``as_strided`` and no scatter-add, so every window operation is a loop over the
``kh * kw`` kernel offsets. For offset (i, j) the inputs seen by all output positions form one strided
slice of the padded input (dilation (dh, dw) spaces the taps of a window; 1 for pools)::

    window(xp, i, j)[n, c, r, s] == xp[n, c, i*dh + r*sh, j*dw + s*sw]     for r < Ho, s < Wo

so im2col stacks kh*kw slices and col2im adds kh*kw slices back. Within one slice no index repeats,
which makes each slice addition of col2im an exact scatter-add. Writes into an array go through
array-api-extra's ``at(x, idx).set(v)`` / ``.add(v)``: in place on libraries whose arrays are mutable (NumPy,
CuPy, torch, array_api_strict), a new array on JAX, whose arrays are immutable; callers always use the array
it returns. Padding may differ between the two sides of
an axis (``(before, after)``; an int pads both alike): a "same" convolution with an even window pads one
more row at the bottom and one more column at the right, as PyTorch does.

These loops are the reference implementation that every backend runs. A backend may register a faster
version of a primitive at the seam in :mod:`portacnn.kernels.registry` (NumPy does, for im2col_nhwc, with
an overlapping window view); tests check that it returns exactly what the loop returns.

Two column layouts are provided, each making a convolution ONE large GEMM over the whole batch (BLAS
runs that much faster than N per-image products) whose output is already the next activation in the
same memory order, so no transpose is needed between layers (a permuted view keeps NCHW semantics and
element-wise ops preserve the order). :func:`im2col_chwn` works on a batch-last (C, H, W, N) array and
gives (C*kh*kw, Ho*Wo*N) columns in PyTorch's row order; every slice it copies is a run of Wo*N values,
which suits few channels. :func:`im2col_nhwc` works on a channels-last (N, H, W, C) array and gives
(N*Ho*Wo, kh*kw*C) rows; its runs are C values long, which suits many channels.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device
from array_api_extra import at

from ..backend import cpu_block_bytes
from .registry import fast_path


def taps(offset: int, stride: int, count: int) -> slice:
    """The slice of a padded axis that kernel offset ``offset`` sees for ``count`` outputs at ``stride``:
    offset, offset + stride, ..., with an exact stop (array-api-strict rejects out-of-range stops)."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def batch_blocks(x, n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering images 0..n in blocks of about the backend's cache block
    (:func:`portacnn.backend.cpu.cpu_block_bytes`), given the bytes of temporaries one image needs; one block
    of the whole batch on GPUs or when everything fits."""
    budget = cpu_block_bytes(x)
    per_block = n if budget is None else max(1, budget // max(1, bytes_per_image))
    return [(a, min(n, a + per_block)) for a in range(0, n, per_block)] if n else [(0, 0)]


def sides(padding) -> tuple[int, int]:
    """One axis's padding as ``(before, after)``: an int pads both sides alike."""
    if isinstance(padding, (tuple, list)):
        return int(padding[0]), int(padding[1])
    return int(padding), int(padding)


def out_size(size: int, kernel: int, stride: int, padding, dilation: int = 1) -> int:
    """Outputs along one axis: ``(size + before + after - dilation*(kernel - 1) - 1) // stride + 1``, where
    ``padding`` is an int (both sides) or ``(before, after)``."""
    before, after = sides(padding)
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def pad(x, ph: int, pw: int, value=0):
    """``x`` (N, C, H, W) with ``ph`` rows and ``pw`` columns of ``value`` on each side."""
    if ph == 0 and pw == 0:
        return x
    xp = array_namespace(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=device(x))
    return at(out, (slice(None), slice(None), slice(ph, ph + h), slice(pw, pw + w))).set(x)


def crop(x, ph: int, pw: int):
    """Undo :func:`pad`."""
    if ph == 0 and pw == 0:
        return x
    return x[:, :, ph : x.shape[2] - ph, pw : x.shape[3] - pw]


def window(xpad, i: int, j: int, out_hw, stride):
    """The (N, C, Ho, Wo) strided slice of ``xpad`` that kernel offset (i, j) sees (exact slice stops)."""
    (ho, wo), (sh, sw) = out_hw, stride
    return xpad[:, :, taps(i, sh, ho), taps(j, sw, wo)]


def pad_hw(x4, ph, pw, value=0, copy=False):
    """``x4`` with ``ph`` rows and ``pw`` columns of ``value`` around axes 1 and 2 (the H and W of a
    channels-last (N, H, W, C) or batch-last (C, H, W, N) array); each an int (both sides) or
    ``(before, after)``. Without padding ``x4`` itself comes back, unless ``copy``: then always a fresh
    array, contiguous in this axis order."""
    (top, bottom), (left, right) = sides(ph), sides(pw)
    padded = top or bottom or left or right
    if not padded and not copy:
        return x4
    xp = array_namespace(x4)
    a, h, w, b = x4.shape
    shape = (a, top + h + bottom, left + w + right, b)
    out = xp.full(shape, value, dtype=x4.dtype, device=device(x4)) if padded else xp.empty(shape, dtype=x4.dtype, device=device(x4))
    return at(out, (slice(None), slice(top, top + h), slice(left, left + w), slice(None))).set(x4)


def im2col_nhwc(xhpad, kernel, stride, out_hw, dilation=(1, 1)):
    """Patches of channels-last ``xhpad`` (N, Hp, Wp, C) as rows: (N*Ho*Wo, kh*kw*C), column (i*kw + j)*C + c.

    Row n*Ho*Wo + r*Wo + s holds the window of output pixel (n, r, s); the matching weight matrix is
    W (O, C, kh, kw) permuted to (O, kh, kw, C) and reshaped to (O, kh*kw*C). The buffer is filled by
    kh*kw slices stacked (each copied as contiguous runs of C values).
    """
    fast = fast_path(xhpad, "im2col_nhwc")
    if fast is not None:
        return fast(xhpad, kernel, stride, out_hw, dilation)
    xp = array_namespace(xhpad)
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    n, c = xhpad.shape[0], xhpad.shape[3]
    if kh == 1 and kw == 1 and sh == 1 and sw == 1:
        return xp.reshape(xhpad[:, :ho, :wo, :], (n * ho * wo, c))
    cols = xp.stack([xhpad[:, taps(i * dh, sh, ho), taps(j * dw, sw, wo), :] for i in range(kh) for j in range(kw)],
                    axis=3)  # (N, Ho, Wo, kh*kw, C)
    return xp.reshape(cols, (n * ho * wo, kh * kw * c))


def im2col_chwn(xcpad, kernel, stride, out_hw, dilation=(1, 1)):
    """Patches of batch-last ``xcpad`` (C, Hp, Wp, N) as columns: (C*kh*kw, Ho*Wo*N), row c*kh*kw + i*kw + j.

    Column r*Wo*N + s*N + n holds the window of output pixel (n, r, s); the row order is a PyTorch weight
    (O, C, kh, kw) reshaped to (O, C*kh*kw), so the convolution is ONE GEMM, Wm @ cols, whose (O, Ho*Wo*N)
    result is the batch-last activation. Each of the kh*kw slice copies moves runs of Wo*N values (for
    stride 1), however few the channels, which is what makes this layout fast for narrow convs.
    """
    xp = array_namespace(xcpad)
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    c, n = xcpad.shape[0], xcpad.shape[3]
    cols = xp.stack([xcpad[:, taps(i * dh, sh, ho), taps(j * dw, sw, wo), :] for i in range(kh) for j in range(kw)],
                    axis=1)  # (C, kh*kw, Ho, Wo, N)
    return xp.reshape(cols, (c * kh * kw, ho * wo * n))


def col2im_chwn(cols, padded_shape, kernel, stride, out_hw, dilation=(1, 1)):
    """Adjoint of :func:`im2col_chwn`: (C*kh*kw, Ho*Wo*N) columns added back into a (C, Hp, Wp, N) buffer."""
    fast = fast_path(cols, "col2im_chwn")
    if fast is not None:
        return fast(cols, padded_shape, kernel, stride, out_hw, dilation)
    xp = array_namespace(cols)
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    c, n = padded_shape[0], padded_shape[3]
    cols = xp.reshape(cols, (c, kh, kw, ho, wo, n))
    out = xp.zeros(padded_shape, dtype=cols.dtype, device=device(cols))
    for i in range(kh):
        for j in range(kw):
            out = at(out, (slice(None), taps(i * dh, sh, ho), taps(j * dw, sw, wo), slice(None))).add(cols[:, i, j, ...])
    return out


def col2im_nhwc(cols, padded_shape, kernel, stride, out_hw, dilation=(1, 1)):
    """Adjoint of :func:`im2col_nhwc`: (N*Ho*Wo, kh*kw*C) rows added back into a (N, Hp, Wp, C) buffer."""
    xp = array_namespace(cols)
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    n, c = padded_shape[0], padded_shape[3]
    cols = xp.reshape(cols, (n, ho, wo, kh, kw, c))
    out = xp.zeros(padded_shape, dtype=cols.dtype, device=device(cols))
    for i in range(kh):
        for j in range(kw):
            out = at(out, (slice(None), taps(i * dh, sh, ho), taps(j * dw, sw, wo), slice(None))).add(cols[:, :, :, i, j, :])
    return out
