"""The backend registry: which array library a model computes with, and how each is loaded.

A :class:`Backend` bundles a name, an array-API namespace (``xp``) and a device. Layers, losses and
optimizers only ever call ``xp``; everything library-specific (how to copy to the host, how to wait for
the device, whether a GPU is usable) lives here.

Resolution order for a backend name: explicit argument > ``$PORTACNN_BACKEND`` > ``"numpy"``.
CuPy and PyTorch are imported lazily, only when asked for, and CuPy counts as available only when a
CUDA device actually answers.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import array_api_compat
import numpy as np

from .convert import HOST_COPIES, _check_kind, namespace_name, numpy_dtype, to_host

KNOWN_BACKENDS = ("numpy", "cupy", "array_api_strict", "torch", "jax")
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


def _load_torch():
    try:
        import torch  # noqa: F401
        import array_api_compat.torch as xp
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'torch' is not installed ({e}); install it with: pip install torch"
        ) from None
    return xp, torch.device("cpu")


def _load_jax():
    try:
        import jax
        import jax.numpy as xp  # JAX's own namespace follows the standard (array-api-compat hands it back as is)
    except ImportError as e:
        raise BackendUnavailableError(
            f"backend 'jax' is not installed ({e}); install it with: pip install 'portacnn[jax]'"
        ) from None
    return xp, jax.devices()[0]


#: the dtypes JAX makes 32-bit (int32, float32, complex64) unless its 64-bit arrays are switched on
_JAX_64_BIT = frozenset({"int64", "uint64", "float64", "complex128"})


def jax_float64_enabled() -> bool:
    """Whether JAX computes in float64 (``jax_enable_x64``; without it, JAX makes float64 arrays float32)."""
    import jax

    return bool(jax.config.jax_enable_x64)


def wide_dtypes(xp) -> tuple:
    """``(int64, float64)`` of namespace ``xp``, for indices, counts and sums; ``(int32, float32)`` on JAX
    without 64-bit arrays switched on, where asking for the others gives those anyway, with a warning."""
    if getattr(xp, "__name__", "") == "jax.numpy" and not jax_float64_enabled():
        return xp.int32, xp.float32
    return xp.int64, xp.float64


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


def _cupy_sync():
    import cupy

    cupy.cuda.get_current_stream().synchronize()


_SPECS = {
    "numpy": _Spec(_load_numpy, np.asarray),
    "cupy": _Spec(_load_cupy, HOST_COPIES["cupy"], _cupy_sync),
    "array_api_strict": _Spec(_load_strict, HOST_COPIES["array_api_strict"]),
    "torch": _Spec(_load_torch, HOST_COPIES["torch"]),
    "jax": _Spec(_load_jax, HOST_COPIES["jax"]),
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
        if target is not None:
            self.check_dtype(target.name)
        source = namespace_name(x)
        if source == self.name:
            _check_kind(numpy_dtype(x.dtype), target, what)
            if source != "numpy" and x.device != self.device:
                x = _to_device(x, self.device)
            return x if target is None or x.dtype == self.dtype(target) else self.xp.astype(x, self.dtype(target))
        host = to_host(x, what)
        _check_kind(host.dtype, target, what)
        if target is not None:
            host = host.astype(target, copy=False)
        elif self.name == "jax" and host.dtype.kind in "iu" and host.dtype.itemsize == 8 and not jax_float64_enabled():
            _check_int32(host, what)  # JAX would wrap what int32 cannot hold
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
        if self.name == "jax":
            return getattr(self.device, "platform", None) == "cpu"
        return self.name == "torch" and getattr(self.device, "type", None) == "cpu"

    def dtype(self, dtype):
        """This namespace's dtype equal to ``dtype`` (a name or a dtype object of any library).

        JAX without ``jax_enable_x64`` has no 64-bit arrays (it would make them 32-bit, silently): asking it for
        one is a ValueError saying how to switch them on (:meth:`check_dtype`)."""
        name = numpy_dtype(dtype).name
        self.check_dtype(name)
        return _namespace_dtype(self.xp, self.name, name)

    def check_dtype(self, name: str) -> None:
        """A ValueError when this backend cannot hold dtype ``name`` as it is: 64-bit types on JAX without
        ``jax_enable_x64``, where JAX would silently make them 32-bit."""
        if self.name == "jax" and name in _JAX_64_BIT and not jax_float64_enabled():
            raise ValueError(f"backend 'jax' computes {name} only with 64-bit arrays switched on: set "
                             "JAX_ENABLE_X64=1 (or call jax.config.update('jax_enable_x64', True)) before using "
                             "JAX, or use float32")

    def __reduce__(self):
        """Pickled (and deep-copied) as its name and device: the namespace is a module, found again on load (a JAX
        device, which does not pickle, as its platform and id)."""
        if self.name == "jax":
            return (_jax_backend, (self.device.platform, self.device.id))
        return (get_backend, (self.name, self.device))

    def __deepcopy__(self, memo):
        return self  # immutable: a copied model computes on the same backend

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


def asarray_like(x, ref, what: str = "input"):
    """``x`` as an array of the same backend and device as the array ``ref`` (no copy when it already is);
    ``what`` names it in errors."""
    name = namespace_name(ref) or "numpy"
    if namespace_name(x) == name and (name == "numpy" or x.device == ref.device):
        return x
    return get_backend(name, device=ref.device if name != "numpy" else None).asarray(x, what=what)


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


def _jax_backend(platform: str, device_id: int) -> Backend:
    """The jax backend on JAX's device ``device_id`` of ``platform`` (what a pickled JAX model is loaded onto)."""
    be = get_backend("jax")
    import jax

    try:
        found = [d for d in jax.devices(platform) if d.id == device_id]
    except RuntimeError:  # JAX knows no such platform here (a model pickled on a GPU, loaded on a CPU machine)
        found = []
    if not found:
        raise BackendUnavailableError(f"backend 'jax' has no {platform} device {device_id} here (the model was saved "
                                      f"on it); load it with pc.load or move it with model.to('jax')")
    return get_backend(be, device=found[0])


def _check_int32(host: np.ndarray, what: str) -> None:
    """A ValueError when the 64-bit integers ``host`` hold values int32 cannot (JAX without 64-bit arrays wraps
    them silently)."""
    if host.size and (int(host.min()) < -2**31 or int(host.max()) >= 2**31):
        raise ValueError(f"{what} holds integers beyond int32 ({int(host.min())}..{int(host.max())}), which backend "
                         "'jax' holds only with 64-bit arrays switched on: set JAX_ENABLE_X64=1")


def _to_device(x, device):
    """``x`` moved to another device of its own library (peer copy on GPUs, no host round trip)."""
    return array_api_compat.to_device(x, device)


def check_environment() -> None:
    """Validate $PORTACNN_BACKEND (a bad name is reported as what it is, not by whatever first used it)."""
    name = os.environ.get(ENV_VAR)
    if name and name not in _SPECS:
        raise ValueError(f"environment variable {ENV_VAR}={name!r} is not a backend; valid names: "
                         f"{', '.join(KNOWN_BACKENDS)}")
