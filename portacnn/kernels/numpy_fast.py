"""NumPy's fast paths: the same results as the portable primitives, by means only NumPy has.

- ``im2col_nhwc``: one copy out of an overlapping window view (``sliding_window_view``, strided again for a
  dilated window) instead of kh*kw slice copies;
- ``short_wide_matmul``: a (few rows) x (many columns) product cut into column blocks that stay in cache
  (OpenBLAS runs the one long product at memory speed).

Measured figures for both are in benchmarks/README.md; tests/kernels compares each with its portable twin.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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


#: NumPy/OpenBLAS: products with at most this many rows in ``a`` are cut into column blocks
SHORT_WIDE_MAX_ROWS = 8
#: ... of about this many bytes of ``b`` each (a block of columns stays in the L2 cache)
SHORT_WIDE_BLOCK_BYTES = 256 << 10


@register("numpy", "short_wide_matmul")
def _numpy_short_wide_matmul(a, b):
    """NumPy: ``a @ b`` one block of columns at a time, each written straight into the result.

    Each output is the same dot product, though OpenBLAS may pick another kernel for a block's edge tile,
    so the result equals the single product to rounding (often bit for bit). With more rows than
    ``SHORT_WIDE_MAX_ROWS``, or few columns, it is one product.
    """
    (m, k), p = a.shape, b.shape[1]
    step = max(256, SHORT_WIDE_BLOCK_BYTES // (k * b.itemsize))
    if m > SHORT_WIDE_MAX_ROWS or p < 2 * step:
        return np.matmul(a, b)
    out = np.empty((m, p), dtype=np.result_type(a, b))
    for start in range(0, p, step):
        np.matmul(a, b[:, start : start + step], out=out[:, start : start + step])
    return out
