"""portacnn.augment: RandomCrop and RandomHorizontalFlip (the CIFAR augmentation) on every backend.

Oracle: torchvision's procedure written as a naive NumPy loop, one image at a time, over the same uniforms
(pad the image with ``fill``, then slice the window at (top, left) = floor(u * positions); mirror the image when
its uniform is below p). Both transforms only move pixels, so every comparison is exact.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import assert_on_backend, to_numpy

from portacnn import augment
from portacnn.augment import Compose, RandomCrop, RandomErasing, RandomHorizontalFlip, crop, flip_horizontal


def images(rng, shape, dtype="float64"):
    return rng.standard_normal(shape).astype(dtype)


def _after(seed, draws):
    g = np.random.default_rng(seed)
    g.random(draws)
    return g.bit_generator.state


def reference_crop(x, u, size, padding, fill):
    """Per image: pad every side by ``padding`` with ``fill``, then cut the (h, w) window whose top and left are
    floor(u * (number of positions)) (``size`` None: the image's own size)."""
    n, c, height, width = x.shape
    h, w = size or (height, width)
    out = np.empty((n, c, h, w), dtype=x.dtype)
    for k in range(n):
        padded = np.full((c, height + 2 * padding, width + 2 * padding), fill, dtype=x.dtype)
        padded[:, padding : padding + height, padding : padding + width] = x[k]
        top = int(u[k, 0] * (height + 2 * padding - h + 1))
        left = int(u[k, 1] * (width + 2 * padding - w + 1))
        out[k] = padded[:, top : top + h, left : left + w]
    return out


def reference_flip(x, u, p):
    out = x.copy()
    for k in range(x.shape[0]):
        if u[k] < p:
            out[k] = x[k, :, :, ::-1]
    return out


# ----------------------------------------------------------------------------------------------------------
# against the loop


CROPS = [
    pytest.param({}, (5, 3, 8, 10), id="default-pad4-own-size"),
    pytest.param({"size": 6, "padding": 2, "fill": -1.5}, (6, 2, 7, 9), id="square-6-pad2-fill"),
    pytest.param({"size": (10, 12), "padding": 1}, (4, 1, 8, 10), id="padded-size-exactly"),
    pytest.param({"size": (3, 5), "padding": 0}, (6, 3, 6, 7), id="no-padding-smaller"),
    pytest.param({"size": (1, 1), "padding": 3, "fill": 2.0}, (8, 2, 2, 2), id="1x1-mostly-fill"),
]


@pytest.mark.parametrize("kwargs,shape", CROPS)
def test_crop_matches_loop_reference(backend, dtype, rng, kwargs, shape):
    t = RandomCrop(**kwargs)
    x_host = images(rng, shape, dtype)
    u = np.random.default_rng(7).random((shape[0], 2))
    expected = reference_crop(x_host, u, t.size, t.padding, t.fill)
    g = np.random.default_rng(7)
    y = t(backend.asarray(x_host, dtype=dtype), g)
    assert_on_backend(backend, y, dtype, expected.shape)
    assert np.array_equal(to_numpy(backend, y), expected)
    assert g.bit_generator.state == _after(7, shape[0] * 2)


@pytest.mark.parametrize("p", [0.3, 0.5, 0.9])
def test_flip_matches_loop_reference(backend, dtype, rng, p):
    x_host = images(rng, (16, 3, 5, 6), dtype)
    u = np.random.default_rng(3).random(16)
    expected = reference_flip(x_host, u, p)
    assert 0 < sum(u < p) < 16  # some flipped, some not
    y = RandomHorizontalFlip(p)(backend.asarray(x_host, dtype=dtype), np.random.default_rng(3))
    assert_on_backend(backend, y, dtype, x_host.shape)
    assert np.array_equal(to_numpy(backend, y), expected)


def test_crop_windows_are_uniform_over_the_positions():
    """Every one of the (2p + 1)^2 positions of a same-size crop comes up, about equally often."""
    corners = RandomCrop(padding=4).sample_corners(90_000, 32, 32, np.random.default_rng(0))
    counts = np.bincount(corners[:, 0] * 9 + corners[:, 1], minlength=81)
    assert corners.min() == 0 and corners.max() == 8 and counts.size == 81
    assert counts.min() > 0.85 * 90_000 / 81 and counts.max() < 1.15 * 90_000 / 81


def test_the_recipe_pair_keeps_the_shape_and_moves_whole_images(backend):
    """pad 4 + crop back to the input size, then flip: each output is its image shifted by at most 4 pixels
    (zeros entering), mirrored or not."""
    x_host = images(np.random.default_rng(0), (6, 3, 12, 12), "float32") + 10.0  # no pixel is 0
    t = Compose([RandomCrop(padding=4), RandomHorizontalFlip()])
    y = to_numpy(backend, t(backend.asarray(x_host, dtype="float32"), np.random.default_rng(5)))
    assert y.shape == x_host.shape
    for k in range(6):
        found = False
        for img in (x_host[k], x_host[k, :, :, ::-1]):
            padded = np.pad(img, ((0, 0), (4, 4), (4, 4)))
            found |= any(np.array_equal(y[k], padded[:, i : i + 12, j : j + 12]) for i in range(9) for j in range(9))
        assert found, k


# ----------------------------------------------------------------------------------------------------------
# edge cases, draws, determinism, dtype and device


def test_flip_p0_and_p1(backend, dtype, rng):
    x_host = images(rng, (5, 2, 4, 7), dtype)
    x = backend.asarray(x_host, dtype=dtype)
    g = np.random.default_rng(1)
    assert RandomHorizontalFlip(p=0.0)(x, g) is x  # nothing changes: the input itself
    assert g.bit_generator.state == _after(1, 5)  # the draws are made all the same
    y = RandomHorizontalFlip(p=1.0)(x, g)
    assert_on_backend(backend, y, dtype, x_host.shape)
    assert np.array_equal(to_numpy(backend, y), x_host[..., ::-1])
    assert g.bit_generator.state == _after(1, 10)


def test_crop_without_padding_to_the_same_size_is_the_identity(backend, dtype, rng):
    x = backend.asarray(images(rng, (3, 2, 5, 6), dtype), dtype=dtype)
    g = np.random.default_rng(2)
    assert RandomCrop(size=None, padding=0)(x, g) is x
    assert RandomCrop(size=(5, 6), padding=0)(x, g) is x
    assert g.bit_generator.state == _after(2, 3 * 2 * 2)


def test_same_state_same_output_and_backends_agree(backend, dtype, rng):
    x_host = images(rng, (7, 3, 9, 9), dtype)
    x = backend.asarray(x_host, dtype=dtype)
    t = Compose([RandomCrop(7, padding=3, fill=0.25), RandomHorizontalFlip(), RandomErasing(p=0.5)])
    g1, g2 = np.random.default_rng(11), np.random.default_rng(11)
    y1, y2 = to_numpy(backend, t(x, g1)), to_numpy(backend, t(x, g2))
    assert np.array_equal(y1, y2) and y1.shape == (7, 3, 7, 7)
    assert g1.bit_generator.state == g2.bit_generator.state == _after(11, 7 * (2 + 1 + 23))
    assert np.array_equal(y1, t(x_host, np.random.default_rng(11)))  # NumPy, exactly
    assert not np.array_equal(to_numpy(backend, t(x, np.random.default_rng(12))), y1)


def test_draws_do_not_depend_on_the_data_or_outcome(rng):
    for t in (RandomCrop(), RandomCrop(3, padding=0), RandomCrop(padding=0), RandomHorizontalFlip(0.0),
              RandomHorizontalFlip(1.0), RandomHorizontalFlip()):
        for shape in ((5, 1, 8, 8), (5, 3, 4, 9)):
            g = np.random.default_rng(2)
            t(images(rng, shape), g)
            assert g.bit_generator.state == _after(2, 5 * t.draws_per_image), repr(t)


def test_input_not_modified_and_dtype_device_kept(backend, dtype, rng):
    x_host = images(rng, (4, 3, 6, 6), dtype)
    x = backend.asarray(x_host, dtype=dtype)
    for t in (RandomCrop(padding=2), RandomCrop(4, padding=1, fill=-3.0), RandomHorizontalFlip(1.0)):
        y = t(x, np.random.default_rng(4))
        assert_on_backend(backend, y, dtype)
        assert np.array_equal(to_numpy(backend, x), x_host)


@pytest.mark.parametrize("n", [0, 1])
def test_small_batches(backend, n, rng):
    x_host = images(rng, (n, 3, 6, 5), "float32")
    x = backend.asarray(x_host, dtype="float32")
    for t, shape in ((RandomCrop(padding=2), (n, 3, 6, 5)), (RandomCrop((3, 4)), (n, 3, 3, 4)),
                     (RandomHorizontalFlip(1.0), (n, 3, 6, 5))):
        y = t(x, np.random.default_rng(0))
        assert_on_backend(backend, y, "float32", shape)


def test_primitives_refuse_what_they_cannot_do():
    x = np.zeros((2, 1, 4, 4), np.float32)
    for corners in ([[0, 0]], [[0, 0], [0, 5]], [[-1, 0], [0, 0]]):
        with pytest.raises(ValueError, match="crop needs"):
            crop(x, corners, (4, 4), padding=2)
    with pytest.raises(ValueError, match="crop fill"):
        crop(x, [[0, 0], [0, 0]], (4, 4), padding=2, fill=1e300)
    with pytest.raises(ValueError, match="flip_horizontal needs a bool array of shape \\(2,\\)"):
        flip_horizontal(x, [1, 0])
    assert np.array_equal(flip_horizontal(x + np.arange(4, dtype=np.float32), np.array([True, False]))[:, 0, 0],
                          [[3, 2, 1, 0], [0, 1, 2, 3]])


# ----------------------------------------------------------------------------------------------------------
# configuration and arguments


def test_config_round_trip():
    t = Compose([RandomCrop((28, 30), padding=2, fill=0.5), RandomHorizontalFlip(0.25), RandomCrop()])
    cfg = json.loads(json.dumps(t.config()))
    assert cfg == t.config()
    assert cfg["transforms"][0] == {"name": "RandomCrop", "size": [28, 30], "padding": 2, "fill": 0.5}
    assert cfg["transforms"][2] == {"name": "RandomCrop", "size": None, "padding": 4, "fill": 0.0}
    back = augment.from_config(cfg)
    assert back == t and repr(back) == repr(t) and copy.deepcopy(t) == t
    x = images(np.random.default_rng(0), (3, 1, 32, 32))
    assert np.array_equal(back(x, np.random.default_rng(1)), t(x, np.random.default_rng(1)))
    assert RandomCrop(32).config()["size"] == [32, 32]
    assert RandomHorizontalFlip.from_config({"name": "RandomHorizontalFlip", "p": 1}) == RandomHorizontalFlip(1.0)


def test_repr_is_readable():
    assert repr(RandomCrop()) == "RandomCrop(size=None, padding=4, fill=0.0)"
    assert repr(RandomCrop(28, padding=0)) == "RandomCrop(size=(28, 28), padding=0, fill=0.0)"
    assert repr(RandomHorizontalFlip()) == "RandomHorizontalFlip(p=0.5)"


@pytest.mark.parametrize("make,match", [
    (lambda: RandomCrop(size=0), r"RandomCrop size must be None or a side in pixels .*\(e.g. size=32"),
    (lambda: RandomCrop(size=(3,)), "RandomCrop size must be"),
    (lambda: RandomCrop(size=(3, 4, 5)), "RandomCrop size must be"),
    (lambda: RandomCrop(size=2.5), "RandomCrop size must be .* got 2.5"),
    (lambda: RandomCrop(size=True), "RandomCrop size must be .* got True"),
    (lambda: RandomCrop(size="32"), "RandomCrop size must be .* got '32'"),
    (lambda: RandomCrop(size=(0, 4)), "RandomCrop size must be"),
    (lambda: RandomCrop(size=10**30), "RandomCrop size must be"),
    (lambda: RandomCrop(padding=-1), r"RandomCrop padding must be an int >= 0 .*\(pixels added on each side"),
    (lambda: RandomCrop(padding=4.0), "RandomCrop padding must be .* got 4.0"),
    (lambda: RandomCrop(padding=None), "RandomCrop padding must be .* got None"),
    (lambda: RandomCrop(padding=(1, 2)), "RandomCrop padding must be"),
    (lambda: RandomCrop(fill=float("nan")), r"RandomCrop fill must be a finite number \(the padding's value"),
    (lambda: RandomCrop(fill=float("inf")), "RandomCrop fill must be a finite number"),
    (lambda: RandomCrop(fill="black"), "RandomCrop fill must be a finite number"),
    (lambda: RandomHorizontalFlip(p=1.5), r"RandomHorizontalFlip p must be a finite number >= 0 and <= 1"),
    (lambda: RandomHorizontalFlip(p=-0.1), "RandomHorizontalFlip p must be"),
    (lambda: RandomHorizontalFlip(p=float("nan")), "RandomHorizontalFlip p must be"),
    (lambda: RandomHorizontalFlip(p=True), "RandomHorizontalFlip p must be"),
    (lambda: RandomCrop.from_config(RandomHorizontalFlip().config()), "config names 'RandomHorizontalFlip'"),
    (lambda: augment.from_config({"name": "RandomCrop", "sizes": 3}), None),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        make()
    if match is not None:
        assert info.type is ValueError and "\n" not in str(info.value)


def test_a_window_larger_than_the_padded_image_is_refused_before_drawing():
    rng = np.random.default_rng(0)
    state = copy.deepcopy(rng.bit_generator.state)
    with pytest.raises(ValueError) as info:
        RandomCrop(40, padding=4)(np.zeros((2, 3, 28, 28), np.float32), rng)
    text = str(info.value)
    assert "\n" not in text and text.startswith("RandomCrop size 40x40 does not fit 28x28 images padded by 4 (36x36)")
    assert rng.bit_generator.state == state  # nothing drawn
    assert RandomCrop(36, padding=4)(np.zeros((2, 3, 28, 28), np.float32), rng).shape == (2, 3, 36, 36)


def test_fill_beyond_the_dtype_is_refused_before_drawing():
    rng = np.random.default_rng(0)
    state = copy.deepcopy(rng.bit_generator.state)
    with pytest.raises(ValueError, match="RandomCrop fill must be .*float32") as info:
        RandomCrop(padding=1, fill=1e300)(np.zeros((2, 1, 8, 8), np.float32), rng)
    assert "\n" not in str(info.value) and rng.bit_generator.state == state
    y = RandomCrop(padding=1, fill=1e300)(np.zeros((2, 1, 8, 8)), rng)  # float64 holds it
    assert np.isfinite(y).all()
