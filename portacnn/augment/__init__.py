"""Data augmentation of an image batch (N, C, H, W), written once in the array-API namespace of the batch, so
it runs on the device where the batch lives; only the per-image random numbers are drawn on the host.

Every transform is called as ``t(x, rng)``: ``x`` a real floating batch, ``rng`` a ``numpy.random.Generator``
that the caller owns (training derives one per batch from (seed, epoch, step), so a resumed run repeats its
augmentation). A transform draws a fixed number of float64 uniforms per image (:attr:`draws_per_image`), in a
fixed order, whatever the backend, the data or the outcome: the same generator state gives the same output on
every backend and leaves the generator in the same state.

RandomAffine
------------
Coordinates: pixel (i, j) (row i, column j) covers the unit square whose centre is at (x, y) = (j + 1/2, i + 1/2);
the image spans [0, W] x [0, H], x to the right, y DOWN, and its centre is c = (W/2, H/2) (between pixels when a
side is even; the ``align_corners=False`` convention of PyTorch's ``grid_sample``). Per image the transform
draws an angle a, shifts (tx, ty) in pixels, a scale s and shear angles (px, py), and moves the content by::

    p_out = c + t + A (p_in - c),       A = s * R(a) @ Sy(py) @ Sx(px),      t = (tx, ty)

    R(a) = [[ cos a, sin a],      Sx(px) = [[1, tan px],      Sy(py) = [[1,       0],
            [-sin a, cos a]]                [0,       1]]                [tan py,  1]]

so with y pointing down a positive angle turns the content COUNTER-CLOCKWISE as displayed (a = 90 degrees is
``np.rot90(image)``, like ``torchvision``'s ``rotate``; its ``affine`` documents its angle as clockwise, which the
symmetric range of a random angle does not see), positive tx moves it right and positive ty down, and an
x-shear slides the rows below the centre to the right. The output is made by pulling: each output pixel
centre is mapped back into the input, ``p_in = c + A^-1 (p_out - c - t)``, with
``A^-1 = (1/s) Sx(-px) @ Sy(-py) @ R(-a)``. In (column, row) index coordinates, (j, i) = p - (1/2, 1/2), that
is one 2 x 3 matrix per image, ``M = [B | e]`` with ``B = A^-1`` and ``e = c' - B (c' + t)`` where
``c' = c - (1/2, 1/2)``::

    (js, is) = M @ (j, i, 1)        the point of the input that output pixel (i, j) shows

computed on the host in float64 (:func:`affine_matrices`), then moved to the device in the batch's dtype.

Bilinear interpolation (:func:`warp_affine`): with ``j0 = floor(js)``, ``fx = js - j0`` (likewise ``i0``,
``fy``), the output is ``(1-fy)(1-fx) x[i0, j0] + (1-fy) fx x[i0, j0+1] + fy (1-fx) x[i0+1, j0] + fy fx
x[i0+1, j0+1]``, a neighbour outside the image counting as 0 (the background of white-on-black digits; this
is ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``). Without masks: the points
are clamped to [-1, W] x [-1, H] (beyond that both neighbours are outside, as they are at the clamped
point), the batch is padded with one zero row/column before and two after, and the four neighbours are
gathered with ``take`` from it flattened to (N*(H+3)*(W+3), C), at linear indices ``n*(H+3)*(W+3) + (i0+1)*(W+3)
+ (j0+1)`` and that plus 1, W+3 and W+4; then ``a + fx (b - a)`` along the rows and ``+ fy (...)`` between
them. The identity matrix samples the pixel centres exactly (``fx = fy = 0``), so it returns the input to
the bit; a :class:`RandomAffine` whose ranges only hold the identity makes its draws, then returns the
input itself without sampling.

Draws per image (``rng.random((N, 6))``, row by row): angle, tx, ty, scale, x-shear, y-shear, each
``lo + (hi - lo) * u``; a degenerate range costs its draw all the same.

RandomErasing
-------------
As torchvision's: with probability p, one rectangle of area ``s * H * W`` (s ~ U(scale)) and aspect ratio
h/w = r (log r ~ U(log ratio)), ``h = round(sqrt(s H W r))``, ``w = round(sqrt(s H W / r))``, is tried up to 10
times until ``h < H`` and ``w < W``; its top-left corner is uniform over the positions that fit, and it is set
to ``value``; if no try fits, the image is left alone. Draws per image (``rng.random((N, 23))``): the coin, the
(area, ratio) pairs of the 10 tries, then the top and left of the chosen one (``floor(u * (H - h + 1))``). The
rectangles are chosen on the host; on the device the mask is ``(top <= row < top + h) & (left <= col < left
+ w)`` by broadcasting.

RandomCrop and RandomHorizontalFlip
-----------------------------------
As torchvision's, the CIFAR standard: :class:`RandomCrop` pads each image by ``padding`` pixels on every side with
``fill`` and cuts a window of ``size`` (None: the input's own size) at a uniformly random position, top
``floor(u * (H + 2p - h + 1))`` and left likewise (two uniforms per image, in that order). On the device that is
one gather (:func:`crop`): output pixel (i, j) of image n reads ``x[n, :, top + i - p, left + j - p]`` at
clamped linear indices of the batch flattened to (N*H*W, C), and ``where`` puts ``fill`` where that lies outside
the image; no padded copy is made. :class:`RandomHorizontalFlip` mirrors each image left to right when its one
uniform is below ``p`` (:func:`flip_horizontal`: ``where`` between the batch and its ``flip`` along the columns).

Arguments
---------
Every argument is checked by the rules of :mod:`portacnn.validation` when a transform is built (finite
numbers in their ranges; a one-line ValueError that says what to pass), and again on each batch where only its
dtype and size tell what gives finite pixels: :meth:`RandomAffine.check_fits` (a scale so small that the inverse
map overflows the dtype would make every pixel NaN) and RandomErasing's ``value`` (1e300 is inf in float32).
The primitives check what they are given alike (:func:`warp_affine` its matrices, :func:`erase` its value);
:func:`erase_boxes` compares the tried sides as floats, so an extreme ratio fits no image rather than wrapping
around int64.

Differences from torchvision: bilinear interpolation (torchvision defaults to nearest), sub-pixel shifts
(torchvision rounds its shifts to whole pixels), fill 0 only, a numeric erase value only; RandomCrop pads every side
by the same ``padding``, with a constant ``fill`` only (no per-side padding, no reflect modes, no
``pad_if_needed``: a window larger than the padded image is refused).

The argument rules live in :mod:`.rules`, the primitives in :mod:`.primitives`; the transforms here.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import numpy_dtype
from ..validation import check
from .primitives import affine_matrices, crop, erase, erase_boxes, flip_horizontal, warp_affine
from .rules import (AFFINE_SCALE, AREA, CROP_SIZE, DEGREES, FILL, PADDING, PROBABILITY, RATIO, SHEAR, TRANSLATE, VALUE,
                    check_batch, check_rng, dtype_values, round_up, tuple_repr)


__all__ = ["Compose", "RandomAffine", "RandomCrop", "RandomErasing", "RandomHorizontalFlip", "Transform",
           "affine_matrices", "crop", "erase", "erase_boxes", "flip_horizontal", "from_config", "warp_affine"]


# ----------------------------------------------------------------------------------------------------------
# transforms


class Transform:
    """A random transform of a batch: ``t(x, rng)`` draws :attr:`draws_per_image` float64 uniforms per image
    from ``rng`` and returns the transformed batch (same dtype and device, and same shape but for a RandomCrop
    of another size; ``x`` itself when nothing changes, never ``x`` modified). ``config()`` is a JSON-friendly
    dict naming the class, from which :func:`from_config` rebuilds it."""

    #: how many float64 uniforms a call draws per image, whatever the outcome
    draws_per_image = 0

    def config(self) -> dict:
        raise NotImplementedError

    def __call__(self, x, rng):
        raise NotImplementedError

    def _checked(self, x, rng) -> tuple[int, int, int]:
        """(N, H, W) of batch ``x`` once it and ``rng`` are checked (what every call starts with)."""
        check_batch(self, x)
        check_rng(self, rng)
        n, _, h, w = (int(d) for d in x.shape)
        return n, h, w

    @classmethod
    def from_config(cls, config: dict) -> Transform:
        cfg = dict(config)
        name = cfg.pop("name", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"config names {name!r}, not {cls.__name__!r}; use augment.from_config(config)")
        return cls(**cfg)

    def __repr__(self):
        args = ", ".join(f"{k}={tuple_repr(v)!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(other) is type(self) and other.config() == self.config()

    __hash__ = None


class RandomAffine(Transform):
    """RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=0), as torchvision's, bilinear.

    Per image: an angle U(degrees) (a number d means (-d, d); counter-clockwise), shifts U(-tx*W, tx*W) and
    U(-ty*H, ty*H) pixels (right, down), a scale U(scale), and shear angles: a number s means an x-shear
    U(-s, s), a pair (lo, hi) an x-shear U(lo, hi), four numbers x- then y-shear ranges. Rotation, scale and
    shear are about the image centre; outside the input counts as 0. ``translate``, ``scale`` and ``shear``
    may be None (none of it). Draws 6 uniforms per image.
    """

    draws_per_image = 6

    def __init__(self, degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=0):
        self.degrees = check(degrees, DEGREES, "RandomAffine degrees")
        self.translate = check(translate, TRANSLATE, "RandomAffine translate") or (0.0, 0.0)
        self.scale = check(scale, AFFINE_SCALE, "RandomAffine scale") or (1.0, 1.0)
        self.shear = check(shear, SHEAR, "RandomAffine shear") or (0.0, 0.0, 0.0, 0.0)
        if not math.isfinite(self._gain()):  # the host computes the map in float64: 1/scale must be finite there
            raise ValueError(f"RandomAffine scale {tuple_repr(scale)!r} is too small: the inverse map (1/scale) "
                             "overflows float64 (use factors of the order of 1, e.g. scale=(0.9, 1.1))")

    def _shear_factor(self) -> float:
        """1 + kx ky + kx + ky, with kx, ky the largest |tan| of the x- and y-shear angles."""
        kx, ky = (math.tan(math.radians(max(abs(a) for a in pair))) for pair in (self.shear[:2], self.shear[2:]))
        return 1.0 + kx * ky + kx + ky

    def _gain(self) -> float:
        """A bound on every entry of the inverse map B = A^-1 over the ranges (see affine_matrices): the shear
        factor over the smallest scale."""
        return self._shear_factor() / self.scale[0]

    def check_fits(self, dtype, height: int, width: int) -> None:
        """A ValueError unless every map the ranges allow samples ``height`` x ``width`` images of the floating
        ``dtype`` with finite coordinates (else the warp fills the batch with NaN): :func:`warp_affine` sums
        ``|m0| (W-1) + |m1| (H-1) + |m2|`` per coordinate, which over the ranges is at most
        ``g (1.5 (W + H) + tx + ty) + (W + H) / 2`` (g the gain, tx, ty the largest shifts in pixels) and must
        not exceed the dtype's largest value. Called on every batch, before drawing; the identity needs nothing."""
        if self.is_identity:
            return
        name = np.dtype(numpy_dtype(dtype)).name
        top = float(np.finfo(name).max)
        reach = 1.5 * (width + height) + self.translate[0] * width + self.translate[1] * height
        centre = (width + height) / 2
        if self._gain() * reach + centre <= top:
            return
        if centre >= top:
            raise ValueError(f"RandomAffine cannot warp {name} images of {height}x{width}: their coordinates "
                             f"overflow {name}; use float32 or float64 images")
        smallest = round_up(self._shear_factor() * reach / (top - centre))
        raise ValueError(f"RandomAffine scale {self.scale} is too small for {name} images of {height}x{width}: the "
                         f"inverse map overflows {name} (every pixel would be NaN); use scale factors >= "
                         f"{smallest:.3g}" + (", or float64 images" if name != "float64" else ""))

    def config(self):
        return {"name": "RandomAffine", "degrees": list(self.degrees), "translate": list(self.translate),
                "scale": list(self.scale), "shear": list(self.shear)}

    @property
    def is_identity(self) -> bool:
        """Whether every draw gives the identity map (the call then returns its input)."""
        return (self.degrees == (0.0, 0.0) and self.translate == (0.0, 0.0) and self.scale == (1.0, 1.0)
                and self.shear == (0.0, 0.0, 0.0, 0.0))

    def sample_params(self, n: int, height: int, width: int, rng: np.random.Generator) -> dict:
        """Draw the parameters of ``n`` images (6 uniforms each, rng.random((n, 6))): float64 arrays
        ``angle`` (degrees), ``tx``, ``ty`` (pixels), ``scale``, ``shear_x``, ``shear_y`` (degrees)."""
        u = rng.random((n, 6))
        tx, ty = self.translate[0] * width, self.translate[1] * height
        ranges = (self.degrees, (-tx, tx), (-ty, ty), self.scale, self.shear[:2], self.shear[2:])
        names = ("angle", "tx", "ty", "scale", "shear_x", "shear_y")
        return {k: lo + (hi - lo) * u[:, i] for i, (k, (lo, hi)) in enumerate(zip(names, ranges))}

    def matrices(self, params: dict, height: int, width: int) -> np.ndarray:
        """The (N, 2, 3) float64 sampling matrices of :func:`affine_matrices` for drawn ``params``."""
        return affine_matrices(params["angle"], (params["tx"], params["ty"]), params["scale"],
                               (params["shear_x"], params["shear_y"]), height, width)

    def __call__(self, x, rng):
        n, h, w = self._checked(x, rng)
        self.check_fits(x.dtype, h, w)
        params = self.sample_params(n, h, w, rng)
        if self.is_identity:
            return x
        return warp_affine(x, self.matrices(params, h, w))


class RandomErasing(Transform):
    """RandomErasing(p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.0), as torchvision's: with
    probability p, one rectangle per image of area fraction U(scale) and aspect ratio h/w log-uniform in
    ``ratio`` (up to 10 tries until it fits, else no erasing) is set to ``value`` in every channel.
    Draws 23 uniforms per image."""

    draws_per_image = 23
    tries = 10

    def __init__(self, p=0.5, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.0):
        self.p = check(p, PROBABILITY, "RandomErasing p")
        self.scale = check(scale, AREA, "RandomErasing scale")
        self.ratio = check(ratio, RATIO, "RandomErasing ratio")
        self.value = check(value, VALUE, "RandomErasing value")  # and, per batch, by what its dtype can hold

    def config(self):
        return {"name": "RandomErasing", "p": self.p, "scale": list(self.scale), "ratio": list(self.ratio),
                "value": self.value}

    def sample_boxes(self, n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """Draw the rectangles of ``n`` images (23 uniforms each): (N, 4) int64 (top, left, height, width),
        zero-sized where an image is left alone."""
        return erase_boxes(rng.random((n, self.draws_per_image)), height, width, self.p, self.scale, self.ratio)

    def __call__(self, x, rng):
        n, h, w = self._checked(x, rng)
        check(self.value, dtype_values(x.dtype), "RandomErasing value")  # 1e300 is inf in float32
        boxes = self.sample_boxes(n, h, w, rng)
        if not np.any(boxes[:, 2] * boxes[:, 3]):
            return x
        return erase(x, boxes, self.value)


class RandomCrop(Transform):
    """RandomCrop(size=None, padding=4, fill=0.0), as torchvision's: each image padded by ``padding`` pixels on
    every side with ``fill``, then a window of ``size`` cut at a uniformly random position. ``size``: an int (a
    square), (h, w), or None for the input's own size (the CIFAR recipe: pad 4, crop back to 32x32). The output is
    (N, C, h, w). Draws 2 uniforms per image (top, then left)."""

    draws_per_image = 2

    def __init__(self, size=None, padding=4, fill=0.0):
        self.size = check(size, CROP_SIZE, "RandomCrop size")
        self.padding = check(padding, PADDING, "RandomCrop padding")
        self.fill = check(fill, FILL, "RandomCrop fill")  # and, per batch, by what its dtype can hold

    def config(self):
        return {"name": "RandomCrop", "size": None if self.size is None else list(self.size), "padding": self.padding,
                "fill": self.fill}

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) of the windows cut from ``height`` x ``width`` images; a ValueError if they do not fit the
        padded images."""
        h, w = self.size or (height, width)
        p = self.padding
        if h > height + 2 * p or w > width + 2 * p:
            raise ValueError(f"RandomCrop size {h}x{w} does not fit {height}x{width} images padded by {p} "
                             f"({height + 2 * p}x{width + 2 * p}); use a smaller size, more padding, or size=None")
        return h, w

    def sample_corners(self, n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """Draw the windows of ``n`` images (2 uniforms each, rng.random((n, 2))): (N, 2) int64 (top, left) in the
        padded images, each uniform over the positions that fit."""
        h, w = self.output_size(height, width)  # refused before anything is drawn
        positions = np.array([height + 2 * self.padding - h + 1, width + 2 * self.padding - w + 1], dtype=np.int64)
        return np.minimum(np.floor(rng.random((n, 2)) * positions).astype(np.int64), positions - 1)

    def __call__(self, x, rng):
        n, h, w = self._checked(x, rng)
        check(self.fill, dtype_values(x.dtype), "RandomCrop fill")  # 1e300 is inf in float32
        corners = self.sample_corners(n, h, w, rng)
        size = self.output_size(h, w)
        if self.padding == 0 and size == (h, w):  # one position only: the image itself
            return x
        return crop(x, corners, size, self.padding, self.fill)


class RandomHorizontalFlip(Transform):
    """RandomHorizontalFlip(p=0.5), as torchvision's: each image mirrored left to right with probability p (when
    its uniform is below p). Draws 1 uniform per image."""

    draws_per_image = 1

    def __init__(self, p=0.5):
        self.p = check(p, PROBABILITY, "RandomHorizontalFlip p")

    def config(self):
        return {"name": "RandomHorizontalFlip", "p": self.p}

    def sample_flips(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw which of ``n`` images are flipped (1 uniform each): a bool array (N,)."""
        return rng.random(n) < self.p

    def __call__(self, x, rng):
        n, _, _ = self._checked(x, rng)
        which = self.sample_flips(n, rng)
        if not which.any():
            return x
        return flip_horizontal(x, which)


class Compose(Transform):
    """Compose([t1, t2, ...]): apply the transforms in order, each drawing from the same generator in turn
    (all of t1's draws for the batch, then t2's, ...)."""

    def __init__(self, transforms):
        if isinstance(transforms, Transform) or not hasattr(transforms, "__iter__"):
            raise ValueError(f"Compose needs a list of transforms; got {transforms!r} (wrap it: Compose([t]))")
        self.transforms = list(transforms)
        for t in self.transforms:
            if not isinstance(t, Transform):
                raise ValueError(f"Compose takes portacnn.augment transforms; got {t!r} (build it with "
                                 "RandomAffine(...), RandomCrop(...), ... or from_config(...))")

    @property
    def draws_per_image(self) -> int:
        return sum(t.draws_per_image for t in self.transforms)

    def config(self):
        return {"name": "Compose", "transforms": [t.config() for t in self.transforms]}

    @classmethod
    def from_config(cls, config: dict) -> Compose:
        cfg = dict(config)
        if cfg.pop("name", "Compose") != "Compose" or set(cfg) != {"transforms"}:
            raise ValueError(f"a Compose config is {{'name': 'Compose', 'transforms': [...]}}; got {config!r}")
        return cls([from_config(c) for c in cfg["transforms"]])

    def __repr__(self):
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"

    def __call__(self, x, rng):
        for t in self.transforms:
            x = t(x, rng)
        return x


TRANSFORMS = {cls.__name__: cls for cls in (RandomAffine, RandomErasing, RandomCrop, RandomHorizontalFlip, Compose)}


def from_config(config) -> Transform:
    """Rebuild a transform from its ``config()`` (a dict with "name"); a list of configs is a Compose."""
    if isinstance(config, (list, tuple)):
        return Compose([from_config(c) for c in config])
    if not isinstance(config, dict) or config.get("name") not in TRANSFORMS:
        raise ValueError(f"an augmentation config is a dict whose 'name' is one of {', '.join(TRANSFORMS)}; got "
                         f"{config!r}")
    return TRANSFORMS[config["name"]].from_config(config)
