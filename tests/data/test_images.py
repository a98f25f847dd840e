"""Tests of portacnn.data.images: image files through Pillow, the side limit checked before decoding,
every failure one line (directly and through ``portacnn predict``)."""

from __future__ import annotations

import numpy as np
import pytest
from clihelp import assert_one_line_error, tiny_model
from datahelp import idx_header

from portacnn import cli, data
from portacnn.data import DataError


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    tiny_model().save(path)
    return path


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
    assert cli.main(["predict", str(model_path), str(png), "--resize", "stretch"]) == 0  # 40x20: not square
    assert "wide.png: " in capsys.readouterr().out
    assert data.load_idx(idx)[0].shape == (1, 20, 40)


def test_read_image_greyscale_resized_and_inverted(tmp_path):
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    png = tmp_path / "digit.png"
    Image.fromarray(a).save(png)
    got = data.read_image(png, invert=False)
    assert got.dtype == np.uint8 and got.shape == (28, 28)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(data.read_image(png, invert=True), 255 - a)
    rgb = tmp_path / "colour.jpg"
    Image.fromarray(np.zeros((56, 40, 3), np.uint8)).save(rgb)
    assert data.read_image(rgb, invert=False).shape == (28, 28)
    assert data.read_image(rgb, invert=False, size=(10, 12)).shape == (12, 10)
    assert {".png", ".jpg", ".jpeg", ".gif"} <= data.IMAGE_SUFFIXES


def test_read_image_errors_are_one_line_data_errors(tmp_path, monkeypatch):
    from PIL import Image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError) as ei:
        data.read_image(broken, invert=False)
    assert str(ei.value).startswith(f"{broken}: not a readable image (") and "\n" not in str(ei.value)
    assert ei.value.path == str(broken)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(wide)
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_SIDE", "32")
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError) as ei:
        data.read_image(wide, invert=False)
    assert str(ei.value) == (f"{wide}: image of 40x20 pixels, over the limit of 32 pixels a side set by "
                             f"PORTACNN_MAX_IMAGE_SIDE -- if the file is genuine, raise the limit: "
                             f"PORTACNN_MAX_IMAGE_SIDE=40")  # fmt: skip
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # Pillow's own check is restored afterwards


# -- open_image: channels, 16-bit values, transparency, sizes ----------------------------------------------------
def test_open_image_channels_first_at_native_size(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    Image.fromarray(rgb).save(path)
    got = data.open_image(path)
    assert got.shape == (3, 5, 7) and got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, rgb.transpose(2, 0, 1))
    assert got[2, 4, 6] == rgb[4, 6, 2]
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(data.open_image(path, channels=1), grey[None])
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert data.open_image(tmp_path / "grey.png").shape == (1, 5, 7)
    np.testing.assert_array_equal(data.open_image(tmp_path / "grey.png", channels=3), np.stack([grey] * 3))
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.gif")
    assert data.open_image(tmp_path / "palette.gif").shape == (3, 5, 7)  # a palette counts as colour
    Image.fromarray(grey > 128).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(data.open_image(tmp_path / "bits.png")[0], np.where(grey > 128, 255, 0))


def test_open_image_scales_16_bit_and_checks_32_bit(tmp_path):
    from PIL import Image

    wide = np.array([[0, 1, 128, 129], [257, 300, 65406, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    np.testing.assert_array_equal(data.open_image(path)[0], [[0, 0, 0, 1], [1, 1, 254, 255]])  # round(v / 257)
    assert data.read_image(path, invert=False, size=(4, 2)).tolist() == [[0, 0, 0, 1], [1, 1, 254, 255]]
    small = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32)).save(small)
    assert data.open_image(small).tolist() == [[[0, 7, 255]]]  # 8-bit values in a 32-bit image: as they are
    Image.fromarray(np.array([[0, 7, 65535]], dtype=np.int32)).save(small)
    assert data.open_image(small).tolist() == [[[0, 0, 255]]]  # up to 65535: scaled as 16-bit
    Image.fromarray(np.array([[0, -1, 5]], dtype=np.int32)).save(small)
    with pytest.raises(DataError, match=r"int32.tif: I-mode image with values in -1..5; 32-bit images must hold"):
        data.open_image(small)


def test_open_image_composites_transparency_on_black(tmp_path):
    from PIL import Image

    rgba = np.array([[[200, 100, 50, 128], [255, 255, 255, 0], [10, 20, 30, 255]]], dtype=np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    got = data.open_image(path)
    assert got.shape == (3, 1, 3)
    assert got[:, 0, 0].tolist() == [100, 50, 25]  # round(v * 128 / 255)
    assert got[:, 0, 1].tolist() == [0, 0, 0]  # fully transparent white: black, not white
    assert got[:, 0, 2].tolist() == [10, 20, 30]
    np.testing.assert_array_equal(data.open_image(path, channels=1)[0],
                                  np.asarray(Image.fromarray(got.transpose(1, 2, 0)).convert("L")))  # fmt: skip
    assert data.read_image(path, invert=False, size=(3, 1))[0, 1] == 0
    la = tmp_path / "la.png"
    Image.fromarray(np.array([[[255, 0], [255, 51], [90, 255]]], dtype=np.uint8), "LA").save(la)
    assert data.open_image(la).tolist() == [[[0, 51, 90]]]
    keyed = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), "P")
    keyed.putpalette([250, 0, 0, 0, 250, 0, 0, 0, 250])
    keyed.save(tmp_path / "keyed.gif", transparency=1)
    assert data.open_image(tmp_path / "keyed.gif")[:, 0].T.tolist() == [[250, 0, 0], [0, 0, 0], [0, 0, 250]]


def test_open_image_resize_and_resize_images_agree(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    got = data.open_image(tmp_path / "a.png", size=(6, 5))
    expected = np.asarray(Image.fromarray(rgb).resize((5, 6), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert got.shape == (3, 6, 5)
    np.testing.assert_array_equal(got, expected)
    batch = np.stack([rgb.transpose(2, 0, 1), rgb[::-1].transpose(2, 0, 1)])
    out = data.resize_images(batch, (6, 5))
    assert out.shape == (2, 3, 6, 5) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], got)
    grey = data.resize_images(batch[:, :1], (3, 4))
    lanczos = Image.fromarray(np.ascontiguousarray(rgb[::-1, :, 0])).resize((4, 3), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(grey[1, 0], np.asarray(lanczos))
    same = data.resize_images(batch, (12, 9))
    np.testing.assert_array_equal(same, batch)
    assert not np.shares_memory(same, batch)
    with pytest.raises(DataError, match=r"resize_images: expected uint8 images \(N, C, H, W\) with C = 1 or 3"):
        data.resize_images(batch.astype(np.float32), (6, 5))
    with pytest.raises(ValueError, match="size must be"):
        data.resize_images(batch, (0, 5))
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        data.open_image(tmp_path / "a.png", channels=4)
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        data.open_image(tmp_path / "a.png", size=(True, 5))


def test_open_image_side_limit_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(wide)
    monkeypatch.setenv("PORTACNN_MAX_IMAGE_SIDE", "32")
    with pytest.raises(DataError) as ei:
        data.open_image(wide)
    assert str(ei.value) == (f"{wide}: image of 40x20 pixels, over the limit of 32 pixels a side set by "
                             f"PORTACNN_MAX_IMAGE_SIDE -- if the file is genuine, raise the limit: "
                             f"PORTACNN_MAX_IMAGE_SIDE=40")  # fmt: skip
    with pytest.raises(ValueError, match=r"size=\(33, 8\) is over the limit of 32 pixels a side"):
        data.open_image(wide, size=(33, 8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        data.open_image(broken)
