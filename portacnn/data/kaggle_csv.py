"""CSV files in the layout of the Kaggle "Kannada-MNIST" competition, plain or gzip-compressed: :func:`load_csv`.

(Named ``kaggle_csv`` so that it can never shadow the standard library's :mod:`csv`.)

The header is ``label,pixel0,...,pixel783`` (training layout; the first column holds the class) or
``id,pixel0,...,pixel783`` (test layout; the first column is a row id and there are no labels).
``pixel{i*W+j}`` is row ``i``, column ``j`` of the image. Any perfect-square number of pixel columns is
accepted (784 = 28 x 28 in the Kaggle files). Cells are decimal integers; Windows line endings, a UTF-8
byte-order mark and blank lines are accepted. Files are read and parsed in chunks of
:data:`_CSV_CHUNK_BYTES` bytes, so memory stays a small multiple of the resulting ``uint8`` array; a line
longer than ``PORTACNN_MAX_CSV_LINE_BYTES`` is an error naming its line number, and so is the row that
takes the pixels over ``PORTACNN_MAX_DATA_BYTES``.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterator

import numpy as np

from . import limits
from ._checks import _check_image_side, _check_num_classes
from ._io import _GZIP_ERRORS, _open_binary, _read_error
from .errors import DataError, _fail

_CSV_CHUNK_BYTES = 1 << 20  # CSV text is read and parsed in chunks of this many bytes
_MAX_DIGITS = 18  # longest cell the vectorised CSV parser handles (fits int64)


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


_AROUND_SEPARATORS = re.compile(rb"[ \t]*([,\n])[ \t]*")
_PLUS_SIGNS = re.compile(rb"(?<=[,\n])\+(?=[0-9])")


def _parse_rows_fast(rows, ncols, first, num_classes) -> np.ndarray | None:
    """:func:`_parse_plain` of the rows, and if that refuses them, of the rows with the padding the format
    allows removed (spaces around cells, a leading ``+``), so such files do not fall to the per-cell parser
    (about 25 times slower) chunk after chunk; ``None`` means "use the slow path"."""
    text = b"\n" + b"\n".join(rows)
    values = _parse_plain(text, len(rows), ncols, first, num_classes)
    if values is None:
        tidy = _PLUS_SIGNS.sub(b"", _AROUND_SEPARATORS.sub(rb"\1", text)).rstrip(b" \t")
        if tidy != text:
            values = _parse_plain(tidy, len(rows), ncols, first, num_classes)
    return values


def _parse_plain(text: bytes, nrows: int, ncols, first, num_classes) -> np.ndarray | None:
    """Vectorised parse of rows of plain unsigned decimal cells; ``None`` means "use the slow path".

    The rows are joined with newlines behind a leading newline, so every cell is preceded by exactly
    one separator byte; the value of a cell is assembled from its last digits by gathering at fixed
    offsets from the next separator. Anything unusual (wrong column counts, signs, spaces, letters,
    empty or very long cells, out-of-range values) returns ``None``; the slow path then parses the
    chunk cell by cell and reports the first problem with its line number.
    """
    buf = np.frombuffer(text, dtype=np.uint8)
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
                    max_rows = max_bytes // (npix + 8)  # the pixels, and the label as int64
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
