"""Kernels: the portable primitives layers compute with, and the faster versions backends register for them.

- :mod:`.windows`: padding, window slices (:func:`~.windows.taps`), im2col/col2im in two column layouts;
- :mod:`.gemm`: matrix products of shapes a CPU BLAS handles badly;
- :mod:`.conv`: a convolution's products in the memory layouts CPUs run fast (registered for every backend);
- :mod:`.layout`: copying a gradient into an activation's memory order;
- :mod:`.numpy_fast`: NumPy-only versions of window and GEMM primitives;
- :mod:`.compiled`, :mod:`.numba_kernels`, :mod:`.numpy_compiled`: the NumPy backend's compiled kernels (numba,
  loaded lazily; conv in cache-sized blocks on every core, BatchNorm in two passes each way with a following
  ReLU fused in, ReLU, max pooling), used when numba is importable;
- :mod:`.torch_fast`: torch's own operators for the same primitives on the torch backend;
- :mod:`.jax_fast`: XLA's convolution (jit-compiled per shape) on the jax backend;
- :mod:`.cupy_fused`: BatchNorm and ReLU passes fused into single GPU kernels on CuPy (``cupy.fuse``);
- :mod:`.registry`: the seam where fast paths are registered (``PORTACNN_PORTABLE=1`` turns them all off).

Every fast path returns what its portable twin returns (to float rounding); tests run each with the fast
paths on and off.
"""

from __future__ import annotations

from . import compiled, conv, cupy_fused, jax_fast, layout, numpy_compiled, numpy_fast, torch_fast  # noqa: F401  (registering their fast paths)
from .registry import fast_path, portable_only, register
from .registry import check_environment as _check_registry


def check_environment() -> None:
    """Validate ``PORTACNN_PORTABLE`` and ``PORTACNN_COMPILED`` (0 or 1)."""
    _check_registry()
    compiled.check_environment()


def status() -> str:
    """One line: which kernels the NumPy backend runs (compiled or portable, and why)."""
    if portable_only():
        return "portable (every fast path switched off by PORTACNN_PORTABLE=1)"
    return compiled.status()


__all__ = ["check_environment", "fast_path", "portable_only", "register", "status"]
