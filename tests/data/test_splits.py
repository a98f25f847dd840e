"""Tests of portacnn.data.splits: the command line's split policy (load_split, train_test)."""

from __future__ import annotations

import numpy as np
import pytest
from datahelp import idx_header, write_labels

from portacnn import data
from portacnn.data import DataError


def test_a_broken_test_split_is_reported_not_skipped(tmp_path):
    x = np.zeros((20, 28, 28), np.uint8)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(idx_header(20, 28, 28) + x.tobytes())
        write_labels(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(20) % 10)
    images, labels, exact = data.load_split(str(tmp_path), "test", any_pair=False)
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
    x, y, exact = data.load_split(None, "test")  # the embedded set
    assert exact and x.shape == (10000, 28, 28) and y.shape == (10000,)
    xa, ya = _set(30, 1)
    xb, yb = _set(20, 2)
    split = _pair(_pair(tmp_path / "split", "train", xa, ya), "t10k", xb, yb)
    images, labels, exact = data.load_split(str(split), "test")
    assert exact
    np.testing.assert_array_equal(np.asarray(images), xb)
    np.testing.assert_array_equal(labels, yb)
    pair = _pair(tmp_path / "pair", "eval", xa, ya)  # one pair of any prefix: both splits, not exact
    images, labels, exact = data.load_split(str(pair), "test")
    assert not exact
    np.testing.assert_array_equal(np.asarray(images), xa)
    assert data.load_split(str(pair), "test", any_pair=False) is None
    npz = tmp_path / "set.npz"
    np.savez(npz, x=xa, y=ya)
    images, labels, exact = data.load_split(str(npz), "train")
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
    assert extra == {} and note == (f"full training set; {npz} has no separate test split, so 10 % of it is held "
                                    f"out as the test set")  # fmt: skip
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
    assert note == "full training set" and extra == {}
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
