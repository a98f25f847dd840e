"""Sliding windows inside the array-API standard: padding, window views, im2col and col2im.

The standard has no ``as_strided`` and no scatter-add, so every window operation is a loop over the
``kh * kw`` kernel offsets. For offset (i, j) the inputs seen by all output positions form one strided
slice of the padded input::

    window(xp, i, j)[n, c, r, s] == xp[n, c, i + r*sh, j + s*sw]     for r < Ho, s < Wo

so im2col stacks kh*kw slices and col2im adds kh*kw slices back. Within one slice no index repeats,
which makes the slice ``+=`` of col2im an exact scatter-add.

These loops are the reference implementation that every backend runs. A backend may register a faster
version of a primitive at the seam in :mod:`portacnn.backend` (NumPy does, for im2col, with an overlapping
window view); tests check that it returns exactly what the loop returns.

Two column layouts are provided. :func:`im2col` gives (N, C*kh*kw, Ho*Wo) per-image matrices (a batched
matmul, PyTorch's row order). :func:`im2col_nhwc` works on a channels-last view (N, H, W, C) and gives
one (N*Ho*Wo, kh*kw*C) matrix: the convolution is then ONE large GEMM with a small right operand, which
BLAS runs 2-5x faster than N small ones (measured: 110 vs 20-50 GFLOP/s for the Kannada net's conv2 on
this machine's OpenBLAS), and its output (N*Ho*Wo, O) is already the channels-last activation, so no
transpose is needed between layers (a permuted view keeps NCHW semantics; element-wise ops preserve it).
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from ..backend import fast_path


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pad(x, ph: int, pw: int, value=0):
    """``x`` (N, C, H, W) with ``ph`` rows and ``pw`` columns of ``value`` on each side."""
    if ph == 0 and pw == 0:
        return x
    xp = array_namespace(x)
    n, c, h, w = x.shape
    out = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=device(x))
    out[:, :, ph : ph + h, pw : pw + w] = x
    return out


def crop(x, ph: int, pw: int):
    """Undo :func:`pad`."""
    if ph == 0 and pw == 0:
        return x
    return x[:, :, ph : x.shape[2] - ph, pw : x.shape[3] - pw]


def window(xpad, i: int, j: int, out_hw, stride):
    """The (N, C, Ho, Wo) strided slice of ``xpad`` that kernel offset (i, j) sees (exact slice stops)."""
    (ho, wo), (sh, sw) = out_hw, stride
    return xpad[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def im2col(xpad, kernel, stride, out_hw):
    """Patches of ``xpad`` (N, C, Hp, Wp) as columns (N, C*kh*kw, Ho*Wo), row index c*kh*kw + i*kw + j.

    That row order matches a PyTorch weight (O, C, kh, kw) reshaped to (O, C*kh*kw), so the convolution
    is a single batched ``matmul``.
    """
    fast = fast_path(xpad, "im2col")
    if fast is not None:
        return fast(xpad, kernel, stride, out_hw)
    xp = array_namespace(xpad)
    (kh, kw), (ho, wo) = kernel, out_hw
    n, c = xpad.shape[:2]
    cols = xp.empty((n, c, kh * kw, ho, wo), dtype=xpad.dtype, device=device(xpad))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i * kw + j, ...] = window(xpad, i, j, out_hw, stride)
    return xp.reshape(cols, (n, c * kh * kw, ho * wo))


def col2im(cols, padded_shape, kernel, stride, out_hw):
    """Adjoint of :func:`im2col`: add each column entry back to the padded position it came from."""
    xp = array_namespace(cols)
    (kh, kw), (ho, wo) = kernel, out_hw
    n, c = padded_shape[:2]
    cols = xp.reshape(cols, (n, c, kh * kw, ho, wo))
    out = xp.zeros(padded_shape, dtype=cols.dtype, device=device(cols))
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            out[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += cols[:, :, i * kw + j, ...]
    return out


def pad_nhwc(xh, ph: int, pw: int, value=0):
    """Channels-last ``xh`` (N, H, W, C) with ``ph`` rows and ``pw`` columns of ``value`` on each side."""
    if ph == 0 and pw == 0:
        return xh
    xp = array_namespace(xh)
    n, h, w, c = xh.shape
    out = xp.full((n, h + 2 * ph, w + 2 * pw, c), value, dtype=xh.dtype, device=device(xh))
    out[:, ph : ph + h, pw : pw + w, :] = xh
    return out


def im2col_nhwc(xhpad, kernel, stride, out_hw):
    """Patches of channels-last ``xhpad`` (N, Hp, Wp, C) as rows: (N*Ho*Wo, kh*kw*C), column (i*kw + j)*C + c.

    Row n*Ho*Wo + r*Wo + s holds the window of output pixel (n, r, s); the matching weight matrix is
    W (O, C, kh, kw) permuted to (O, kh, kw, C) and reshaped to (O, kh*kw*C). The buffer is filled by
    kh*kw slice assignments (each writes contiguous runs of C values).
    """
    fast = fast_path(xhpad, "im2col_nhwc")
    if fast is not None:
        return fast(xhpad, kernel, stride, out_hw)
    xp = array_namespace(xhpad)
    (kh, kw), (ho, wo), (sh, sw) = kernel, out_hw, stride
    n, c = xhpad.shape[0], xhpad.shape[3]
    if kh == 1 and kw == 1 and sh == 1 and sw == 1:
        return xp.reshape(xhpad[:, :ho, :wo, :], (n * ho * wo, c))
    cols = xp.empty((n, ho, wo, kh, kw, c), dtype=xhpad.dtype, device=device(xhpad))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xhpad[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
    return xp.reshape(cols, (n * ho * wo, kh * kw * c))


def col2im_nhwc(cols, padded_shape, kernel, stride, out_hw):
    """Adjoint of :func:`im2col_nhwc`: (N*Ho*Wo, kh*kw*C) rows added back into a (N, Hp, Wp, C) buffer."""
    xp = array_namespace(cols)
    (kh, kw), (ho, wo), (sh, sw) = kernel, out_hw, stride
    n, hp, wp, c = padded_shape
    cols = xp.reshape(cols, (n, ho, wo, kh, kw, c))
    out = xp.zeros(padded_shape, dtype=cols.dtype, device=device(cols))
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += cols[:, :, :, i, j, :]
    return out
