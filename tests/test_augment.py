"""portacnn.augment: RandomAffine, RandomErasing and Compose on every backend.

Oracles: a float64 per-pixel loop (forward map built and inverted with np.linalg.inv, bilinear interpolation
written out), known exact cases (np.rot90, np.roll with zero fill, the identity), a per-image loop of
torchvision's erasing procedure over the same uniforms, and torch's affine_grid + grid_sample with the same
matrices.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from conftest import assert_close, assert_on_backend, max_rel_diff, sweep, to_numpy

from portacnn import augment
from portacnn.augment import (
    Compose,
    RandomAffine,
    RandomErasing,
    affine_matrices,
    warp_affine,
)

# float32 grid coordinates are ~1e-6 of a pixel off the float64 ones; bilinear output moves by that times the
# local pixel difference (<= 2 * max|x|)
AFFINE_TOL = {"float32": 1e-5, "float64": 1e-12}


def images(rng, shape, dtype="float64"):
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------------------------------------
# the float64 loop reference


def reference_affine(x, params):
    """Per image, per output pixel: invert the forward map p_out = c + t + A (p_in - c) (A = s R Sy Sx, as
    the module docstring states it) at the pixel centre, then interpolate bilinearly with zeros outside."""
    n, _, h, w = x.shape
    out = np.zeros(x.shape, dtype=np.float64)
    centre = np.array([w / 2.0, h / 2.0])
    for k in range(n):
        a = math.radians(params["angle"][k])
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        sx = np.array([[1.0, math.tan(math.radians(params["shear_x"][k]))], [0.0, 1.0]])
        sy = np.array([[1.0, 0.0], [math.tan(math.radians(params["shear_y"][k])), 1.0]])
        inverse = np.linalg.inv(params["scale"][k] * rot @ sy @ sx)
        shift = np.array([params["tx"][k], params["ty"][k]])
        for i in range(h):
            for j in range(w):
                px, py = inverse @ (np.array([j + 0.5, i + 0.5]) - centre - shift) + centre
                js, is_ = px - 0.5, py - 0.5  # index coordinates of the source point
                j0, i0 = math.floor(js), math.floor(is_)
                fx, fy = js - j0, is_ - i0
                for ii, wy in ((i0, 1 - fy), (i0 + 1, fy)):
                    for jj, wx in ((j0, 1 - fx), (j0 + 1, fx)):
                        if 0 <= ii < h and 0 <= jj < w:
                            out[k, :, i, j] += wy * wx * x[k, :, ii, jj]
    return out


def fixed_params(n, angle=0.0, tx=0.0, ty=0.0, scale=1.0, shear_x=0.0, shear_y=0.0):
    given = {"angle": angle, "tx": tx, "ty": ty, "scale": scale, "shear_x": shear_x, "shear_y": shear_y}
    return {k: np.full(n, v, dtype=np.float64) for k, v in given.items()}


def warp(backend, x_host, params, dtype):
    h, w = x_host.shape[2:]
    m = affine_matrices(params["angle"], (params["tx"], params["ty"]), params["scale"],
                        (params["shear_x"], params["shear_y"]), h, w)
    y = warp_affine(backend.asarray(x_host, dtype=dtype), m)
    assert_on_backend(backend, y, dtype, x_host.shape)
    return to_numpy(backend, y)


# ----------------------------------------------------------------------------------------------------------
# RandomAffine geometry


def test_affine_matches_loop_reference(backend, dtype, rng):
    t = RandomAffine(degrees=40, translate=(0.2, 0.3), scale=(0.7, 1.3), shear=(-20, 20, -10, 15))
    x_host = images(rng, (4, 2, 7, 9))
    params = t.sample_params(4, 7, 9, np.random.default_rng(3))
    expected = reference_affine(x_host.astype(dtype).astype(np.float64), params)
    x = backend.asarray(x_host, dtype=dtype)
    y = t(x, np.random.default_rng(3))
    assert_on_backend(backend, y, dtype, x_host.shape)
    assert_close(to_numpy(backend, y), expected, dtype, rtol=AFFINE_TOL[dtype])


@pytest.mark.parametrize("angle,k", [(90.0, 1), (-90.0, -1), (180.0, 2), (270.0, 3)])
def test_right_angle_rotations_are_rot90(backend, dtype, rng, angle, k):
    """Positive angles turn the content counter-clockwise as displayed (row 0 on top): np.rot90's sense."""
    x_host = images(rng, (2, 3, 6, 6), dtype)
    y = warp(backend, x_host, fixed_params(2, angle=angle), dtype)
    assert_close(y, np.rot90(x_host, k=k, axes=(2, 3)), dtype, rtol=1e-6 if dtype == "float32" else 1e-12)


def test_counter_clockwise_on_a_marked_pixel(backend):
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 4] = 1.0  # right of the centre
    y = warp(backend, x, fixed_params(1, angle=90.0), "float64")
    assert np.argwhere(np.abs(y[0, 0]) > 0.5).tolist() == [[0, 2]]  # now above it


@pytest.mark.parametrize("tx,ty", [(2, -1), (-3, 0), (0, 4), (7, 1)])
def test_integer_shift_is_roll_with_zero_fill(backend, dtype, rng, tx, ty):
    """Positive tx moves the content right, positive ty down; what enters is 0."""
    x_host = images(rng, (2, 2, 5, 6), dtype)
    expected = np.zeros_like(x_host)
    h, w = x_host.shape[2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i - ty < h and 0 <= j - tx < w:
                expected[:, :, i, j] = x_host[:, :, i - ty, j - tx]
    rolled = np.roll(x_host, (ty, tx), axis=(2, 3))
    inside = expected != 0
    assert np.array_equal(rolled[inside], expected[inside])
    y = warp(backend, x_host, fixed_params(2, tx=float(tx), ty=float(ty)), dtype)
    assert np.array_equal(y, expected)  # integer shifts land on pixel centres: exact


def test_identity_is_exact(backend, dtype, rng):
    x_host = images(rng, (3, 2, 5, 7), dtype)
    x = backend.asarray(x_host, dtype=dtype)
    t = RandomAffine(degrees=0, translate=(0, 0), scale=(1, 1), shear=0)
    assert t.is_identity
    y = t(x, np.random.default_rng(0))
    assert_on_backend(backend, y, dtype, x_host.shape)
    assert np.array_equal(to_numpy(backend, y), x_host)
    # the sampling math itself (no short cut) is exact too
    y = warp_affine(x, affine_matrices(0.0, (0.0, 0.0), 1.0, (0.0, 0.0), 5, 7) * np.ones((3, 1, 1)))
    assert_on_backend(backend, y, dtype, x_host.shape)
    assert np.array_equal(to_numpy(backend, y), x_host)


def test_scale_about_the_centre():
    """A centred bright square doubled in scale stays centred (the centre is the image centre)."""
    x = np.zeros((1, 1, 8, 8))
    x[0, 0, 3:5, 3:5] = 1.0
    y = warp_affine(x, affine_matrices([0.0], ([0.0], [0.0]), 2.0, (0.0, 0.0), 8, 8))
    assert np.allclose(y[0, 0], y[0, 0, ::-1, ::-1]) and np.allclose(y[0, 0], y[0, 0].T)
    assert y[0, 0].sum() == pytest.approx(4 * 4.0)  # area x 4, mass conserved away from the border


def torch_grid_sample(x, m):
    """torch.nn.functional.affine_grid + grid_sample (bilinear, zeros, align_corners=False) with the
    portacnn matrices M (index coordinates) converted to torch's normalized ones: x_n = (2 j + 1) / W - 1."""
    torch = pytest.importorskip("torch")
    n, c, h, w = x.shape
    to_index = np.array([[w / 2, 0, w / 2 - 0.5], [0, h / 2, h / 2 - 0.5], [0, 0, 1]])  # normalized -> index
    to_norm = np.linalg.inv(to_index)
    m3 = np.concatenate([m, np.broadcast_to([0.0, 0.0, 1.0], (n, 1, 3))], axis=1)
    theta = (to_norm @ m3 @ to_index)[:, :2]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    grid = torch.nn.functional.affine_grid(torch.from_numpy(theta), [n, c, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_affine_matches_torch_grid_sample(seed):
    rng = np.random.default_rng(seed)
    t = RandomAffine(degrees=180, translate=(0.3, 0.3), scale=(0.5, 1.5), shear=(-30, 30, -30, 30))
    x = images(rng, (5, 3, 11, 8))
    params = t.sample_params(5, 11, 8, rng)
    m = t.matrices(params, 11, 8)
    expected = torch_grid_sample(x, m)
    assert_close(warp_affine(x, m), expected, "float64", rtol=1e-12)
    assert_close(reference_affine(x, params), expected, "float64", rtol=1e-12)


def test_affine_matches_torchvision_if_installed(rng):
    """torchvision's F.affine (bilinear) with the angle's sign flipped, since its affine documents clockwise
    angles. Skipped visibly when torchvision is absent (not run where this was written)."""
    pytest.importorskip("torchvision")
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    x = np.zeros((1, 1, 12, 12), dtype=np.float32)
    x[..., 2:-2, 2:-2] = images(rng, (1, 1, 8, 8), "float32")  # a zero ring: torchvision's fill blending is moot
    for angle, (tx, ty), scale in ((20.0, (2, -1), 1.1), (-35.0, (0, 3), 0.9)):
        theirs = F.affine(torch.from_numpy(x), angle=angle, translate=[tx, ty], scale=scale, shear=[0.0, 0.0],
                          interpolation=InterpolationMode.BILINEAR).numpy()
        ours = warp_affine(x, affine_matrices(-angle, (float(tx), float(ty)), scale, (0.0, 0.0), 12, 12))
        assert_close(ours, theirs, "float32", rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# RandomErasing


def reference_erasing(x, u, p, scale, ratio, value):
    """torchvision's procedure, one image at a time, over the same uniforms (the coin, 10 (area, ratio)
    tries, then top and left)."""
    out = x.astype(np.float64).copy()
    n, _, h, w = x.shape
    for k in range(n):
        if not u[k, 0] < p:
            continue
        for attempt in range(10):
            area = h * w * (scale[0] + (scale[1] - scale[0]) * u[k, 1 + 2 * attempt])
            log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[k, 2 + 2 * attempt]
            eh = round(math.sqrt(area * math.exp(log_r)))
            ew = round(math.sqrt(area / math.exp(log_r)))
            if eh < h and ew < w:
                top = int(u[k, 21] * (h - eh + 1))
                left = int(u[k, 22] * (w - ew + 1))
                out[k, :, top:top + eh, left:left + ew] = value
                break
    return out


@pytest.mark.parametrize("params", [{}, {"p": 0.8, "scale": (0.1, 0.6), "ratio": (0.5, 4.0), "value": -1.5},
                                    {"p": 1.0, "scale": (0.5, 0.9), "ratio": (0.2, 5.0)}])
def test_erasing_matches_loop_reference(backend, dtype, rng, params):
    t = RandomErasing(**params)
    x_host = images(rng, (16, 2, 9, 13), dtype)
    u = np.random.default_rng(7).random((16, 23))
    expected = reference_erasing(x_host, u, t.p, t.scale, t.ratio, t.value)
    y = t(backend.asarray(x_host, dtype=dtype), np.random.default_rng(7))
    assert_on_backend(backend, y, dtype, x_host.shape)
    assert np.array_equal(to_numpy(backend, y), expected.astype(dtype))


def test_erasing_p0_is_identity(backend, dtype, rng):
    x_host = images(rng, (8, 1, 6, 6), dtype)
    g = np.random.default_rng(1)
    y = RandomErasing(p=0.0)(backend.asarray(x_host, dtype=dtype), g)
    assert np.array_equal(to_numpy(backend, y), x_host)
    assert g.bit_generator.state == _after(1, 8 * 23)  # the draws are made all the same


def _slack(area, r_lo=0.3, r_hi=3.3):
    return (math.sqrt(area * r_hi) + math.sqrt(area / r_lo)) / 2 + 0.25


def test_erasing_p1_always_erases_a_rectangle_of_bounded_area(backend):
    n, h, w = 64, 28, 28
    t = RandomErasing(p=1.0, scale=(0.02, 0.2), ratio=(0.3, 3.3))
    y = to_numpy(backend, t(backend.asarray(np.ones((n, 3, h, w)), dtype="float32"), np.random.default_rng(5)))
    for k in range(n):
        erased = y[k] == 0
        assert np.array_equal(erased[0], erased[1]) and np.array_equal(erased[0], erased[2])  # all channels
        rows, cols = np.flatnonzero(erased[0].any(axis=1)), np.flatnonzero(erased[0].any(axis=0))
        assert rows.size and cols.size, f"image {k} was not erased"
        eh, ew = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        assert erased[0].sum() == eh * ew and rows.size == eh and cols.size == ew  # one filled rectangle
        assert eh < h and ew < w
        # h*w = round(sqrt(A r)) * round(sqrt(A / r)) for A in [0.02, 0.2] * H * W: rounding moves it by at
        # most (sqrt(A r) + sqrt(A / r)) / 2 + 1/4
        lo, hi = 0.02 * h * w, 0.2 * h * w
        assert lo - _slack(lo) <= eh * ew <= hi + _slack(hi)


def test_erasing_gives_up_when_nothing_fits():
    """scale 1 on a square with ratio 1: h = H never fits (torchvision's strict <), so nothing is erased."""
    x = np.ones((4, 1, 5, 5))
    y = RandomErasing(p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))(x, np.random.default_rng(0))
    assert np.array_equal(y, x)


# ----------------------------------------------------------------------------------------------------------
# determinism, draws, dtype/device, edge cases


def _after(seed, draws):
    g = np.random.default_rng(seed)
    g.random(draws)
    return g.bit_generator.state


def pipeline():
    return Compose([RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10),
                    RandomErasing(p=0.7)])


def test_same_state_same_output_and_backends_agree(backend, dtype, rng):
    x_host = images(rng, (6, 2, 10, 10), dtype)
    t = pipeline()
    x = backend.asarray(x_host, dtype=dtype)
    g1, g2 = np.random.default_rng(11), np.random.default_rng(11)
    y1, y2 = to_numpy(backend, t(x, g1)), to_numpy(backend, t(x, g2))
    assert np.array_equal(y1, y2)
    assert g1.bit_generator.state == g2.bit_generator.state == _after(11, 6 * (6 + 23))
    ref = t(x_host, np.random.default_rng(11))  # NumPy
    assert_close(y1, ref, dtype, rtol=AFFINE_TOL[dtype])
    other = to_numpy(backend, t(x, np.random.default_rng(12)))
    assert not np.allclose(other, y1)


def test_draws_do_not_depend_on_the_data_or_outcome(rng):
    for t in (RandomAffine(), RandomAffine(0, None, None, None), RandomErasing(p=0.0), RandomErasing(p=1.0),
              RandomErasing(p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0)), pipeline()):
        for shape in ((5, 1, 8, 8), (5, 3, 4, 9)):
            g = np.random.default_rng(2)
            t(images(rng, shape), g)
            assert g.bit_generator.state == _after(2, 5 * t.draws_per_image), repr(t)


def test_input_not_modified_and_dtype_device_kept(backend, dtype, rng):
    x_host = images(rng, (3, 1, 7, 7), dtype)
    x = backend.asarray(x_host, dtype=dtype)
    for t in (RandomAffine(degrees=30), RandomErasing(p=1.0), pipeline()):
        y = t(x, np.random.default_rng(4))
        assert_on_backend(backend, y, dtype, x_host.shape)
        assert np.array_equal(to_numpy(backend, x), x_host)


@pytest.mark.parametrize("n", [0, 1])
def test_small_batches(backend, n, rng):
    x_host = images(rng, (n, 1, 6, 5), "float32")
    x = backend.asarray(x_host, dtype="float32")
    for t in (RandomAffine(degrees=30), RandomErasing(p=1.0), pipeline()):
        y = t(x, np.random.default_rng(0))
        assert_on_backend(backend, y, "float32", x_host.shape)
        if n:
            assert not np.array_equal(to_numpy(backend, y), x_host)


def test_a_batch_is_one_image_at_a_time(rng):
    """Image k of a batch is transformed as the 1-image batch with the same parameters (no cross-talk)."""
    t = RandomAffine(degrees=30, translate=(0.2, 0.2), shear=10)
    x = images(rng, (4, 2, 6, 6))
    m = t.matrices(t.sample_params(4, 6, 6, np.random.default_rng(0)), 6, 6)
    y = warp_affine(x, m)
    for k in range(4):
        assert np.array_equal(warp_affine(x[k:k + 1], m[k:k + 1]), y[k:k + 1])


# ----------------------------------------------------------------------------------------------------------
# configuration and arguments


def test_config_round_trip():
    t = Compose([RandomAffine(degrees=(-5, 20), translate=(0.1, 0.2), scale=(0.8, 1.0), shear=(1, 2, 3, 4)),
                 RandomErasing(p=0.25, value=0.5)])
    cfg = json.loads(json.dumps(t.config()))
    assert cfg == t.config()
    back = augment.from_config(cfg)
    assert back == t and repr(back) == repr(t)
    x = images(np.random.default_rng(0), (3, 1, 8, 8))
    assert np.array_equal(back(x, np.random.default_rng(1)), t(x, np.random.default_rng(1)))
    assert augment.from_config(cfg["transforms"]) == t  # a list is a Compose
    assert RandomAffine.from_config(cfg["transforms"][0]) == t.transforms[0]
    assert RandomAffine(shear=5).config()["shear"] == [-5.0, 5.0, 0.0, 0.0]


def test_repr_is_readable():
    assert repr(RandomAffine()) == ("RandomAffine(degrees=(-10.0, 10.0), translate=(0.1, 0.1), scale=(0.9, 1.1), "
                                    "shear=(0.0, 0.0, 0.0, 0.0))")
    assert repr(RandomErasing()) == "RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.0)"
    assert repr(Compose([RandomErasing(p=1)])).startswith("Compose([RandomErasing(p=1.0")


@pytest.mark.parametrize("make,match", [
    (lambda: RandomAffine(degrees=-1), r"degrees must be a number d >= 0 and <= 360 for the range \(-d, d\)"),
    (lambda: RandomAffine(degrees=(10, -10)), "lo <= hi"),
    (lambda: RandomAffine(degrees="10"), "degrees must be a number d .* got '10'"),
    (lambda: RandomAffine(degrees=float("nan")), "degrees must be .* finite number"),
    (lambda: RandomAffine(translate=(0.1,)), r"translate must be None or two fractions \(tx, ty\)"),
    (lambda: RandomAffine(translate=(1.5, 0)), r"translate must be .* each in \[0, 1\]"),
    (lambda: RandomAffine(scale=(0, 1)), "scale must be .* each a finite number > 0"),
    (lambda: RandomAffine(scale=1.0), r"scale must be None or a range \(lo, hi\)"),
    (lambda: RandomAffine(shear=90), "strictly between -90 and 90"),
    (lambda: RandomAffine(shear=(1, 2, 3)), r"shear must be .* x and y ranges \(xlo, xhi, ylo, yhi\)"),
    (lambda: RandomErasing(p=1.5), r"p must be a finite number >= 0 and <= 1 \(a probability"),
    (lambda: RandomErasing(p=True), "p must be a finite number"),
    (lambda: RandomErasing(scale=(0.2, 0.1)), "lo <= hi"),
    (lambda: RandomErasing(scale=(0.1, 2.0)), r"each a finite number >= 0 and <= 1 \(area fractions"),
    (lambda: RandomErasing(ratio=(0, 1)), r"ratio must be .* > 0 \(aspect ratios"),
    (lambda: RandomErasing(value="random"), "value must be a finite number"),
    (lambda: Compose(RandomErasing()), "Compose needs a list"),
    (lambda: Compose([lambda x, rng: x]), "Compose takes portacnn.augment transforms"),
    (lambda: augment.from_config({"name": "Nope"}),
     "'name' is one of RandomAffine, RandomErasing, RandomCrop, RandomHorizontalFlip, Compose"),
    (lambda: RandomErasing.from_config(RandomAffine().config()), "config names 'RandomAffine'"),
    (lambda: augment.from_config({"name": "RandomAffine", "degree": 3}), None),
])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        make()
    if match is not None:
        assert info.type is ValueError and "\n" not in str(info.value)


@pytest.mark.parametrize("t", [RandomAffine(), RandomErasing(), augment.RandomCrop(), augment.RandomHorizontalFlip()],
                         ids=["affine", "erasing", "crop", "flip"])
def test_bad_calls(t):
    with pytest.raises(ValueError, match=r"expects a batch of shape \(N, C, H, W\)"):
        t(np.zeros((2, 5, 5)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="expects a real floating batch"):
        t(np.zeros((2, 1, 5, 5), dtype=np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="needs rng, a numpy.random.Generator"):
        t(np.zeros((2, 1, 5, 5)), 0)
    with pytest.raises(ValueError, match="needs rng, a numpy.random.Generator"):
        t(np.zeros((2, 1, 5, 5)), np.random.RandomState(0))
    with pytest.raises(ValueError, match="needs rng"):
        t(np.zeros((2, 1, 5, 5)), np.random.RandomState(0))


def test_affine_report_figures(rng):
    """Not a check: the largest differences against the oracles, printed for the record (pytest -s)."""
    t = RandomAffine(degrees=45, translate=(0.2, 0.2), scale=(0.8, 1.2), shear=(-15, 15, -15, 15))
    x = images(rng, (3, 1, 12, 12))
    params = t.sample_params(3, 12, 12, np.random.default_rng(9))
    m = t.matrices(params, 12, 12)
    ref = reference_affine(x, params)
    figures = {"f64 vs loop": max_rel_diff(warp_affine(x, m), ref),
               "f32 vs loop": max_rel_diff(warp_affine(x.astype(np.float32), m), ref)}
    try:
        figures["f64 vs torch"] = max_rel_diff(warp_affine(x, m), torch_grid_sample(x, m))
    except pytest.skip.Exception:
        pass
    print(" ".join(f"{k}: {v:.2e}" for k, v in figures.items()))
    assert all(v < 1e-5 for v in figures.values())


def test_deepcopy_is_equal():
    t = pipeline()
    assert copy.deepcopy(t) == t


# ----------------------------------------------------------------------------------------------------------
# hostile arguments: every numeric argument, every slot, every hostile value -> refused in one line, or a
# transform whose output is finite on every dtype and size (never NaN, inf or wrapped-around boxes)

HOSTILE = [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e39, -1e39, 1e-300, -1e-300, 5e-324, 1e-30, 0.0, -0.0,
           np.float32(np.nan), np.float64(1e308), 10**400, -(10**400), True, "1", None, [1.0], 1 + 2j]

# each argument of each class with the well-formed value whose slots the sweep replaces one at a time
ARGUMENTS = {
    (RandomAffine, "degrees"): [10, (-5.0, 20.0)],
    (RandomAffine, "translate"): [(0.1, 0.2)],
    (RandomAffine, "scale"): [(0.9, 1.1)],
    (RandomAffine, "shear"): [5, (1.0, 2.0), (1.0, 2.0, 3.0, 4.0)],
    (RandomErasing, "p"): [0.5],
    (RandomErasing, "scale"): [(0.02, 0.2)],
    (RandomErasing, "ratio"): [(0.3, 3.3)],
    (RandomErasing, "value"): [0.5],
}


def _variants(good):
    """``good`` with each of its slots (or itself, when it is one number) replaced by each hostile value, and
    with all its slots replaced at once (a degenerate range: scale=(1e-300, 1e-300) draws 1e-300 only)."""
    for bad in HOSTILE:
        if isinstance(good, tuple):
            for i in range(len(good)):
                yield good[:i] + (bad,) + good[i + 1:]
            yield (bad,) * len(good)
        else:
            yield bad


def _show(value):
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_show, value)) + ")"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        return ("-" if value < 0 else "") + "10**400"
    return repr(value)


def _cases():
    for (cls, arg), goods in ARGUMENTS.items():
        for good in goods:
            for value in _variants(good):
                yield pytest.param(cls, arg, value, id=f"{cls.__name__}-{arg}-{_show(value)}")


def _one_line_error(fn, *names):
    with pytest.raises(ValueError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text and all(n in text for n in names), text
    return text


@pytest.mark.parametrize("cls, arg, value", sweep(_cases(), 80, unpack=True))
def test_every_numeric_argument_is_refused_or_gives_finite_pixels(cls, arg, value):
    """The property: a hostile value in any slot of any argument is a one-line ValueError naming the class and
    the argument (when built, or on a batch whose dtype cannot hold its result); or the transform makes finite
    pixels (and, for erasing, boxes inside the image) on float16/32/64 batches of 1x1 to 28x28."""
    try:
        t = cls(p=1.0, **{arg: value}) if cls is RandomErasing and arg != "p" else cls(**{arg: value})
    except ValueError as e:
        assert "\n" not in str(e) and f"{cls.__name__} {arg}" in str(e), str(e)
        return
    for dtype in ("float16", "float32", "float64"):
        for h, w in ((1, 1), (5, 7), (28, 28)):
            x = np.random.default_rng(0).uniform(-1, 1, (3, 2, h, w)).astype(dtype)
            try:
                y = t(x, np.random.default_rng(1))
            except ValueError as e:
                assert "\n" not in str(e) and cls.__name__ in str(e), str(e)
                continue
            assert y.dtype == x.dtype and y.shape == x.shape
            assert np.isfinite(y).all(), f"{t!r} on {dtype} {h}x{w}: {np.size(y) - np.isfinite(y).sum()} non-finite"
            if cls is RandomErasing:
                boxes = t.sample_boxes(3, h, w, np.random.default_rng(1))
                top, left, bh, bw = boxes.T
                assert (boxes >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all(), boxes


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("side", [1, 3, 28, 300])
@pytest.mark.parametrize("shear", [0, 45, (0, 0, -80, 89)])
def test_the_smallest_scale_named_is_the_boundary(dtype, side, shear):
    """RandomAffine refuses a scale too small for the batch's dtype and size and names the smallest it takes;
    that one, with every other argument at its largest, gives finite pixels (and a tenth of it is refused)."""
    x = np.ones((2, 1, side, side), dtype=dtype)
    refused = []
    for k in range(1, 400):
        try:
            tiny = RandomAffine(degrees=360, translate=(1, 1), scale=(10.0**-k, 1.0), shear=shear)
        except ValueError as e:  # 1/scale overflows float64 itself: refused when built
            assert "overflows float64" in str(e)
            break
        try:
            tiny.check_fits(x.dtype, side, side)
        except ValueError:
            refused.append(tiny)
            break
    if not refused:  # float64 with small images: every scale float64 can invert gives finite pixels
        assert dtype == "float64"
        return
    text = _one_line_error(lambda: refused[0](x, np.random.default_rng(0)), "RandomAffine scale", "too small", dtype)
    smallest = float(text.split("use scale factors >= ")[1].split(",")[0])
    t = RandomAffine(degrees=360, translate=(1, 1), scale=(smallest, smallest), shear=shear)
    for seed in range(3):
        assert np.isfinite(t(x, np.random.default_rng(seed))).all()
    _one_line_error(lambda: RandomAffine(degrees=360, translate=(1, 1), scale=(smallest / 10, 1), shear=shear)(
        x, np.random.default_rng(0)), "too small")


def test_erasing_value_beyond_the_dtype_is_refused_before_drawing():
    t = RandomErasing(p=1.0, value=1e300)
    rng = np.random.default_rng(0)
    state = copy.deepcopy(rng.bit_generator.state)
    _one_line_error(lambda: t(np.zeros((2, 1, 8, 8), np.float32), rng), "RandomErasing value", "float32")
    assert rng.bit_generator.state == state  # nothing drawn
    assert np.all(t(np.zeros((2, 1, 8, 8)), rng) != np.inf)  # float64 holds it
    _one_line_error(lambda: RandomErasing(p=1.0, value=7e4)(np.zeros((1, 1, 8, 8), np.float16), rng),
                    "RandomErasing value", "float16")
    _one_line_error(lambda: augment.erase(np.zeros((1, 1, 4, 4), np.float32), [[0, 0, 2, 2]], 1e39), "erase value")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e300, 2e37, -2e37])
@pytest.mark.parametrize("entry", [(1, 0, 0), (1, 1, 1), (0, 0, 2)])
def test_warp_affine_refuses_matrices_that_overflow_the_dtype(bad, entry):
    """A coordinate sums |m0| (w-1) + |m1| (h-1) + |m2|: beyond float32 it would be inf, then NaN pixels or
    indices out of the image; refused in one line (float64 holds the finite ones)."""
    m = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (2, 1, 1))
    m[entry] = bad * (20 if entry[2] == 2 else 1)
    x = np.ones((2, 1, 28, 28), np.float32)
    _one_line_error(lambda: warp_affine(x, m), "warp_affine", "fit float32", "images of 28x28")
    if math.isfinite(bad) and abs(bad) < 1e300:
        assert np.isfinite(warp_affine(x.astype(np.float64), m)).all()  # float64 holds it
    m[entry] = 1e37 if entry[2] != 2 else 3e38  # within float32
    assert np.isfinite(warp_affine(x, m)).all()


def test_erasing_boxes_never_wrap_around():
    """Sides beyond int64 (an extreme ratio) fit no image: no box, not a negative one."""
    u = np.random.default_rng(0).random((50, 23))
    for ratio in ((1e300, 1e300), (1e-300, 1e-300), (1e-300, 1e300)):
        boxes = augment.erase_boxes(u, 28, 28, 1.0, (0.02, 0.2), ratio)
        top, left, bh, bw = boxes.T
        assert (boxes >= 0).all() and (top + bh <= 28).all() and (left + bw <= 28).all()
