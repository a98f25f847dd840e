"""Tests of portacnn.data.preprocessing: images to float32 (N, 1, H, W) in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from portacnn import data
from portacnn.data import DataError


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
