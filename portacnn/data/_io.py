"""Opening and reading data files in bounded chunks: gzip recognised by content, never by name.

Owns the file checks (exists, is a regular file), :func:`_open_binary` (a plain or gunzipping binary
stream), :func:`_read_payload` (at most a given number of bytes, read :data:`_READ_CHUNK_BYTES` at a
time into an array that grows as the data arrive) and the translation of read and gzip errors into
:class:`~portacnn.data.errors.DataError`. The format readers build on these.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError, DataFileNotFoundError, _fail

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
_READ_CHUNK_BYTES = 1 << 20  # binary data are read (and inflated) at most this many bytes per call


def _check_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise _fail(path, "file not found", "check the path", cls=DataFileNotFoundError)
    if not p.is_file():
        raise _fail(path, "is not a regular file (a folder?)", "pass the path of a data file")
    return p


def _open_binary(path):
    """A binary stream of the (gunzipped, when compressed) content of ``path``."""
    p = _check_file(path)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise _fail(path, f"cannot open file ({e.strerror or e})") from e
    try:
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
    except OSError as e:
        f.close()
        raise _fail(path, f"cannot read file ({e.strerror or e})") from e
    if compressed:
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _read_error(path, e: Exception, compressed: bool) -> DataError:
    """The DataError for an exception raised while reading ``path`` (a gzip error when compressed)."""
    if compressed:
        return _fail(path, f"corrupt or truncated gzip data ({type(e).__name__}: {e})", "re-download the file")
    return _fail(path, f"cannot read file ({getattr(e, 'strerror', None) or e})")


def _read_payload(stream, nbytes: int) -> np.ndarray:
    """Up to ``nbytes`` bytes of ``stream`` as a new uint8 array (shorter only when the stream ends).

    Read in chunks of :data:`_READ_CHUNK_BYTES` into an array that grows as the data arrive, so a
    header that declares more than the stream holds costs no memory (``ndarray.resize`` remaps large
    blocks in place on Linux).
    """
    out = np.empty(min(nbytes, _READ_CHUNK_BYTES), dtype=np.uint8)
    got = 0
    while got < nbytes:
        if got == out.size:
            out.resize(min(nbytes, 2 * out.size), refcheck=False)
        with memoryview(out) as view:
            n = stream.readinto(view[got : min(out.size, got + _READ_CHUNK_BYTES)])
        if not n:
            break
        got += n
    if got < out.size:
        out.resize(got, refcheck=False)
    return out
