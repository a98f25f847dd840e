"""Tests of portacnn.data.splits: the command line's split policy (load_split, train_test)."""

from __future__ import annotations

import numpy as np
import pytest
from datahelp import cifar_records, idx_header, save_image, write_labels

from portacnn import data
from portacnn.data import DataError


def test_a_broken_test_split_is_reported_not_skipped(tmp_path):
    x = np.zeros((20, 28, 28), np.uint8)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(idx_header(20, 28, 28) + x.tobytes())
        write_labels(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(20) % 10)
    images, labels, exact, names = data.load_split(str(tmp_path), "test", any_pair=False)
    assert exact and images.shape == (20, 28, 28)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_header(20, 28, 28) + x.tobytes()[:-1])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: truncated IDX data"):
        data.load_split(str(tmp_path), "test", any_pair=False)


def _pair(folder, prefix, x, y):
    folder.mkdir(exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_header(*x.shape) + x.tobytes())
    write_labels(folder / f"{prefix}-labels-idx1-ubyte", y)
    return folder


def _set(n, seed=0, side=4):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8), np.arange(n) % 10


def test_load_split_exact_and_fallback_sources(tmp_path):
    x, y, exact, names = data.load_split(None, "test")  # the embedded set
    assert exact and x.shape == (10000, 28, 28) and y.shape == (10000,) and names is None
    xa, ya = _set(30, 1)
    xb, yb = _set(20, 2)
    split = _pair(_pair(tmp_path / "split", "train", xa, ya), "t10k", xb, yb)
    images, labels, exact, names = data.load_split(str(split), "test")
    assert exact
    np.testing.assert_array_equal(np.asarray(images), xb)
    np.testing.assert_array_equal(labels, yb)
    pair = _pair(tmp_path / "pair", "eval", xa, ya)  # one pair of any prefix: both splits, not exact
    images, labels, exact, names = data.load_split(str(pair), "test")
    assert not exact
    np.testing.assert_array_equal(np.asarray(images), xa)
    assert data.load_split(str(pair), "test", any_pair=False) is None
    npz = tmp_path / "set.npz"
    np.savez(npz, x=xa, y=ya)
    images, labels, exact, names = data.load_split(str(npz), "train")
    assert not exact and labels.tolist() == ya.tolist()
    assert data.load_split(str(npz), "test", any_pair=False) is None
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as ei:
        data.load_split(str(missing), "train")
    assert isinstance(ei.value, DataError) and str(ei.value) == f"{missing}: no such file or folder"


def test_train_test_holds_out_a_seeded_tenth_of_a_single_file(tmp_path):
    x, y = _set(50, 3)
    x[:, 0, 0], x[:, 0, 1] = 0, np.arange(50)  # each image carries its index
    npz = tmp_path / "set.npz"
    np.savez(npz, x=x, y=y)
    (xtr, ytr), (xte, yte), extra, note = data.train_test(str(npz), seed=4)
    assert xtr.dtype == np.float32 and xtr.shape == (45, 1, 4, 4) and xte.shape == (5, 1, 4, 4)
    assert extra == {"class_names": None}
    assert note == f"full training set; {npz} has no separate test split, so 10 % of it is held out as the test set"
    itr = np.rint(xtr[:, 0, 0, 1] * 255).astype(int)
    ite = np.rint(xte[:, 0, 0, 1] * 255).astype(int)
    assert sorted(itr.tolist() + ite.tolist()) == list(range(50))
    np.testing.assert_array_equal(ytr, y[itr])
    np.testing.assert_array_equal(yte, y[ite])
    again = data.train_test(str(npz), seed=4)
    np.testing.assert_array_equal(again[1][0], xte)
    other = data.train_test(str(npz), seed=5)
    assert not np.array_equal(np.rint(other[1][0][:, 0, 0, 1] * 255), ite)
    (xtr, ytr), (xte2, _), _, _ = data.train_test(str(npz), seed=4, limit=7)
    assert xtr.shape == (7, 1, 4, 4) and ytr.tolist() == y[itr[:7]].tolist()
    np.testing.assert_array_equal(xte2, xte)  # the limit applies to the training images only


def test_train_test_uses_an_exact_test_split_and_the_tutorial_protocol(tmp_path):
    xa, ya = _set(7000, 5)
    xb, yb = _set(30, 6)
    folder = _pair(_pair(tmp_path / "split", "train", xa, ya), "t10k", xb, yb)
    (xtr, ytr), (xte, yte), extra, note = data.train_test(str(folder))
    assert note == "full training set" and extra == {"class_names": None}
    assert xtr.shape == (7000, 1, 4, 4) and ytr.tolist() == ya.tolist()
    np.testing.assert_array_equal(xte, data.preprocess(xb))
    assert yte.tolist() == yb.tolist()
    (xtr, ytr), (xte, yte), extra, note = data.train_test(str(folder), protocol="tutorial", seed=1)
    assert note == "tutorial protocol: 600 train / 100 held-out images per class from the training set"
    assert xtr.shape == (6000, 1, 4, 4) and np.bincount(ytr).tolist() == [600] * 10
    held_x, held_y = extra["heldout"]
    assert held_x.shape == (1000, 1, 4, 4) and held_x.dtype == np.float32 and np.bincount(held_y).tolist() == [100] * 10
    np.testing.assert_array_equal(xte, data.preprocess(xb))  # the exact test split, not the held-out images
    (t2, _), _, extra2, _ = data.train_test(str(folder), protocol="tutorial", seed=1)
    np.testing.assert_array_equal(t2, xtr)
    np.testing.assert_array_equal(extra2["heldout"][0], held_x)


def test_train_test_errors_are_one_line_data_errors(tmp_path):
    x, _ = _set(12, 7, side=2)
    ids = tmp_path / "ids.csv"  # the Kaggle test layout: no labels
    ids.write_text("id,pixel0,pixel1,pixel2,pixel3\n" + "".join(f"{i},{','.join(map(str, r.ravel()))}\n"
                                                              for i, r in enumerate(x)))  # fmt: skip
    with pytest.raises(DataError) as ei:
        data.train_test(str(ids))
    assert str(ei.value) == f"{ids}: holds no labels, so it cannot be used for training"
    one = tmp_path / "one.npz"
    np.savez(one, x=x[:1], y=np.array([3]))
    with pytest.raises(DataError) as ei:
        data.train_test(str(one))
    assert str(ei.value) == f"{one}: no training images left after holding out the test set"
    broken = tmp_path / "broken"
    _pair(broken, "train", *_set(10, 8)).joinpath("train-labels-idx1-ubyte").write_bytes(idx_header(9) + bytes(9))
    with pytest.raises(DataError, match="count mismatch"):
        data.train_test(str(broken))



# -- the sources of your own images: image folders, CIFAR binary files, Keras-style .npz -------------------------
def _classes(root, sizes=((4, 5),) * 2, values=(10, 20), rgb=False):
    """An image-class folder: class ``c<i>`` holds one image per entry of ``sizes`` filled with ``values[i]``."""
    for i, value in enumerate(values):
        for k, (h, w) in enumerate(sizes):
            pixels = np.full((h, w, 3) if rgb and k == 0 else (h, w), value, np.uint8)
            save_image(root / f"c{i}" / f"{k}.png", pixels)
    return root


def test_load_split_returns_a_named_split_for_every_source(tmp_path):
    plain = _classes(tmp_path / "plain")
    for split in ("train", "test"):
        got = data.load_split(str(plain), split)
        assert isinstance(got, data.Split) and got._fields == ("images", "labels", "exact", "class_names")
        assert not got.exact and got.class_names == ["c0", "c1"] and got.labels.tolist() == [0, 0, 1, 1]
        assert got.images.shape == (4, 1, 4, 5) and got.images[:, 0, 0, 0].tolist() == [10, 10, 20, 20]
    assert data.load_split(str(plain), "test", any_pair=False) is None
    assert data.load_split(str(plain), "train", size=(2, 3), channels=3).images.shape == (4, 3, 2, 3)
    both = tmp_path / "both"
    _classes(both / "train", values=(1, 2))
    _classes(both / "validation", values=(3, 4))
    test = data.load_split(str(both), "test", any_pair=False)
    assert test.exact and test.class_names == ["c0", "c1"] and test.images[:, 0, 0, 0].tolist() == [3, 3, 4, 4]
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "data_batch_1.bin").write_bytes(cifar_records([4, 5]))
    (cifar / "batches.meta.txt").write_text("".join(f"n{i}\n" for i in range(10)))
    alone = data.load_split(str(cifar), "test")  # no test_batch.bin: the training files serve both splits
    assert not alone.exact and alone.labels.tolist() == [4, 5] and alone.class_names[9] == "n9"
    assert data.load_split(str(cifar), "test", any_pair=False) is None
    (cifar / "test_batch.bin").write_bytes(cifar_records([6]))
    test = data.load_split(str(cifar), "test", any_pair=False)
    assert test.exact and test.labels.tolist() == [6] and test.images.shape == (1, 3, 32, 32)
    one = data.load_split(str(cifar / "test_batch.bin"), "train")
    assert not one.exact and one.labels.tolist() == [6] and one.class_names[0] == "n0"
    assert data.load_split(str(cifar / "test_batch.bin"), "test", any_pair=False) is None


def test_keras_npz_is_two_exact_splits(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), rng.integers(0, 256, (2, 4, 4, 3), np.uint8)
    path = tmp_path / "cifar100.npz"
    np.savez(path, x_train=x_train, y_train=np.array([[99], [0], [5], [1], [2], [3]], np.uint8), x_test=x_test,
             y_test=np.array([[7], [8]], np.int64))  # fmt: skip
    train = data.load_split(str(path), "train")
    assert train.exact and train.class_names is None and train.labels.tolist() == [99, 0, 5, 1, 2, 3]
    np.testing.assert_array_equal(train.images, x_train.transpose(0, 3, 1, 2))
    test = data.load_split(str(path), "test", any_pair=False)
    assert test.exact and test.labels.tolist() == [7, 8]
    (xtr, ytr), (xte, yte), extra, note = data.train_test(str(path))
    assert note == "full training set" and extra == {"class_names": None}
    assert xtr.shape == (6, 3, 4, 4) and xtr.dtype == np.float32 and yte.tolist() == [7, 8]
    np.testing.assert_array_equal(xte, x_test.transpose(0, 3, 1, 2) / np.float32(255))
    np.savez(path, x_train=x_train, y_train=np.array([0, 1, -2, 3, -4, 5]), x_test=x_test, y_test=np.array([0, 1]))
    with pytest.raises(DataError, match="cifar100.npz: label -2 at index 2 is negative"):
        data.load_split(str(path), "train")


def test_size_and_channels_are_never_silent_for_arrays(tmp_path):
    x, y = _set(20, 1)
    npz = tmp_path / "set.npz"
    np.savez(npz, x=x, y=y)
    assert data.load_split(str(npz), "train", size=(4, 4), channels=1).images.shape == (20, 4, 4)
    with pytest.raises(DataError) as ei:
        data.load_split(str(npz), "train", size=(5, 4))
    assert str(ei.value) == (f"{npz}: images are 4x4 (HxW), not the size=(5, 4) asked for -- only image folders are "
                             f"resized: drop size= (--image-size) or resize the images yourself "
                             f"(portacnn.data.resize_images)")  # the flag named: train's user gave no size=
    with pytest.raises(DataError, match=r"images have 1 channel, not the channels=3 asked for .*\(--channels\)"):
        data.train_test(str(npz), channels=3)
    with pytest.raises(DataError, match="the embedded Kannada-MNIST: images are 28x28"):
        data.train_test(None, protocol="tutorial", size=(32, 32))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing")
    with pytest.raises(DataError) as ei:
        data.load_split(str(empty), "train")
    assert str(ei.value).startswith(f"{empty}: is not a data folder: expected IDX files")
    assert "CIFAR binary files" in str(ei.value) and "one subfolder of images per class" in str(ei.value)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_split(str(npz), "val")


def test_train_test_raw_images_and_class_names(tmp_path):
    x, y = _set(30, 2)
    npz = tmp_path / "set.npz"
    np.savez(npz, x=x, y=y)
    (rtr, ytr), (rte, yte), extra, _ = data.train_test(str(npz), seed=3, raw=True)
    (ftr, _), (fte, _), _, _ = data.train_test(str(npz), seed=3)
    assert rtr.dtype == np.uint8 and rtr.shape == (27, 1, 4, 4) and rtr.flags.c_contiguous
    np.testing.assert_array_equal(ftr, rtr / np.float32(255))  # the same images, before preprocess
    np.testing.assert_array_equal(fte, rte / np.float32(255))
    root = tmp_path / "pets"
    _classes(root / "train", rgb=True)  # one colour image: the training split has 3 channels
    _classes(root / "test")  # all greyscale: read with the training split's 3 channels
    (xtr, ytr), (xte, yte), extra, note = data.train_test(str(root), raw=True)
    assert note == "full training set" and extra == {"class_names": ["c0", "c1"]}
    assert xtr.shape == xte.shape == (4, 3, 4, 5) and xte[:, :, 1, 1].tolist() == [[10] * 3] * 2 + [[20] * 3] * 2
    assert ytr.tolist() == yte.tolist() == [0, 0, 1, 1]
    _classes(root / "test", sizes=((6, 6),) * 2)
    with pytest.raises(DataError) as ei:
        data.train_test(str(root))
    assert str(ei.value) == (f"{root}: the test images are 3x6x6 (CxHxW) but the training images 3x4x5 -- pass an "
                             f"image size, e.g. size=(4, 5) (--image-size 4 5 on the command line)")  # fmt: skip
    (xtr, _), (xte, _), _, _ = data.train_test(str(root), size=(6, 6), channels=1)
    assert xtr.shape == xte.shape == (4, 1, 6, 6) and xtr.dtype == np.float32
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "data_batch_1.bin").write_bytes(cifar_records([1, 2, 3]))
    (cifar / "test_batch.bin").write_bytes(cifar_records([4]))
    (xtr, ytr), (xte, yte), extra, note = data.train_test(str(cifar), raw=True)
    assert xtr.shape == (3, 3, 32, 32) and yte.tolist() == [4] and extra == {"class_names": None}
    raw = np.frombuffer(cifar_records([4]), np.uint8)[1:].reshape(1, 3, 32, 32)
    np.testing.assert_array_equal(xte, raw)
