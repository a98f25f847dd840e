"""Matrix products as named primitives a backend may speed up.

``matmul(a, b)`` is ``a @ b`` (2-D, or a stack of them along the first axis). On NumPy a large product is cut
into blocks of a fixed size run side by side on the kernel threads, each with BLAS on one thread
(:mod:`.numpy_fast`): a multi-threaded OpenBLAS call leaves its threads spinning for about 0.1 s, which halves
the speed of whatever runs next on the other cores (measured: a kannada_cnn convolution after the dense
layer's product ran 1.8x slower).

``short_wide_matmul(a, b)`` is ``a @ b`` for an ``a`` of very few rows (a narrow conv's weight, (O, K))
times a very wide ``b`` (its columns, (K, Ho*Wo*N)). The portable version here is exactly that one
product and stays the reference; NumPy registers a column-blocked version (:mod:`.numpy_fast`: OpenBLAS
runs such products at memory speed in one piece), and the kernel tests check the two agree to rounding.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .registry import fast_path


def matmul(a, b):
    """``a @ b`` (what layers and kernels multiply with)."""
    fast = fast_path(a, "matmul")
    if fast is not None:
        return fast(a, b)
    return array_namespace(a, b).matmul(a, b)


def short_wide_matmul(a, b):
    """``a @ b`` for a 2-D ``a`` with few rows and a 2-D ``b`` with many columns."""
    fast = fast_path(a, "short_wide_matmul")
    if fast is not None:
        return fast(a, b)
    return array_namespace(a, b).matmul(a, b)
