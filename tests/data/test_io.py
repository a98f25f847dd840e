"""Tests of portacnn.data._io and .errors: a missing file or a folder given as a file is a one-line
DataError (a missing one also a FileNotFoundError), whatever the reader."""

from __future__ import annotations

import pytest
from datahelp import assert_data_error

from portacnn import data


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
