"""Backends: which array library a model computes with, and the one place that knows about each.

A :class:`Backend` bundles a name, an array-API namespace (``xp``) and a device. Layers, losses and
optimizers only ever call ``xp``; everything library-specific (how to copy to the host, how to wait for
the device, whether a GPU is usable) lives here.

Resolution order for a backend name: explicit argument > ``$PORTACNN_BACKEND`` > ``"numpy"``.
CuPy and PyTorch are imported lazily, only when asked for, and CuPy counts as available only when a
CUDA device actually answers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

KNOWN_BACKENDS = ("numpy", "cupy", "array_api_strict", "torch")
ENV_VAR = "PORTACNN_BACKEND"


class BackendUnavailableError(RuntimeError):
    """A known backend that cannot be used on this machine; the message says why and how to fix it."""


@dataclass(frozen=True)
class _Spec:
    load: Callable[[], tuple[Any, Any]]  # -> (namespace, default device); raises BackendUnavailableError
    to_numpy: Callable[[Any], np.ndarray]
    synchronize: Callable[[], None] = lambda: None


def _load_numpy():
    import array_api_compat.numpy as xp

    return xp, "cpu"


def _load_strict():
    try:
        import array_api_strict as xp
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'array_api_strict' is not installed ({e}); install it with: pip install array-api-strict"
        ) from None
    return xp, xp.Device("CPU_DEVICE")


def _strict_to_numpy(x):
    import array_api_strict as xp

    return np.from_dlpack(x.to_device(xp.Device("CPU_DEVICE")))


def _load_torch():
    try:
        import torch  # noqa: F401
        import array_api_compat.torch as xp
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'torch' is not installed ({e}); install it with: pip install torch"
        ) from None
    return xp, torch.device("cpu")


def _torch_to_numpy(x):
    import torch

    x = x.detach().cpu().resolve_conj().resolve_neg()
    if x.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds every bfloat16 value exactly
        x = x.float()
    return x.numpy()


def _load_cupy():
    hint = "install the matching extra (pip install 'portacnn[cuda12]' or 'portacnn[cuda13]') on a machine with an NVIDIA GPU"
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising at import time
        raise BackendUnavailableError(f"backend 'cupy' is not usable: cupy is not installed ({type(e).__name__}); {hint}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BackendUnavailableError(f"backend 'cupy' is not usable: no CUDA device answers ({msg}); {hint}") from None
    if count <= 0:
        raise BackendUnavailableError(f"backend 'cupy' is not usable: CUDA reports 0 devices; {hint}")
    import array_api_compat.cupy as xp

    return xp, cupy.cuda.Device()


def _cupy_to_numpy(x):
    # CuPy refuses numpy.asarray(device_array); .get() copies to the host and waits for the current stream
    return x.get()


def _cupy_sync():
    import cupy

    cupy.cuda.get_current_stream().synchronize()


_SPECS = {
    "numpy": _Spec(_load_numpy, np.asarray),
    "cupy": _Spec(_load_cupy, _cupy_to_numpy, _cupy_sync),
    "array_api_strict": _Spec(_load_strict, _strict_to_numpy),
    "torch": _Spec(_load_torch, _torch_to_numpy),
}


@functools.lru_cache(maxsize=None)
def _loaded(name: str):
    """Import a backend once; cache the namespace and default device, or the reason it is unusable."""
    try:
        return _SPECS[name].load(), None
    except BackendUnavailableError as e:
        return None, str(e)


@dataclass(frozen=True, eq=False)
class Backend:
    """An array library plus a device: everything a model needs to compute somewhere.

    Attributes: ``name`` (one of :data:`KNOWN_BACKENDS`), ``xp`` (array-API namespace), ``device``.
    """

    name: str
    xp: Any = field(repr=False)
    device: Any

    def asarray(self, x, dtype=None, what: str = "input"):
        """``x`` as an array of this backend, on its device, in ``dtype``.

        ``x`` may be a NumPy array, a Python (nested) sequence or scalar, an array of any backend on any
        device (torch, CuPy, array_api_strict), a Dask array (computed), or anything NumPy can read.
        ``dtype`` is any dtype object or name (see :func:`numpy_dtype`); ``None`` keeps ``x``'s. Arrays
        already here with the right dtype are returned as they are (no copy); others cross once, cast on
        the host first so that a uint8 batch travels in the target dtype.

        Values that are not numbers (strings, objects, ragged lists) and conversions that would lose a
        kind of information (complex -> real, float -> integer) raise one ValueError naming ``what``.
        """
        target = None if dtype is None else numpy_dtype(dtype)
        source = _namespace_name(x)
        if source == self.name:
            _check_kind(numpy_dtype(x.dtype), target, what)
            if source != "numpy" and x.device != self.device:
                x = _to_device(x, self.device)
            return x if target is None or x.dtype == self.dtype(target) else self.xp.astype(x, self.dtype(target))
        host = to_host(x, what)
        _check_kind(host.dtype, target, what)
        if target is not None:
            host = host.astype(target, copy=False)
        if self.name != "numpy" and any(s < 0 for s in host.strides):
            host = np.ascontiguousarray(host)  # torch cannot wrap negative strides (np.flip, x[:, ::-1])
        return self.xp.asarray(host, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        """A NumPy array on the host holding ``x`` (a copy for device arrays; may share memory on CPU).

        Accepts arrays of any backend (and anything NumPy accepts), not only this one's.
        """
        return to_host(x)

    def synchronize(self) -> None:
        """Wait until queued device work has finished (a no-op on CPU backends)."""
        _SPECS[self.name].synchronize()

    @property
    def is_cpu(self) -> bool:
        """Whether arrays live in host memory and ops run on CPU cores (the data-parallel shards need that)."""
        if self.name in ("numpy", "array_api_strict"):
            return True
        return self.name == "torch" and getattr(self.device, "type", None) == "cpu"

    def dtype(self, dtype):
        """This namespace's dtype equal to ``dtype`` (a name or a dtype object of any library)."""
        return _namespace_dtype(self.xp, self.name, numpy_dtype(dtype).name)

    def __eq__(self, other):
        return isinstance(other, Backend) and self.name == other.name and self.device == other.device

    def __hash__(self):
        return hash((self.name, str(self.device)))


@functools.lru_cache(maxsize=None)
def _namespace_dtype(xp, backend_name: str, name: str):
    """``xp``'s dtype called ``name`` (cached: compat namespaces resolve attributes slowly, ~2.5 us each)."""
    found = getattr(xp, name, None)
    if found is None:
        raise ValueError(f"backend {backend_name!r} has no dtype {name}")
    return found


#: the dtype names the array-API standard defines (what other libraries' dtype objects are matched against)
STANDARD_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                   "float16", "float32", "float64", "complex64", "complex128")


def numpy_dtype(dtype) -> np.dtype:
    """The NumPy dtype equal to ``dtype``, whichever library it comes from.

    Accepted: ``np.dtype`` instances (what NumPy, CuPy and Dask arrays carry); NumPy scalar classes such as
    ``np.float32`` (which is also ``cupy.float32`` and ``array_api_compat.numpy.float32``); names NumPy
    reads ("float32", "f4"); Python's ``float``/``int``/``bool``/``complex`` (as NumPy reads them); and the
    dtype objects of any other array library (``torch.float32``, ``array_api_strict.float32``, ...), found
    by identity among the standard dtypes that library's top-level module exports. Anything else is a
    ValueError. Nothing is parsed out of a ``repr``.
    """
    if isinstance(dtype, np.dtype):
        return dtype
    if isinstance(dtype, type) and (issubclass(dtype, np.generic) or dtype in (float, int, bool, complex)):
        return np.dtype(dtype)
    if isinstance(dtype, str):
        try:
            return np.dtype(dtype)
        except TypeError:
            raise ValueError(f"unknown dtype name {dtype!r}; use a name such as 'float32' or 'float64'") from None
    library = sys.modules.get(type(dtype).__module__.split(".")[0])
    if library is not None and dtype is not None:
        for name in STANDARD_DTYPES:
            candidate = getattr(library, name, None)
            if candidate is dtype or (type(candidate) is type(dtype) and candidate == dtype):
                return np.dtype(name)
    inner = getattr(dtype, "dtype", None)  # e.g. JAX's scalar types carry their NumPy dtype
    if isinstance(inner, np.dtype):
        return inner
    raise ValueError(f"{dtype!r} is not a dtype portacnn can map to NumPy; use a name such as 'float32'")


def _check_kind(source: np.dtype, target: np.dtype | None, what: str) -> None:
    """Refuse values that are not numbers, and casts that would silently drop information."""
    if source.kind not in "biufc":
        held = {"U": "strings", "S": "byte strings", "O": "Python objects (a ragged or mixed list?)"}
        raise ValueError(f"{what} holds {held.get(source.kind, f'{source} values')}, not numbers; pass a numeric array")
    if target is None:
        return
    if target.kind == "f" and source.kind not in "iuf":
        raise ValueError(f"{what} has dtype {source}; expected real numbers (int or float) to convert to {target}")
    if target.kind in "iu" and source.kind not in "biu":
        raise ValueError(f"{what} has dtype {source}; expected integers to convert to {target}")


def _namespace_name(x) -> str | None:
    """Which known backend ``x`` belongs to, or None for non-arrays (without importing anything new)."""
    mod = type(x).__module__.split(".")[0]
    if mod == "numpy" and isinstance(x, np.ndarray):
        return "numpy"
    return {"cupy": "cupy", "array_api_strict": "array_api_strict", "torch": "torch"}.get(mod)


def is_dask_array(x) -> bool:
    """Whether ``x`` is a Dask array (checked without importing Dask)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


def _to_device(x, device):
    """``x`` moved to another device of its own library (peer copy on GPUs, no host round trip)."""
    import array_api_compat

    return array_api_compat.to_device(x, device)


def to_host(x, what: str = "input") -> np.ndarray:
    """Any backend's array (CuPy via ``.get()``, torch, array_api_strict on any device), a Dask array
    (computed), a Python sequence or anything else NumPy can read, as a NumPy array.

    What NumPy cannot read as one rectangular array (ragged lists, ...) is a ValueError naming ``what``.
    """
    name = _namespace_name(x)
    if name == "numpy":
        return x
    if name is not None:
        return _SPECS[name].to_numpy(x)
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{what} cannot be read as one array of numbers ({reason})") from None


def asarray_like(x, ref):
    """``x`` as an array of the same backend and device as the array ``ref`` (no copy when it already is)."""
    name = _namespace_name(ref) or "numpy"
    if _namespace_name(x) == name and (name == "numpy" or x.device == ref.device):
        return x
    return get_backend(name, device=ref.device if name != "numpy" else None).asarray(x)


def unusable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot be used here, or None if it can."""
    if name not in _SPECS:
        raise ValueError(f"unknown backend {name!r}; valid names: {', '.join(KNOWN_BACKENDS)}")
    return _loaded(name)[1]


def available_backends() -> list[str]:
    """The backend names usable on this machine, in order of preference."""
    return [n for n in KNOWN_BACKENDS if unusable_reason(n) is None]


def get_backend(name: str | Backend | None = None, device=None) -> Backend:
    """Resolve ``name`` (or ``$PORTACNN_BACKEND``, or "numpy") to a usable :class:`Backend`.

    ``device`` overrides the backend's default device (e.g. ``array_api_strict.Device("device1")``
    or a CuPy device). Raises ValueError for unknown names and BackendUnavailableError for known
    backends that cannot run here.
    """
    if isinstance(name, Backend):
        return name if device is None else Backend(name.name, name.xp, device)
    if name is None:
        name = os.environ.get(ENV_VAR) or "numpy"
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(f"unknown backend {name!r}; valid names: {', '.join(KNOWN_BACKENDS)}")
    loaded, reason = _loaded(name)
    if loaded is None:
        raise BackendUnavailableError(reason)
    xp, default_device = loaded
    return Backend(name, xp, default_device if device is None else device)


# -- CPU threads: NumPy's BLAS ---------------------------------------------------------------------------
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
    name = _namespace_name(x)
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
    """Validate every PORTACNN_* variable this module reads (the CLI calls it first, so a bad value is
    reported as what it is, not as a failure of whatever first used it)."""
    name = os.environ.get(ENV_VAR)
    if name and name not in _SPECS:
        raise ValueError(f"environment variable {ENV_VAR}={name!r} is not a backend; valid names: "
                         f"{', '.join(KNOWN_BACKENDS)}")
    if os.environ.get("PORTACNN_BLOCK_BYTES"):
        _env_bytes("PORTACNN_BLOCK_BYTES", os.environ["PORTACNN_BLOCK_BYTES"])
    if os.environ.get("PORTACNN_PORTABLE", "") not in ("", "0", "1"):
        raise ValueError(f"environment variable PORTACNN_PORTABLE must be 0 or 1; got {os.environ['PORTACNN_PORTABLE']!r}")


# -- the fast-path seam ------------------------------------------------------------------------------------
# Layers compute with the portable array-API primitives of layers/_windows.py and layers/_gemm.py. A backend may register a
# faster implementation of one of those primitives here, and only here; it must return exactly what the
# portable one returns (tests/test_fast_paths.py compares them on random geometries), and the portable code
# stays the reference that every other backend runs. PORTACNN_PORTABLE=1 switches all fast paths off.
_FAST_PATHS: dict[tuple[str, str], Callable] = {}


def register_fast_path(backend_name: str, primitive: str):
    """Decorator: ``fn`` replaces ``primitive`` (a function name in layers/_windows.py or layers/_gemm.py)
    for ``backend_name``."""

    def register(fn):
        _FAST_PATHS[(backend_name, primitive)] = fn
        return fn

    return register


def fast_path(x, primitive: str):
    """The fast implementation of ``primitive`` for ``x``'s backend, or None (then use the portable code)."""
    if not _FAST_PATHS or os.environ.get("PORTACNN_PORTABLE", "") not in ("", "0"):
        return None
    return _FAST_PATHS.get((_namespace_name(x), primitive))


@register_fast_path("numpy", "im2col_nhwc")
def _numpy_im2col_nhwc(xhpad, kernel, stride, out_hw):
    """NumPy: channels-last columns from one window-view copy (about 3x the loop for 32 channels)."""
    from numpy.lib.stride_tricks import sliding_window_view

    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    n, c = xhpad.shape[0], xhpad.shape[3]
    view = sliding_window_view(xhpad, (kh, kw), axis=(1, 2))[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw]
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=xhpad.dtype)
    np.copyto(cols, view.transpose(0, 1, 2, 4, 5, 3))
    return cols.reshape(n * ho * wo, kh * kw * c)


#: NumPy/OpenBLAS: products with at most this many rows in ``a`` are cut into column blocks
SHORT_WIDE_MAX_ROWS = 8
#: ... of about this many bytes of ``b`` each (a block of columns stays in the L2 cache)
SHORT_WIDE_BLOCK_BYTES = 256 << 10


@register_fast_path("numpy", "short_wide_matmul")
def _numpy_short_wide_matmul(a, b):
    """NumPy: ``a @ b`` one block of columns at a time, each written straight into the result.

    OpenBLAS multiplies a (<= 8, K) matrix by a (K, 10^5) one 2-3x slower than the same product in
    ~256 KB blocks of columns (measured for K = 9..150 on 1 and 2 threads). Each output is the same dot
    product, though OpenBLAS may pick another kernel for a block's edge tile, so the result equals the
    single product to rounding (often bit for bit). With more rows, or few columns, it is one product.
    """
    (m, k), p = a.shape, b.shape[1]
    step = max(256, SHORT_WIDE_BLOCK_BYTES // (k * b.itemsize))
    if m > SHORT_WIDE_MAX_ROWS or p < 2 * step:
        return np.matmul(a, b)
    out = np.empty((m, p), dtype=np.result_type(a, b))
    for start in range(0, p, step):
        np.matmul(a, b[:, start : start + step], out=out[:, start : start + step])
    return out
