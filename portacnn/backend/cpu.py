"""CPU policy: how many threads NumPy's BLAS uses, and how large a block of temporaries fits the cache.

Both are facts about the machine, not about any layer: data-parallel shards ask here to hold BLAS at one
thread per call, and kernels ask here how many images' columns to make at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

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


_HOLD = threading.local()


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS runs each call on one thread inside this block (restored after, even on errors)."""
    libs = [c for c in _numpy_blas_controllers() if c.num_threads != 1]
    saved = [c.num_threads for c in libs]
    for c in libs:
        c.set_num_threads(1)
    _HOLD.depth = getattr(_HOLD, "depth", 0) + 1
    try:
        yield
    finally:
        _HOLD.depth -= 1
        for c, n in zip(libs, saved):
            c.set_num_threads(n)


# -- our own threads for the compiled CPU kernels ----------------------------------------------------------
# OpenBLAS's worker threads spin for about 0.1 s after each multi-threaded call; a compiled kernel that runs
# on every core meanwhile loses half its speed or more to them (measured 2.5x on a max-pool after a conv
# GEMM). So the NumPy backend's compiled kernels never call a multi-threaded BLAS: they cut a product into
# blocks of rows and run the blocks on this pool, each with BLAS on one thread (blocks of a fixed size, so
# every number is computed by the same single-threaded call whatever the thread count).
_POOLS: dict[str, tuple[ThreadPoolExecutor, int, int]] = {}  # name -> (pool, size, pid of the process that made it)
_POOL_LOCK = threading.Lock()


def thread_pool(name: str, size: int) -> ThreadPoolExecutor:
    """A process-wide pool called ``name`` with at least ``size`` threads (idle threads cost nothing). A forked
    child gets a pool of its own: it has none of its parent's threads, and would wait on them for ever."""
    with _POOL_LOCK:
        pool, have, pid = _POOLS.get(name, (None, 0, 0))
        if pool is None or have < size or pid != os.getpid():
            if pool is not None and pid == os.getpid():
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"portacnn-{name}")
            _POOLS[name] = (pool, size, os.getpid())
        return pool


def compute_threads() -> int:
    """Threads the compiled CPU kernels use: as many as NumPy's BLAS would (OMP_NUM_THREADS and the like set
    both), 1 inside :func:`one_blas_thread` (data-parallel shards already occupy every core)."""
    if getattr(_HOLD, "depth", 0):
        return 1
    return blas_threads()


#: work below which a kernel's tasks run on the calling thread (handing tasks to another thread and back costs
#: tens of microseconds), counted in values an element-wise pass reads and writes (about a third of a
#: nanosecond each on one core); callers count a GEMM's multiply-adds as 1/16 of that, a direct loop's as 1/4
PARALLEL_MIN_WORK = 1 << 20


def run_tasks(task, count: int, work: int | None = None, blas: bool = True) -> None:
    """``task(k)`` for k in 0..count-1, on :func:`compute_threads` threads with BLAS on one thread each (in
    order on this thread when that is one, or when ``work`` is under :data:`PARALLEL_MIN_WORK`, BLAS still on one
    thread). Each task must write only its own part of the results. ``blas=False``: the tasks call no BLAS (its
    threads are left alone)."""
    threads = min(compute_threads(), count)
    if threads <= 1 or (work is not None and work < PARALLEL_MIN_WORK):
        with one_blas_thread() if blas else contextlib.nullcontext():  # here too: a multi-threaded BLAS call
            for k in range(count):  # would leave OpenBLAS's workers spinning against the next kernel's threads
                task(k)
        return
    pool = thread_pool("kernel", threads - 1)
    with one_blas_thread() if blas else contextlib.nullcontext():
        futures = [pool.submit(_run_share, task, k, count, threads) for k in range(1, threads)]
        try:
            _run_share(task, 0, count, threads)  # this thread takes the first share
        finally:
            for f in futures:
                f.result()


def _run_share(task, first: int, count: int, step: int) -> None:
    for k in range(first, count, step):
        task(k)


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


def block_bytes_override() -> int | None:
    """``$PORTACNN_BLOCK_BYTES`` as a number (0: no blocking), or None when unset (a bad value is a ValueError)."""
    env = os.environ.get("PORTACNN_BLOCK_BYTES", "")
    return _env_bytes("PORTACNN_BLOCK_BYTES", env) if env else None


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
