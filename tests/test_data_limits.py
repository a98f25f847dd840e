"""Hostile and oversized inputs: every reader stays within bounded memory and time (portacnn.limits).

Each bomb is built small on disk in tmp_path (sparse files, repeated gzip members, forged headers) and
read in a child process whose address space is capped at 600 MB, so that a regression -- a reader that
inflates or reads a whole file before checking it -- fails with a MemoryError traceback or a timeout
instead of eating the machine. The child must end with one line on stderr that names the file and the
limit it hit, quickly and with a small peak RSS. The limits themselves (environment variables, their
defaults and bad values) are tested in-process.
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from clihelp import REPO, assert_one_line_error, cli_cmd, cli_env, tiny_model

from portacnn import cli, data, limits
from portacnn.data import DataError

try:
    import resource
except ImportError:  # Windows: no RLIMIT_AS
    resource = None

CAP_BYTES = 600 * 2**20  # address-space cap of the child: far below every bomb, far above a bounded reader
TIMEOUT_S = 60
PEAK_LIMIT_MB = 300  # "a few hundred MB": interpreter, numpy and portacnn take about 100
GIB = 2**30

capped_only = pytest.mark.skipif(resource is None or sys.platform != "linux",
                                 reason="needs RLIMIT_AS and ru_maxrss in KiB (Linux)")  # fmt: skip

# Runs argv under the cap; prints the child's peak RSS (bytes) and wall time as the last stdout line.
CAPPED = r"""
import resource, subprocess, sys, time
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
t = time.perf_counter()
rc = subprocess.run(sys.argv[2:]).returncode
print("PEAK", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.perf_counter() - t, flush=True)
sys.exit(rc)
"""

# Calls portacnn.data.<function>(*paths); a ValueError becomes one line on stderr and exit status 2.
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


# ----------------------------------------------------------------------------------------------------
# building the bombs (small on disk, quick to write)


def idx_header(*dims) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


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


def write_labels(path, labels):
    labels = np.asarray(labels, dtype=np.uint8)
    path.write_bytes(idx_header(labels.size) + labels.tobytes())
    return path


def npy_bytes(shape, descr="|u1", payload=b"") -> bytes:
    """A .npy header declaring ``shape`` and ``descr``, followed by ``payload`` (not necessarily matching)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def write_npz(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
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


# 29 bytes: a GIF89a screen and image descriptor of 65535 x 65535 pixels and a one-pixel LZW stream
GIF_65535 = (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b"," + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0)
             + b"\x02\x02\x44\x01\x00;")  # fmt: skip


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    tiny_model().save(path)
    return path


# ----------------------------------------------------------------------------------------------------
# the bombs, each read in a capped child


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


# ----------------------------------------------------------------------------------------------------
# the same checks in-process, on small files


def test_gz_idx_trailing_bytes_are_counted_exactly_when_few(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "trail-images.gz"
    path.write_bytes(gzip.compress(idx_header(2, 3, 3) + x.tobytes() + b"\x00" * 10))
    with pytest.raises(DataError, match=r"^\S*trail-images.gz: 10 trailing bytes .* 2x3x3 = 18 bytes"):
        data.load_idx(path)
    path.write_bytes(gzip.compress(idx_header(2, 3, 3) + x.tobytes()[:-1]))
    with pytest.raises(DataError, match="truncated IDX data: header says 2x3x3 = 18 bytes but the decompressed "
                                        "data has 17"):  # fmt: skip
        data.open_idx(path)


def test_open_idx_reads_rows_on_demand(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 4, 3), dtype=np.uint8)
    y = np.arange(50) % 12
    xi = tmp_path / "images-idx3-ubyte"
    xi.write_bytes(idx_header(50, 4, 3) + x.tobytes())
    yi = write_labels(tmp_path / "labels-idx1-ubyte", y)
    images, labels = data.open_idx(xi, yi, num_classes=12)
    assert isinstance(images, data.IdxImages)
    assert images.shape == (50, 4, 3) and len(images) == 50 and images.dtype == np.uint8
    np.testing.assert_array_equal(images[7:19], x[7:19])
    np.testing.assert_array_equal(images[-3:], x[-3:])
    np.testing.assert_array_equal(images[5], x[5])
    np.testing.assert_array_equal(images[np.int64(-1)], x[-1])
    np.testing.assert_array_equal(images[::2], x[::2])
    np.testing.assert_array_equal(images[[3, 1]], x[[3, 1]])
    np.testing.assert_array_equal(np.asarray(images), x)
    assert images[40:10].shape == (0, 4, 3)
    with pytest.raises(IndexError):
        images[50]
    np.testing.assert_array_equal(labels, y)
    with pytest.raises(DataError, match="label 10 at index 10 is outside 0..9"):
        data.open_idx(xi, yi)  # the default num_classes=10
    xi.write_bytes(xi.read_bytes()[:-12])  # the file shrinks after it was opened
    with pytest.raises(DataError, match="changed while it was being read"):
        images[45:50]


def test_open_idx_reads_a_gzip_file_whole_and_open_any_dispatches(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz = tmp_path / "images.gz"
    gz.write_bytes(gzip.compress(idx_header(2, 3, 4) + x.tobytes()))
    images, labels = data.open_idx(gz)
    assert isinstance(images, np.ndarray) and labels is None
    np.testing.assert_array_equal(images, x)
    plain = tmp_path / "images-plain"
    plain.write_bytes(idx_header(2, 3, 4) + x.tobytes())
    assert isinstance(data.open_any(plain)[0], data.IdxImages)
    npz = tmp_path / "set.npz"
    np.savez(npz, x=x, y=np.array([1, 2]))
    images, labels = data.open_any(npz)
    np.testing.assert_array_equal(images, x)
    assert labels.tolist() == [1, 2]


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


@pytest.mark.parametrize("payload", [b"\x00\x01garbage", b"\x1f\x8b\x08\x00"], ids=["not-an-image", "gzip-magic"])
def test_pil_failures_are_one_line_errors(tmp_path, model_path, capsys, payload):
    path = tmp_path / "broken.png"
    path.write_bytes(payload)
    assert cli.main(["predict", str(model_path), str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "portacnn: error:", "broken.png", "not a readable image")


def test_truncated_gif_is_a_one_line_error(tmp_path, model_path, capsys):
    from PIL import Image

    path = tmp_path / "cut.gif"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    assert cli.main(["predict", str(model_path), str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "portacnn: error:", "cut.gif")


def test_a_broken_test_split_is_reported_not_skipped(tmp_path):
    x = np.zeros((20, 28, 28), np.uint8)
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(idx_header(20, 28, 28) + x.tobytes())
        write_labels(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(20) % 10)
    images, labels, exact = cli._load_split(str(tmp_path), "test", any_pair=False)
    assert exact and images.shape == (20, 28, 28)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_header(20, 28, 28) + x.tobytes()[:-1])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: truncated IDX data"):
        cli._load_split(str(tmp_path), "test", any_pair=False)


# ----------------------------------------------------------------------------------------------------
# the limits: adjustable, and bad values are one-line errors


def test_defaults_and_units():
    assert limits.MAX_DATA_BYTES.default == GIB > 1_000_000 * 28 * 28
    assert limits.MAX_IMAGE_SIDE.default == 8192
    assert limits.MAX_CSV_LINE_BYTES.default == 2**20
    assert limits.MAX_DATA_BYTES.text(GIB) == "1073741824 bytes (1 GiB)"
    assert limits.MAX_IMAGE_SIDE.text(8192) == "8192 pixels"


@pytest.mark.parametrize(("text", "value"), [("4096", 4096), (" 2K ", 2048), ("3M", 3 * 2**20), ("2g", 2 * GIB),
                                             ("1GiB", GIB), ("5 MB", 5 * 2**20), ("1_000", 1000), ("", GIB)])  # fmt: skip
def test_env_values(monkeypatch, text, value):
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", text)
    assert limits.MAX_DATA_BYTES.get() == value


@pytest.mark.parametrize("limit", [limits.MAX_DATA_BYTES, limits.MAX_IMAGE_SIDE, limits.MAX_CSV_LINE_BYTES],
                         ids=lambda lim: lim.env)  # fmt: skip
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
                           (npz, "(40, 10, 10) of uint8 = 4000 bytes"), (csv, "line 32: more than 30 rows")):
        with pytest.raises(DataError) as ei:
            data.load_any(path)
        message = str(ei.value)
        assert message.startswith(str(path)) and fragment in message, message
        assert "3072 bytes (3 KiB) set by PORTACNN_MAX_DATA_BYTES" in message and "\n" not in message
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "4000")  # the images fit, but not the labels as well
    with pytest.raises(DataError, match=r"the arrays declare 4000 \+ 40 bytes .* = 4040 bytes, over the limit"):
        data.load_npz(npz)
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "4K")
    for path in (idx, gz, npz, csv):
        np.testing.assert_array_equal(data.load_any(path)[0], x)


def test_image_side_limit_is_adjustable(monkeypatch, tmp_path, model_path, capsys):
    from PIL import Image

    png = tmp_path / "wide.png"
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(png)
    idx = tmp_path / "wide-images-idx3-ubyte"
    idx.write_bytes(idx_header(1, 20, 40) + bytes(800))
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_SIDE", "32")
    assert cli.main(["predict", str(model_path), str(png)]) == 2
    assert_one_line_error(capsys.readouterr().err, "wide.png", "40x20 pixels", "32 pixels",
                          "PORTACNN_MAX_IMAGE_SIDE=40")  # fmt: skip
    with pytest.raises(DataError, match="images of 20x40 pixels: side = 40 pixels, over the limit of 32 pixels"):
        data.load_idx(idx)
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_SIDE", "64")
    assert cli.main(["predict", str(model_path), str(png)]) == 0
    assert "wide.png: " in capsys.readouterr().out
    assert data.load_idx(idx)[0].shape == (1, 20, 40)


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
    monkeypatch.setattr(data, "_CSV_CHUNK_BYTES", chunk)
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
