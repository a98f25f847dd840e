"""CPU policy: how many threads NumPy's BLAS uses, and how large a block of temporaries fits the cache.

Both are facts about the machine, not about any layer: data-parallel shards ask here to hold BLAS at one
thread per call, and kernels ask here how many images' columns to make at once.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np

from .convert import namespace_name


# Data-parallel shards (portacnn/parallel.py) run one Python thread per CPU core; while they run, BLAS must
# use one thread per call, or two shards times two BLAS threads fight over two cores (measured: 0.8x
# instead of 1.2x for the Kannada net). threadpoolctl reads and sets the thread count of the BLAS that
# NumPy loaded (it honours OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, like PyTorch's own count does).
@functools.lru_cache(maxsize=None)
def _numpy_blas_controllers() -> tuple:
    from threadpoolctl import ThreadpoolController

    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    # NumPy's wheels keep their BLAS in numpy/ or numpy.libs/ (both start with numpy's own path); other
    # installs (conda, distro packages) link a system BLAS: then control every BLAS found
    here = os.path.dirname(np.__file__)
    return tuple([c for c in blas if c.filepath.startswith(here)] or blas)


def blas_threads() -> int:
    """Threads NumPy's BLAS uses per call (1 when no controllable BLAS is found)."""
    libs = _numpy_blas_controllers()
    return max([int(c.num_threads) for c in libs] or [1])


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS runs each call on one thread inside this block (restored after, even on errors)."""
    libs = [c for c in _numpy_blas_controllers() if c.num_threads != 1]
    saved = [c.num_threads for c in libs]
    for c in libs:
        c.set_num_threads(1)
    try:
        yield
    finally:
        for c, n in zip(libs, saved):
            c.set_num_threads(n)


# -- cache blocking on CPUs -------------------------------------------------------------------------------
# A wide conv's im2col columns are large (85 MB for the Kannada net's conv2 at batch 128). On a CPU, filling
# them a few images at a time and multiplying each block while it is still in cache beats one huge im2col
# followed by one huge GEMM (measured 1.4-1.7x on that layer's forward, NumPy and 1-2 threads); on a GPU
# one kernel over the whole batch is what is fast. Layers ask here how large a block to make.
CPU_BLOCK_BYTES = 4 << 20


def cpu_block_bytes(x) -> int | None:
    """Bytes of temporary columns a layer should fill at once for arrays like ``x``: an L2/L3-sized block on
    CPU backends, None (the whole batch in one go) on GPUs. ``$PORTACNN_BLOCK_BYTES`` overrides it (0 = no
    blocking; tests use it to force many blocks)."""
    env = os.environ.get("PORTACNN_BLOCK_BYTES", "")
    if env:
        return _env_bytes("PORTACNN_BLOCK_BYTES", env) or None
    name = namespace_name(x)
    if name == "cupy" or (name == "torch" and x.device.type != "cpu"):
        return None
    return CPU_BLOCK_BYTES


def _env_bytes(name: str, text: str) -> int:
    """A byte count from environment variable ``name`` (a non-negative integer), or a one-line ValueError."""
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"environment variable {name} must be a non-negative integer number of bytes; got {text!r} "
                         f"(unset it to use the default)")
    return value




def check_environment() -> None:
    """Validate the CPU policy's environment variable (PORTACNN_BLOCK_BYTES)."""
    if os.environ.get("PORTACNN_BLOCK_BYTES"):
        _env_bytes("PORTACNN_BLOCK_BYTES", os.environ["PORTACNN_BLOCK_BYTES"])
