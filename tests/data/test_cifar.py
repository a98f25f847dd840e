"""Tests of portacnn.data.cifar: the CIFAR-10 and CIFAR-100 binary files, written small in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from datahelp import assert_data_error, cifar_records as records

from portacnn import data
from portacnn.data import DataError, cifar

NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10_folder(folder, batches=((1, [3, 1]), (2, [0, 9, 4])), test=(7, 2), meta=True):
    folder.mkdir(exist_ok=True)
    for k, labels in batches:
        (folder / f"data_batch_{k}.bin").write_bytes(records(labels, seed=k))
    if test is not None:
        (folder / "test_batch.bin").write_bytes(records(test, seed=99))
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(NAMES10) + "\n\n\n")  # as shipped: blank lines at the end
    return folder


def test_record_layout_red_green_blue_planes_row_major(tmp_path):
    record = bytearray(3073)
    record[0] = 6
    record[1 + 0 * 1024 + 0 * 32 + 1] = 11  # red, row 0, column 1
    record[1 + 1 * 1024 + 2 * 32 + 3] = 22  # green, row 2, column 3
    record[1 + 2 * 1024 + 31 * 32 + 31] = 33  # blue, row 31, column 31
    path = tmp_path / "one.bin"
    path.write_bytes(bytes(record) * 2)
    images, labels, names = data.load_cifar(path)
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.dtype == np.int64 and labels.tolist() == [6, 6] and names is None
    assert images[1, 0, 0, 1] == 11 and images[1, 1, 2, 3] == 22 and images[1, 2, 31, 31] == 33
    assert int(images[1].sum()) == 66


def test_cifar10_folder_is_two_exact_splits_with_class_names(tmp_path):
    folder = cifar10_folder(tmp_path / "cifar-10-batches-bin", batches=((10, [5]), (2, [3, 1]), (1, [0])))
    images, labels, names = data.load_cifar(folder, "train")
    assert labels.tolist() == [0, 3, 1, 5]  # data_batch_1, _2, _10: numeric order
    expected = np.frombuffer(records([3, 1], seed=2), np.uint8).reshape(2, 3073)[:, 1:].reshape(2, 3, 32, 32)
    np.testing.assert_array_equal(images[1:3], expected)
    assert names == NAMES10
    images, labels, names = data.load_cifar(folder, "test")
    assert labels.tolist() == [7, 2] and images.shape == (2, 3, 32, 32) and names == NAMES10
    assert data.load_cifar(folder / "test_batch.bin", split="train")[1].tolist() == [7, 2]  # a file: split ignored
    (folder / "batches.meta.txt").unlink()
    assert data.load_cifar(folder, "test")[2] is None


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(records([[19, 99], [0, 42], [7, 3]]))
    (folder / "test.bin").write_bytes(records([[1, 58]]))
    (folder / "fine_label_names.txt").write_text("".join(f"class {i}\n" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("not read\n")
    images, labels, names = data.load_cifar(folder)
    assert labels.tolist() == [99, 42, 3] and names[99] == "class 99" and len(names) == 100
    first = np.frombuffer(records([[19, 99], [0, 42], [7, 3]]), np.uint8)[2:3074]  # record 0 after its 2 label bytes
    np.testing.assert_array_equal(images[0].ravel(), first)
    assert data.load_cifar(folder, "test")[1].tolist() == [58]
    assert cifar.cifar_files(folder)[0] == "cifar100" and cifar.cifar_files(tmp_path) is None


@pytest.mark.parametrize(("name", "payload", "fragments"), [
    ("data_batch_1.bin", records([1, 2])[:-1], ["6145 bytes is not a whole number of 3073-byte CIFAR-10 records",
                                                "truncated"]),
    ("train.bin", records([[1, 2]]) + b"\x00", ["3075 bytes is not a whole number of 3074-byte CIFAR-100"]),
    ("test_batch.bin", b"", ["file is empty"]),
    ("odd.bin", bytes(5000), ["5000 bytes is a whole number of neither 3073-byte CIFAR-10 records nor 3074-byte"]),
    ("test_batch.bin", records([1, 10, 11]), ["record 1: label byte 10 is outside 0..9 (CIFAR-10)"]),
    ("test.bin", records([[3, 4], [20, 5]]), ["record 1: coarse label byte 20 is outside 0..19 (CIFAR-100)"]),
    ("test.bin", records([[3, 4], [2, 100]]), ["record 1: fine label byte 100 is outside 0..99"]),
])  # fmt: skip
def test_bad_files_are_one_line_errors(tmp_path, name, payload, fragments):
    path = tmp_path / name
    path.write_bytes(payload)
    assert_data_error(lambda: data.load_cifar(path), path, *fragments)


def test_a_size_both_records_divide_is_decided_by_the_label_bytes(tmp_path):
    n10 = 3074  # 3074 CIFAR-10 records = 3073 CIFAR-100 records = 9,446,402 bytes
    path = tmp_path / "batch.bin"
    path.write_bytes(records(np.arange(n10) % 10))
    images, labels, _ = data.load_cifar(path)
    assert images.shape == (n10, 3, 32, 32) and labels.tolist() == (np.arange(n10) % 10).tolist()
    path.write_bytes(records(np.c_[np.arange(3073) % 20, np.arange(3073) % 100], pixels=np.full((3073, 3072), 200)))
    images, labels, _ = data.load_cifar(path)
    assert images.shape == (3073, 3, 32, 32) and labels[:3].tolist() == [0, 1, 2] and images.min() == 200
    path.write_bytes(bytes(3073 * 3074))  # zeros: both readings fit
    assert_data_error(lambda: data.load_cifar(path), path, "could be 3074 CIFAR-10 or 3073 CIFAR-100 records",
                      "both readings", "variant='cifar10' or variant='cifar100'")  # fmt: skip
    assert data.load_cifar(path, variant="cifar100")[0].shape == (3073, 3, 32, 32)
    with pytest.raises(ValueError, match="variant must be 'cifar10', 'cifar100' or None"):
        data.load_cifar(path, variant="CIFAR-10")


@pytest.mark.parametrize(("text", "fragments"), [
    ("\n".join(NAMES10[:9]), ["holds 9 class names; CIFAR-10 has 10 (one a line)"]),
    ("\n".join(NAMES10 + ["extra"]), ["holds 11 class names"]),
    ("\n".join(NAMES10[:9] + ["bad\x07name"]), ["line 10", "class name on line 10 is not printable"]),
    ("\n".join(NAMES10[:9] + ["x" * 101]), ["over 100 characters"]),
    ("\n".join(NAMES10[:9] + ["cat"]), ["class name 'cat' appears twice"]),
    (b"\xff\xfe" + b"cat\n" * 10, ["not UTF-8 text"]),
    ("cat\n" * 20000, ["longer than 65536 bytes"]),
])  # fmt: skip
def test_a_bad_class_names_file_is_an_error(tmp_path, text, fragments):
    folder = cifar10_folder(tmp_path / "c", meta=False)
    meta = folder / "batches.meta.txt"
    meta.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_data_error(lambda: data.load_cifar(folder), meta, *fragments)


def test_folder_errors_and_the_data_limit_before_allocating(tmp_path, monkeypatch):
    folder = cifar10_folder(tmp_path / "c", test=None)
    assert_data_error(lambda: data.load_cifar(folder, "test"), folder, "holds no CIFAR-10 test file (test_batch.bin)")
    (folder / "train.bin").write_bytes(records([[0, 0]]))
    assert_data_error(lambda: data.load_cifar(folder), folder, "holds CIFAR-10 files", "and CIFAR-100 files")
    assert_data_error(lambda: data.load_cifar(tmp_path), tmp_path, "holds no CIFAR binary files")
    (folder / "train.bin").unlink()

    def never(*args):
        raise AssertionError("allocated and read before checking the data limit")

    monkeypatch.setattr(cifar, "_read_into", never)
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "15K")  # 5 records: 5 * (3072 + 8) = 15400 bytes
    assert_data_error(lambda: data.load_cifar(folder), folder, "5 CIFAR-10 images of 3x32x32 and their int64 labels",
                      "15400 bytes", "PORTACNN_MAX_DATA_BYTES=16K")  # fmt: skip
    monkeypatch.undo()
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "16K")
    assert data.load_cifar(folder)[0].shape == (5, 3, 32, 32)
    with pytest.raises(DataError, match="no such file or folder"):
        data.load_cifar(tmp_path / "nowhere")
