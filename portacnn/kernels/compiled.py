"""The compiler behind the NumPy backend's compiled kernels: numba, loaded lazily, and whether it is usable.

Nothing here imports numba when ``portacnn`` is imported: :func:`numba_or_none` does, the first time a kernel
is asked for, and remembers the answer (a missing or broken numba is a reason string, and the portable code
runs). Kernels are compiled on their first call for each dtype and cached on disk (numba's ``cache=True``),
so a second process loads them instead of compiling again.

Determinism: every compiled reduction sums in a fixed order (per channel, or in fixed chunks of rows added
in chunk order), never in an order that depends on the thread count, so results repeat bit for bit.
``$PORTACNN_COMPILED=0`` switches the compiled kernels off alone (``PORTACNN_PORTABLE=1`` switches every fast
path off).
"""

from __future__ import annotations

import functools
import os

ENV_VAR = "PORTACNN_COMPILED"


def enabled() -> bool:
    """Whether ``$PORTACNN_COMPILED`` allows the compiled kernels (on unless set to 0)."""
    return os.environ.get(ENV_VAR, "") in ("", "1")


@functools.lru_cache(maxsize=None)
def _load():
    """(numba module, None) or (None, why not): imported once per process."""
    try:
        import numba
    except Exception as e:  # ImportError, or numba refusing this NumPy version
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"numba is not usable ({first}); install it with: pip install numba"
    return numba, None


def numba_or_none():
    """The numba module when compiled kernels may run, else None."""
    if not enabled():
        return None
    return _load()[0]


def status() -> str:
    """One line for ``portacnn info``: which kernels the NumPy backend runs, and why."""
    if not enabled():
        return f"portable (compiled kernels switched off by {ENV_VAR}=0)"
    numba, why = _load()
    if numba is None:
        return f"portable ({why})"
    return f"compiled with numba {numba.__version__} (compiled on first use, cached on disk)"


def check_environment() -> None:
    value = os.environ.get(ENV_VAR, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"environment variable {ENV_VAR} must be 0 or 1; got {value!r}")


def kernels():
    """The module of compiled kernels (:mod:`.numba_kernels`, imported on first use), or None when numba
    cannot run here or ``$PORTACNN_COMPILED=0``."""
    if numba_or_none() is None:
        return None
    return _kernels_module()


@functools.lru_cache(maxsize=None)
def _kernels_module():
    from . import numba_kernels

    return numba_kernels


def usable() -> bool:
    """Whether the compiled kernels run (what the seam asks before handing one out)."""
    return numba_or_none() is not None
