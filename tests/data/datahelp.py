"""Helpers shared by the tests of portacnn.data in this folder (not a test module).

Small files written into ``tmp_path``: IDX, CSV, ``.npz`` and CIFAR bytes, image files, and
:func:`assert_data_error`, the check that a loader fails with a one-line DataError naming the file. ``SHARED`` is the copy of the data
in ``../shared`` next to the checkout; tests that compare with it skip when it is absent.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from portacnn.data import DataError

REPO = Path(__file__).resolve().parents[2]
PORTACNN_DIR = REPO / "portacnn"

SHARED = REPO.parent / "shared" / "data" / "kannada_mnist"


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


def _synthetic_split(n, seed, h=4, w=4):
    x, _ = small_set(n=n, h=h, w=w, seed=seed)
    return x, np.arange(n) % 10


def idx_header(*dims) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


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


def write_sparse_npz(path, members: dict[str, tuple]):
    """An uncompressed (stored) ``.npz`` of members ``name -> (shape, descr)`` whose data are holes: the file
    declares gigabytes and takes a few disk blocks, written in milliseconds. The CRC of a member of up to 16 MB
    is right (its zero bytes read back as a valid array); that of a larger one is 0: a reader that reads all of
    it fails on it, one that refuses it from its header never sees it.
    """
    directory = b""
    with open(path, "wb") as f:
        for name, (shape, descr) in members.items():
            header = npy_bytes(shape, descr)
            size = len(header) + math.prod(shape) * np.dtype(descr).itemsize
            crc = zlib.crc32(bytes(size - len(header)), zlib.crc32(header)) if size <= 1 << 24 else 0
            fname, offset = name.encode(), f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, size, size, len(fname), 0) + fname)
            f.write(header)
            f.seek(size - len(header), 1)  # the data: a hole
            directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, size, size,
                                     len(fname), 0, 0, 0, 0, 0, offset) + fname
        start = f.tell()
        f.write(directory)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), start, 0))
    return Path(path)


def cifar_records(labels, seed=0, pixels=None) -> bytes:
    """CIFAR binary records: each row of ``labels`` (1 or 2 label bytes) followed by 3072 pixel bytes."""
    labels = np.asarray(labels, dtype=np.uint8).reshape(len(labels), -1)
    if pixels is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.concatenate([labels, np.asarray(pixels, np.uint8).reshape(len(labels), 3072)], axis=1).tobytes()


def save_image(path: Path, pixels) -> Path:
    """Write ``pixels`` (uint8 (H, W) greyscale or (H, W, 3) colour) as an image file, folders created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path
