"""IDX files (the MNIST distribution format), gzip-compressed or plain: :func:`load_idx`, :func:`open_idx`
and :class:`IdxImages` (the images of a plain file, left on disk and read when sliced).

Compression is recognised by the gzip magic bytes ``1f 8b``, never by the file name. Layout: a
big-endian 4-byte magic ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 dimensions, then the
raw data, row-major. Only dtype ``0x08`` (unsigned byte) is supported. Images: magic 2051
(``0x00000803``), dims ``N, H, W``. Labels: magic 2049 (``0x00000801``), dims ``N``. The payload must
hold exactly ``prod(dims)`` bytes; truncated files and trailing bytes are both errors (a gzip stream is
inflated only up to the declared size plus one chunk, so a small file cannot inflate to gigabytes
first). The header's dimensions are checked against ``PORTACNN_MAX_DATA_BYTES`` and
``PORTACNN_MAX_IMAGE_SIDE`` before anything is allocated.
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path

import numpy as np

from . import limits
from ._checks import _check_image_side, _check_labels, _check_limit, _check_num_classes
from ._io import _GZIP_ERRORS, _READ_CHUNK_BYTES, _open_binary, _read_error, _read_payload
from .errors import DataError, _fail

_IDX_IMAGES_MAGIC = 0x00000803  # 2051
_IDX_LABELS_MAGIC = 0x00000801  # 2049
_IDX_DTYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
                    0x0D: "float32", 0x0E: "float64"}  # fmt: skip


def _dims_text(dims) -> str:
    return "x".join(str(d) for d in dims)


def _idx_header(stream, path, want_ndim: int, compressed: bool) -> tuple[list[int], int]:
    """Dimensions and header length of an IDX file, read from the start of ``stream`` and checked.

    The magic number, dtype and dimension count must be those of an IDX images (``want_ndim=3``) or
    labels (1) file, no dimension may be zero, and the declared payload must fit the limits.
    """
    kind = "images" if want_ndim == 3 else "labels"
    want_magic = _IDX_IMAGES_MAGIC if want_ndim == 3 else _IDX_LABELS_MAGIC
    gz_note = ""
    if str(path).lower().endswith(".gz") and not compressed:
        gz_note = " (note: the name ends in .gz but the content is not gzip-compressed)"
    head = stream.read(4)
    if len(head) < 4:
        raise _fail(path, f"truncated IDX header: {len(head)} bytes, need at least 4 for the magic number"
                    + gz_note, "re-download the file")  # fmt: skip
    magic = int.from_bytes(head, "big")
    if head[0] != 0 or head[1] != 0:
        raise _fail(path, f"not an IDX file: magic number 0x{magic:08X} should start with two zero bytes "
                    f"(expected 0x{want_magic:08X} = {want_magic} for an IDX {kind} file){gz_note}",
                    "check that this is an MNIST-format file")  # fmt: skip
    dtype_byte, ndim = head[2], head[3]
    if dtype_byte != 0x08:
        name = _IDX_DTYPE_NAMES.get(dtype_byte, "unknown")
        raise _fail(path, f"unsupported IDX dtype byte 0x{dtype_byte:02X} ({name}); only 0x08 (unsigned "
                    f"byte) is supported")  # fmt: skip
    if ndim != want_ndim:
        other = {1: " (this looks like an IDX labels file)", 3: " (this looks like an IDX images file)"}
        raise _fail(path, f"IDX file has {ndim} dimensions (magic 0x{magic:08X}) but an {kind} file needs "
                    f"{want_ndim} (magic 0x{want_magic:08X} = {want_magic}){other.get(ndim, '')}",
                    "check that images and labels files are not swapped")  # fmt: skip
    header = 4 + 4 * ndim
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise _fail(path, f"truncated IDX header: {4 + len(raw_dims)} bytes, need {header} for {ndim} "
                    f"dimensions", "re-download the file")  # fmt: skip
    dims = [int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim)]
    if any(d == 0 for d in dims):
        raise _fail(path, f"IDX header has a zero dimension ({_dims_text(dims)}); all dimensions must be > 0")
    if ndim == 3:
        _check_image_side(path, dims[1], dims[2])
    _check_limit(path, limits.MAX_DATA_BYTES, math.prod(dims), f"IDX header declares {_dims_text(dims)}")
    return dims, header


def _idx_size_error(path, dims, header: int, got: int, compressed: bool, *, more: bool = False) -> DataError:
    """The error for an IDX payload of ``got`` bytes (``more``: at least that many) that is not ``prod(dims)``."""
    expected = math.prod(dims)
    state = "decompressed data has" if compressed else "file has"
    if got < expected:
        return _fail(path, f"truncated IDX data: header says {_dims_text(dims)} = {expected} bytes but the "
                     f"{state} {got} after the {header}-byte header", "re-download the file")  # fmt: skip
    extra = f"more than {got - expected}" if more else f"{got - expected}"
    return _fail(path, f"{extra} trailing bytes after the IDX data: header says {_dims_text(dims)} = {expected} "
                 f"bytes but the {state} {'more than ' if more else ''}{got} after the {header}-byte header",
                 "the file is corrupt or not an IDX file; re-download it")  # fmt: skip


def _open_idx_stream(path, want_ndim: int):
    """``(stream, raw, compressed, dims, header)`` of an IDX file whose header has been read and checked.

    For a plain file the size must match the header exactly (nothing is read to find out); for a
    gzip file :func:`_read_idx_payload` checks it while reading. The caller closes ``stream`` and ``raw``.
    """
    stream, raw = _open_binary(path)
    compressed = stream is not raw
    try:
        size = os.fstat(raw.fileno()).st_size
        if size == 0:
            raise _fail(path, "file is empty (0 bytes)", "re-download or regenerate the file")
        try:
            dims, header = _idx_header(stream, path, want_ndim, compressed)
        except _GZIP_ERRORS as e:
            raise _read_error(path, e, compressed) from e
        if not compressed and size != header + math.prod(dims):
            raise _idx_size_error(path, dims, header, size - header, compressed)
    except BaseException:
        stream.close()
        raw.close()
        raise
    return stream, raw, compressed, dims, header


def _read_idx_payload(stream, path, dims, header: int, compressed: bool) -> np.ndarray:
    """The payload after the header, read in chunks; a gzip stream is inflated one chunk past it at most."""
    expected = math.prod(dims)
    try:
        data = _read_payload(stream, expected)
        rest = stream.read(_READ_CHUNK_BYTES) if compressed else b""  # the end of the stream, or too much
    except _GZIP_ERRORS as e:
        raise _read_error(path, e, compressed) from e
    if data.size != expected or rest:
        more = len(rest) == _READ_CHUNK_BYTES
        raise _idx_size_error(path, dims, header, data.size + len(rest), compressed, more=more)
    return data.reshape(dims)


def _read_idx(path, want_ndim: int) -> np.ndarray:
    """The whole payload of an IDX file, checked against its header."""
    stream, raw, compressed, dims, header = _open_idx_stream(path, want_ndim)
    with raw, stream:
        return _read_idx_payload(stream, path, dims, header, compressed)


def _idx_labels(labels_path, images_path, n: int, num_classes) -> np.ndarray:
    """The int64 labels of an IDX labels file that must hold ``n`` labels in ``0..num_classes-1``."""
    stream, raw, compressed, dims, header = _open_idx_stream(labels_path, 1)
    with raw, stream:
        if dims[0] != n:  # checked from the header, before any label is read
            raise _fail(labels_path, f"count mismatch: this labels file has {dims[0]} labels but the images "
                        f"file {images_path} has {n} images",
                        "check that both files belong to the same split")  # fmt: skip
        _check_limit(labels_path, limits.MAX_DATA_BYTES, 8 * n, f"{n} labels as int64: bytes")
        labels = _read_idx_payload(stream, labels_path, dims, header, compressed).astype(np.int64)
    _check_labels(labels, num_classes, labels_path)
    return labels


def load_idx(images_path, labels_path=None, *, num_classes: int | None = 10):
    """Load an IDX images file and, optionally, the matching IDX labels file.

    Either file may be gzip-compressed (detected by content). Returns ``(images, labels)``:
    ``uint8`` ``(N, H, W)`` and ``int64`` ``(N,)``, or ``None`` without ``labels_path``. Labels must
    lie in ``0..num_classes-1`` (``num_classes=None`` skips that check). Raises :class:`DataError`.
    """
    _check_num_classes(num_classes)
    images = _read_idx(images_path, 3)
    if labels_path is None:
        return images, None
    return images, _idx_labels(labels_path, images_path, images.shape[0], num_classes)


class IdxImages:
    """The uint8 images ``(N, H, W)`` of a plain IDX file, read from disk only when indexed.

    ``images[lo:hi]`` and ``images[i]`` read just those rows, so memory does not grow with the file
    (unlike a memory map, whose touched pages all count as resident); anything else (``np.asarray``,
    fancy indexing) reads the whole payload. Made by :func:`open_idx`, which has checked the header
    and the file size; a file that shrinks afterwards is a :class:`DataError` when read.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, path, shape, offset: int):
        self.path, self.shape, self.offset = Path(path), tuple(shape), offset

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"IdxImages({str(self.path)!r}, shape={self.shape})"

    def __getitem__(self, key):
        n = self.shape[0]
        if isinstance(key, slice) and key.indices(n)[2] == 1:
            lo, hi, _ = key.indices(n)
            return self._rows(lo, max(lo, hi))
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = operator.index(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {key} is out of bounds for {n} images")
            return self._rows(i, i + 1)[0]
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None):
        whole = self._rows(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Images ``lo..hi-1`` as a new writable array."""
        _, h, w = self.shape
        nbytes = (hi - lo) * h * w
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset + lo * h * w)
                data = _read_payload(f, nbytes)
        except OSError as e:
            raise _read_error(self.path, e, False) from e
        if data.size != nbytes:
            raise _fail(self.path, f"the file changed while it was being read: it now ends before image {hi - 1}",
                        "do not modify data files while portacnn reads them")  # fmt: skip
        return data.reshape(hi - lo, h, w)


def open_idx(images_path, labels_path=None, *, num_classes: int | None = 10):
    """Like :func:`load_idx`, but the images of a plain (not gzipped) file stay on disk.

    Returns ``(images, labels)`` where ``images`` is an :class:`IdxImages` for a plain file (its
    header and size are checked now, its pixels read when sliced) and a ``uint8`` array for a gzip
    file, which can only be read from the start. The labels are read and checked as by
    :func:`load_idx`. Raises :class:`DataError`.
    """
    _check_num_classes(num_classes)
    stream, raw, compressed, dims, header = _open_idx_stream(images_path, 3)
    with raw, stream:
        if compressed:
            images = _read_idx_payload(stream, images_path, dims, header, compressed)
        else:
            images = IdxImages(images_path, dims, header)
    if labels_path is None:
        return images, None
    return images, _idx_labels(labels_path, images_path, dims[0], num_classes)
