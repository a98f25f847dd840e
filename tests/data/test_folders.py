"""Tests of portacnn.data.folders: finding the IDX images and labels files of a folder (or of one split)
by their names."""

from __future__ import annotations

import numpy as np
import pytest
from datahelp import _synthetic_split, assert_data_error, idx_bytes, write

from portacnn import data


@pytest.mark.parametrize(
    "names",
    [
        {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")},
        {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
        {"train": ("X_kannada_MNIST_train-idx3-ubyte.gz", "y_kannada_MNIST_train-idx1-ubyte.gz"),
         "test": ("X_kannada_MNIST_test-idx3-ubyte.gz", "y_kannada_MNIST_test-idx1-ubyte.gz")},
        {"train": ("kmnist-Train-Images.gz", "kmnist-train-labels.bin"),
         "test": ("kmnist-test-images.gz", "kmnist-TEST-labels.bin")},
    ],
    ids=["mnist-gz", "mnist-plain", "prabhu", "custom"],
)  # fmt: skip
def test_load_kannada_mnist_from_folder(tmp_path, names):
    sets = {"train": _synthetic_split(30, 1), "test": _synthetic_split(10, 2)}
    for split, (xn, yn) in names.items():
        x, y = sets[split]
        write(tmp_path / xn, idx_bytes(x), gz=xn.endswith(".gz"))
        write(tmp_path / yn, idx_bytes(y), gz=yn.endswith(".gz"))
    (tmp_path / "README.md").write_text("labels images train test")  # ignored: not an IDX file
    (tmp_path / "train.csv").write_text("label,pixel0\n")  # ignored as well
    for split, (x, y) in sets.items():
        images, labels = data.load_kannada_mnist(split, root=tmp_path)
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, y)
        images, labels = data.load_kannada_mnist(split, root=str(tmp_path))
        np.testing.assert_array_equal(images, x)


def test_load_kannada_mnist_folder_errors(tmp_path):
    x, y = _synthetic_split(10, 0)
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(x), gz=True)
    assert_data_error(lambda: data.load_kannada_mnist("train", root=tmp_path), tmp_path, "no train labels")
    assert_data_error(lambda: data.load_kannada_mnist("test", root=tmp_path), tmp_path, "no test images")
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(y), gz=True)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(x))
    msg = assert_data_error(lambda: data.load_kannada_mnist("train", root=tmp_path), tmp_path, "2 files")
    assert "train-images-idx3-ubyte.gz" in msg
    with pytest.raises(ValueError, match="split"):
        data.load_kannada_mnist("validation")
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError):
        data.load_kannada_mnist("train", root=missing)
    single = tmp_path / "train-images-idx3-ubyte"
    assert_data_error(lambda: data.load_kannada_mnist("train", root=single), single, "single IDX file")


def test_load_folder_pair(tmp_path):
    x, y = _synthetic_split(12, 3)
    write(tmp_path / "eval-images.gz", idx_bytes(x), gz=True)
    assert_data_error(lambda: data.load_folder_pair(tmp_path), tmp_path, "no labels file")
    write(tmp_path / "eval-labels.gz", idx_bytes(y), gz=True)
    images, labels = data.load_folder_pair(tmp_path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    assert data.find_idx_pair(tmp_path) == (tmp_path / "eval-images.gz", tmp_path / "eval-labels.gz")
    write(tmp_path / "other-labels-idx1-ubyte", idx_bytes(y))
    assert_data_error(lambda: data.load_folder_pair(tmp_path), tmp_path, "2 files", "other-labels")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_data_error(lambda: data.load_folder_pair(empty), empty, "no images file")
    assert_data_error(lambda: data.load_folder_pair(tmp_path / "eval-images.gz"), "eval-images.gz", "not a folder")
