"""Conversions between array libraries: any library's dtype objects as NumPy dtypes, any array as a NumPy array.

Nothing here imports an array library that is not already loaded: a CuPy, torch or array_api_strict array can
only exist once its library has been imported, and these functions look the library up in ``sys.modules``.
"""

from __future__ import annotations

import sys

import numpy as np


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
        try:
            return np.dtype(dtype)
        except TypeError:  # an abstract class such as np.floating names no one dtype
            raise ValueError(f"{dtype!r} is not one dtype; use a concrete one such as 'float32'") from None
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


DTYPES = ("float32", "float64")


def float_dtype_name(dtype) -> str:
    """"float32" or "float64" for any spelling of those dtypes ("float32", np.float32, np.dtype("float64"),
    torch.float32, ...); anything else is a ValueError."""
    try:
        name = numpy_dtype(dtype).name
    except ValueError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return name


def _check_kind(source: np.dtype, target: np.dtype | None, what: str) -> None:
    """Refuse values that are not numbers, and casts that would silently drop information."""
    if source.kind not in "biufc":
        held = {"U": "strings", "S": "byte strings", "O": "Python objects (a ragged or mixed list?)"}
        raise ValueError(f"{what} holds {held.get(source.kind, f'{source} values')}, not numbers; pass a numeric array")
    if target is None:
        return
    if target.kind not in "biufc":
        raise ValueError(f"cannot convert {what} to {target}: arrays hold numbers (bool, int, float or complex)")
    if target.kind == "f" and source.kind not in "iuf":
        raise ValueError(f"{what} has dtype {source}; expected real numbers (int or float) to convert to {target}")
    if target.kind in "iu" and source.kind not in "biu":
        raise ValueError(f"{what} has dtype {source}; expected integers to convert to {target}")


def namespace_name(x) -> str | None:
    """Which known backend ``x`` belongs to, or None for non-arrays (without importing anything new)."""
    mod = type(x).__module__.split(".")[0]
    if mod == "numpy" and isinstance(x, np.ndarray):
        return "numpy"
    return _LIBRARIES.get(mod)


#: the top-level module of each known backend's array type (JAX's arrays are ``jaxlib``'s ``ArrayImpl``)
_LIBRARIES = {"cupy": "cupy", "array_api_strict": "array_api_strict", "torch": "torch", "jaxlib": "jax", "jax": "jax"}


def is_dask_array(x) -> bool:
    """Whether ``x`` is a Dask array (checked without importing Dask)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


def on_host(x) -> bool:
    """Whether ``x`` already lives in host memory, so that :func:`to_host` is a view, not a transfer
    (NumPy arrays, lists and other Python objects, CPU torch tensors)."""
    name = namespace_name(x)
    return (name in (None, "numpy") or (name == "torch" and x.device.type == "cpu")
            or (name == "jax" and x.device.platform == "cpu"))


def to_host(x, what: str = "input") -> np.ndarray:
    """Any backend's array (CuPy via ``.get()``, torch, array_api_strict on any device), a Dask array
    (computed), a Python sequence or anything else NumPy can read, as a NumPy array.

    What NumPy cannot read as one rectangular array (ragged lists, ...) is a ValueError naming ``what``.
    """
    name = namespace_name(x)
    if name == "numpy":
        return x
    if name is not None:
        return HOST_COPIES[name](x)
    if is_dask_array(x):  # computed first: its chunks may be device arrays (CuPy) that refuse numpy.asarray
        return to_host(x.compute(), what)
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{what} cannot be read as one array of numbers ({reason})") from None


#: how each library's arrays reach the host (CuPy refuses numpy.asarray; .get() waits for the current stream)
def _strict_to_numpy(x):
    import array_api_strict as xp

    return np.from_dlpack(x.to_device(xp.Device("CPU_DEVICE")))

def _torch_to_numpy(x):
    import torch

    x = x.detach().cpu().resolve_conj().resolve_neg()
    if x.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds every bfloat16 value exactly
        x = x.float()
    return x.numpy()

def _cupy_to_numpy(x):
    # CuPy refuses numpy.asarray(device_array); .get() copies to the host and waits for the current stream
    return x.get()


def _jax_to_numpy(x):
    # a read-only view of a CPU array's buffer (a copy from an accelerator); copied so that callers may write
    return np.array(x)


HOST_COPIES = {"cupy": _cupy_to_numpy, "array_api_strict": _strict_to_numpy, "torch": _torch_to_numpy,
               "jax": _jax_to_numpy}
