"""Matrix products whose shape a CPU BLAS handles badly, as named primitives a backend may speed up.

``short_wide_matmul(a, b)`` is ``a @ b`` for an ``a`` of very few rows (a narrow conv's weight, (O, K))
times a very wide ``b`` (its columns, (K, Ho*Wo*N)). The portable version here is exactly that one
product and stays the reference; NumPy registers a column-blocked version (:mod:`.numpy_fast`: OpenBLAS
runs such products at memory speed in one piece), and the kernel tests check the two agree to rounding.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .registry import fast_path


def short_wide_matmul(a, b):
    """``a @ b`` for a 2-D ``a`` with few rows and a 2-D ``b`` with many columns."""
    fast = fast_path(a, "short_wide_matmul")
    if fast is not None:
        return fast(a, b)
    return array_namespace(a, b).matmul(a, b)
