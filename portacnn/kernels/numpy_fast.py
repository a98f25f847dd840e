"""NumPy's fast paths: the same results as the portable primitives, by means only NumPy has.

- ``im2col_nhwc``: one copy out of an overlapping window view (``sliding_window_view``) instead of kh*kw
  slice copies;
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
def _numpy_im2col_nhwc(xhpad, kernel, stride, out_hw):
    """NumPy: channels-last columns from one window-view copy."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    n, c = xhpad.shape[0], xhpad.shape[3]
    view = sliding_window_view(xhpad, (kh, kw), axis=(1, 2))[:, taps(0, sh, ho), taps(0, sw, wo)]
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
