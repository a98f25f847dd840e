"""Kernels: the portable primitives layers compute with, and the faster versions backends register for them.

- :mod:`.windows`: padding, window slices (:func:`~.windows.taps`), im2col/col2im in two column layouts;
- :mod:`.gemm`: matrix products of shapes a CPU BLAS handles badly;
- :mod:`.conv`: a convolution's products in the memory layouts CPUs run fast (registered for every backend);
- :mod:`.layout`: copying a gradient into an activation's memory order;
- :mod:`.numpy_fast`: NumPy-only versions of window and GEMM primitives;
- :mod:`.registry`: the seam where fast paths are registered (``PORTACNN_PORTABLE=1`` turns them all off).

Every fast path returns what its portable twin returns (to float rounding); tests run each with the fast
paths on and off.
"""

from __future__ import annotations

from . import conv, layout, numpy_compiled, numpy_fast, torch_fast  # noqa: F401  (registering their fast paths)
from .registry import check_environment, fast_path, portable_only, register

__all__ = ["check_environment", "fast_path", "portable_only", "register"]
