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

Differences from torchvision: bilinear interpolation (torchvision defaults to nearest), sub-pixel shifts
(torchvision rounds its shifts to whole pixels), fill 0 only, a numeric erase value only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from .backend import asarray_like, numpy_dtype
from .kernels.windows import pad_hw

__all__ = ["Compose", "RandomAffine", "RandomErasing", "Transform", "affine_matrices", "erase", "erase_boxes",
           "from_config", "warp_affine"]


# ----------------------------------------------------------------------------------------------------------
# argument checks


def _number(value, what: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number; got {value!r} ({fix})")
    return float(value)


def _numbers(value, what: str, count: int, fix: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != count:
        raise ValueError(f"{what} must be a sequence of {count} numbers; got {value!r} ({fix})")
    return tuple(_number(v, what, fix) for v in value)


def _range(value, what: str, fix: str) -> tuple[float, float]:
    lo, hi = _numbers(value, what, 2, fix)
    if lo > hi:
        raise ValueError(f"{what} must be a range (lo, hi) with lo <= hi; got {value!r} ({fix})")
    return lo, hi


def _symmetric(value, what: str, fix: str) -> tuple[float, float]:
    """A number d >= 0 as the range (-d, d), or a range (lo, hi) as given."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        d = _number(value, what, fix)
        if d < 0:
            raise ValueError(f"{what} must be >= 0 when it is one number; got {value!r} ({fix})")
        return 0.0 - d, d  # not -0.0
    return _range(value, what, fix)


def _check_batch(transform, x) -> None:
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"{transform!r} expects a batch of shape (N, C, H, W); got shape {shape} (add the "
                         "missing axes, e.g. x[:, None] for (N, H, W) images)")
    if numpy_dtype(x.dtype).kind != "f":
        raise ValueError(f"{transform!r} expects a real floating batch; got dtype {x.dtype} (convert it with "
                         "backend.asarray(x, dtype='float32') first)")


def _check_rng(transform, rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{transform!r} needs rng, a numpy.random.Generator; got {type(rng).__name__} (pass "
                         "np.random.default_rng(seed))")


def _tuple_repr(value):
    return tuple(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------------------------------------
# the portable primitives


def affine_matrices(angle, translate, scale, shear, height: int, width: int) -> np.ndarray:
    """The (N, 2, 3) float64 matrices M that map output index coordinates (j, i, 1) to the input point
    (js, is) each output pixel shows, for per-image parameters (arrays of N; numbers alone give one (2, 3)
    matrix, numbers mixed with arrays are broadcast): ``angle`` in degrees
    (counter-clockwise), ``translate`` = (tx, ty) in pixels (right, down), ``scale``, ``shear`` = (px, py) in
    degrees. See the module docstring for the map and its inverse."""
    a = np.radians(np.asarray(angle, dtype=np.float64))
    tx, ty = (np.asarray(t, dtype=np.float64) for t in translate)
    s = np.asarray(scale, dtype=np.float64)
    kx, ky = (np.tan(np.radians(np.asarray(p, dtype=np.float64))) for p in shear)
    a, tx, ty, s, kx, ky = np.broadcast_arrays(a, tx, ty, s, kx, ky)
    cos, sin = np.cos(a), np.sin(a)
    # B = A^-1 = (1/s) Sx(-px) @ Sy(-py) @ R(-a);  Sx(-px) @ Sy(-py) = [[1 + kx*ky, -kx], [-ky, 1]]
    s00, s01, s10 = 1.0 + kx * ky, -kx, -ky
    b = np.empty(a.shape + (2, 3), dtype=np.float64)
    b[..., 0, 0] = (s00 * cos + s01 * sin) / s
    b[..., 0, 1] = (-s00 * sin + s01 * cos) / s
    b[..., 1, 0] = (s10 * cos + sin) / s
    b[..., 1, 1] = (-s10 * sin + cos) / s
    cx, cy = width / 2.0 - 0.5, height / 2.0 - 0.5  # the centre in index coordinates
    ux, uy = cx + tx, cy + ty
    b[..., 0, 2] = cx - (b[..., 0, 0] * ux + b[..., 0, 1] * uy)
    b[..., 1, 2] = cy - (b[..., 1, 0] * ux + b[..., 1, 1] * uy)
    return b


def warp_affine(x, matrices):
    """Bilinear resampling of the batch ``x`` (N, C, H, W): output pixel (i, j) of image n is the input
    interpolated at ``matrices[n] @ (j, i, 1)`` (a host or device array (N, 2, 3); it is moved to ``x``'s
    device in ``x``'s dtype), zero outside the image. Returns a new array of ``x``'s dtype, on its device."""
    xp = array_namespace(x)
    dev, dt = device_of(x), x.dtype
    n, c, h, w = (int(d) for d in x.shape)
    if tuple(matrices.shape) != (n, 2, 3):
        raise ValueError(f"warp_affine needs matrices of shape ({n}, 2, 3) for a batch of {n}; got "
                         f"{tuple(matrices.shape)}")
    if n == 0 or c * h * w == 0:
        return xp.asarray(x, copy=True)
    if isinstance(matrices, np.ndarray) or not hasattr(matrices, "__array_namespace__"):
        matrices = np.asarray(matrices, dtype=numpy_dtype(dt))  # cast on the host: no float64 on the device
    m = asarray_like(matrices, x)
    m = m if m.dtype == dt else xp.astype(m, dt)
    cols = xp.arange(w, dtype=dt, device=dev)[None, None, :]
    rows = xp.arange(h, dtype=dt, device=dev)[None, :, None]
    src_j = m[:, 0, 0, None, None] * cols + m[:, 0, 1, None, None] * rows + m[:, 0, 2, None, None]  # (N, H, W)
    src_i = m[:, 1, 0, None, None] * cols + m[:, 1, 1, None, None] * rows + m[:, 1, 2, None, None]
    # A point more than one pixel beyond the border has only zero neighbours, and so has that point clamped to
    # one pixel beyond it: on the input padded with one zero row/column before and two after, every neighbour
    # of every clamped point is an element, and no mask is needed.
    src_j = xp.minimum(xp.maximum(src_j, _scalar(-1, x)), _scalar(w, x))
    src_i = xp.minimum(xp.maximum(src_i, _scalar(-1, x)), _scalar(h, x))
    j0, i0 = xp.floor(src_j), xp.floor(src_i)
    fx, fy = xp.reshape(src_j - j0, (-1, 1)), xp.reshape(src_i - i0, (-1, 1))  # (N*H*W, 1)
    hp, wp = h + 3, w + 3
    base = xp.arange(n, dtype=xp.int64, device=dev)[:, None, None] * (hp * wp)
    corner = xp.reshape(base + (xp.astype(i0, xp.int64) + 1) * wp + (xp.astype(j0, xp.int64) + 1), (-1,))
    padded = pad_hw(xp.permute_dims(x, (0, 2, 3, 1)), (1, 2), (1, 2))  # (N, H+3, W+3, C)
    flat = xp.reshape(padded, (n * hp * wp, c))  # one row per pixel
    g00, g01 = xp.take(flat, corner, axis=0), xp.take(flat, corner + 1, axis=0)  # (N*H*W, C)
    g10, g11 = xp.take(flat, corner + wp, axis=0), xp.take(flat, corner + (wp + 1), axis=0)
    upper = g00 + fx * (g01 - g00)  # interpolate along the rows, then between them
    lower = g10 + fx * (g11 - g10)
    y = upper + fy * (lower - upper)
    return xp.permute_dims(xp.reshape(y, (n, h, w, c)), (0, 3, 1, 2))


def _scalar(value, x):
    """``value`` as a 0-d array of ``x``'s dtype on its device (no Python-scalar promotion anywhere)."""
    return array_namespace(x).asarray(value, dtype=x.dtype, device=device_of(x))


def erase(x, boxes, value=0.0):
    """``x`` (N, C, H, W) with the rectangle ``boxes[n] = (top, left, height, width)`` of every image set to
    ``value`` (all channels); a box of zero height or width erases nothing. ``boxes`` is a host int array
    (N, 4). Returns a new array of ``x``'s dtype, on its device."""
    xp = array_namespace(x)
    dev, dt = device_of(x), x.dtype
    n, _, h, w = (int(d) for d in x.shape)
    boxes = np.asarray(boxes, dtype=np.int64)
    if boxes.shape != (n, 4):
        raise ValueError(f"erase needs boxes of shape ({n}, 4) for a batch of {n}; got {boxes.shape}")
    if n == 0:
        return xp.asarray(x, copy=True)
    bounds = xp.astype(asarray_like(boxes, x), xp.int64)  # (N, 4) on x's device
    top, left = bounds[:, 0, None, None, None], bounds[:, 1, None, None, None]
    bottom, right = top + bounds[:, 2, None, None, None], left + bounds[:, 3, None, None, None]
    rows = xp.arange(h, dtype=xp.int64, device=dev)[None, None, :, None]
    cols = xp.arange(w, dtype=xp.int64, device=dev)[None, None, None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (N, 1, H, W)
    return xp.where(inside, xp.asarray(value, dtype=dt, device=dev), x)


def erase_boxes(u: np.ndarray, height: int, width: int, p: float, scale, ratio) -> np.ndarray:
    """The (N, 4) int64 rectangles (top, left, height, width) that RandomErasing erases, from its uniforms
    ``u`` (N, 23) (see the module docstring); (0, 0, 0, 0) where an image is left alone."""
    n = u.shape[0]
    area = float(height * width)
    frac = scale[0] + (scale[1] - scale[0]) * u[:, 1:21:2]  # (N, 10): the tries
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, 2:21:2])
    hs = np.round(np.sqrt(area * frac * aspect)).astype(np.int64)
    ws = np.round(np.sqrt(area * frac / aspect)).astype(np.int64)
    fits = (hs < height) & (ws < width)
    chosen = np.argmax(fits, axis=1)  # the first try that fits (0 when none does: masked below)
    use = (u[:, 0] < p) & fits.any(axis=1)
    rows = np.arange(n)
    bh = np.where(use, hs[rows, chosen], 0)
    bw = np.where(use, ws[rows, chosen], 0)
    top = np.floor(u[:, 21] * (height - bh + 1)).astype(np.int64)
    left = np.floor(u[:, 22] * (width - bw + 1)).astype(np.int64)
    return np.stack([np.where(use, top, 0), np.where(use, left, 0), bh, bw], axis=1)


# ----------------------------------------------------------------------------------------------------------
# transforms


class Transform:
    """A random transform of a batch: ``t(x, rng)`` draws :attr:`draws_per_image` float64 uniforms per image
    from ``rng`` and returns the transformed batch (same dtype, device and shape; ``x`` itself when nothing
    changes, never ``x`` modified). ``config()`` is a JSON-friendly dict naming the class, from which
    :func:`from_config` rebuilds it."""

    #: how many float64 uniforms a call draws per image, whatever the outcome
    draws_per_image = 0

    def config(self) -> dict:
        raise NotImplementedError

    def __call__(self, x, rng):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> Transform:
        cfg = dict(config)
        name = cfg.pop("name", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"config names {name!r}, not {cls.__name__!r}; use augment.from_config(config)")
        return cls(**cfg)

    def __repr__(self):
        args = ", ".join(f"{k}={_tuple_repr(v)!r}" for k, v in self.config().items() if k != "name")
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
        fix = "e.g. RandomAffine(degrees=10)"
        self.degrees = _symmetric(degrees, "RandomAffine degrees", "a number d for (-d, d) or a range (lo, hi)")
        if max(abs(d) for d in self.degrees) > 360:
            raise ValueError(f"RandomAffine degrees must lie in [-360, 360]; got {degrees!r} ({fix})")
        fix = "fractions of the width and height in [0, 1], e.g. translate=(0.1, 0.1)"
        self.translate = (0.0, 0.0) if translate is None else _numbers(translate, "RandomAffine translate", 2, fix)
        if not all(0.0 <= t <= 1.0 for t in self.translate):
            raise ValueError(f"RandomAffine translate must be two fractions in [0, 1]; got {translate!r} ({fix})")
        fix = "a range of positive factors, e.g. scale=(0.9, 1.1)"
        self.scale = (1.0, 1.0) if scale is None else _range(scale, "RandomAffine scale", fix)
        if self.scale[0] <= 0:
            raise ValueError(f"RandomAffine scale factors must be > 0; got {scale!r} ({fix})")
        fix = "a number s for an x-shear in (-s, s), an x range (lo, hi) or x and y ranges (xlo, xhi, ylo, yhi)"
        if shear is None:
            shear = 0
        if isinstance(shear, numbers.Real) and not isinstance(shear, bool):
            self.shear = _symmetric(shear, "RandomAffine shear", fix) + (0.0, 0.0)
        elif hasattr(shear, "__len__") and len(shear) == 4:
            self.shear = (_range(shear[:2], "RandomAffine shear", fix) + _range(shear[2:], "RandomAffine shear", fix))
        else:
            self.shear = _range(shear, "RandomAffine shear", fix) + (0.0, 0.0)
        if max(abs(s) for s in self.shear) >= 90:
            raise ValueError(f"RandomAffine shear angles must lie strictly between -90 and 90 degrees; got {shear!r}")

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
        _check_batch(self, x)
        _check_rng(self, rng)
        n, _, h, w = (int(d) for d in x.shape)
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
        self.p = _number(p, "RandomErasing p", "a probability in [0, 1], e.g. p=0.5")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"RandomErasing p must be a probability in [0, 1]; got {p!r}")
        fix = "area fractions 0 <= lo <= hi <= 1, e.g. scale=(0.02, 0.2)"
        self.scale = _range(scale, "RandomErasing scale", fix)
        if not (0.0 <= self.scale[0] and self.scale[1] <= 1.0):
            raise ValueError(f"RandomErasing scale must be area fractions in [0, 1]; got {scale!r} ({fix})")
        fix = "aspect ratios h/w with 0 < lo <= hi, e.g. ratio=(0.3, 3.3)"
        self.ratio = _range(ratio, "RandomErasing ratio", fix)
        if self.ratio[0] <= 0:
            raise ValueError(f"RandomErasing ratio must be positive; got {ratio!r} ({fix})")
        self.value = _number(value, "RandomErasing value", "the erased pixels' value, e.g. value=0.0")

    def config(self):
        return {"name": "RandomErasing", "p": self.p, "scale": list(self.scale), "ratio": list(self.ratio),
                "value": self.value}

    def sample_boxes(self, n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """Draw the rectangles of ``n`` images (23 uniforms each): (N, 4) int64 (top, left, height, width),
        zero-sized where an image is left alone."""
        return erase_boxes(rng.random((n, self.draws_per_image)), height, width, self.p, self.scale, self.ratio)

    def __call__(self, x, rng):
        _check_batch(self, x)
        _check_rng(self, rng)
        n, _, h, w = (int(d) for d in x.shape)
        boxes = self.sample_boxes(n, h, w, rng)
        if not np.any(boxes[:, 2] * boxes[:, 3]):
            return x
        return erase(x, boxes, self.value)


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
                                 "RandomAffine(...), RandomErasing(...) or from_config(...))")

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


TRANSFORMS = {cls.__name__: cls for cls in (RandomAffine, RandomErasing, Compose)}


def from_config(config) -> Transform:
    """Rebuild a transform from its ``config()`` (a dict with "name"); a list of configs is a Compose."""
    if isinstance(config, (list, tuple)):
        return Compose([from_config(c) for c in config])
    if not isinstance(config, dict) or config.get("name") not in TRANSFORMS:
        raise ValueError(f"an augmentation config is a dict whose 'name' is one of {', '.join(TRANSFORMS)}; got "
                         f"{config!r}")
    return TRANSFORMS[config["name"]].from_config(config)
