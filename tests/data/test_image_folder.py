"""Tests of portacnn.data.image_folder: one subfolder of images per class, optional train/test splits."""

from __future__ import annotations

import numpy as np
import pytest
from datahelp import assert_data_error, save_image as save

from portacnn import data
from portacnn.data import image_folder


def grey(value, h=4, w=5):
    return np.full((h, w), value, dtype=np.uint8)


def colour(seed, h=4, w=5):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def pets(tmp_path):
    root = tmp_path / "pets"
    save(root / "cat" / "b.png", grey(20))
    save(root / "cat" / "a.png", grey(10))
    save(root / "cat" / "sub" / "c.png", grey(30))
    save(root / "dog" / "x.bmp", colour(1))
    save(root / "cat" / ".hidden.png", grey(99))  # hidden: ignored
    save(root / ".cache" / "y.png", grey(99))  # a hidden folder is no class
    save(root / "stray.png", grey(99))  # files directly in the root belong to no class
    (root / "cat" / "notes.txt").write_text("not an image")  # other files: ignored
    return root


def test_classes_order_labels_and_pixels(pets):
    images, labels, classes = data.load_image_folder(pets)
    assert classes == ["cat", "dog"] == image_folder.find_classes(pets)
    assert images.shape == (4, 3, 4, 5) and images.dtype == np.uint8  # one colour image: 3 channels for all
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1]
    assert images[:3, :, 0, 0].tolist() == [[10] * 3, [20] * 3, [30] * 3]  # a.png, b.png, sub/c.png; grey repeated
    np.testing.assert_array_equal(images[3], colour(1).transpose(2, 0, 1))
    images, labels, _ = data.load_image_folder(pets, channels=1)
    assert images.shape == (4, 1, 4, 5) and images[:3, 0, 0, 0].tolist() == [10, 20, 30]
    np.testing.assert_array_equal(images[3], data.open_image(pets / "dog" / "x.bmp", channels=1))
    (pets / "dog" / "x.bmp").unlink()
    save(pets / "dog" / "x.png", grey(40))
    images, _, _ = data.load_image_folder(pets)
    assert images.shape == (4, 1, 4, 5)  # all greyscale: 1 channel


def test_sorting_is_by_name_and_relative_posix_path(tmp_path):
    root = tmp_path / "r"
    for k, rel in enumerate(["a/b.png", "a-b.png", "B.png", "a.png"]):
        save(root / "Zebra" / rel, grey(k))
    save(root / "apple" / "one.PNG", grey(50))  # suffixes in any case
    images, labels, classes = data.load_image_folder(root, channels=1)
    assert classes == ["Zebra", "apple"]  # Python's string order: upper case first
    # "B.png" < "a-b.png" < "a.png" < "a/b.png" as strings ('-' < '.' < '/'), whatever the folder nesting
    assert images[:, 0, 0, 0].tolist() == [2, 1, 3, 0, 50]
    listed = data.list_images(root)
    assert [p.relative_to(root).as_posix() for p in listed] == ["Zebra/B.png", "Zebra/a-b.png", "Zebra/a.png",
                                                                 "Zebra/a/b.png", "apple/one.PNG"]  # fmt: skip


def test_size_resizes_every_image_and_mixed_sizes_need_it(tmp_path):
    root = tmp_path / "r"
    save(root / "a" / "small.png", colour(2, 4, 5))
    save(root / "b" / "big.png", colour(3, 8, 6))
    msg = assert_data_error(lambda: data.load_image_folder(root), root, "images of different sizes",
                            "a/small.png is 4x5 (HxW)", "b/big.png is 8x6", "pass an image size")  # fmt: skip
    assert "size=(" in msg and "--image-size H W" in msg  # the class folder named: 0.png is in every class
    images, labels, _ = data.load_image_folder(root, size=(6, 7))
    assert images.shape == (2, 3, 6, 7) and labels.tolist() == [0, 1]
    np.testing.assert_array_equal(images[1], data.open_image(root / "b" / "big.png", size=(6, 7)))
    native = data.open_image(root / "b" / "big.png")[None]
    np.testing.assert_array_equal(images[1], data.resize_images(native, (6, 7))[0])
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        data.load_image_folder(root, channels=2)
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        data.load_image_folder(root, size=32)


def test_bad_folders_are_one_line_errors(tmp_path, pets):
    (pets / "empty" / "deep").mkdir(parents=True)
    (pets / "empty" / "readme.txt").write_text("no images here")
    assert_data_error(lambda: data.load_image_folder(pets), pets / "empty",
                      "class folder 'empty' holds no image files")  # fmt: skip
    alone = tmp_path / "alone"
    save(alone / "only" / "a.png", grey(1))
    assert_data_error(lambda: data.load_image_folder(alone), alone, "found 1 class folder ('only')",
                      "a classifier needs at least 2")  # fmt: skip
    flat = tmp_path / "flat"
    save(flat / "a.png", grey(1))
    assert_data_error(lambda: data.load_image_folder(flat), flat, "found 0 class folders")
    (pets / "empty" / "readme.txt").rename(pets / "empty" / "fake.png")
    assert_data_error(lambda: data.load_image_folder(pets), pets / "empty" / "fake.png", "not a readable image")
    assert_data_error(lambda: data.load_image_folder(tmp_path / "none"), tmp_path / "none", "folder not found",
                      cls=FileNotFoundError)  # fmt: skip
    assert_data_error(lambda: data.load_image_folder(pets / "cat" / "a.png"), "a.png", "is not a folder")


def test_train_and_test_subfolders_are_exact_splits(tmp_path):
    root = tmp_path / "r"
    for split, value in (("train", 1), ("val", 2)):
        for name in ("cat", "dog"):
            save(root / split / name / "a.png", grey(value))
    assert image_folder.image_folder_splits(root) == {"train": root / "train", "test": root / "val"}
    images, labels, classes = data.load_image_folder(root, "test")
    assert classes == ["cat", "dog"] and labels.tolist() == [0, 1] and images[:, 0, 0, 0].tolist() == [2, 2]
    assert data.load_image_folder(root, "train")[0][:, 0, 0, 0].tolist() == [1, 1]
    save(root / "test" / "cat" / "a.png", grey(3))
    save(root / "test" / "dog" / "a.png", grey(3))
    assert data.load_image_folder(root, "test")[0][:, 0, 0, 0].tolist() == [3, 3]  # test before val
    assert_data_error(lambda: data.load_image_folder(root), root, "holds a train and a test split (train/, test/)",
                      "split='train' or split='test'")  # fmt: skip
    save(root / "test" / "emu" / "a.png", grey(3))
    assert_data_error(lambda: data.load_image_folder(root, "train"), root,
                      "different class folders (only in test/: emu)")  # fmt: skip
    save(root / "other" / "a.png", grey(3))  # a folder besides the splits: a plain class root
    assert image_folder.image_folder_splits(root) is None
    assert data.load_image_folder(root, "test", size=(2, 2))[2] == ["other", "test", "train", "val"]


def test_limits_are_checked_from_the_headers_before_decoding(pets, monkeypatch):
    def never(*args):
        raise AssertionError("decoded an image before the limits were checked")

    monkeypatch.setattr(image_folder, "_converted", never)
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "200")  # 4 images of 3x4x5 + labels = 272 bytes
    assert_data_error(lambda: data.load_image_folder(pets), pets, "4 images of 3x4x5 and their int64 labels",
                      "272 bytes", "PORTACNN_MAX_DATA_BYTES=272")  # fmt: skip
    monkeypatch.delenv("PORTACNN_MAX_DATA_BYTES")
    save(pets / "dog" / "wide.png", grey(0, 4, 9))
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_SIDE", "8")
    assert_data_error(lambda: data.load_image_folder(pets, size=(4, 5)), pets / "dog" / "wide.png",
                      "image of 9x4 pixels", "PORTACNN_MAX_IMAGE_SIDE=9")  # fmt: skip
    with pytest.raises(ValueError, match="size=.*over the limit of 8 pixels"):
        data.load_image_folder(pets, size=(9, 4))
    monkeypatch.delenv("PORTACNN_MAX_IMAGE_SIDE")
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_FILES", "4")  # 5 images now
    assert_data_error(lambda: data.load_image_folder(pets), pets, "holds more than 4 image files, the limit set by "
                      "PORTACNN_MAX_IMAGE_FILES", "PORTACNN_MAX_IMAGE_FILES=8")  # fmt: skip
    assert_data_error(lambda: data.list_images(pets), pets, "PORTACNN_MAX_IMAGE_FILES")
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_FILES", "6")
    assert len(data.list_images(pets)) == 6  # stray.png too: list_images takes every image below the folder
    monkeypatch.undo()
    assert data.load_image_folder(pets, size=(4, 5))[0].shape == (5, 3, 4, 5)
    with pytest.raises(ValueError, match="split must be 'train', 'test' or None"):
        data.load_image_folder(pets, split="val")
