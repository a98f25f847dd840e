"""portacnn.image_files.read_images: image files made into what a model reads, each change said out loud."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import portacnn as pc
from portacnn.data import DataError
from portacnn.image_files import ASPECT_TOLERANCE, read_images
from portacnn.preprocessing import InputWarning, Preprocessing


def _save(path, pixels):
    from PIL import Image

    Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
    return path


def _lanczos(pixels, size):
    """Pillow's LANCZOS resize of one (H, W) or (H, W, 3) image to (H, W) ``size``: the independent reference."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(pixels, np.uint8)).resize((size[1], size[0]), Image.LANCZOS))


GREY = Preprocessing(1, (8, 8), border=0.0, border_spread=0.01)
COLOUR = Preprocessing(3, (8, 8))


def test_images_of_the_models_size_and_channels_are_read_as_they_are_without_a_word(tmp_path):
    rng = np.random.default_rng(0)
    grey, colour = rng.integers(0, 256, (8, 8)), rng.integers(0, 256, (8, 8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_images([_save(tmp_path / "g.png", grey)], preprocessing=GREY)
        np.testing.assert_array_equal(got, grey[None, None])
        got = read_images([_save(tmp_path / "c.png", colour)], preprocessing=COLOUR)
        np.testing.assert_array_equal(got, np.moveaxis(colour, -1, 0)[None])
        # grey saved as RGB (R = G = B) for a grey model: converted without a warning; grey for colour: repeated
        np.testing.assert_array_equal(read_images([_save(tmp_path / "rgb.png", np.stack([grey] * 3, -1))],
                                                  preprocessing=GREY), grey[None, None])
        np.testing.assert_array_equal(read_images([tmp_path / "g.png"], preprocessing=COLOUR),
                                      np.repeat(grey[None, None], 3, axis=1))
    assert got.dtype == np.uint8


def test_colour_for_a_grey_model_is_converted_with_a_warning(tmp_path):
    colour = np.random.default_rng(1).integers(0, 256, (8, 8, 3))
    with pytest.warns(InputWarning, match=r"1 colour image\(s\) read as greyscale.*c.png"):
        got = read_images([_save(tmp_path / "c.png", colour)], preprocessing=GREY)
    luma = (colour[..., 0] * 19595 + colour[..., 1] * 38470 + colour[..., 2] * 7471 + 0x8000) >> 16  # Pillow's "L"
    np.testing.assert_array_equal(got[0, 0], luma)


def test_another_size_of_the_same_aspect_is_resized_and_said(tmp_path):
    big = np.random.default_rng(2).integers(0, 256, (40, 40))
    with pytest.warns(InputWarning, match=r"1 image\(s\) resized to the 8x8 the model reads \(lanczos\): .*b.png 40x40"):
        got = read_images([_save(tmp_path / "b.png", big)], preprocessing=GREY)
    np.testing.assert_array_equal(got[0, 0], _lanczos(big, (8, 8)))
    # within the tolerance (9 % wider): resized too; beyond it: refused, naming the choices
    near = np.zeros((40, round(40 * (1 + ASPECT_TOLERANCE) - 1)))
    with pytest.warns(InputWarning, match="resized"):
        read_images([_save(tmp_path / "near.png", near)], preprocessing=GREY)
    with pytest.raises(DataError) as err:
        read_images([_save(tmp_path / "w.png", np.zeros((40, 120)))], preprocessing=GREY)
    text = str(err.value)
    assert "w.png" in text and "120x40" in text and "stretch, pad or crop" in text and "\n" not in text


@pytest.mark.parametrize("how", ["stretch", "pad", "crop"])
def test_the_chosen_fit_gives_what_pillow_gives_for_the_same_geometry(tmp_path, how):
    wide = np.random.default_rng(3).integers(1, 256, (10, 30))  # 30 wide, 10 tall, no zero pixels
    with pytest.warns(InputWarning):
        got = read_images([_save(tmp_path / "w.png", wide)], preprocessing=GREY, resize=how)
    if how == "stretch":
        expected = _lanczos(wide, (8, 8))
    elif how == "pad":  # 10 rows of zeros above and below (the training background, 0): 30x30, then resized
        expected = _lanczos(np.pad(wide, ((10, 10), (0, 0))), (8, 8))
    else:  # the centre 10x10
        expected = _lanczos(wide[:, 10:20], (8, 8))
    np.testing.assert_array_equal(got[0, 0], expected)


def test_invert_and_the_model_as_the_source_of_the_size(tmp_path):
    digit = np.zeros((8, 8))
    digit[2:6, 3:5] = 255
    m = pc.Sequential([pc.layers.Flatten(), pc.layers.Dense(64, 2)], input_shape=(1, 8, 8))
    path = _save(tmp_path / "d.png", 255 - digit)
    np.testing.assert_array_equal(read_images([path], m, invert=True)[0, 0], digit)
    m.preprocessing = GREY
    with pytest.warns(InputWarning, match="reversed polarity"):  # the model questions it when it reads it
        m.predict(read_images([path], m))
    with pytest.raises(ValueError, match="resize"):
        read_images([path], m, resize="squash")
    with pytest.raises(ValueError, match="image size the model reads"):
        read_images([path], pc.Sequential([pc.layers.Flatten(), pc.layers.Dense(64, 2)]))


def test_predict_invert_applies_to_data_files_and_its_warning_knows_it_was_given(tmp_path, capsys):
    """--invert inverts the images of a data file as it does image files (it was ignored there); a reversed
    polarity after --invert says to drop it, not to pass it again."""
    from portacnn import cli

    layers = [pc.layers.Flatten(), pc.layers.Dense(64, 3)]
    model = pc.Sequential(layers, seed=0)
    model.preprocessing = GREY  # dark backgrounds
    model.save(tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    dark = np.zeros((4, 8, 8), np.uint8)
    dark[:, 2:6, 2:6] = rng.integers(100, 256, (4, 4, 4))
    np.savez(tmp_path / "light.npz", x_train=255 - dark, y_train=np.zeros(4, int), x_test=255 - dark,
             y_test=np.zeros(4, int))
    np.savez(tmp_path / "dark.npz", x_train=dark, y_train=np.zeros(4, int), x_test=dark, y_test=np.zeros(4, int))

    def predict(*flags):
        assert cli.main(["predict", str(tmp_path / "m.safetensors"), *flags, "--json"]) == 0
        out = capsys.readouterr()
        return [p["probability"] for p in json.loads(out.out)["predictions"]], out.err

    as_dark, said = predict(str(tmp_path / "dark.npz"))
    assert said == ""
    inverted, said = predict(str(tmp_path / "light.npz"), "--invert")
    assert inverted == as_dark and said == ""
    _, said = predict(str(tmp_path / "dark.npz"), "--invert")
    assert "reversed polarity" in said and "drop it" in said and "invert them" not in said
    _, said = predict(str(tmp_path / "light.npz"))
    assert "invert them (portacnn predict --invert)" in said


def test_an_older_checkpoint_without_an_input_shape_reads_image_files_at_their_size(tmp_path, capsys):
    """A checkpoint from before input shapes were stored (its first layer's channels only) predicts image files
    of a size it takes, as it did before models owned their preprocessing."""
    from portacnn import cli

    from pathlib import Path

    fixture = str(Path(__file__).parent / "fixtures" / "v1_sgd_no_input_shape.safetensors")
    model = pc.load(fixture, allow_unsigned=True)
    assert model.input_shape is None and model.preprocessing is None
    digit = np.zeros((28, 28), np.uint8)
    digit[8:20, 12:16] = 255
    path = _save(tmp_path / "d.png", digit)
    np.testing.assert_array_equal(read_images([path], model)[0, 0], digit)
    assert cli.main(["predict", fixture, str(path), "--allow-unsigned", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)["predictions"][0]["class"]
    assert said == int(model.predict(digit[None, None] / np.float32(255))[0])


def test_the_data_limit_bounds_what_the_files_decode_to(tmp_path, monkeypatch):
    paths = [_save(tmp_path / f"{k}.png", np.zeros((8, 8))) for k in range(3)]
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "150")
    with pytest.raises(DataError) as err:
        read_images(paths, preprocessing=GREY)  # 3 x 64 bytes
    text = str(err.value)
    assert "3 image files of 1x8x8 = 192 bytes" in text and "PORTACNN_MAX_DATA_BYTES" in text and "\n" not in text
    monkeypatch.setenv("PORTACNN_MAX_DATA_BYTES", "192")
    assert read_images(paths, preprocessing=GREY).shape == (3, 1, 8, 8)
