"""Backends: which array library a model computes with, and the one place that knows about each.

- :mod:`.registry`: the :class:`Backend` object (name, array-API namespace, device), how each library is
  loaded (CuPy and torch lazily, CuPy only when a CUDA device answers), and name resolution
  (explicit argument > ``$PORTACNN_BACKEND`` > ``"numpy"``);
- :mod:`.convert`: any library's dtype objects as NumPy dtypes, any array (CuPy, torch, array_api_strict on
  any device, Dask, lists) as a NumPy array;
- :mod:`.cpu`: CPU policy (BLAS threads, the cache block size kernels fill at once);
- :mod:`.nccl`: NCCL on CuPy for MPI training (the gradient buffer summed on the GPU).

Layers, losses and optimizers never import a library directly: they call the namespace they are given.
"""

from __future__ import annotations

from . import cpu, nccl, registry
from .convert import (DTYPES, STANDARD_DTYPES, float_dtype_name, is_dask_array, namespace_name, numpy_dtype, on_host,
                      to_host)
from .cpu import blas_threads, cpu_block_bytes, one_blas_thread
from .registry import (ENV_VAR, KNOWN_BACKENDS, Backend, BackendUnavailableError, asarray_like, available_backends,
                       get_backend, unusable_reason, wide_dtypes)

__all__ = ["Backend", "BackendUnavailableError", "DTYPES", "ENV_VAR", "KNOWN_BACKENDS", "STANDARD_DTYPES", "asarray_like",
           "available_backends", "blas_threads", "check_environment", "cpu_block_bytes", "float_dtype_name", "get_backend",
           "is_dask_array", "namespace_name", "numpy_dtype", "on_host", "one_blas_thread", "to_host", "unusable_reason",
           "wide_dtypes"]


def check_environment() -> None:
    """Validate the ``PORTACNN_*`` variables the backends read (the CLI calls it first, with the kernels' and
    the data limits' checks, so a bad value is reported as what it is, not by whatever first used it)."""
    registry.check_environment()
    cpu.check_environment()
    nccl.transport_choice()
