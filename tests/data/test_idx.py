"""Tests of portacnn.data.idx: IDX files, gzip or plain, read whole (load_idx) or left on disk (open_idx)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from datahelp import assert_data_error, idx_bytes, idx_header, small_set, write, write_labels

from portacnn import data
from portacnn.data import DataError


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, gz):
    x, y = small_set()
    xi = write(tmp_path / "imgs.idx", idx_bytes(x), gz)
    yi = write(tmp_path / "lbls.idx", idx_bytes(y), gz)
    images, labels = data.load_idx(xi, yi)
    assert images.dtype == np.uint8 and images.shape == (20, 5, 4)
    assert labels.dtype == np.int64 and labels.shape == (20,)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    assert images.flags.writeable
    images[0, 0, 0] = 1  # a writable array of its own
    only, none = data.load_idx(str(xi))
    assert none is None
    np.testing.assert_array_equal(only, x)


def test_gz_name_with_plain_content_and_plain_name_with_gzip_content(tmp_path):
    x, y = small_set()
    xi = write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(x), gz=False)
    yi = write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(y), gz=True)
    images, labels = data.load_idx(xi, yi)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def _valid_images():
    return idx_bytes(small_set()[0])


def _corrupt_gzip():
    blob = bytearray(gzip.compress(_valid_images()))
    for i in range(12, len(blob) - 8):
        blob[i] ^= 0x5A
    return bytes(blob)


MALFORMED_IMAGES = {
    "empty": (lambda: b"", False, "empty"),
    "truncated_magic": (lambda: b"\x00\x00", False, "truncated IDX header"),
    "truncated_header": (lambda: _valid_images()[:10], False, "truncated IDX header"),
    "truncated_payload": (lambda: _valid_images()[:-7], False, "truncated IDX data"),
    "truncated_payload_gz": (lambda: _valid_images()[:-7], True, "truncated IDX data"),
    "trailing_bytes": (lambda: _valid_images() + b"\x00\x01", False, "trailing bytes"),
    "junk": (lambda: b"this is not an IDX file at all", False, "not an IDX file"),
    "junk_gz": (lambda: b"this is not an IDX file at all", True, "not an IDX file"),
    "corrupt_gzip": (lambda: _corrupt_gzip(), False, "gzip"),
    "truncated_gzip": (lambda: gzip.compress(_valid_images())[:30], False, "gzip"),
    "gzip_magic_only": (lambda: b"\x1f\x8b", False, "gzip"),
    "wrong_magic": (lambda: b"\x12\x34" + _valid_images()[2:], False, "magic"),
    "wrong_dtype": (lambda: b"\x00\x00\x0d\x03" + _valid_images()[4:], False, "dtype"),
    "wrong_ndim_labels": (lambda: idx_bytes(np.zeros(5)), False, "dimensions"),
    "wrong_ndim_4": (lambda: idx_bytes(np.zeros((2, 1, 3, 3))), False, "dimensions"),
    "zero_dim": (lambda: idx_bytes(np.zeros((0, 3, 3))), False, "zero dimension"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_IMAGES))
def test_idx_malformed_images(tmp_path, case):
    make, gz, fragment = MALFORMED_IMAGES[case]
    path = write(tmp_path / f"bad-{case}-images.gz", make(), gz)
    assert_data_error(lambda: data.load_idx(path), path, fragment)


def test_idx_truncated_payload_message_has_sizes(tmp_path):
    x = np.zeros((3, 4, 5), np.uint8)
    path = write(tmp_path / "train-images.gz", idx_bytes(x)[:-10], gz=True)
    msg = assert_data_error(lambda: data.load_idx(path), path, "3x4x5 = 60 bytes", "50", "re-download")
    assert msg.startswith(str(path))


def test_idx_malformed_labels(tmp_path):
    x, y = small_set()
    xi = write(tmp_path / "images.idx", idx_bytes(x))
    cases = {
        "short": (idx_bytes(y[:-1]), "count mismatch"),
        "range": (idx_bytes(np.where(np.arange(20) == 3, 10, y)), "label 10 at index 3"),
        "images_as_labels": (idx_bytes(x), "dimensions"),
        "truncated": (idx_bytes(y)[:-1], "truncated"),
        "empty": (b"", "empty"),
    }
    for name, (payload, fragment) in cases.items():
        yi = write(tmp_path / f"labels-{name}.idx", payload)
        assert_data_error(lambda: data.load_idx(xi, yi), yi, fragment)


def test_idx_count_mismatch_names_both_files(tmp_path):
    x, y = small_set()
    xi = write(tmp_path / "a-images.idx", idx_bytes(x))
    yi = write(tmp_path / "b-labels.idx", idx_bytes(y[:7]))
    msg = assert_data_error(lambda: data.load_idx(xi, yi), yi, "7 labels", "20 images")
    assert "a-images.idx" in msg


def test_idx_num_classes_parameter(tmp_path):
    x, _ = small_set()
    y = np.arange(20) % 12
    xi = write(tmp_path / "images.idx", idx_bytes(x))
    yi = write(tmp_path / "labels.idx", idx_bytes(y))
    assert_data_error(lambda: data.load_idx(xi, yi), yi, "outside 0..9", "num_classes=10")
    _, labels = data.load_idx(xi, yi, num_classes=12)
    np.testing.assert_array_equal(labels, y)
    _, labels = data.load_idx(xi, yi, num_classes=None)
    np.testing.assert_array_equal(labels, y)
    with pytest.raises(ValueError):
        data.load_idx(xi, yi, num_classes=0)


def test_gz_idx_trailing_bytes_are_counted_exactly_when_few(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "trail-images.gz"
    path.write_bytes(gzip.compress(idx_header(2, 3, 3) + x.tobytes() + b"\x00" * 10))
    with pytest.raises(DataError, match=r"^\S*trail-images.gz: 10 trailing bytes .* 2x3x3 = 18 bytes"):
        data.load_idx(path)
    path.write_bytes(gzip.compress(idx_header(2, 3, 3) + x.tobytes()[:-1]))
    with pytest.raises(DataError, match="truncated IDX data: header says 2x3x3 = 18 bytes but the decompressed "
                                        "data has 17"):  # fmt: skip
        data.open_idx(path)


def test_open_idx_reads_rows_on_demand(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 4, 3), dtype=np.uint8)
    y = np.arange(50) % 12
    xi = tmp_path / "images-idx3-ubyte"
    xi.write_bytes(idx_header(50, 4, 3) + x.tobytes())
    yi = write_labels(tmp_path / "labels-idx1-ubyte", y)
    images, labels = data.open_idx(xi, yi, num_classes=12)
    assert isinstance(images, data.IdxImages)
    assert images.shape == (50, 4, 3) and len(images) == 50 and images.dtype == np.uint8
    np.testing.assert_array_equal(images[7:19], x[7:19])
    np.testing.assert_array_equal(images[-3:], x[-3:])
    np.testing.assert_array_equal(images[5], x[5])
    np.testing.assert_array_equal(images[np.int64(-1)], x[-1])
    np.testing.assert_array_equal(images[::2], x[::2])
    np.testing.assert_array_equal(images[[3, 1]], x[[3, 1]])
    np.testing.assert_array_equal(np.asarray(images), x)
    assert images[40:10].shape == (0, 4, 3)
    with pytest.raises(IndexError):
        images[50]
    np.testing.assert_array_equal(labels, y)
    with pytest.raises(DataError, match="label 10 at index 10 is outside 0..9"):
        data.open_idx(xi, yi)  # the default num_classes=10
    xi.write_bytes(xi.read_bytes()[:-12])  # the file shrinks after it was opened
    with pytest.raises(DataError, match="changed while it was being read"):
        images[45:50]


def test_open_idx_reads_a_gzip_file_whole_and_open_any_dispatches(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz = tmp_path / "images.gz"
    gz.write_bytes(gzip.compress(idx_header(2, 3, 4) + x.tobytes()))
    images, labels = data.open_idx(gz)
    assert isinstance(images, np.ndarray) and labels is None
    np.testing.assert_array_equal(images, x)
    plain = tmp_path / "images-plain"
    plain.write_bytes(idx_header(2, 3, 4) + x.tobytes())
    assert isinstance(data.open_any(plain)[0], data.IdxImages)
    npz = tmp_path / "set.npz"
    np.savez(npz, x=x, y=np.array([1, 2]))
    images, labels = data.open_any(npz)
    np.testing.assert_array_equal(images, x)
    assert labels.tolist() == [1, 2]
