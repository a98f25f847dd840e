"""Tests of portacnn.data.preprocessing and portacnn.data.layout: images to float32 (N, C, H, W) in [0, 1],
channels-last batches to channels-first."""

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
        data.preprocess(np.zeros((2, 2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="shape"):
        data.preprocess(np.zeros((28, 28), np.uint8))
    with pytest.raises(DataError, match="dtype"):
        data.preprocess(np.zeros((1, 2, 2), bool))


def test_preprocess_grey_is_unchanged_bit_for_bit():
    """The greyscale path before channels existed: x / 255 in float32, (N, 1, H, W), also for widths of 1 or 3."""
    x = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = (x.astype(np.float32) / np.float32(255))[:, None]
    for grey in (x, x[:, None], x.astype(np.int16)):
        out = data.preprocess(grey)
        assert out.shape == (5, 1, 7, 3) and out.dtype == np.float32
        assert out.tobytes() == expected.tobytes()


def test_preprocess_colour_channels_first_and_last():
    rng = np.random.default_rng(2)
    first = rng.integers(0, 256, (2, 3, 5, 4), dtype=np.uint8)
    last = np.ascontiguousarray(first.transpose(0, 2, 3, 1))  # (2, 5, 4, 3)
    expected = first.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(data.preprocess(first), expected)
    out = data.preprocess(last)
    assert out.shape == (2, 3, 5, 4) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)
    assert out[1, 2, 4, 0] == np.float32(last[1, 4, 0, 2]) / np.float32(255)  # channel 2 of pixel (4, 0)
    ambiguous = rng.integers(0, 256, (2, 3, 6, 3), dtype=np.uint8)
    with pytest.raises(DataError, match=r"preprocess: .*\(2, 3, 6, 3\).*layout=\"channels_first\" or "
                                        r"layout=\"channels_last\""):  # fmt: skip
        data.preprocess(ambiguous)
    np.testing.assert_array_equal(data.preprocess(ambiguous, layout="channels_last"),
                                  ambiguous.transpose(0, 3, 1, 2) / np.float32(255))  # fmt: skip
    np.testing.assert_array_equal(data.preprocess(ambiguous, layout="channels_first"), ambiguous / np.float32(255))


def test_to_channels_first_reads_shapes():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    got = data.to_channels_first(x)
    assert got.shape == (2, 3, 4, 5) and got[1, 2, 3, 4] == x[1, 3, 4, 2]
    assert np.shares_memory(got, x)  # a view, no copy
    assert data.to_channels_first(x[..., :1]).shape == (2, 1, 4, 5)
    assert data.to_channels_first(x[:, :, :, 0]).shape == (2, 1, 4, 5)
    first = x.transpose(0, 3, 1, 2)
    assert data.to_channels_first(first).shape == (2, 3, 4, 5) and np.shares_memory(data.to_channels_first(first), x)
    assert data.to_channels_first(np.zeros((2, 1, 6, 3))).shape == (2, 1, 6, 3)  # axis 1 of 1 wins: grey
    assert data.to_channels_first(np.zeros((2, 3, 6, 3)), layout="channels_last").shape == (2, 3, 3, 6)
    assert data.to_channels_first(np.zeros((2, 6, 6)), layout="channels_last").shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="layout must be one of 'auto', 'channels_first', 'channels_last'"):
        data.to_channels_first(np.zeros((1, 2, 2)), layout="NHWC")


@pytest.mark.parametrize(("shape", "layout", "fragments"), [
    ((2, 3, 8, 3), "auto", ["(2, 3, 8, 3)", "channels-first", "channels-last", 'layout="channels_first"']),
    ((2, 3, 8, 1), "auto", ["reads as channels-first (N, C, H, W) and as channels-last"]),
    ((2, 8, 8, 4), "auto", ["4 channels (RGBA?)", "images[..., :3]"]),
    ((2, 4, 8, 8), "auto", ["4 channels (RGBA?)", "images[:, :3]"]),
    ((2, 4, 8, 3), "channels_first", ["4 channels (RGBA?)", "images[:, :3]"]),
    ((2, 8, 8, 2), "auto", ["expected 1 or 3 channels on axis 1 (channels-first) or the last axis"]),
    ((2, 3, 8, 8), "channels_last", ["expected 1 or 3 channels on the last axis (channels-last)"]),
    ((8, 8), "auto", ["expected images (N, H, W), (N, C, H, W) or (N, H, W, C)"]),
    ((1, 2, 8, 8, 3), "auto", ["has shape (1, 2, 8, 8, 3)"]),
])  # fmt: skip
def test_to_channels_first_errors(shape, layout, fragments):
    with pytest.raises(DataError) as ei:
        data.to_channels_first(np.zeros(shape, np.uint8), layout=layout)
    msg = str(ei.value)
    assert msg.startswith("to_channels_first: the images array has shape") and "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg
