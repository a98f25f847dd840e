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
    assert cli.main(["predict", str(model_path), str(png)]) == 0
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
