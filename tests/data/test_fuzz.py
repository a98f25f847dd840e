"""Property-based tests of portacnn.data: whatever bytes a data file holds, the loaders either
return well-formed arrays or raise DataError (a ValueError) -- never another exception.

CSV bodies are also checked differentially against a small pure-Python reference parser: same
arrays when the file is valid, DataError at the same line when it is not.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from portacnn import data
from portacnn.data import DataError, kaggle_csv

pytestmark = pytest.mark.slow  # property-based fuzzing of the readers: run by .ci/run, not by a plain pytest

FUZZ = settings(max_examples=int(os.environ.get("PORTACNN_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def idx_bytes(arr) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


RNG = np.random.default_rng(0)

X = RNG.integers(0, 256, (6, 3, 3), dtype=np.uint8)

Y = np.arange(6) % 10

VALID = {
    "images": idx_bytes(X),
    "labels": idx_bytes(Y),
    "csv": b"label,pixel0,pixel1,pixel2,pixel3\r\n" + b"".join(b"%d,%d,%d,%d,%d\r\n" % (i % 10, i, 2 * i, 255 - i, 7)
                                                          for i in range(8)),  # fmt: skip
}


def _npz_bytes():
    buf = io.BytesIO()
    np.savez_compressed(buf, x=X, y=Y)
    return buf.getvalue()


VALID["npz"] = _npz_bytes()


def check_images_labels(result, *, labels_required: bool, num_classes=10):
    images, labels = result
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8
    assert images.ndim == 3 or (images.ndim == 4 and images.shape[1] == 3)  # greyscale, or channels-first colour
    assert images.shape[0] > 0
    if labels_required:
        assert labels is not None
    if labels is not None:
        assert labels.dtype == np.int64 and labels.shape == (images.shape[0],)
        assert labels.min() >= 0 and labels.max() < num_classes


def only_data_errors(fn):
    """Run fn; DataError is fine (and must be a one-line ValueError), anything else propagates."""
    try:
        return fn()
    except DataError as e:
        assert isinstance(e, ValueError)
        assert "\n" not in str(e)
        return None


def mutate(blob: bytes, cut: int | None, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(blob)
    for pos, xor in flips:
        b[pos % len(b)] ^= xor
    if cut is not None:
        del b[cut % (len(b) + 1) :]
    return bytes(b)


mutations = st.tuples(
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=6),
)


@FUZZ
@given(blob=st.binary(max_size=600), gz=st.booleans())
@example(blob=b"", gz=False)
@example(blob=b"\x1f\x8b", gz=False)
@example(blob=b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", gz=False)
def test_idx_arbitrary_bytes(workdir, blob, gz):
    path = workdir / "arbitrary-images.gz"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    res = only_data_errors(lambda: data.load_idx(path))
    if res is not None:
        check_images_labels(res, labels_required=False)
    images_path = workdir / "valid-images"
    images_path.write_bytes(VALID["images"])
    res = only_data_errors(lambda: data.load_idx(images_path, path))  # the bytes as a labels file
    if res is not None:
        check_images_labels(res, labels_required=True)


@FUZZ
@given(
    ndim=st.integers(0, 4),
    dims=st.lists(st.integers(0, 7), min_size=4, max_size=4),
    extra=st.integers(-5, 5),
    dtype_byte=st.sampled_from([8, 8, 8, 9, 13]),
)
def test_idx_structured_headers(workdir, ndim, dims, extra, dtype_byte):
    dims = dims[:ndim]
    size = int(np.prod(dims)) if dims else 1
    payload = bytes(range(256)) * (size // 256 + 1)
    blob = bytes([0, 0, dtype_byte, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    blob += payload[: max(0, size + extra)]
    path = workdir / "structured.idx"
    path.write_bytes(blob)
    res = only_data_errors(lambda: data.load_idx(path))
    ok = ndim == 3 and dtype_byte == 8 and min(dims) > 0 and extra == 0
    assert (res is not None) == ok
    if ok:
        np.testing.assert_array_equal(res[0].ravel(), np.frombuffer(payload[:size], np.uint8))


@FUZZ
@given(which=st.sampled_from(["images", "labels"]), gz=st.booleans(), mut=mutations)
def test_idx_mutations(workdir, which, gz, mut):
    base = VALID[which]
    blob = mutate(gzip.compress(base) if gz else base, *mut)
    path = workdir / f"mutated-{which}.gz"
    path.write_bytes(blob)
    images_path = workdir / "valid-images"
    images_path.write_bytes(VALID["images"])
    if which == "images":
        for loader in (lambda: data.load_idx(path), lambda: data.load_any(path)):
            res = only_data_errors(loader)
            if res is not None:
                check_images_labels(res, labels_required=False)
    else:
        res = only_data_errors(lambda: data.load_idx(images_path, path))
        if res is not None:
            check_images_labels(res, labels_required=True)


@FUZZ
@given(blob=st.binary(max_size=600), gz=st.booleans(), with_header=st.booleans())
def test_csv_arbitrary_bytes(workdir, blob, gz, with_header):
    if with_header:
        blob = b"label,pixel0,pixel1,pixel2,pixel3\n" + blob
    path = workdir / "arbitrary.csv"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    res = only_data_errors(lambda: data.load_csv(path))
    if res is not None:
        check_images_labels(res, labels_required=True)
    for loader in (lambda: data.load_kannada_mnist("train", root=path), lambda: data.load_any(path)):
        res = only_data_errors(loader)
        if res is not None:
            check_images_labels(res, labels_required=False)


@FUZZ
@given(gz=st.booleans(), mut=mutations)
def test_csv_mutations(workdir, gz, mut):
    base = VALID["csv"]
    blob = mutate(gzip.compress(base) if gz else base, *mut)
    path = workdir / "mutated.csv"
    path.write_bytes(blob)
    res = only_data_errors(lambda: data.load_csv(path))
    if res is not None:
        check_images_labels(res, labels_required=True)


_CELL = re.compile(rb"\s*([+-]?[0-9]+)\s*")


def reference_csv(body: bytes, ncols: int, num_classes: int = 10):
    """Pure-Python reading of CSV data lines after the header (line 1): (labels, pixels) or error line."""
    labels, pixels = [], []
    for i, line in enumerate(body.split(b"\n"), start=2):
        row = line.strip()
        if not row:
            continue
        cells = row.split(b",")
        if len(cells) != ncols:
            return i
        vals = []
        for c, cell in enumerate(cells):
            m = _CELL.fullmatch(cell)
            if m is None:
                return i
            v = int(m.group(1))
            if (c == 0 and not 0 <= v < num_classes) or (c > 0 and not 0 <= v <= 255):
                return i
            vals.append(v)
        labels.append(vals[0])
        pixels.append(vals[1:])
    return labels, pixels


good_cell = st.integers(0, 255).map(lambda v: str(v).encode())

odd_cell = st.sampled_from([b"", b" 5", b"5 ", b"+3", b"-1", b"-0", b"256", b"1.0", b"1e2", b"abc", b"007",
                            b"0x1", b"99999999999999999999", b"\t9", b"\xff", b"12 3", b"\x0c4"])  # fmt: skip

cell = st.one_of(good_cell, good_cell, good_cell, good_cell, odd_cell)

label = st.one_of(st.integers(0, 9).map(lambda v: str(v).encode()), st.integers(0, 9).map(lambda v: str(v).encode()),
                  st.sampled_from([b"10", b"-1", b" 3", b"x"]))  # fmt: skip

row = st.one_of(
    st.tuples(label, st.lists(cell, min_size=4, max_size=4)).map(lambda t: b",".join([t[0], *t[1]])),
    st.lists(cell, min_size=0, max_size=7).map(b",".join),
)

eol = st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r\n \r\n"])

valid_cell = st.one_of(good_cell, good_cell, good_cell, st.sampled_from([b" 5", b"+3", b"007", b"-0", b"\t9 "]))

valid_row = st.tuples(st.integers(0, 9), st.lists(valid_cell, min_size=4, max_size=4)).map(
    lambda t: b",".join([str(t[0]).encode(), *t[1]])
)

rows = st.one_of(
    st.lists(st.tuples(row, eol), max_size=40),  # mostly invalid somewhere
    st.lists(st.tuples(valid_row, eol), max_size=40),  # valid, with the odd lenient cell
    st.lists(st.tuples(valid_row, eol), max_size=40).flatmap(  # valid but for one row
        lambda rs: st.tuples(st.integers(0, max(0, len(rs))), st.tuples(row, eol)).map(
            lambda t: rs[: t[0]] + [t[1]] + rs[t[0] :]
        )
    ),
)


@FUZZ
@given(body_rows=rows, gz=st.booleans(), chunk=st.sampled_from([8, 40, 1 << 20]), last_eol=st.booleans())
@example(body_rows=[(b"1,2,3,4,5", b"\n")] * 3, gz=False, chunk=8, last_eol=False)
def test_csv_differential_against_reference(workdir, body_rows, gz, chunk, last_eol):
    body = b"".join(r + e for r, e in body_rows)
    if not last_eol:
        body = body.rstrip(b"\r\n")
    blob = b"label,pixel0,pixel1,pixel2,pixel3\n" + body
    path = workdir / "diff.csv"
    path.write_bytes(gzip.compress(blob) if gz else blob)
    expected = reference_csv(body, ncols=5)
    saved = kaggle_csv._CSV_CHUNK_BYTES
    kaggle_csv._CSV_CHUNK_BYTES = chunk
    try:
        if isinstance(expected, int) or not expected[0]:
            with pytest.raises(DataError) as ei:
                data.load_csv(path)
            if isinstance(expected, int):
                assert ei.value.line == expected, str(ei.value)
                assert f"line {expected}:" in str(ei.value)
            else:
                assert "no data rows" in str(ei.value)
        else:
            images, labels = data.load_csv(path)
            np.testing.assert_array_equal(labels, expected[0])
            np.testing.assert_array_equal(images.reshape(len(images), 4), np.array(expected[1]))
            assert images.shape[1:] == (2, 2)
    finally:
        kaggle_csv._CSV_CHUNK_BYTES = saved


@FUZZ
@given(mut=mutations)
def test_npz_mutations(workdir, mut):
    path = workdir / "mutated.npz"
    path.write_bytes(mutate(VALID["npz"], *mut))
    res = only_data_errors(lambda: data.load_npz(path))
    if res is not None:
        check_images_labels(res, labels_required=False)
    for loader in (lambda: data.load_kannada_mnist("test", root=path), lambda: data.load_any(path)):
        res = only_data_errors(loader)
        if res is not None:
            check_images_labels(res, labels_required=False)


@FUZZ
@given(blob=st.binary(max_size=300))
def test_npz_arbitrary_bytes(workdir, blob):
    path = workdir / "arbitrary.npz"
    path.write_bytes(b"PK\x03\x04" + blob)
    res = only_data_errors(lambda: data.load_npz(path))
    if res is not None:
        check_images_labels(res, labels_required=False)


@FUZZ
@given(
    a=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64, np.uint8, np.int16, np.int64]),
        shape=st.sampled_from([(2, 3, 3), (1, 1, 2, 2), (3, 4), (2, 2, 2, 2)]),
    )
)
def test_preprocess_properties(a):
    shape_ok = a.ndim == 3 or (a.ndim == 4 and a.shape[1] == 1)
    if a.dtype.kind == "f":
        values_ok = bool(np.all(np.isfinite(a))) and a.min() >= 0 and a.max() <= 1
    else:
        values_ok = a.min() >= 0 and a.max() <= 255
    try:
        out = data.preprocess(a)
    except DataError:
        assert not (shape_ok and values_ok)
        return
    assert shape_ok and values_ok
    assert out.dtype == np.float32 and out.ndim == 4 and out.shape[1] == 1
    assert out.shape[0] == a.shape[0]
    assert np.all(out >= 0) and np.all(out <= 1)
    expected = a.astype(np.float32) / np.float32(255) if a.dtype.kind in "iu" else a.astype(np.float32)
    np.testing.assert_array_equal(out.reshape(expected.shape), expected)


def test_gzip_error_types_are_wrapped(workdir):
    """The exception families the loaders translate really are what gzip/zlib raise."""
    bad = bytearray(gzip.compress(VALID["images"]))
    bad[15] ^= 0xFF
    with pytest.raises((OSError, EOFError, zlib.error)):
        gzip.decompress(bytes(bad))
    path = workdir / "crc.gz"
    path.write_bytes(bytes(bad))
    with pytest.raises(DataError, match="gzip"):
        data.load_idx(path)
