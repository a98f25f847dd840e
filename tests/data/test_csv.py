"""Tests of portacnn.data.kaggle_csv: Kaggle-layout CSV files, their chunked parser and its error lines."""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datahelp import PORTACNN_DIR, assert_data_error, csv_text, small_set, write

from portacnn import data
from portacnn.data import kaggle_csv


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
    monkeypatch.setattr(kaggle_csv, "_CSV_CHUNK_BYTES", chunk)
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


def write_big_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    table = [str(i).encode() for i in range(256)]
    flat = images.reshape(len(images), -1)
    with open(path, "wb") as f:
        f.write(b"label," + b",".join(b"pixel%d" % i for i in range(flat.shape[1])) + b"\n")
        for lab, row in zip(labels.tolist(), flat.tolist()):
            f.write(table[lab] + b"," + b",".join([table[v] for v in row]) + b"\n")


_MEASURE = """
import resource, sys, time, types
import numpy as np

def mem(field):  # bytes; VmHWM/VmRSS are per process image (ru_maxrss survives fork + exec on Linux)
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith(field + ":")).split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

portacnn = types.ModuleType("portacnn")  # portacnn.data without the rest of portacnn: small baseline
portacnn.__path__ = [sys.argv[2]]
sys.modules["portacnn"] = portacnn
from portacnn import data
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
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(PORTACNN_DIR)], capture_output=True,
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
