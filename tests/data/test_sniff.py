"""Tests of portacnn.data.sniff: load_any / open_any recognise a file's format by content, not name."""

from __future__ import annotations

import numpy as np
from datahelp import _synthetic_split, assert_data_error, csv_text, idx_bytes, write

from portacnn import data


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
