"""The fast-path seam: where a backend registers a faster implementation of a portable primitive.

Layers compute with the portable array-API primitives of :mod:`portacnn.kernels` (and, for a whole layer,
their own reference math). A backend may register a faster implementation here, and only here; it must
return what the portable one returns (to float rounding where BLAS sums in another order), and the tests run
every layer with the fast paths on and off. ``PORTACNN_PORTABLE=1`` switches all fast paths off.
"""

from __future__ import annotations

import os
from typing import Callable

from ..backend import namespace_name

_FAST_PATHS: dict[tuple[str, str], list[tuple[Callable, Callable | None]]] = {}


def register(backends, primitive: str, when: Callable[[], bool] | None = None):
    """Decorator: the function replaces ``primitive`` for each backend name in ``backends``; with ``when``, only
    while ``when()`` is true (compiled kernels: while their compiler is usable), the fast path registered before
    it serving otherwise."""
    names = (backends,) if isinstance(backends, str) else tuple(backends)

    def add(fn):
        for name in names:
            _FAST_PATHS.setdefault((name, primitive), []).insert(0, (fn, when))
        return fn

    return add


def portable_only() -> bool:
    """Whether ``$PORTACNN_PORTABLE`` switches every fast path off."""
    return os.environ.get("PORTACNN_PORTABLE", "") not in ("", "0")


def fast_path(x, primitive: str):
    """The fast implementation of ``primitive`` for ``x``'s backend, or None (then use the portable code)."""
    if not _FAST_PATHS or portable_only():
        return None
    for fn, when in _FAST_PATHS.get((namespace_name(x), primitive), ()):
        if when is None or when():
            return fn
    return None


def check_environment() -> None:
    value = os.environ.get("PORTACNN_PORTABLE", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"environment variable PORTACNN_PORTABLE must be 0 or 1; got {value!r}")
