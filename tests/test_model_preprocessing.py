"""portacnn.preprocessing: raw images read by the model that trained on them, checked against float64 oracles
on every backend; stored in checkpoints with the class names; images unlike the training ones questioned."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import assert_close, assert_on_backend, make_backend, to_numpy

import portacnn as pc
from portacnn.checkpoint import CheckpointError
from portacnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from portacnn.data import to_channels_first
from portacnn.preprocessing import InputWarning, Preprocessing, border_levels, channels_first_axes, raw_shape


def _model(channels=1, side=8, classes=3, backend=None, dtype="float32"):
    layers = [Conv2D(channels, 2, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(2 * (side // 2) ** 2, classes)]
    return pc.Sequential(layers, backend=backend, dtype=dtype, seed=0)


def _digits(n=12, side=8, channels=1, seed=0):
    """Bright strokes on a dark background, as the Kannada digits are."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, channels, side, side), np.uint8)
    x[:, :, 2:-2, 2:-2] = rng.integers(100, 256, (n, channels, side - 4, side - 4))
    return x


# -- layouts ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, expected", [((5, 8, 9), (5, 1, 8, 9)), ((5, 3, 8, 9), (5, 3, 8, 9)),
                                             ((5, 8, 9, 3), (5, 3, 8, 9)), ((5, 1, 8, 9), (5, 1, 8, 9)),
                                             ((5, 8, 9, 1), (5, 1, 8, 9))])
def test_raw_layouts_read_channels_first(shape, expected):
    x = np.arange(np.prod(shape)).reshape(shape)
    assert raw_shape(shape) == expected
    got = np.asarray(to_channels_first(x))
    assert got.shape == expected
    naive = np.zeros(expected, x.dtype)  # element by element: channel k of pixel (i, j)
    for n in range(expected[0]):
        for k in range(expected[1]):
            for i in range(expected[2]):
                for j in range(expected[3]):
                    naive[n, k, i, j] = x[n, i, j] if len(shape) == 3 else (
                        x[n, k, i, j] if shape[1] == expected[1] and shape[2:] == expected[2:] else x[n, i, j, k])
    np.testing.assert_array_equal(got, naive)


@pytest.mark.parametrize("shape, fragment", [((5, 3, 8, 3), "and as channels-last"), ((5, 8, 8, 8), "1 or 3 channels"),
                                             ((5, 8, 8, 4), "RGBA"), ((5, 8), "(N, H, W)"),
                                             ((1, 2, 3, 4, 5), "(N, H, W)")])
def test_ambiguous_or_impossible_layouts_are_refused(shape, fragment):
    with pytest.raises(ValueError, match=r"^the raw images array has shape") as err:
        channels_first_axes(shape)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert channels_first_axes((5, 3, 8, 3), "channels_last") == (0, 3, 1, 2)
    assert channels_first_axes((5, 3, 8, 3), "channels_first") == (0, 1, 2, 3)


@pytest.mark.parametrize("shape", [(2, 1, 6, 3), (2, 1, 5, 1), (2, 1, 6, 6), (2, 6, 6, 1), (2, 5, 6, 3),
                                   (2, 3, 5, 6), (2, 5, 6)])
def test_the_model_reads_layouts_as_the_data_readers_do(shape):
    """One rule for where the channels are: a raw array the model reads is the array portacnn.data.preprocess
    reads, channel for channel (an axis 1 of 1 wins over a last axis of 3, as it always has)."""
    from portacnn.data import preprocess

    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert raw_shape(shape) == pc.data.to_channels_first(x).shape  # the model's shape rule is the readers'
    assert channels_first_axes(shape) in (None, (0, 1, 2, 3), (0, 3, 1, 2))
    np.testing.assert_array_equal(Preprocessing.for_shape(raw_shape(shape)[1:]).to_model_input(x), preprocess(x))


# -- what is recorded --------------------------------------------------------------------------------------------
def test_from_images_records_size_channels_statistics_and_border_against_float64_loops():
    x = np.random.default_rng(1).integers(0, 256, (7, 3, 5, 6), dtype=np.uint8)
    p = Preprocessing.from_images(np.moveaxis(x, 1, -1), normalize=True)  # channels-last in, same statistics
    assert (p.channels, p.size) == (3, (5, 6))
    for k in range(3):
        values = [float(v) / 255 for v in x[:, k].ravel()]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        assert p.mean[k] == pytest.approx(mean, rel=1e-12) and p.std[k] == pytest.approx(std, rel=1e-12)
    borders = []
    for img in x:
        edge = [img[c, i, j] for c in range(3) for i in range(5) for j in range(6) if i in (0, 4) or j in (0, 5)]
        borders.append(sum(float(v) for v in edge) / len(edge) / 255)
    np.testing.assert_allclose(border_levels(x), borders, rtol=1e-12)
    assert p.border == pytest.approx(np.mean(borders)) and p.border_spread == pytest.approx(np.std(borders))
    assert Preprocessing.from_images(x).mean is None  # no normalisation unless asked


def test_constant_channel_cannot_be_normalised_and_floats_are_not_raw():
    x = np.full((4, 1, 5, 5), 7, np.uint8)
    with pytest.raises(ValueError, match="channel 0 .* constant"):
        Preprocessing.from_images(x, normalize=True)
    with pytest.raises(ValueError, match="raw integer pixels"):
        Preprocessing.from_images(x.astype(np.float32))


@pytest.mark.parametrize("config, fragment", [
    ({"channels": 2, "size": [8, 8]}, "channels must be 1 or 3"),
    ({"channels": True, "size": [8, 8]}, "channels must be 1 or 3"),
    ({"channels": 1, "size": [0, 8]}, "size"),
    ({"channels": 1, "size": [8, 8, 8]}, "size"),
    ({"channels": 1}, "missing field(s) ['size']"),
    ({"channels": 1, "size": [8, 8], "scale": 2}, "unknown field(s) ['scale']"),
    ({"channels": 1, "size": [8, 8], "mean": [0.5], "std": None}, "both mean and std"),
    ({"channels": 1, "size": [8, 8], "mean": [0.5], "std": [0.0]}, "std"),
    ({"channels": 1, "size": [8, 8], "mean": [1.5], "std": [0.2]}, "mean"),
    ({"channels": 3, "size": [8, 8], "mean": [0.5], "std": [0.2]}, "needs 3 values"),
    ({"channels": 1, "size": [8, 8], "mean": [float("nan")], "std": [0.2]}, "mean"),
    ({"channels": 1, "size": [8, 8], "border": 0.5}, "both border and border_spread"),
    ({"channels": 1, "size": [8, 8], "border": 2.0, "border_spread": 0.1}, "border"),
    ({"channels": 1, "size": [8, 8], "resample": "magic"}, "resample"),
    ("1x8x8", "dict"),
])
def test_stored_forms_are_checked_by_the_constructors_rules(config, fragment):
    with pytest.raises(ValueError) as err:
        Preprocessing.from_config(config)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_config_round_trip_through_json():
    p = Preprocessing(3, (32, 30), mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), border=0.4, border_spread=0.2)
    assert Preprocessing.from_config(json.loads(json.dumps(p.to_config()))) == p
    assert p.input_shape == (3, 32, 30) and "normalised" in p.describe()


# -- applying it ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict", "torch", pytest.param("jax", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_raw_images_are_preprocessed_on_the_models_backend_as_the_float64_oracle(backend_name, dtype):
    be = make_backend(backend_name)
    x = np.random.default_rng(2).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)  # channels-last
    m = _model(3, backend=be, dtype=dtype)
    m.preprocessing = Preprocessing(3, (8, 8), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    assert m.input_shape == (3, 8, 8)  # set by the preprocessing
    oracle = (np.moveaxis(x, -1, 1).astype(np.float64) / 255 - np.array([0.4, 0.5, 0.6])[:, None, None]) \
        / np.array([0.2, 0.25, 0.3])[:, None, None]
    from portacnn.inputs import images

    source = images(x, m)
    batch = source.rows(slice(0, 6))
    assert_on_backend(be, batch, dtype, (6, 3, 8, 8))
    assert_close(to_numpy(be, batch), oracle, dtype)
    # the model's answer on raw images is its answer on the oracle's floats
    assert_close(m.predict_proba(x), m.predict_proba(oracle.astype(dtype)), dtype)


@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict", "torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_raw_images_in_the_backends_own_arrays_are_read(backend_name):
    """Raw integer images held by the model's own library (on its device) train, predict and evaluate."""
    be = make_backend(backend_name)
    x, y = _digits(10), np.arange(10) % 3
    own = be.xp.asarray(x, device=be.device)
    m = _model(backend=be)
    m.fit(own, y, epochs=1, batch_size=4, progress=False, validation_split=0.2)
    assert m.preprocessing == Preprocessing.from_images(x)
    np.testing.assert_array_equal(m.predict(own), m.predict(x))
    assert m.evaluate(own, y)["n"] == 10


def test_fit_on_raw_images_records_the_preprocessing_and_trains_as_on_scaled_floats():
    x, y = _digits(24), np.arange(24) % 3
    a, b = _model(), _model()
    a.fit(x, y, epochs=2, batch_size=8, progress=False)
    b.fit(x.astype(np.float32) / 255, y, epochs=2, batch_size=8, progress=False)
    assert a.preprocessing == Preprocessing.from_images(x) and b.preprocessing is None
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key], err_msg=key)
    # a preprocessing set before fit is the one used (here normalising): the same as normalised floats
    c, d = _model(), _model()
    c.preprocessing = Preprocessing.from_images(x, normalize=True)
    c.fit(x, y, epochs=1, batch_size=8, progress=False)
    p = c.preprocessing
    d.fit(((x / 255 - p.mean[0]) / p.std[0]).astype(np.float32), y, epochs=1, batch_size=8, progress=False)
    for key, value in c.state_dict().items():
        assert_close(value, d.state_dict()[key], "float32", err_msg=key)


def test_raw_images_the_model_cannot_read_are_one_line_errors():
    m = _model()
    m.fit(_digits(6), np.arange(6) % 3, epochs=1, progress=False)
    cases = [(np.zeros((2, 3, 8, 8), np.uint8), "3-channel images; the model reads greyscale"),
             (np.zeros((2, 10, 8), np.uint8), "10x8 images; the model reads 8x8"),
             (np.full((2, 8, 8), 256, np.int32), "0..255"),
             (np.full((2, 8, 8), -1, np.int64), "0..255")]
    for x, fragment in cases:
        with pytest.raises(ValueError) as err:
            m.predict(x)
        assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(ValueError, match="reads"):
        m.preprocessing = Preprocessing(3, (8, 8))


@pytest.mark.parametrize("shape, fragment", [((4, 8, 8, 3), "x holds 3-channel images; the model reads greyscale"),
                                             ((4, 6, 6), "x holds 6x6 images; the model reads 8x8")])
def test_fit_on_raw_images_the_model_cannot_read_says_so_as_predict_does(shape, fragment):
    """A model that declares its input (no preprocessing yet) and raw training images of another shape: fit says
    what the images hold and what the model reads, not that a preprocessing the user never set disagrees."""
    m = _model()
    m.input_shape = (1, 8, 8)
    with pytest.raises(ValueError, match=f"^{fragment}"):
        m.fit(np.zeros(shape, np.uint8), np.arange(4) % 3, epochs=1, progress=False)
    assert m.preprocessing is None


def test_images_unlike_the_training_ones_are_questioned_in_the_callers_name():
    x = _digits(30)
    m = _model()
    m.fit(x, np.arange(30) % 3, epochs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.predict(_digits(5, seed=9))  # like the training images: nothing said
    with pytest.warns(InputWarning, match="reversed polarity") as record:
        m.predict(255 - _digits(5, seed=9))  # dark strokes on a light background
    assert record[0].filename == __file__  # pointed at the caller, not at portacnn's insides
    noise = np.random.default_rng(3).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    with pytest.warns(InputWarning, match="unlike anything it was trained on"):
        m.predict(noise)


# -- stored with the model -------------------------------------------------------------------------------------------
def test_checkpoints_keep_preprocessing_and_class_names(tmp_path):
    x = _digits(12, channels=3)
    m = _model(3)
    m.preprocessing = Preprocessing.from_images(x, normalize=True)
    m.class_names = ["cat", "dog", "ship"]
    m.save(tmp_path / "m.safetensors")
    back = pc.load(tmp_path / "m.safetensors")
    assert back.preprocessing == m.preprocessing and back.class_names == ["cat", "dog", "ship"]
    np.testing.assert_array_equal(back.predict_proba(x), m.predict_proba(x))
    plain = _model(3)
    plain.save(tmp_path / "plain.safetensors")
    assert pc.load(tmp_path / "plain.safetensors").preprocessing is None


def test_a_run_resumed_into_a_fresh_model_reads_raw_images_as_it_did(tmp_path):
    """fit(resume=...) on a new model takes the run's preprocessing and class names (not a new, unnormalised
    preprocessing recorded from the images): it trains as the loaded model does, and its checkpoint keeps them."""
    x, y = _digits(12, channels=3), np.arange(12) % 3
    m = _model(3)
    m.preprocessing = Preprocessing.from_images(x, normalize=True)
    m.class_names = ["cat", "dog", "ship"]
    m.fit(x, y, epochs=1, batch_size=4, progress=False, checkpoint_path=tmp_path / "run.safetensors")
    loaded = pc.load(tmp_path / "run.safetensors")
    loaded.fit(x, y, epochs=2, batch_size=4, progress=False, resume=loaded)
    for form in ("model", "dict"):  # the model (its weights go in) or its dict (weights put in by hand)
        run = pc.load(tmp_path / "run.safetensors")
        resume = run if form == "model" else run.checkpoint
        fresh = _model(3)
        if isinstance(resume, dict):
            fresh.load_state_dict(run.state_dict())
        fresh.fit(x, y, epochs=2, batch_size=4, progress=False, resume=resume,
                  checkpoint_path=tmp_path / "fresh.safetensors")
        assert fresh.preprocessing == m.preprocessing and fresh.class_names == m.class_names
        for key, value in loaded.state_dict().items():
            np.testing.assert_array_equal(value, fresh.state_dict()[key], err_msg=key)
        back = pc.load(tmp_path / "fresh.safetensors")
        assert back.preprocessing == m.preprocessing and back.class_names == m.class_names
    other = _model(3)
    other.preprocessing = Preprocessing.from_images(x)  # not normalised: another reading of the same images
    with pytest.raises(ValueError, match="^resume: the model reads raw images otherwise") as err:
        other.fit(x, y, epochs=2, batch_size=4, progress=False, resume=pc.load(tmp_path / "run.safetensors"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("meta, fragment", [
    ({"preprocessing": json.dumps({"channels": 1, "size": [8, 8], "x": 1})}, "unknown field"),
    ({"preprocessing": json.dumps({"channels": 3, "size": [8, 8]})}, "reads (3, 8, 8) images"),
    ({"preprocessing": "{"}, "not valid JSON"),
    ({"class_names": json.dumps(["a", "b"])}, "2 names but the model has 3 classes"),
    ({"class_names": json.dumps(["a", "a", "b"])}, "twice"),
    ({"class_names": json.dumps(["a", "b\x00", "c"])}, "printable"),
    ({"class_names": json.dumps("abc")}, "list of strings"),
])
def test_hostile_preprocessing_and_class_names_are_refused(tmp_path, meta, fragment):
    from test_checkpoint_trust import _read, _refused, _write

    m = _model()
    m.input_shape = (1, 8, 8)
    m.save(tmp_path / "m.safetensors")
    tensors, base = _read(tmp_path / "m.safetensors")
    path = _write(tmp_path / "bad.safetensors", tensors, {**base, **meta})
    _refused(path, fragment)


def test_reversed_polarity_is_said_only_of_a_clearly_dark_or_light_training_background():
    grey = Preprocessing(1, (8, 8), border=0.35, border_spread=0.01)  # a mid-grey training background
    light = np.full((2, 8, 8), 173, np.uint8)  # 0.68: far from 0.35, near its opposite, yet not "reversed"
    (text,) = grey.questions(light)
    assert "unlike anything" in text and "reversed" not in text
    dark = Preprocessing(1, (8, 8), border=0.05, border_spread=0.01)
    (text,) = dark.questions(np.full((2, 8, 8), 240, np.uint8))
    assert "reversed polarity" in text and "light backgrounds where the model learnt dark ones" in text
