"""Data files of any supported kind, recognised by their content (never their name): :func:`load_any`
and :func:`open_any` pick the IDX, CSV or NPZ reader from a file's first bytes (after gunzip).
"""

from __future__ import annotations

import gzip

from ._io import _GZIP_ERRORS, _GZIP_MAGIC, _ZIP_MAGIC, _check_file
from .errors import _fail
from .idx import load_idx, open_idx
from .kaggle_csv import load_csv
from .npz import load_npz


def _sniff(path) -> str:
    """'npz', 'idx' or 'csv' from the first bytes of a file (after gunzip)."""
    p = _check_file(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
            if head[:2] == _GZIP_MAGIC:
                f.seek(0)
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    head = g.read(4)
    except _GZIP_ERRORS as e:
        raise _fail(path, f"corrupt or truncated gzip data ({type(e).__name__}: {e})",
                    "re-download the file") from e  # fmt: skip
    if head == _ZIP_MAGIC:
        return "npz"
    if head[:2] == b"\x00\x00":  # IDX magic; CSV text never starts with NUL bytes
        return "idx"
    return "csv"


def data_kind(path) -> str:
    """What a data file is: ``"cifar"`` for a ``.bin`` file (CIFAR's binary format has no magic number: its name
    is all there is), else ``"npz"``, ``"idx"`` or ``"csv"`` from its first bytes (after gunzip)."""
    if str(path).lower().endswith(".bin"):
        return "cifar"
    return _sniff(path)


def load_any(path, num_classes: int | None = 10):
    """Load a single data file of any supported kind, recognised by its content (not its name).

    A ``.npz`` archive (:func:`load_npz`), an IDX images file (:func:`load_idx`; labels ``None``) or
    a CSV file (:func:`load_csv`), each plain or gzip-compressed. Returns ``(images, labels)`` with
    ``labels`` ``None`` when the file holds none. Raises :class:`DataError`.
    """
    kind = _sniff(path)
    if kind == "npz":
        return load_npz(path, num_classes=num_classes)
    if kind == "idx":
        return load_idx(path, num_classes=num_classes)
    return load_csv(path, num_classes=num_classes)


def open_any(path, num_classes: int | None = 10):
    """Like :func:`load_any`, but the images of a plain IDX file stay on disk (see :func:`open_idx`)."""
    if _sniff(path) == "idx":
        return open_idx(path, num_classes=num_classes)
    return load_any(path, num_classes=num_classes)
