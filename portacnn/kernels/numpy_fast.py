"""NumPy's fast paths: the same results as the portable primitives, by means only NumPy has.

- ``im2col_nhwc``: one copy out of an overlapping window view (``sliding_window_view``, strided again for a
  dilated window) instead of kh*kw slice copies;
- ``col2im_chwn``: the portable loop's kh*kw slice additions written straight into the buffer (NumPy's ``+=``),
  without array-api-extra's ``at()`` (about 5 us of Python per slice, which the portable code pays so that JAX's
  immutable arrays work too: 25 slices on every LeNet-5 training step);
- ``short_wide_matmul``: a (few rows) x (many columns) product cut into column blocks that stay in cache
  (OpenBLAS runs the one long product at memory speed);
- ``matmul``: a large 2-D product cut into fixed blocks of rows run on the kernel threads, BLAS on one
  thread each (a dense layer's products).

Measured figures for both are in benchmarks/README.md; tests/kernels compares each with its portable twin.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import compiled
from .registry import register
from .windows import taps


@register("numpy", "im2col_nhwc")
def _numpy_im2col_nhwc(xhpad, kernel, stride, out_hw, dilation=(1, 1)):
    """NumPy: channels-last columns from one window-view copy (a dilated window is every dh-th row and
    dw-th column of the window of its full extent dh*(kh-1)+1 by dw*(kw-1)+1: still a view)."""
    (kh, kw), (sh, sw), (ho, wo), (dh, dw) = kernel, stride, out_hw, dilation
    n, c = xhpad.shape[0], xhpad.shape[3]
    extent = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = sliding_window_view(xhpad, extent, axis=(1, 2))[:, taps(0, sh, ho), taps(0, sw, wo)]
    if dh != 1 or dw != 1:
        view = view[..., ::dh, ::dw]  # (N, Ho, Wo, C, kh, kw)
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=xhpad.dtype)
    np.copyto(cols, view.transpose(0, 1, 2, 4, 5, 3))
    return cols.reshape(n * ho * wo, kh * kw * c)


@register("numpy", "col2im_chwn")
def _numpy_col2im_chwn(cols, padded_shape, kernel, stride, out_hw, dilation=(1, 1)):
    """NumPy: :func:`.windows.col2im_chwn`'s slice additions, in place."""
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    c, n = padded_shape[0], padded_shape[3]
    cols = cols.reshape(c, kh, kw, ho, wo, n)
    out = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, taps(i * dh, sh, ho), taps(j * dw, sw, wo), :] += cols[:, i, j, ...]
    return out


#: NumPy/OpenBLAS: products with at most this many rows in ``a`` are cut into column blocks
SHORT_WIDE_MAX_ROWS = 8
#: ... of about this many bytes of ``b`` each (a block of columns stays in the L2 cache)
SHORT_WIDE_BLOCK_BYTES = 256 << 10


@register("numpy", "short_wide_matmul")
def _numpy_short_wide_matmul(a, b):
    """NumPy: ``a @ b`` one block of columns at a time, each written straight into the result.

    Each output is the same dot product, though OpenBLAS may pick another kernel for a block's edge tile,
    so the result equals the single product to rounding (often bit for bit). With more rows than
    ``SHORT_WIDE_MAX_ROWS``, or few columns, it is one product. (The blocks run one after the other with
    OpenBLAS's own threads: on the kernel threads, one BLAS thread each, they ran slower.)
    """
    (m, k), p = a.shape, b.shape[1]
    step = max(256, SHORT_WIDE_BLOCK_BYTES // (k * b.itemsize))
    if m > SHORT_WIDE_MAX_ROWS or p < 2 * step:
        return np.matmul(a, b)
    out = np.empty((m, p), dtype=np.result_type(a, b))
    for start in range(0, p, step):
        np.matmul(a, b[:, start : start + step], out=out[:, start : start + step])
    return out


#: products of fewer multiply-adds than this run as one call (cutting them up costs more than it gains)
MATMUL_SPLIT_FROM = 1 << 22
#: rows of ``a`` per block of a split product: fixed, so every number comes from the same call shape
MATMUL_BLOCK = 64


@register("numpy", "matmul")
def _numpy_matmul(a, b):
    """NumPy: ``a @ b``; a large 2-D product with at least two blocks of :data:`MATMUL_BLOCK` rows in ``a`` (and as
    many columns) is cut
    into such blocks, run on the kernel threads with BLAS on one thread each (a dense layer's products; every
    output element is then one single-threaded dot product whatever the thread count). Anything else is one
    call (a narrow conv's stacked or short products ran slower cut up), on one BLAS thread while the compiled
    kernels are on: OpenBLAS's workers spin for about 0.1 s after a multi-threaded call, and the kernel threads
    that run next lost a third of their speed to them (a LeNet-5 training step, 2 threads: 9.7 -> 7.0 ms)."""
    if (a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 * MATMUL_BLOCK or a.shape[1] < MATMUL_BLOCK
            or a.shape[0] * a.shape[1] * b.shape[1] < MATMUL_SPLIT_FROM):
        if not compiled.usable():
            return np.matmul(a, b)
        from ..backend.cpu import one_blas_thread

        with one_blas_thread():  # the compiled kernels' threads run next, and OpenBLAS's would spin against them
            return np.matmul(a, b)
    return _blocked(a, b, MATMUL_BLOCK)


def _blocked(a, b, step):
    """``a @ b`` (2-D) in blocks of ``step`` rows of ``a`` on the kernel threads."""
    from ..backend.cpu import run_tasks

    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    spans = [(s, min(a.shape[0], s + step)) for s in range(0, a.shape[0], step)]

    def task(t):
        lo, hi = spans[t]
        np.matmul(a[lo:hi], b, out=out[lo:hi])

    run_tasks(task, len(spans), work=a.shape[0] * a.shape[1] * b.shape[1] // 16)
    return out
