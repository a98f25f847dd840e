"""Tests of portacnn.data.npz: .npz archives read member by member, without pickle."""

from __future__ import annotations

import numpy as np
import pytest
from datahelp import assert_data_error, npy_bytes, small_set, write, write_npz, write_sparse_npz

from portacnn import data
from portacnn.data import DataError, npz


@pytest.mark.parametrize(
    ("keys", "shape"),
    [(("x", "y"), (8, 5, 5)), (("images", "labels"), (8, 1, 5, 5)), (("X", "Y"), (8, 25))],
)
def test_npz_layouts(tmp_path, keys, shape):
    x, y = small_set(n=8, h=5, w=5)
    path = tmp_path / "set.npz"
    np.savez(path, **{keys[0]: x.reshape(shape), keys[1]: y.astype(np.uint8)})
    images, labels = data.load_npz(path)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_npz_positional_images_only_and_wide_ints(tmp_path):
    x, y = small_set(n=8)
    p1 = tmp_path / "pos.npz"
    np.savez_compressed(p1, x.astype(np.int64), y)
    images, labels = data.load_npz(p1)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    p2 = tmp_path / "only.npz"
    np.savez(p2, x=x)
    images, labels = data.load_npz(p2)
    assert labels is None


def test_npz_rejects_object_arrays_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    x = np.empty((2, 2, 2), dtype=object)
    x[...] = 1
    np.savez(path, x=x, y=np.array([0, 1]))
    assert_data_error(lambda: data.load_npz(path), path, "cannot read .npz", "pickle")


@pytest.mark.parametrize(
    ("arrays", "fragments"),
    [
        ({"x": np.zeros((4, 3, 3)), "y": np.zeros(4, np.int64)}, ["dtype float64"]),
        ({"x": np.full((4, 3, 3), 300), "y": np.zeros(4, np.int64)}, ["0..255"]),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(3, np.int64)}, ["count mismatch"]),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.full(4, 10)}, ["label 10"]),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros((4, 2), np.int64)}, ["1-D (N,) or (N, 1)"]),
        ({"x": np.zeros((4, 3, 5, 3), np.uint8)}, ["reads as channels-first", "x.transpose(0, 3, 1, 2)"]),
        ({"x": np.zeros((4, 5, 5, 4), np.uint8)}, ["4 channels (RGBA?)"]),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(4)}, ["labels must be integers"]),
        ({"x": np.zeros((4, 7), np.uint8)}, ["square"]),
        ({"x": np.zeros((4, 2, 3, 5), np.uint8)}, ["expected (N, H, W)"]),
        ({"x": np.zeros((0, 3, 3), np.uint8)}, ["no images"]),
        ({"z": np.zeros((4, 3, 3), np.uint8)}, ["no images array", "'z'", "x_train, y_train, x_test, y_test"]),
        ({"x_train": np.zeros((4, 3, 3), np.uint8), "y_train": np.zeros(4, np.uint8), "x_test": np.zeros((2, 3, 3))},
         ["Keras-style archive without y_test", "found keys ['x_train', 'y_train', 'x_test']",
          "wanted x_train, y_train, x_test, y_test"]),
        ({"x_train": np.zeros((4, 3, 3), np.uint8), "x": np.zeros((4, 3, 3), np.uint8)},
         ["without y_train, x_test, y_test"]),
    ],
)
def test_npz_invalid(tmp_path, arrays, fragments):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert_data_error(lambda: data.load_npz(path), path, *fragments)


def test_npz_not_a_zip(tmp_path):
    path = write(tmp_path / "junk.npz", b"hello")
    assert_data_error(lambda: data.load_npz(path), path, "not an .npz")
    path = write(tmp_path / "empty.npz", b"")
    assert_data_error(lambda: data.load_npz(path), path, "empty")
    path = write(tmp_path / "cut.npz", (lambda p: (np.savez(p, x=np.zeros((3, 2, 2))), p.read_bytes())[1])(
        tmp_path / "tmp.npz")[:60])  # fmt: skip
    assert_data_error(lambda: data.load_npz(path), path)


def test_npz_member_sizes_must_match_their_headers(tmp_path):
    good = npy_bytes((2, 2, 2), payload=bytes(8))
    path = write_npz(tmp_path / "past.npz", {"x.npy": good + bytes(100)})
    with pytest.raises(DataError, match=r"array 'x' has data past the array: .* = 8 bytes but the archive member "
                                        r"holds 108"):  # fmt: skip
        data.load_npz(path)
    path = write_npz(tmp_path / "pair.npz", {"x.npy": good, "y.npy": npy_bytes((2,), "<i8", bytes(16))})
    images, labels = data.load_npz(path)
    assert images.shape == (2, 2, 2) and labels.tolist() == [0, 0]


def test_npz_fortran_order_and_big_endian_arrays(tmp_path):
    x = np.asfortranarray(np.arange(2 * 3 * 3, dtype=">i4").reshape(2, 3, 3))
    path = tmp_path / "fortran.npz"
    np.savez(path, x=x, y=np.array([0, 1], dtype=">u2"))
    images, labels = data.load_npz(path)
    np.testing.assert_array_equal(images, x)
    assert images.dtype == np.uint8 and labels.tolist() == [0, 1]


def test_npz_object_header_is_refused_before_reading(tmp_path):
    path = write_npz(tmp_path / "obj.npz", {"x.npy": npy_bytes((2,), "|O", b"\x80\x04junk")})
    with pytest.raises(DataError, match="cannot read .npz archive: array 'x' holds Python objects.*pickle"):
        data.load_npz(path)


# -- refused from the .npy headers, before any data are read -----------------------------------------------------
# each archive declares up to ~900 MB (sparse on disk) that fits PORTACNN_MAX_DATA_BYTES; what its headers say
# is enough to refuse it, so reading the data (hundreds of MB for nothing) is a failure of the property
FROM_HEADERS = [
    ({"x.npy": ((1, 30000, 30000), "|u1")}, ["30000x30000", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((1, 1, 30000, 30000), "|u1")}, ["30000x30000", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((1, 30000 * 30000), "|u1")}, ["30000x30000", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((10, 8193, 10000), "|u1")}, ["8193x10000", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((100, 100, 8193), "<u2")}, ["100x8193", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((2, 9000, 100, 3), "|u1")}, ["9000x100", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((2, 3, 100, 9000), "|u1")}, ["100x9000", "PORTACNN_MAX_IMAGE_SIDE"]),
    ({"x.npy": ((2, 3, 5000, 3), "|u1")}, ["(2, 3, 5000, 3)", "channels-first", "channels-last"]),
    ({"x.npy": ((2, 5000, 5000, 4), "|u1")}, ["4 channels (RGBA?)"]),
    ({"x.npy": ((1, 10000, 10000), "<f8")}, ["dtype float64", "integers in 0..255"]),
    ({"x.npy": ((800, 1000, 1000), "|b1")}, ["dtype bool", "integers in 0..255"]),
    ({"x.npy": ((1, 2, 20000, 20000), "|u1")}, ["shape (1, 2, 20000, 20000)", "expected (N, H, W)"]),
    ({"x.npy": ((20000, 20000), "|u1")}, ["shape (20000, 20000)", "square"]),
    ({"x.npy": ((900_000_000,), "|u1")}, ["shape (900000000,)", "expected (N, H, W)"]),
    ({"x.npy": ((0, 30000, 30000), "|u1")}, ["no images"]),
    ({"x.npy": ((10, 28, 28), "|u1"), "y.npy": ((100_000_000,), "<f8")}, ["dtype float64", "labels must be integers"]),
    ({"x.npy": ((10, 28, 28), "|u1"), "y.npy": ((10, 10_000_000), "<i8")}, ["shape (10, 10000000)", "1-D"]),
]


@pytest.mark.parametrize("members, fragments", FROM_HEADERS, ids=[
    "-".join(f"{shape}{descr}" for shape, descr in m.values()) for m, _ in FROM_HEADERS])
def test_npz_refused_from_the_headers_before_any_data_are_read(tmp_path, monkeypatch, members, fragments):
    path = write_sparse_npz(tmp_path / "big.npz", members)

    def never(stream, nbytes):  # the property: not one byte of data read for an archive the headers condemn
        raise AssertionError(f"read {nbytes} bytes of data before refusing the archive")

    real = npz._read_payload  # a small images array is read first; then the labels' header condemns them
    monkeypatch.setattr(npz, "_read_payload", lambda stream, n: real(stream, n) if n <= 7840 else never(stream, n))
    assert_data_error(lambda: data.load_npz(path), path, *fragments)


# -- colour and Keras-style archives ------------------------------------------------------------------------------
def _keras_cifar(path, n_train=5, n_test=3, classes=100):
    """A Keras CIFAR-style archive: channels-last uint8 images, labels of shape (N, 1)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 4, 6, 3), dtype=np.uint8),
              "y_train": rng.integers(0, classes, (n_train, 1)).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 4, 6, 3), dtype=np.uint8),
              "y_test": rng.integers(0, classes, (n_test, 1)).astype(np.uint8)}  # fmt: skip
    np.savez(path, **arrays)
    return arrays


def test_keras_archive_splits_channels_last_to_first(tmp_path):
    path = tmp_path / "cifar.npz"
    arrays = _keras_cifar(path)
    arrays["y_train"][0, 0] = 57  # a CIFAR-100 label
    np.savez(path, **arrays)
    for split in ("train", "test"):
        images, labels = data.load_npz(path, num_classes=None, split=split)
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        assert images.shape == (len(x), 3, 4, 6) and images.dtype == np.uint8 and images.flags.c_contiguous
        np.testing.assert_array_equal(images, x.transpose(0, 3, 1, 2))
        assert images[1, 2, 3, 5] == x[1, 3, 5, 2]  # blue channel of the bottom-right pixel
        assert labels.dtype == np.int64 and labels.tolist() == y[:, 0].tolist()
    assert data.load_npz(path, num_classes=None, split="train")[1][0] == 57
    with pytest.raises(DataError, match="label 57 at index 0 is outside 0..9"):
        data.load_npz(path, split="train")
    assert npz.is_keras_npz(path) and not npz.is_keras_npz(tmp_path / "nowhere.npz")
    msg = assert_data_error(lambda: data.load_npz(path), path, "holds a train and a test split",
                            "split='train' or split='test'")  # fmt: skip
    assert "x_train, y_train, x_test, y_test" in msg
    with pytest.raises(ValueError, match="split must be 'train', 'test' or None"):
        data.load_npz(path, split="val")


def test_keras_grey_and_plain_colour_archives(tmp_path):
    x, y = small_set(n=6, h=5, w=5)
    grey = tmp_path / "mnist.npz"
    np.savez(grey, x_train=x, y_train=y.astype(np.uint8), x_test=x[:2], y_test=y[:2])
    images, labels = data.load_npz(grey, split="test")
    assert images.shape == (2, 5, 5)  # greyscale stays (N, H, W)
    np.testing.assert_array_equal(images, x[:2])
    assert not npz.is_keras_npz(write(tmp_path / "text.npz", b"not a zip"))
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=x[..., None], y=y)  # (N, H, W, 1): greyscale
    assert data.load_npz(plain, split="test")[0].shape == (6, 5, 5)  # split ignored by a plain archive
    assert not npz.is_keras_npz(plain)
    rgb = np.random.default_rng(3).integers(0, 256, (4, 3, 5, 6)).astype(np.int32)
    np.savez(plain, x=rgb, y=y[:4])
    images, labels = data.load_npz(plain)
    assert images.dtype == np.uint8 and images.shape == (4, 3, 5, 6)
    np.testing.assert_array_equal(images, rgb)
    np.savez(plain, x=rgb.transpose(0, 2, 3, 1) + 1)
    assert_data_error(lambda: data.load_npz(plain), plain, "values in 1..256")


def test_colour_archive_counts_its_channels_against_the_data_limit(tmp_path, monkeypatch):
    path = tmp_path / "colour.npz"
    np.savez(path, x=np.zeros((10, 32, 32, 3), np.uint8))  # 30720 bytes
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "16K")
    assert_data_error(lambda: data.load_npz(path), path, "shape (10, 32, 32, 3)", "30720 bytes",
                      "PORTACNN_MAX_DATA_BYTES=30K")  # fmt: skip
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "30K")
    assert data.load_npz(path)[0].shape == (10, 3, 32, 32)
