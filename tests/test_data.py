"""Tests of portacnn.data: IDX / CSV / NPZ loaders, the embedded Kannada-MNIST copy, the tutorial
split and preprocessing.

Every test writes its own small files into tmp_path. The embedded-default tests use the copy inside
the package; the ones that compare with ../shared/data skip when that folder is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from portacnn import data
from portacnn.data import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "kannada_mnist"
DECOMPRESSED_SHA256 = {
    "train-images-idx3-ubyte": "105351b61538741814301e54ee5cfdac7464c0e2554e2a9967c63ef7ceaf7558",
    "train-labels-idx1-ubyte": "42d8a31792fb59dcec85b8e5b62bd03598c1a96f4edffe6f6a3e95daac9319ef",
    "t10k-images-idx3-ubyte": "be3a7f7fd24b3eb62f28ab1e3f9e5a380738e87000f99417c14f94ca89616cf4",
    "t10k-labels-idx1-ubyte": "2a4fb3eec0877aa3d4ab80d8f59374733af9b2b2966e8be0e50efe715f443a4d",
}


# ----------------------------------------------------------------------------------------------
# helpers


def idx_bytes(arr: np.ndarray, magic: bytes | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    head = magic if magic is not None else bytes([0, 0, 0x08, arr.ndim])
    return head + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def small_set(n=20, h=5, w=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def csv_text(images, first_col, head="label", eol="\n", blank_every=0, sep=",") -> bytes:
    flat = np.asarray(images).reshape(len(images), -1)
    lines = [head + sep + sep.join(f"pixel{i}" for i in range(flat.shape[1]))]
    for k, (f, row) in enumerate(zip(first_col, flat)):
        lines.append(sep.join([str(int(f))] + [str(int(v)) for v in row]))
        if blank_every and k % blank_every == 0:
            lines.append("")
    return (eol.join(lines) + eol).encode()


def assert_data_error(fn, path, *fragments, cls=DataError):
    with pytest.raises(cls) as ei:
        fn()
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert Path(path).name in msg, msg
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"{frag!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------------------------
# IDX


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


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "nope-images.gz"
    with pytest.raises(FileNotFoundError):
        data.load_idx(missing)
    assert_data_error(lambda: data.load_idx(missing), missing, "not found", cls=data.DataFileNotFoundError)
    assert_data_error(lambda: data.load_csv(missing), missing, "not found")
    assert_data_error(lambda: data.load_npz(missing), missing, "not found")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert_data_error(lambda: data.load_idx(folder), folder, "not a regular file")


# ----------------------------------------------------------------------------------------------
# CSV


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_csv_train_layout(tmp_path, gz):
    x = np.random.default_rng(1).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    y = np.arange(30) % 10
    path = write(tmp_path / "train.csv", csv_text(x, y), gz)
    images, labels = data.load_csv(path)
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    images, labels, ids = data.load_csv(path, return_ids=True)
    assert ids is None


def test_csv_test_layout(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    ids = np.arange(12) + 123456
    path = write(tmp_path / "test.csv", csv_text(x, ids, head="id"))
    images, labels = data.load_csv(path)
    assert labels is None
    np.testing.assert_array_equal(images, x)
    images, labels, got_ids = data.load_csv(path, return_ids=True)
    assert got_ids.dtype == np.int64
    np.testing.assert_array_equal(got_ids, ids)


def test_csv_crlf_blank_lines_bom_and_small_images(tmp_path):
    x, y = small_set(n=25, h=3, w=3)
    body = csv_text(x, y, eol="\r\n", blank_every=4)
    path = write(tmp_path / "windows.csv", b"\xef\xbb\xbf" + body + b"\r\n\r\n\n")
    images, labels = data.load_csv(path)
    assert images.shape == (25, 3, 3)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


def test_csv_lenient_cells_take_the_slow_path(tmp_path):
    x, y = small_set(n=6, h=2, w=2)
    lines = csv_text(x, y).decode().splitlines()
    lines[1:] = [" , ".join(line.split(",")) + " " for line in lines[1:]]  # spaces around every cell
    lines[2] = lines[2].replace(" , ", " ,+", 1)  # and one explicit plus sign
    path = write(tmp_path / "spaces.csv", ("\n".join(lines) + "\n").encode())
    assert b" ,+" in path.read_bytes()
    images, labels = data.load_csv(path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)


@pytest.mark.parametrize("chunk", [64, 700, 1 << 20])
def test_csv_chunk_boundaries_and_error_line_numbers(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(data, "_CSV_CHUNK_BYTES", chunk)
    x = np.random.default_rng(3).integers(0, 256, (200, 4, 4), dtype=np.uint8)
    y = np.arange(200) % 10
    body = csv_text(x, y, blank_every=7)
    path = write(tmp_path / "chunks.csv", body)
    images, labels = data.load_csv(path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    lines = body.decode().split("\n")
    target = len(lines) - 3  # 0-based index of a late data row
    assert lines[target]
    lines[target] = lines[target] + ",7"
    bad = write(tmp_path / "chunks-bad.csv", "\n".join(lines).encode())
    assert_data_error(lambda: data.load_csv(bad), bad, f"line {target + 1}:", "17 comma-separated columns")


def _csv_with_row(tmp_path, name, row: str, head="label"):
    good = ",".join(["3"] + ["0"] * 4)
    text = f"{head},pixel0,pixel1,pixel2,pixel3\n{good}\n{good}\n{row}\n{good}\n"
    return write(tmp_path / name, text.encode())


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ("1,2,3,4", ["line 4:", "expected 5", "found 4"]),
        ("1,2,3,4,5,6", ["line 4:", "found 6"]),
        ("1,2,abc,4,5", ["line 4:", "column 3 (pixel1)", "non-numeric", "'abc'"]),
        ("1,2,3.5,4,5", ["line 4:", "non-numeric", "'3.5'"]),
        ("1,2,,4,5", ["line 4:", "empty cell"]),
        ("1,256,0,0,0", ["line 4:", "pixel value 256", "0..255"]),
        ("1,0,0,0,-1", ["line 4:", "column 5 (pixel3)", "pixel value -1"]),
        ("1,0,0,0,99999999999999999999999", ["line 4:", "outside 0..255"]),
        ("10,0,0,0,0", ["line 4:", "label 10", "outside 0..9"]),
        ("-1,0,0,0,0", ["line 4:", "label -1"]),
        ("1,0,0,0,0\x00", ["line 4:", "non-numeric"]),
    ],
)
def test_csv_bad_rows(tmp_path, row, fragments):
    path = _csv_with_row(tmp_path, "rows.csv", row)
    msg = assert_data_error(lambda: data.load_csv(path), path, *fragments)
    assert msg.startswith(f"{path}: line 4:")


def test_csv_num_classes_parameter(tmp_path):
    path = _csv_with_row(tmp_path, "labels.csv", "11,0,0,0,0")
    assert_data_error(lambda: data.load_csv(path), path, "label 11")
    _, labels = data.load_csv(path, num_classes=12)
    assert labels.tolist() == [3, 3, 11, 3]
    _, labels = data.load_csv(path, num_classes=None)
    assert labels.tolist() == [3, 3, 11, 3]


def test_csv_test_layout_accepts_any_integer_id(tmp_path):
    path = _csv_with_row(tmp_path, "ids.csv", "4000000000,0,0,0,0", head="id")
    images, labels, ids = data.load_csv(path, return_ids=True)
    assert labels is None and ids.tolist() == [3, 3, 4000000000, 3]


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (b"", ["empty"]),
        (b"\n\r\n  \n", ["blank"]),
        (b"label,pixel0,pixel1,pixel2,pixel3\n", ["no data rows"]),
        (b"label,pixel0,pixel1,pixel2,pixel3\r\n\r\n", ["no data rows"]),
        (b"lable,pixel0,pixel1,pixel2,pixel3\n1,0,0,0,0\n", ["line 1", "header", "label,pixel0"]),
        (b"label,pixel1,pixel0,pixel2,pixel3\n1,0,0,0,0\n", ["header"]),
        (b"label\n1\n", ["header"]),
        (b"1,0,0,0,0\n2,0,0,0,0\n", ["header", "looks like data"]),
        (b"label,pixel0,pixel1,pixel2\n1,0,0,0\n", ["3 pixel columns", "square"]),
        (b"\xff\xfelabel\n", ["header is not text"]),
    ],
)
def test_csv_bad_files(tmp_path, text, fragments):
    path = write(tmp_path / "bad.csv", text)
    assert_data_error(lambda: data.load_csv(path), path, *fragments)


def test_csv_corrupt_gzip(tmp_path):
    x, y = small_set(n=50)
    blob = gzip.compress(csv_text(x, y))
    path = write(tmp_path / "trunc.csv.gz", blob[: len(blob) // 2])
    assert_data_error(lambda: data.load_csv(path), path, "gzip")


# ----------------------------------------------------------------------------------------------
# NPZ


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
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros((4, 2), np.int64)}, ["1-D"]),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(4)}, ["labels must be integers"]),
        ({"x": np.zeros((4, 7), np.uint8)}, ["square"]),
        ({"x": np.zeros((4, 2, 3, 3), np.uint8)}, ["expected (N, H, W)"]),
        ({"x": np.zeros((0, 3, 3), np.uint8)}, ["no images"]),
        ({"z": np.zeros((4, 3, 3), np.uint8)}, ["no images array", "'z'"]),
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


# ----------------------------------------------------------------------------------------------
# Embedded Kannada-MNIST


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


# ----------------------------------------------------------------------------------------------
# Folders


def _synthetic_split(n, seed, h=4, w=4):
    x, _ = small_set(n=n, h=h, w=w, seed=seed)
    return x, np.arange(n) % 10


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


def test_load_any_recognises_content_not_names(tmp_path):
    x, y = _synthetic_split(10, 0, 28, 28)
    idx = write(tmp_path / "looks-like.csv", idx_bytes(x), gz=True)
    images, labels = data.load_any(idx)
    np.testing.assert_array_equal(images, x)
    assert labels is None
    csv = write(tmp_path / "looks-like.npz", csv_text(x, y))
    images, labels = data.load_any(csv)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    npz = tmp_path / "looks-like-idx"
    with open(npz, "wb") as f:
        np.savez(f, images=x, labels=y)
    images, labels = data.load_any(npz)
    np.testing.assert_array_equal(labels, y)
    lab = write(tmp_path / "labels-only.gz", idx_bytes(y), gz=True)
    assert_data_error(lambda: data.load_any(lab), lab, "labels file")
    odd = write(tmp_path / "float-idx", b"\x00\x00\x0d\x03" + idx_bytes(x)[4:])
    assert_data_error(lambda: data.load_any(odd), odd, "dtype byte 0x0D")
    assert_data_error(lambda: data.load_any(tmp_path / "gone.csv"), "gone.csv", "not found")


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


# ----------------------------------------------------------------------------------------------
# Tutorial split


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


# ----------------------------------------------------------------------------------------------
# preprocess


def test_preprocess_uint8():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    x[0, 0, 0], x[1, 2, 3] = 0, 255
    out = data.preprocess(x)
    assert out.dtype == np.float32 and out.shape == (2, 1, 3, 4)
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(out[:, 0], x.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(data.preprocess(x[:, None]), out)
    np.testing.assert_array_equal(data.preprocess(x.astype(np.int64)), out)
    assert data.preprocess(np.zeros((0, 28, 28), np.uint8)).shape == (0, 1, 28, 28)


def test_preprocess_float_and_errors():
    f = np.random.default_rng(0).random((3, 5, 5))
    out = data.preprocess(f)
    assert out.dtype == np.float32 and out.shape == (3, 1, 5, 5)
    np.testing.assert_allclose(out[:, 0], f, rtol=1e-7)
    bad = f.copy()
    bad[0, 0, 0] = np.nan
    bad[1, 1, 1] = np.inf
    bad[2, 2, 2] = np.nan
    with pytest.raises(DataError, match="3 non-finite values .*2 NaN, 1 inf"):
        data.preprocess(bad)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        data.preprocess(f * 255)
    with pytest.raises(DataError, match=r"0\.\.255"):
        data.preprocess(np.full((1, 2, 2), 256))
    with pytest.raises(DataError, match="shape"):
        data.preprocess(np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="shape"):
        data.preprocess(np.zeros((28, 28), np.uint8))
    with pytest.raises(DataError, match="dtype"):
        data.preprocess(np.zeros((1, 2, 2), bool))


# ----------------------------------------------------------------------------------------------
# module hygiene and performance


def test_data_module_is_standalone(tmp_path):
    """data.py imports nothing else from portacnn: it loads as a lone module."""
    src = Path(data.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from\s+\.|from\s+portacnn|import\s+portacnn)", src, re.M)
    spec = importlib.util.spec_from_file_location("lone_data", data.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.load_kannada_mnist("test")[0].shape == (10000, 28, 28)


def write_big_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    table = [str(i).encode() for i in range(256)]
    flat = images.reshape(len(images), -1)
    with open(path, "wb") as f:
        f.write(b"label," + b",".join(b"pixel%d" % i for i in range(flat.shape[1])) + b"\n")
        for lab, row in zip(labels.tolist(), flat.tolist()):
            f.write(table[lab] + b"," + b",".join([table[v] for v in row]) + b"\n")


_MEASURE = """
import importlib.util, resource, sys, time
import numpy as np

def mem(field):  # bytes; VmHWM/VmRSS are per process image (ru_maxrss survives fork + exec on Linux)
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith(field + ":")).split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

spec = importlib.util.spec_from_file_location("lone_data", sys.argv[2])  # data.py alone: small baseline
data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(data)
before = mem("VmRSS")
t0, c0 = time.perf_counter(), time.process_time()
x, y = data.load_csv(sys.argv[1])
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(wall, cpu, before, mem("VmHWM"), x.nbytes, x.shape[0])
"""


@pytest.mark.slow
def test_csv_60k_rows_performance(tmp_path, record_property):
    x, y = data.load_kannada_mnist("train")
    path = tmp_path / "train60k.csv"
    write_big_csv(path, x, y)
    size = path.stat().st_size
    t0 = time.perf_counter()
    images, labels = data.load_csv(path)
    elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    del images, labels
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), data.__file__], capture_output=True,
                         text=True, check=True)  # fmt: skip
    wall, cpu, before, peak, nbytes, rows = (float(v) for v in out.stdout.split())
    growth = (peak - before) / nbytes
    record_property("csv_60k_load_seconds", elapsed)
    record_property("csv_60k_peak_growth_over_array", growth)
    print(f"60k-row CSV ({size / 1e6:.0f} MB): load {elapsed:.2f} s in-process; subprocess {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU; peak RSS grew {(peak - before) / 2**20:.0f} MiB = {growth:.1f}x the "
          f"{nbytes / 2**20:.0f} MiB uint8 array")  # fmt: skip
    assert rows == 60000
    assert growth < 6, "peak memory should stay a small multiple of the final uint8 array"
