"""Hostile and oversized inputs: every reader stays within bounded memory and time (portacnn.data.limits).

Each bomb is built small on disk in tmp_path (sparse files, repeated gzip members, forged headers) and
read in a child process whose address space is capped at 600 MB, so that a regression -- a reader that
inflates or reads a whole file before checking it -- fails with a MemoryError traceback or a timeout
instead of eating the machine. The child must end with one line on stderr that names the file and the
limit it hit, quickly and with a small peak RSS. The limits themselves (environment variables, their
defaults and bad values) are tested in-process.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from clihelp import REPO, assert_one_line_error, cli_cmd, cli_env, tiny_model
from datahelp import idx_header, npy_bytes, write_labels, write_npz, write_sparse_npz

from portacnn import cli, data
from portacnn.data import DataError, kaggle_csv, limits

try:
    import resource
except ImportError:  # Windows: no RLIMIT_AS
    resource = None

pytestmark = pytest.mark.slow  # bombs read in subprocesses under an address-space cap: run by .ci/run, not by a plain pytest
CAP_BYTES = 600 * 2**20  # address-space cap of the child: far below every bomb, far above a bounded reader

TIMEOUT_S = 60

PEAK_LIMIT_MB = 300  # "a few hundred MB": interpreter, numpy and portacnn take about 100

GIB = 2**30

capped_only = pytest.mark.skipif(resource is None or sys.platform != "linux",
                                 reason="needs RLIMIT_AS and ru_maxrss in KiB (Linux)")  # fmt: skip

CAPPED = r"""
import resource, subprocess, sys, time
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
t = time.perf_counter()
rc = subprocess.run(sys.argv[2:]).returncode
print("PEAK", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.perf_counter() - t, flush=True)
sys.exit(rc)
"""

LOAD = r"""
import sys
from portacnn import data

try:
    images, labels = getattr(data, sys.argv[1])(*sys.argv[2:])
except ValueError as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(2)
print("loaded", images.shape, None if labels is None else labels.shape)
"""


def run_capped(*argv, env=None):
    """(completed process, peak RSS in MB, seconds) of ``argv`` run under the address-space cap."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CAPPED, str(CAP_BYTES), *map(str, argv)], capture_output=True,
                          text=True, timeout=TIMEOUT_S, cwd=REPO, env=cli_env(**(env or {})))  # fmt: skip
    elapsed = time.perf_counter() - t
    lines = proc.stdout.splitlines()
    assert lines and lines[-1].startswith("PEAK"), f"no measurement\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    _, peak, seconds = lines[-1].split()
    print(f"{argv[-1]}: peak {int(peak) / 2**20:.0f} MB, {float(seconds):.2f} s, stderr: {proc.stderr.strip()}")
    return proc, int(peak) / 2**20, elapsed


def load_capped(function, *paths, env=None):
    return run_capped(sys.executable, "-c", LOAD, function, *paths, env=env)


def assert_bounded_error(result, path, *fragments, code=2):
    """Exit ``code``, one stderr line naming the file and the fragments, no traceback, small and quick."""
    proc, peak_mb, seconds = result
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\nstderr:{proc.stderr}"
    line = assert_one_line_error(proc.stderr, path.name, *fragments)
    assert peak_mb < PEAK_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
    assert seconds < TIMEOUT_S
    return line


def write_gz_idx_bomb(path, zeros=2 * GIB):
    """A gzip IDX file declaring one 28x28 image, then ``zeros`` more zero bytes: about 2 MB on disk.

    A first gzip member holds the header and the image, then copies of one member of 8 MiB of zeros
    follow (gzip readers read concatenated members as one stream).
    """
    block = 8 * 2**20
    member = gzip.compress(bytes(block), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(idx_header(1, 28, 28) + bytes(784)))
        for _ in range(zeros // block):
            f.write(member)
    return path


def write_sparse_idx(path, n, h=28, w=28, short_by=0):
    """A plain IDX images file of ``n`` zero images (sparse: no disk blocks), ``short_by`` bytes short."""
    with open(path, "wb") as f:
        f.write(idx_header(n, h, w))
        f.truncate(16 + n * h * w - short_by)
    return path


def write_huge_csv_header(path, nbytes, gz=False):
    """A CSV file whose header line alone is about ``nbytes`` long, written in 1 MiB pieces."""
    chunk = b"".join(b"pixel%d," % i for i in range(200_000))[: 2**20]
    with (gzip.open(path, "wb", compresslevel=1) if gz else open(path, "wb")) as f:
        f.write(b"label,")
        for _ in range(nbytes // len(chunk)):
            f.write(chunk)
        f.write(b"pixel0\n0,0\n")
    return path


GIF_65535 = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
             + b"\x02\x02\x44\x01\x00;")  # fmt: skip


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    tiny_model().save(path)
    return path


@capped_only
@pytest.mark.parametrize("function", ["load_idx", "open_any"])
def test_gz_idx_inflating_to_2_gb_stops_after_the_declared_image(tmp_path, function):
    path = write_gz_idx_bomb(tmp_path / "bomb-images-idx3-ubyte.gz")
    assert path.stat().st_size < 3 * 2**20
    assert_bounded_error(load_capped(function, path), path, "trailing bytes", "1x28x28 = 784 bytes")


@capped_only
def test_gz_idx_bomb_through_the_cli(tmp_path, model_path):
    path = write_gz_idx_bomb(tmp_path / "bomb-images-idx3-ubyte.gz")
    line = assert_bounded_error(run_capped(*cli_cmd("predict", model_path, path)), path, "trailing bytes")
    assert line.startswith("portacnn: error:")


@capped_only
def test_gz_idx_declaring_more_than_the_limit(tmp_path):
    path = tmp_path / "big-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(2_000_000, 28, 28) + bytes(784)))
    assert_bounded_error(load_capped("load_idx", path), path, "2000000x28x28", "PORTACNN_MAX_DATA_BYTES=2G")


@capped_only
def test_plain_idx_one_byte_short_is_reported_without_reading_it(tmp_path, model_path):
    folder = tmp_path / "short"
    folder.mkdir()
    images = write_sparse_idx(folder / "t10k-images-idx3-ubyte", 1_000_000, short_by=1)  # 784 MB, sparse
    write_labels(folder / "t10k-labels-idx1-ubyte", np.zeros(1_000_000))
    fragments = ("truncated IDX data", "784000000 bytes", "783999999")
    assert_bounded_error(load_capped("open_idx", images), images, *fragments)
    assert_bounded_error(load_capped("load_idx", images), images, *fragments)
    assert_bounded_error(run_capped(*cli_cmd("evaluate", model_path, "--data", folder)), images, *fragments)
    assert_bounded_error(run_capped(*cli_cmd("predict", model_path, images)), images, *fragments)


@capped_only
def test_one_bad_label_is_reported_without_reading_the_images(tmp_path, model_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    images = write_sparse_idx(folder / "t10k-images-idx3-ubyte", 1_000_000)  # 784 MB, sparse
    y = np.arange(1_000_000) % 10
    y[765_432] = 10
    labels = write_labels(folder / "t10k-labels-idx1-ubyte", y)
    fragments = ("label 10 at index 765432", "outside 0..9", "num_classes=10")
    assert_bounded_error(load_capped("open_idx", images, labels), labels, *fragments)
    assert_bounded_error(run_capped(*cli_cmd("evaluate", model_path, "--data", folder)), labels, *fragments)


@capped_only
def test_npz_declaring_2_gb_is_refused_before_inflating(tmp_path, model_path):
    path = write_npz(tmp_path / "bomb.npz", {"x.npy": npy_bytes((2_500_000, 28, 28), payload=bytes(784)),
                                             "y.npy": npy_bytes((2_500_000,), payload=bytes(8))})  # fmt: skip
    fragments = ("'x'", "(2500000, 28, 28)", "1960000000 bytes", "PORTACNN_MAX_DATA_BYTES")
    assert_bounded_error(load_capped("load_npz", path), path, *fragments)
    assert_bounded_error(run_capped(*cli_cmd("predict", model_path, path)), path, *fragments)
    # with the limit raised, the forged shape still allocates nothing: the member is too small for it
    raised = load_capped("load_npz", path, env={"PORTACNN_MAX_DATA_BYTES": "4G"})
    assert_bounded_error(raised, path, "truncated", "holds 784")


@capped_only
@pytest.mark.parametrize("shape, descr, fragments", [
    ((1, 30000, 30000), "|u1", ("30000x30000", "PORTACNN_MAX_IMAGE_SIDE=30000")),
    ((1, 1, 30000, 30000), "|u1", ("30000x30000", "PORTACNN_MAX_IMAGE_SIDE")),
    ((1, 10000, 10000), "<f8", ("dtype float64", "integers in 0..255")),
], ids=["30000x30000", "30000x30000-channel", "float64"])
def test_npz_holding_one_huge_image_is_refused_from_its_header(tmp_path, model_path, shape, descr, fragments):
    """One 30000x30000 image (900 MB of uint8, within the 1 GiB data limit) is refused for its side from the
    .npy header before the data are read: well under the 600 MB cap, peak RSS under 300 MB (it used to read
    all 900 MB first); an 800 MB float64 image, for its dtype, likewise. The file is sparse: a few KB on disk."""
    path = write_sparse_npz(tmp_path / "huge.npz", {"x.npy": (shape, descr)})
    assert_bounded_error(load_capped("load_npz", path), path, *fragments)
    assert_bounded_error(run_capped(*cli_cmd("predict", model_path, path)), path, *fragments)


@capped_only
def test_gif_declaring_65535_pixels_a_side(tmp_path, model_path):
    path = tmp_path / "bomb.gif"
    path.write_bytes(GIF_65535)
    assert len(GIF_65535) == 29
    line = assert_bounded_error(run_capped(*cli_cmd("predict", model_path, path)), path, "65535x65535",
                                "8192 pixels", "PORTACNN_MAX_IMAGE_SIDE=65535")  # fmt: skip
    assert line.startswith("portacnn: error:")


@capped_only
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_csv_header_line_of_100_mb(tmp_path, model_path, gz):
    path = write_huge_csv_header(tmp_path / ("header.csv.gz" if gz else "header.csv"), 100 * 2**20, gz=gz)
    fragments = ("line 1:", "longer than 1048576 bytes", "PORTACNN_MAX_CSV_LINE_BYTES")
    assert_bounded_error(load_capped("load_csv", path), path, *fragments)
    assert_bounded_error(run_capped(*cli_cmd("predict", model_path, path)), path, *fragments)


@capped_only
def test_a_million_images_still_load_with_the_default_limits(tmp_path):
    """784 MB of images are under the 1 GiB default; open_idx keeps them on disk, under the 600 MB cap."""
    path = write_sparse_idx(tmp_path / "million-images-idx3-ubyte", 1_000_000)
    proc, peak_mb, _ = load_capped("open_idx", path)
    assert proc.returncode == 0, proc.stderr
    assert "loaded (1000000, 28, 28)" in proc.stdout
    assert peak_mb < PEAK_LIMIT_MB


def test_defaults_and_units():
    assert limits.MAX_DATA_BYTES.default == GIB > 1_000_000 * 28 * 28
    assert limits.MAX_IMAGE_SIDE.default == 8192
    assert limits.MAX_CSV_LINE_BYTES.default == 2**20
    assert limits.MAX_IMAGE_FILES.default == 1_000_000
    assert limits.MAX_DATA_BYTES.text(GIB) == "1073741824 bytes (1 GiB)"
    assert limits.MAX_IMAGE_SIDE.text(8192) == "8192 pixels"
    assert limits.MAX_IMAGE_FILES.text(500) == "500 files"


@pytest.mark.parametrize(("text", "value"), [("4096", 4096), (" 2K ", 2048), ("3M", 3 * 2**20), ("2g", 2 * GIB),
                                             ("1GiB", GIB), ("5 MB", 5 * 2**20), ("1_000", 1000), ("", GIB)])  # fmt: skip
def test_env_values(monkeypatch, text, value):
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", text)
    assert limits.MAX_DATA_BYTES.get() == value


@pytest.mark.parametrize("limit", [limits.MAX_DATA_BYTES, limits.MAX_IMAGE_SIDE, limits.MAX_CSV_LINE_BYTES,
                                   limits.MAX_IMAGE_FILES], ids=lambda lim: lim.env)  # fmt: skip
@pytest.mark.parametrize("text", ["abc", "-5", "0", "1.5", "12X", "1e6", "0x10"])
def test_bad_env_values_are_one_line_value_errors(monkeypatch, limit, text):
    monkeypatch.setenv(limit.env, text)
    with pytest.raises(ValueError) as ei:
        limit.get()
    message = str(ei.value)
    assert "\n" not in message and message.startswith(f"environment variable {limit.env} must be"), message
    assert f"got {text!r}" in message and "positive integer" in message and str(limit.default) in message
    with pytest.raises(ValueError, match=limit.env):
        limits.check_environment()


def test_suffixes_are_for_byte_limits_only(monkeypatch):
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_SIDE", "8K")
    with pytest.raises(ValueError, match="PORTACNN_MAX_IMAGE_SIDE must be a positive integer number of pixels; got '8K'"):
        limits.MAX_IMAGE_SIDE.get()


def test_bad_env_value_through_the_loaders_and_the_cli(monkeypatch, tmp_path, model_path, capsys):
    x = np.zeros((2, 3, 3), np.uint8)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_header(2, 3, 3) + x.tobytes())
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "lots")
    for load in (data.load_idx, data.open_any, data.load_csv):
        with pytest.raises(ValueError, match="PORTACNN_MAX_DATA_BYTES must be .*; got 'lots'"):
            load(path)
    assert cli.main(["predict", str(model_path), str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "portacnn: error:", "PORTACNN_MAX_DATA_BYTES", "'lots'")


def test_data_limit_is_adjustable_for_idx_npz_and_csv(monkeypatch, tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (40, 10, 10), dtype=np.uint8)  # 4000 bytes
    y = np.arange(40) % 10
    idx = tmp_path / "images-idx3-ubyte"
    idx.write_bytes(idx_header(40, 10, 10) + x.tobytes())
    gz = tmp_path / "images.gz"
    gz.write_bytes(gzip.compress(idx.read_bytes()))
    npz = tmp_path / "set.npz"
    np.savez(npz, x=x, y=y.astype(np.uint8))
    csv = tmp_path / "set.csv"
    rows = [",".join(["label"] + [f"pixel{i}" for i in range(100)])]
    rows += [",".join(map(str, [label, *img.ravel()])) for label, img in zip(y, x)]
    csv.write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "3K")
    for path, fragment in ((idx, "40x10x10 = 4000 bytes"), (gz, "40x10x10 = 4000 bytes"),
                           (npz, "(40, 10, 10) of uint8 = 4000 bytes"), (csv, "line 30: more than 28 rows")):
        with pytest.raises(DataError) as ei:
            data.load_any(path)
        message = str(ei.value)
        assert message.startswith(str(path)) and fragment in message, message
        assert "3072 bytes (3 KiB) set by PORTACNN_MAX_DATA_BYTES" in message and "\n" not in message
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "4000")  # the images fit, but not the labels as well
    # labels count as the int64 they become (8 bytes each), so 40 uint8 labels take 320
    with pytest.raises(DataError, match=r"the arrays declare 4000 \+ 320 bytes .* = 4320 bytes, over the limit"):
        data.load_npz(npz)
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "5K")
    for path in (idx, gz, npz, csv):
        np.testing.assert_array_equal(data.load_any(path)[0], x)


def test_csv_line_limit_is_adjustable(monkeypatch, tmp_path):
    header = ",".join(["label"] + [f"pixel{i}" for i in range(100)])  # 692 bytes
    row = ",".join(["3"] + ["255"] * 100)  # 401 bytes
    path = tmp_path / "lines.csv"
    path.write_text(f"{header}\n{row}\n{row}\n")
    monkeypatch.setenv("PORTACNN_MAX_CSV_LINE_BYTES", "500")
    with pytest.raises(DataError, match=r"lines.csv: line 1: line is longer than 500 bytes.*"
                                        r"PORTACNN_MAX_CSV_LINE_BYTES=1000"):  # fmt: skip
        data.load_csv(path)
    path.write_text(f"label,pixel0\n1,1\n1,{'0' * 600}\n")
    with pytest.raises(DataError, match="line 3: line is longer than 500 bytes"):
        data.load_csv(path)
    path.write_text(f"label,pixel0\n1,x\n1,{'0' * 600}\n")  # a bad row before the long line is reported first
    with pytest.raises(DataError, match="line 2: column 2 .pixel0.: non-numeric"):
        data.load_csv(path)
    path.write_text(f"{header}\n{row}\n{row}\n")
    monkeypatch.setenv("PORTACNN_MAX_CSV_LINE_BYTES", "1K")
    images, labels = data.load_csv(path)
    assert images.shape == (2, 10, 10) and labels.tolist() == [3, 3]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_csv_line_limit_across_chunk_boundaries(monkeypatch, tmp_path, chunk):
    monkeypatch.setattr(kaggle_csv, "_CSV_CHUNK_BYTES", chunk)
    monkeypatch.setenv("PORTACNN_MAX_CSV_LINE_BYTES", "40")
    lines = ["label,pixel0,pixel1,pixel2,pixel3"] + ["1,2,3,4,5"] * 30
    lines[20] = "1," + ",".join(["0" * 9] * 4)  # 41 bytes
    path = tmp_path / "chunks.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 21: line is longer than 40 bytes"):
        data.load_csv(path)
    lines[20] = "1," + ",".join(["0" * 9] * 3 + ["0" * 8])  # 40 bytes: allowed
    path.write_text("\n".join(lines))
    assert data.load_csv(path)[0].shape == (30, 2, 2)


# -- found by review: labels widened to int64, .npy header lengths, padded CSV cells ------------------------------
@capped_only
def test_a_labels_file_declaring_more_labels_than_images_is_refused_before_reading(tmp_path):
    """A 1 GiB-of-zeros labels payload (a few MB of gzip) beside 3 images: the count is compared from the
    header, so nothing is inflated, let alone widened to 8 GiB of int64."""
    images = write_sparse_idx(tmp_path / "t10k-images-idx3-ubyte", 3)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    block = 8 * 2**20
    member = gzip.compress(bytes(block), compresslevel=9)
    with open(labels, "wb") as f:
        f.write(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", GIB)))
        for _ in range(GIB // block):
            f.write(member)
    result = load_capped("load_idx", images, labels)
    assert_bounded_error(result, labels, "count mismatch", str(GIB))


def test_labels_count_as_int64_against_the_data_limit(monkeypatch, tmp_path):
    """Tiny images with many labels: the labels' int64 copy (8 bytes each) is what must fit."""
    n = 4096
    images = tmp_path / "x-images-idx3-ubyte"
    images.write_bytes(idx_header(n, 1, 1) + bytes(n))
    labels = tmp_path / "x-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", n) + bytes(n))
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "16K")  # the 4 KiB of images fit; 32 KiB of int64 labels do not
    with pytest.raises(DataError, match="4096 labels as int64"):
        data.load_idx(images, labels, num_classes=None)


def test_npz_header_length_is_checked_before_numpy_reads_it(tmp_path):
    """A .npy v2.0 header may declare up to 4 GiB; numpy reads it all before its own size check."""
    import zipfile

    path = tmp_path / "header.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x02\x00" + struct.pack("<I", 1 << 29) + b" " * 4096)
    with pytest.raises(DataError, match=r"\.npy header of 536870912 bytes"):
        data.load_npz(path)


def test_padded_csv_cells_take_the_vectorised_parser(monkeypatch, tmp_path):
    """Cells written as '+7' or with spaces are valid; they no longer send every chunk to the per-cell parser
    (25x slower): the vectorised parser reads them once the padding the format allows is removed."""
    from portacnn.data import kaggle_csv

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 10, 50)
    rows = ["label," + ",".join(f"pixel{i}" for i in range(16))]
    rows += [" +%d , " % label + ",".join(f" +{v}" for v in img.ravel()) + " " for label, img in zip(y, x)]
    path = tmp_path / "padded.csv"
    path.write_text("\n".join(rows) + "\n")
    calls = []
    real = kaggle_csv._parse_rows_slow
    monkeypatch.setattr(kaggle_csv, "_parse_rows_slow", lambda *a: calls.append(1) or real(*a))
    images, labels = data.load_csv(path)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    assert calls == []
    path.write_text("label," + ",".join(f"pixel{i}" for i in range(16)) + "\n1 2," + ",".join(["0"] * 16) + "\n")
    with pytest.raises(DataError, match="non-numeric value"):  # padding removed, never a space inside a cell
        data.load_csv(path)
