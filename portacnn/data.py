"""Dataset loading for portacnn: MNIST-style IDX files, Kaggle CSV files, ``.npz`` archives.

Pure NumPy; nothing here depends on the array backends. Every loader returns host arrays
``(images, labels)`` with ``images`` a ``uint8`` array of shape ``(N, H, W)`` (0 = background,
255 = ink) and ``labels`` an ``int64`` array of shape ``(N,)`` or ``None`` when the source has no
labels. :func:`preprocess` turns images into the ``float32`` ``(N, 1, H, W)`` batches in ``[0, 1]``
that the models take.

Every problem with an input file raises :class:`DataError`, a subclass of :class:`ValueError`,
whose one-line message names the file, the problem and, where it helps, what to do about it. A
missing file raises :class:`DataFileNotFoundError`, which is both a :class:`DataError` and a
:class:`FileNotFoundError`.

:func:`load_any` picks the IDX, CSV or NPZ reader from a file's content (never its name).
:func:`open_idx` and :func:`open_any` are the same readers except that the images of a plain IDX file
stay on disk (:class:`IdxImages`, read when sliced), for inputs larger than memory should hold.

Limits
------
Files are read in chunks of bytes and never whole: a reader checks the sizes a file declares (IDX
dimensions, ``.npy`` shapes, CSV line lengths) against the limits of :mod:`portacnn.limits` before it
allocates, and stops decompressing at the declared size, so memory stays near the size of the
result and a file that declares or inflates to more than a limit is a one-line :class:`DataError`
naming the limit and the environment variable that raises it (``PORTACNN_MAX_DATA_BYTES``,
``PORTACNN_MAX_IMAGE_SIDE``, ``PORTACNN_MAX_CSV_LINE_BYTES``).

Formats
-------
IDX (the MNIST distribution format), gzip-compressed or plain. Compression is recognised by the
gzip magic bytes ``1f 8b``, never by the file name. Layout: a big-endian 4-byte magic
``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 dimensions, then the raw data, row-major.
Only dtype ``0x08`` (unsigned byte) is supported. Images: magic 2051 (``0x00000803``), dims
``N, H, W``. Labels: magic 2049 (``0x00000801``), dims ``N``. The payload must hold exactly
``prod(dims)`` bytes; truncated files and trailing bytes are both errors (a gzip stream is inflated
only up to the declared size plus one chunk, so a small file cannot inflate to gigabytes first).

CSV, the layout of the Kaggle "Kannada-MNIST" competition (plain or gzip-compressed). The header is
``label,pixel0,...,pixel783`` (training layout; the first column holds the class) or
``id,pixel0,...,pixel783`` (test layout; the first column is a row id and there are no labels).
``pixel{i*W+j}`` is row ``i``, column ``j`` of the image. Any perfect-square number of pixel columns
is accepted (784 = 28 x 28 in the Kaggle files). Cells are decimal integers; Windows line endings,
a UTF-8 byte-order mark and blank lines are accepted. Files are read and parsed in chunks of bytes, so
memory stays a small multiple of the resulting ``uint8`` array; a line longer than
``PORTACNN_MAX_CSV_LINE_BYTES`` is an error naming its line number.

NPZ: a NumPy ``.npz`` archive (read with ``allow_pickle=False``) holding the images under ``x``,
``images`` or ``X`` (else ``arr_0``) and optionally the labels under ``y``, ``labels`` or ``Y``
(else ``arr_1``). Images may be ``(N, H, W)``, ``(N, 1, H, W)`` or flattened ``(N, H*W)`` with a
square ``H*W``, of any integer dtype with values in ``0..255``. The archive is read member by member
in chunks: the sizes its ``.npy`` headers declare must match the zip directory and fit the data
limit before anything is inflated.

Dataset
-------
A copy of Kannada-MNIST (60,000 training and 10,000 test images of the handwritten Kannada digits
0-9, 28 x 28, in IDX format) ships inside the package in ``portacnn/datasets/kannada_mnist/``;
:func:`load_kannada_mnist` reads it when no ``root`` is given. See the README.md in that folder for
provenance (the training images were regenerated from the author's published scans) and checksums.
Cite the dataset as:

    Prabhu, Vinay Uday. "Kannada-MNIST: A new handwritten digits dataset for the Kannada language."
    arXiv preprint arXiv:1908.01242 (2019).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import math
import operator
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "DataFileNotFoundError",
    "EMBEDDED_DATA_DIR",
    "IdxImages",
    "embedded_data_dir",
    "find_idx_pair",
    "load_any",
    "load_csv",
    "load_folder_pair",
    "load_idx",
    "load_kannada_mnist",
    "load_npz",
    "open_any",
    "open_idx",
    "preprocess",
    "tutorial_split",
]


def _import_limits():
    """:mod:`portacnn.limits`; when this file is loaded on its own, the ``limits.py`` beside it."""
    if __package__:
        return importlib.import_module(f"{__package__}.limits")
    spec = importlib.util.spec_from_file_location("portacnn_limits", Path(__file__).with_name("limits.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as importlib's recipe does (dataclasses look the module up)
    spec.loader.exec_module(module)
    return module


limits = _import_limits()

EMBEDDED_DATA_DIR = Path(__file__).resolve().parent / "datasets" / "kannada_mnist"
"""Folder of the Kannada-MNIST copy shipped inside the package."""

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_IDX_IMAGES_MAGIC = 0x00000803  # 2051
_IDX_LABELS_MAGIC = 0x00000801  # 2049
_IDX_DTYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
                    0x0D: "float32", 0x0E: "float64"}  # fmt: skip
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
_CSV_CHUNK_BYTES = 1 << 20  # CSV text is read and parsed in chunks of this many bytes
_READ_CHUNK_BYTES = 1 << 20  # binary data are read (and inflated) at most this many bytes per call
_MAX_DIGITS = 18  # longest cell the vectorised CSV parser handles (fits int64)
_NON_IDX_SUFFIXES = (".csv", ".csv.gz", ".npz", ".npy", ".md", ".txt", ".json", ".zip", ".png",
                     ".jpg", ".py", ".ipynb", ".html", ".pdf", ".tar", ".tar.gz", ".tgz")  # fmt: skip


class DataError(ValueError):
    """A data file is missing, unreadable or malformed, or data are outside the allowed range.

    ``path`` is the offending file (or ``None``) and ``line`` the 1-based line number for CSV
    problems (or ``None``).
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, line: int | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A data file or folder does not exist (catchable as ValueError and as FileNotFoundError)."""


def _fail(path, problem: str, hint: str | None = None, *, line: int | None = None, cls=DataError):
    where = f"{path}: line {line}: " if line is not None else f"{path}: "
    message = where + problem + (f" -- {hint}" if hint else "")
    return cls(" ".join(message.splitlines()), path=path, line=line)


def _check_num_classes(num_classes) -> None:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):  # fmt: skip
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")


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


def _check_limit(path, limit, amount: int, what: str, *, line: int | None = None) -> None:
    """Raise DataError when ``amount`` (the ``what`` a file declares) is over ``limit`` (a limits.Limit)."""
    value = limit.get()
    if amount > value:
        raise _fail(path, f"{what} = {amount} {limit.unit}, over the limit of {limit.text(value)} set by "
                    f"{limit.env}", limit.hint(amount), line=line)  # fmt: skip


def _check_image_side(path, height: int, width: int) -> None:
    """Raise DataError when an image side is over ``PORTACNN_MAX_IMAGE_SIDE``."""
    _check_limit(path, limits.MAX_IMAGE_SIDE, max(height, width), f"images of {height}x{width} pixels: side")


# ----------------------------------------------------------------------------------------------
# IDX


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


def _check_labels(labels: np.ndarray, num_classes, path) -> None:
    if num_classes is None or labels.size == 0:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(path, f"label {int(labels[i])} at index {i} is outside 0..{num_classes - 1} "
                    f"(num_classes={num_classes}); {int(bad.sum())} labels are out of range",
                    "check the file or pass a larger num_classes")  # fmt: skip


def _idx_labels(labels_path, images_path, n: int, num_classes) -> np.ndarray:
    """The int64 labels of an IDX labels file that must hold ``n`` labels in ``0..num_classes-1``."""
    labels = _read_idx(labels_path, 1).astype(np.int64)
    if labels.shape[0] != n:
        raise _fail(labels_path, f"count mismatch: this labels file has {labels.shape[0]} labels but the images "
                    f"file {images_path} has {n} images",
                    "check that both files belong to the same split")  # fmt: skip
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


# ----------------------------------------------------------------------------------------------
# CSV

_CELL_RE = re.compile(rb"\s*([+-]?[0-9]+)\s*")


def _csv_lines(stream, path) -> Iterator[list[bytes]]:
    """Lists of the lines of ``stream`` (without their newline), read :data:`_CSV_CHUNK_BYTES` at a time.

    A line longer than ``PORTACNN_MAX_CSV_LINE_BYTES`` is a DataError naming its line number, raised
    once the lines before it have been yielded (so an earlier bad row is reported first); gzip errors
    become DataError too.
    """
    max_line = limits.MAX_CSV_LINE_BYTES.get()
    tail, done = b"", 0  # the unfinished last line; the number of lines yielded so far
    while True:
        try:
            block = stream.read(_CSV_CHUNK_BYTES)
        except _GZIP_ERRORS as e:
            raise _read_error(path, e, isinstance(stream, gzip.GzipFile)) from e
        if not block:
            break
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        too_long = next((i for i, line in enumerate(lines) if len(line) > max_line), None)
        if too_long is not None:
            lines = lines[:too_long]
        if lines:
            yield lines
            done += len(lines)
        if too_long is not None or len(tail) > max_line:
            raise _line_too_long(path, done + 1, max_line)
    if tail:
        yield [tail]


def _line_too_long(path, lineno: int, max_line: int) -> DataError:
    """The error for line ``lineno``, longer than ``max_line`` bytes."""
    limit = limits.MAX_CSV_LINE_BYTES
    return _fail(path, f"line is longer than {limit.text(max_line)}, the limit set by {limit.env} (a CSV row "
                 f"of 784 pixels takes about 3 KB)", limit.hint(), line=lineno)  # fmt: skip


def _show(cell: bytes, limit: int = 40) -> str:
    text = cell.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _parse_header(line: bytes, lineno: int, path):
    expected = "'label,pixel0,...,pixel783' (training layout) or 'id,pixel0,...,pixel783' (test layout)"
    if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(path, f"header is not text: {_show(line)}; expected {expected}", line=lineno,
                    hint="is this really a CSV file?") from None  # fmt: skip
    names = [n.strip().strip('"').strip() for n in text.split(",")]
    first = names[0].lower() if names else ""
    npix = len(names) - 1
    ok = first in ("label", "id") and npix >= 1
    ok = ok and all(n == f"pixel{i}" for i, n in enumerate(names[1:]))
    side = int(round(npix**0.5)) if npix > 0 else 0
    if not ok:
        hint = None
        if _CELL_RE.fullmatch(line.split(b",")[0]):
            hint = "the first line looks like data; add the header line"
        raise _fail(path, f"unexpected CSV header {_show(line, 60)}; expected {expected}", hint,
                    line=lineno)  # fmt: skip
    if side * side != npix:
        raise _fail(path, f"CSV header has {npix} pixel columns, which is not a square image size "
                    f"(784 = 28x28 for Kannada-MNIST)", line=lineno)  # fmt: skip
    return first, npix, side


def _parse_rows_slow(rows, linenos, ncols, first, num_classes, path) -> np.ndarray:
    """Cell-by-cell parse of a chunk that the fast path refused; raises at the first bad cell."""
    out = np.empty((len(rows), ncols), dtype=np.int64)
    for r, (row, lineno) in enumerate(zip(rows, linenos)):
        cells = row.split(b",")
        if len(cells) != ncols:
            raise _fail(path, f"expected {ncols} comma-separated columns ({first} + {ncols - 1} pixels, as in "
                        f"the header) but found {len(cells)}", line=lineno)  # fmt: skip
        for c, cell in enumerate(cells):
            name = first if c == 0 else f"pixel{c - 1}"
            m = _CELL_RE.fullmatch(cell)
            if m is None:
                what = "empty cell" if not cell.strip() else f"non-numeric value {_show(cell)}"
                raise _fail(path, f"column {c + 1} ({name}): {what}; every cell must be a decimal integer",
                            line=lineno)  # fmt: skip
            v = int(m.group(1))
            if c == 0:
                if first == "label" and num_classes is not None and not 0 <= v < num_classes:
                    raise _fail(path, f"column 1 (label): label {v} is outside 0..{num_classes - 1} "
                                f"(num_classes={num_classes})", line=lineno)  # fmt: skip
                if not -(2**63) <= v < 2**63:
                    raise _fail(path, f"column 1 ({first}): value {v} does not fit in int64", line=lineno)
            elif not 0 <= v <= 255:
                raise _fail(path, f"column {c + 1} ({name}): pixel value {v} is outside 0..255", line=lineno)
            out[r, c] = v
    return out


def _parse_rows_fast(rows, ncols, first, num_classes) -> np.ndarray | None:
    """Vectorised parse of rows of plain unsigned decimal cells; ``None`` means "use the slow path".

    The rows are joined with newlines behind a leading newline, so every cell is preceded by exactly
    one separator byte; the value of a cell is assembled from its last digits by gathering at fixed
    offsets from the next separator. Anything unusual (wrong column counts, signs, spaces, letters,
    empty or very long cells, out-of-range values) returns ``None``; the slow path then parses the
    chunk cell by cell and reports the first problem with its line number.
    """
    nrows = len(rows)
    buf = np.frombuffer(b"\n" + b"\n".join(rows), dtype=np.uint8)
    digits = buf - np.uint8(ord("0"))  # ',' and '\n' (and every other non-digit) wrap to values > 9
    is_sep = digits > 9
    seps = np.flatnonzero(is_sep)
    if seps.size != nrows * ncols:
        return None
    sep_bytes = np.take(buf, seps)
    is_nl = sep_bytes == ord("\n")
    if not is_nl[::ncols].all() or np.count_nonzero(is_nl) != nrows:
        return None  # a row with the wrong number of cells
    if np.count_nonzero(sep_bytes == ord(",")) != seps.size - nrows:
        return None  # some other non-digit byte
    digits *= ~is_sep  # separators now read as digit 0
    index_dtype = np.int32 if buf.size < 2**31 - 1 else np.int64
    ends = np.empty(seps.size, dtype=index_dtype)  # one past the last digit of each cell
    ends[:-1] = seps[1:]
    ends[-1] = buf.size
    lengths = ends - seps.astype(index_dtype) - 1
    longest = int(lengths.max())
    if int(lengths.min()) == 0 or longest > _MAX_DIGITS:
        return None
    value_dtype = np.int32 if longest <= 9 else np.int64
    ends -= 1
    values = np.take(digits, ends).astype(value_dtype)
    for k in range(1, longest):
        ends -= 1  # the k-th digit from the right; for k = 1 a one-digit cell reads its separator (0)
        part = np.take(digits, ends).astype(value_dtype)
        if k >= 2:
            part *= lengths > k
        part *= value_dtype(10**k)
        values += part
    values = values.reshape(nrows, ncols)
    if values[:, 1:].max(initial=0) > 255:
        return None
    if first == "label" and num_classes is not None and values[:, 0].max(initial=0) >= num_classes:
        return None
    return values


def load_csv(path, num_classes: int | None = 10, *, return_ids: bool = False):
    """Load a Kaggle-layout Kannada-MNIST CSV file (plain or gzip-compressed).

    Returns ``(images, labels)``: ``uint8`` ``(N, S, S)`` (28 x 28 for the Kaggle files) and ``int64``
    ``(N,)`` for the training layout (``label,pixel0,...``) or ``None`` for the test layout
    (``id,pixel0,...``). With ``return_ids=True`` returns ``(images, labels, ids)`` where ``ids`` is
    the ``int64`` id column of a test-layout file (``None`` for the training layout). The text is read
    and parsed in chunks of bytes, never as one big list of Python ints. Raises :class:`DataError`
    naming the 1-based line number of the first bad row, of a line over the line-length limit, or of
    the row that takes the pixels over the data limit.
    """
    _check_num_classes(num_classes)
    max_bytes = limits.MAX_DATA_BYTES.get()
    stream, raw = _open_binary(path)
    compressed = stream is not raw
    try:
        first = None
        ncols = npix = side = 0
        lineno = nrows = 0
        # Rows go straight into one uint8 buffer. For a plain file its capacity is an upper bound on
        # the row count (a row takes at least 2 bytes per column) whose untouched tail never becomes
        # resident; for gzip it grows geometrically; neither goes past the data limit. ndarray.resize
        # reallocates in place (on Linux, large blocks are remapped, not copied), so the peak stays
        # near the final array.
        pixels = np.empty((0, 0), dtype=np.uint8)
        first_chunks: list[np.ndarray] = []
        for lines in _csv_lines(stream, path):
            rows: list[bytes] = []
            linenos: list[int] = []
            for line in lines:
                lineno += 1
                row = line.strip()
                if not row:
                    continue
                if first is None:
                    first, npix, side = _parse_header(row, lineno, path)
                    _check_image_side(path, side, side)
                    ncols = npix + 1
                    max_rows = max_bytes // npix
                    cap = 1024 if compressed else max(1, os.fstat(raw.fileno()).st_size // (2 * ncols - 1))
                    pixels = np.empty((min(cap, max_rows), npix), dtype=np.uint8)
                    continue
                rows.append(row)
                linenos.append(lineno)
            if not rows:
                continue
            values = _parse_rows_fast(rows, ncols, first, num_classes)
            if values is None:
                values = _parse_rows_slow(rows, linenos, ncols, first, num_classes, path)
            k = values.shape[0]
            if nrows + k > max_rows:
                raise _fail(path, f"more than {max_rows} rows of {side}x{side} pixels = {max_rows * npix} bytes, "
                            f"over the limit of {limits.MAX_DATA_BYTES.text(max_bytes)} set by "
                            f"{limits.MAX_DATA_BYTES.env}", limits.MAX_DATA_BYTES.hint(),
                            line=linenos[max_rows - nrows])  # fmt: skip
            if nrows + k > pixels.shape[0]:
                pixels.resize((min(max_rows, max(2 * pixels.shape[0], nrows + k)), npix), refcheck=False)
            pixels[nrows : nrows + k] = values[:, 1:]
            nrows += k
            first_chunks.append(values[:, 0].astype(np.int64))
            del values, rows, linenos
    finally:
        stream.close()
        raw.close()
    if first is None:
        raise _fail(path, "file is empty (no header line)" if lineno == 0 else "file has only blank lines",
                    "expected a header 'label,pixel0,...,pixel783' followed by data rows")  # fmt: skip
    if nrows == 0:
        raise _fail(path, "no data rows after the header", "the file is empty or truncated")
    pixels.resize((nrows, npix), refcheck=False)
    images = pixels.reshape(nrows, side, side)
    column = np.concatenate(first_chunks)
    labels, ids = (column, None) if first == "label" else (None, column)
    if return_ids:
        return images, labels, ids
    return images, labels


# ----------------------------------------------------------------------------------------------
# NPZ


def _pick_key(keys, preferred, fallback):
    for k in preferred:
        if k in keys:
            return k
    return fallback if fallback in keys else None


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(fp, path, key: str, member_size: int, used: int):
    """``(shape, fortran_order, dtype, nbytes)`` from the ``.npy`` header at the start of ``fp``.

    The array must not hold Python objects, its ``nbytes`` plus the ``used`` bytes of arrays already
    read must fit the data limit, and its data must fill the rest of the member exactly
    (``member_size`` comes from the zip directory), so a forged shape allocates nothing.
    """
    version = np.lib.format.read_magic(fp)
    if version not in _NPY_HEADER_READERS:
        raise _fail(path, f"array {key!r} has .npy format version {version[0]}.{version[1]}; versions 1.0 "
                    f"and 2.0 are supported", "save with numpy.savez(path, x=images, y=labels)")  # fmt: skip
    shape, fortran_order, dtype = _NPY_HEADER_READERS[version](fp)
    if dtype.hasobject:
        raise _fail(path, f"cannot read .npz archive: array {key!r} holds Python objects (dtype {dtype})",
                    "object arrays are refused (no pickle); store plain integer arrays")  # fmt: skip
    if any(d < 0 for d in shape):
        raise _fail(path, f"array {key!r} has a negative dimension in its shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    what = f"array {key!r} declares shape {shape} of {dtype}"
    if used:
        what = f"the arrays declare {used} + {nbytes} bytes ({what})"
    _check_limit(path, limits.MAX_DATA_BYTES, used + nbytes, what)
    stored = member_size - fp.tell()
    if stored != nbytes:
        problem = "is truncated" if stored < nbytes else "has data past the array"
        raise _fail(path, f"array {key!r} {problem}: its header declares shape {shape} of {dtype} = {nbytes} "
                    f"bytes but the archive member holds {stored}", "re-create the .npz file")  # fmt: skip
    return shape, fortran_order, dtype, nbytes


def _read_npy(zf: zipfile.ZipFile, name: str, path, key: str, used: int = 0) -> np.ndarray:
    """Array ``key`` (member ``name``) of an open archive, inflated in chunks (see :func:`_npy_header`)."""
    info = zf.getinfo(name)
    with zf.open(info) as fp:
        shape, fortran_order, dtype, nbytes = _npy_header(fp, path, key, info.file_size, used)
        data = _read_payload(fp, nbytes)
        if data.size != nbytes or fp.read(1):  # reading to the end also checks the member's CRC
            raise _fail(path, f"array {key!r}: the archive member does not hold the {nbytes} bytes its header "
                        f"declares", "re-create the .npz file")  # fmt: skip
    if dtype.itemsize == 0:
        return np.empty(shape, dtype=dtype)
    array = data.view(dtype)
    return array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)


def load_npz(path, num_classes: int | None = 10):
    """Load images (and labels, when present) from a ``.npz`` archive, without pickle.

    Images are read from key ``x``, ``images`` or ``X`` (else ``arr_0``); labels from ``y``,
    ``labels`` or ``Y`` (else ``arr_1``), or ``None`` when absent. Returns ``(images, labels)`` like
    :func:`load_idx`. The two arrays together may declare at most ``PORTACNN_MAX_DATA_BYTES``; each
    is inflated in chunks, only up to what its header declares. Raises :class:`DataError`.
    """
    _check_num_classes(num_classes)
    p = _check_file(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from e
    if not head:
        raise _fail(path, "file is empty (0 bytes)", "re-create the .npz file")
    if head != _ZIP_MAGIC:
        raise _fail(path, "not an .npz archive (no zip signature)", "save with numpy.savez(path, x=..., y=...)")
    try:
        with zipfile.ZipFile(p) as zf:
            names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}  # keys as numpy.load names them
            keys = list(names)
            xk = _pick_key(keys, ("x", "images", "X"), "arr_0")
            yk = _pick_key(keys, ("y", "labels", "Y"), "arr_1")
            if xk is None:
                raise _fail(path, f"no images array in the archive (found keys {keys}); expected 'x' or "
                            f"'images'", "save with numpy.savez(path, x=images, y=labels)")  # fmt: skip
            images = _read_npy(zf, names[xk], path, xk)
            labels = None if yk is None else _read_npy(zf, names[yk], path, yk, used=images.nbytes)
    except DataError:
        raise
    except Exception as e:  # zipfile / numpy.lib.format raise many types on malformed archives
        raise _fail(path, f"cannot read .npz archive ({type(e).__name__}: {e})",
                    "object arrays are refused (no pickle); store plain integer arrays") from e  # fmt: skip
    images = _validate_image_array(images, path, xk)
    if labels is not None:
        labels = _validate_label_array(labels, path, yk, images.shape[0], num_classes)
    return images, labels


def _validate_image_array(a: np.ndarray, path, key) -> np.ndarray:
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.integer)):
        dt = getattr(a, "dtype", type(a).__name__)
        raise _fail(path, f"array {key!r} has dtype {dt}; images must be integers in 0..255 (uint8)",
                    "store raw uint8 images; use preprocess() for scaling")  # fmt: skip
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        side = int(round(a.shape[1] ** 0.5))
        if side * side != a.shape[1] or a.shape[1] == 0:
            raise _fail(path, f"array {key!r} has shape {a.shape}; a flattened image array needs a square "
                        f"number of columns (784 = 28x28)")  # fmt: skip
        a = a.reshape(a.shape[0], side, side)
    if a.ndim != 3:
        raise _fail(path, f"array {key!r} has shape {a.shape}; expected (N, H, W), (N, 1, H, W) or (N, H*W)")
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise _fail(path, f"array {key!r} has shape {a.shape}; it holds no images")
    _check_image_side(path, a.shape[1], a.shape[2])
    if a.dtype != np.uint8:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise _fail(path, f"array {key!r} has values in {lo}..{hi}; images must be in 0..255")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


def _validate_label_array(y: np.ndarray, path, key, n: int, num_classes) -> np.ndarray:
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        dt = getattr(y, "dtype", type(y).__name__)
        raise _fail(path, f"array {key!r} has dtype {dt}; labels must be integers")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _fail(path, f"array {key!r} has shape {y.shape}; labels must be 1-D (N,)")
    if y.shape[0] != n:
        raise _fail(path, f"count mismatch: {n} images but {y.shape[0]} labels in array {key!r}")
    if np.issubdtype(y.dtype, np.unsignedinteger) and y.dtype.itemsize == 8 and y.size and y.max() >= 2**63:
        raise _fail(path, f"array {key!r} has labels too large for int64")
    y = y.astype(np.int64)
    _check_labels(y, num_classes, path)
    return y


# ----------------------------------------------------------------------------------------------
# Folders, the embedded default, the tutorial split


def embedded_data_dir() -> Path:
    """The folder of the Kannada-MNIST copy shipped inside the package."""
    return EMBEDDED_DATA_DIR


def _is_idx_candidate(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and not name.startswith(".") and not name.endswith(_NON_IDX_SUFFIXES)


def _is_images_name(name: str) -> bool:
    return "images" in name or "idx3" in name


def _is_labels_name(name: str) -> bool:
    return "labels" in name or "idx1" in name


def _pick_one(folder, candidates: list[Path], what: str, pattern: str) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise _fail(folder, f"no {what} file found (looked for file names matching {pattern})",
                    "name the files like train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz")  # fmt: skip
    names = ", ".join(sorted(c.name for c in candidates))
    raise _fail(folder, f"{len(candidates)} files could be the {what} file ({names})",
                "keep exactly one (move the others elsewhere) or pass the files explicitly")  # fmt: skip


def _list_folder(folder) -> list[Path]:
    p = Path(folder)
    if not p.exists():
        raise _fail(folder, "folder not found", "check the path", cls=DataFileNotFoundError)
    if not p.is_dir():
        raise _fail(folder, "is not a folder")
    try:
        return sorted(c for c in p.iterdir() if _is_idx_candidate(c))
    except OSError as e:
        raise _fail(folder, f"cannot list folder ({e.strerror or e})") from e


def find_idx_pair(folder, split: str | None = None) -> tuple[Path, Path]:
    """Paths ``(images, labels)`` of the one IDX images file and one IDX labels file in ``folder``.

    Images files are those whose name contains ``images`` or ``idx3``, labels files ``labels`` or
    ``idx1`` (any prefix, any case, gzip or plain; CSV/NPZ/text files are ignored). With ``split``
    (``"train"`` or ``"test"``) only names containing ``train`` (respectively ``t10k`` or ``test``)
    count. Raises :class:`DataError` when zero or several files match.
    """
    files = _list_folder(folder)
    tokens = {None: ("",), "train": ("train",), "test": ("t10k", "test")}[split]
    files = [f for f in files if any(t in f.name.lower() for t in tokens)]
    where = f"*{'|'.join(tokens)}*" if split else "*"
    images = _pick_one(folder, [f for f in files if _is_images_name(f.name.lower())],
                       f"{split + ' ' if split else ''}images", f"{where}images* or {where}idx3*")  # fmt: skip
    labels = _pick_one(folder, [f for f in files if _is_labels_name(f.name.lower())],
                       f"{split + ' ' if split else ''}labels", f"{where}labels* or {where}idx1*")  # fmt: skip
    return images, labels


def load_folder_pair(folder, num_classes: int | None = 10):
    """Load the one IDX images file and one IDX labels file found in ``folder`` (see :func:`find_idx_pair`).

    Returns ``(images, labels)`` like :func:`load_idx`.
    """
    images_path, labels_path = find_idx_pair(folder)
    return load_idx(images_path, labels_path, num_classes=num_classes)


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


def load_kannada_mnist(split: str = "train", root=None, num_classes: int | None = 10):
    """Load Kannada-MNIST as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000 images, the ``t10k`` files).
    ``root=None`` reads the copy embedded in the package (:data:`EMBEDDED_DATA_DIR`). Otherwise
    ``root`` may be a folder holding IDX files for the split (names of any prefix that contain
    ``train`` / ``t10k`` or ``test`` and ``images`` / ``idx3`` or ``labels`` / ``idx1``, e.g.
    ``train-images-idx3-ubyte.gz`` or ``X_kannada_MNIST_train-idx3-ubyte.gz``), a single CSV file in
    the Kaggle layout, or an ``.npz`` archive; a single file is returned whole, whatever ``split``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None:
        folder = embedded_data_dir()
        if not folder.is_dir():
            raise _fail(folder, "the embedded Kannada-MNIST copy is missing (package installed without its "
                        "data files?)", "reinstall portacnn or pass root= pointing to the IDX files",
                        cls=DataFileNotFoundError)  # fmt: skip
        root = folder
    rp = Path(root)
    if rp.is_dir():
        images_path, labels_path = find_idx_pair(rp, split)
        return load_idx(images_path, labels_path, num_classes=num_classes)
    if _sniff(rp) == "idx":
        raise _fail(root, "is a single IDX file; pass the folder holding both the images and the labels file")
    return load_any(rp, num_classes=num_classes)


def tutorial_split(seed: int = 0, per_class_train: int = 600, per_class_test: int = 100, root=None,
                   num_classes: int = 10):  # fmt: skip
    """The tutorial protocol: small disjoint train and held-out sets, both from the TRAINING split.

    For each class ``c`` in ``0..num_classes-1`` (in order), a permutation of the indices of class
    ``c`` is drawn from ``numpy.random.default_rng(seed)``; its first ``per_class_train`` entries go
    to the training set and the next ``per_class_test`` to the held-out set. Each set is then
    shuffled with the same generator. Returns ``((x_train, y_train), (x_test, y_test))`` with RAW
    ``uint8`` images ``(N, 28, 28)`` and ``int64`` labels; pass the images through
    :func:`preprocess` before feeding a model. ``root`` is passed to :func:`load_kannada_mnist`.
    """
    if per_class_train < 0 or per_class_test < 0:
        raise ValueError("per_class_train and per_class_test must be >= 0")
    images, labels = load_kannada_mnist("train", root=root, num_classes=num_classes)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        need = per_class_train + per_class_test
        if idx.size < need:
            raise DataError(f"class {c} has only {idx.size} training images; the split needs {need} "
                            f"({per_class_train} train + {per_class_test} held out)")  # fmt: skip
        perm = rng.permutation(idx)
        train_idx.append(perm[:per_class_train])
        test_idx.append(perm[per_class_train:need])
    tr = rng.permutation(np.concatenate(train_idx))
    te = rng.permutation(np.concatenate(test_idx))
    return (images[tr], labels[tr]), (images[te], labels[te])


# ----------------------------------------------------------------------------------------------
# Preprocessing


def preprocess(images) -> np.ndarray:
    """Images -> ``float32`` ``(N, 1, H, W)`` in ``[0, 1]``.

    Integer input (``uint8`` or any integer dtype with values in ``0..255``) of shape ``(N, H, W)``
    or ``(N, 1, H, W)`` is divided by 255 in float32. Float input must already be in ``[0, 1]`` and
    finite; it is only cast to float32. Raises :class:`DataError` on NaN/inf or out-of-range values.
    """
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif not (a.ndim == 4 and a.shape[1] == 1):
        raise DataError(f"preprocess: expected images of shape (N, H, W) or (N, 1, H, W), got {a.shape}")
    out = np.empty(a.shape, dtype=np.float32)
    if a.dtype == np.uint8:
        np.divide(a, np.float32(255), out=out, dtype=np.float32)
        return out
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
            raise DataError(f"preprocess: integer images must be in 0..255, got {int(a.min())}..{int(a.max())}")
        np.divide(a, np.float32(255), out=out, dtype=np.float32, casting="unsafe")
        return out
    if np.issubdtype(a.dtype, np.floating):
        nonfinite = int(a.size - np.count_nonzero(np.isfinite(a)))
        if nonfinite:
            nan = int(np.count_nonzero(np.isnan(a)))
            raise DataError(f"preprocess: {nonfinite} non-finite values in the images ({nan} NaN, "
                            f"{nonfinite - nan} inf)")  # fmt: skip
        if a.size and (float(a.min()) < 0.0 or float(a.max()) > 1.0):
            raise DataError(f"preprocess: float images must already be in [0, 1], got "
                            f"{float(a.min())}..{float(a.max())}; pass uint8 images (0..255) to have them "
                            f"scaled")  # fmt: skip
        out[...] = a
        return out
    raise DataError(f"preprocess: unsupported image dtype {a.dtype}; expected uint8, integer or float")
