"""Tests of portacnn.data.catalogue: the embedded Kannada-MNIST copy, load_kannada_mnist and the
tutorial split. The tests that compare with ../shared/data skip when that folder is absent."""

from __future__ import annotations

import gzip
import hashlib
import re
import time

import numpy as np
import pytest
from datahelp import SHARED, _synthetic_split, csv_text, idx_bytes, write

from portacnn import data
from portacnn.data import DataError

DECOMPRESSED_SHA256 = {
    "train-images-idx3-ubyte": "105351b61538741814301e54ee5cfdac7464c0e2554e2a9967c63ef7ceaf7558",
    "train-labels-idx1-ubyte": "42d8a31792fb59dcec85b8e5b62bd03598c1a96f4edffe6f6a3e95daac9319ef",
    "t10k-images-idx3-ubyte": "be3a7f7fd24b3eb62f28ab1e3f9e5a380738e87000f99417c14f94ca89616cf4",
    "t10k-labels-idx1-ubyte": "2a4fb3eec0877aa3d4ab80d8f59374733af9b2b2966e8be0e50efe715f443a4d",
}


def test_embedded_files_present_and_checksums_match_readme():
    folder = data.embedded_data_dir()
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "arXiv:1908.01242" in readme
    for name, digest in DECOMPRESSED_SHA256.items():
        assert re.search(rf"\|\s*{re.escape(name)}\s*\|\s*{digest}\s*\|", readme), name
        blob = gzip.decompress((folder / f"{name}.gz").read_bytes())
        assert hashlib.sha256(blob).hexdigest() == digest, name
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.gz" for n in DECOMPRESSED_SHA256] + ["README.md"]
    )


@pytest.mark.parametrize(("split", "n", "prefix"), [("train", 60000, "train"), ("test", 10000, "t10k")])
def test_embedded_default(split, n, prefix):
    t0 = time.perf_counter()
    images, labels = data.load_kannada_mnist(split)
    elapsed = time.perf_counter() - t0
    print(f"load_kannada_mnist({split!r}): {elapsed:.2f} s")
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    assert images.max() == 255 and images.min() == 0
    # the arrays are exactly the hashed IDX payloads
    head = b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in images.shape)
    assert hashlib.sha256(head + images.tobytes()).hexdigest() == DECOMPRESSED_SHA256[f"{prefix}-images-idx3-ubyte"]
    lhead = b"\x00\x00\x08\x01" + n.to_bytes(4, "big")
    assert (
        hashlib.sha256(lhead + labels.astype(np.uint8).tobytes()).hexdigest()
        == DECOMPRESSED_SHA256[f"{prefix}-labels-idx1-ubyte"]
    )
    assert labels[:20].tolist() == list(range(10)) * 2  # README: labels run 0..9 in blocks of ten


def test_embedded_equals_shared_copy():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    for split in ("train", "test"):
        a = data.load_kannada_mnist(split)
        b = data.load_kannada_mnist(split, root=SHARED)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_shared_csv_sample_equals_first_1000_train_images():
    sample = SHARED / "train_sample.csv"
    if not sample.is_file():
        pytest.skip(f"{sample} is absent")
    images, labels = data.load_csv(sample)
    x, y = data.load_kannada_mnist("train")
    assert images.shape == (1000, 28, 28)
    np.testing.assert_array_equal(images, x[:1000])
    np.testing.assert_array_equal(labels, y[:1000])
    images2, labels2 = data.load_kannada_mnist("test", root=sample)  # a single file is returned whole
    np.testing.assert_array_equal(images2, images)


def test_load_kannada_mnist_from_csv_and_npz(tmp_path):
    x, y = _synthetic_split(10, 0, 28, 28)
    csv = write(tmp_path / "some.csv.gz", csv_text(x, y), gz=True)
    images, labels = data.load_kannada_mnist("train", root=csv)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    npz = tmp_path / "some.npz"
    np.savez(npz, x=x, y=y)
    images, labels = data.load_kannada_mnist("test", root=npz)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def _indexed_root(tmp_path, per_class=30):
    """A train set whose images encode their own index (pixels 0 and 1 = index in base 256)."""
    n = per_class * 10
    x = np.zeros((n, 4, 4), np.uint8)
    x[:, 0, 0] = np.arange(n) // 256
    x[:, 0, 1] = np.arange(n) % 256
    y = np.arange(n) % 10
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(x), gz=True)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(y), gz=True)
    return y


def test_tutorial_split_synthetic(tmp_path):
    y_all = _indexed_root(tmp_path)
    (xtr, ytr), (xte, yte) = data.tutorial_split(seed=5, per_class_train=20, per_class_test=7, root=tmp_path)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert xtr.shape == (200, 4, 4) and xte.shape == (70, 4, 4)
    itr = xtr[:, 0, 0].astype(int) * 256 + xtr[:, 0, 1]
    ite = xte[:, 0, 0].astype(int) * 256 + xte[:, 0, 1]
    assert len(set(itr)) == 200 and len(set(ite)) == 70
    assert not set(itr) & set(ite)
    np.testing.assert_array_equal(y_all[itr], ytr)
    np.testing.assert_array_equal(y_all[ite], yte)
    assert np.bincount(ytr).tolist() == [20] * 10 and np.bincount(yte).tolist() == [7] * 10
    assert not np.array_equal(ytr, np.sort(ytr))  # shuffled
    with pytest.raises(DataError, match="only 30"):
        data.tutorial_split(per_class_train=25, per_class_test=6, root=tmp_path)


def test_tutorial_split_default_protocol():
    (xtr, ytr), (xte, yte) = data.tutorial_split()
    assert xtr.shape == (6000, 28, 28) and xte.shape == (1000, 28, 28)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert np.bincount(ytr).tolist() == [600] * 10 and np.bincount(yte).tolist() == [100] * 10
    # README: no image appears twice in the training set, so image bytes identify the source index
    tr = {r.tobytes() for r in xtr}
    te = {r.tobytes() for r in xte}
    assert len(tr) == 6000 and len(te) == 1000 and not tr & te
    (xtr2, ytr2), (xte2, yte2) = data.tutorial_split(seed=0)
    np.testing.assert_array_equal(xtr, xtr2)
    np.testing.assert_array_equal(yte, yte2)
    (xtr3, _), _ = data.tutorial_split(seed=1)
    assert not np.array_equal(xtr, xtr3)
