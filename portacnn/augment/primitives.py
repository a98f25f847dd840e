"""The portable primitives of the augmentations, in the array-API namespace of the batch: affine matrices, the
bilinear warp, erasing and its boxes, cropping and mirroring."""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from ..backend import asarray_like, numpy_dtype, wide_dtypes
from ..kernels.windows import pad_hw
from ..validation import check
from .rules import dtype_values


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
    index = wide_dtypes(xp)[0]  # int64 (int32 on JAX without 64-bit arrays)
    n, c, h, w = (int(d) for d in x.shape)
    if tuple(matrices.shape) != (n, 2, 3):
        raise ValueError(f"warp_affine needs matrices of shape ({n}, 2, 3) for a batch of {n}; got "
                         f"{tuple(matrices.shape)}")
    if n == 0 or c * h * w == 0:
        return xp.asarray(x, copy=True)
    on_host = isinstance(matrices, np.ndarray) or not hasattr(matrices, "__array_namespace__")
    mp = np if on_host else array_namespace(matrices)
    size = mp.abs(np.asarray(matrices, dtype=np.float64) if on_host else matrices)
    # what a coordinate sums: |m0| (w - 1) + |m1| (h - 1) + |m2|, over both rows and every image (NaN stays NaN)
    largest = float(mp.max(size[..., 0] * (w - 1) + size[..., 1] * (h - 1) + size[..., 2]))
    top = float(np.finfo(numpy_dtype(dt)).max)
    if not largest <= top:  # NaN fails too
        name = np.dtype(numpy_dtype(dt)).name
        raise ValueError(f"warp_affine needs finite matrices whose coordinates fit {name} ({top:.3g} at most) for "
                         f"images of {h}x{w}; got |m0| (w-1) + |m1| (h-1) + |m2| = {largest:.3g}")
    if on_host:
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
    base = xp.arange(n, dtype=index, device=dev)[:, None, None] * (hp * wp)
    corner = xp.reshape(base + (xp.astype(i0, index) + 1) * wp + (xp.astype(j0, index) + 1), (-1,))
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
    index = wide_dtypes(xp)[0]  # int64 (int32 on JAX without 64-bit arrays)
    n, _, h, w = (int(d) for d in x.shape)
    boxes = np.asarray(boxes, dtype=np.int64)
    if boxes.shape != (n, 4):
        raise ValueError(f"erase needs boxes of shape ({n}, 4) for a batch of {n}; got {boxes.shape}")
    value = check(value, dtype_values(dt), "erase value")
    if n == 0:
        return xp.asarray(x, copy=True)
    bounds = xp.astype(asarray_like(boxes, x), index)  # (N, 4) on x's device
    top, left = bounds[:, 0, None, None, None], bounds[:, 1, None, None, None]
    bottom, right = top + bounds[:, 2, None, None, None], left + bounds[:, 3, None, None, None]
    rows = xp.arange(h, dtype=index, device=dev)[None, None, :, None]
    cols = xp.arange(w, dtype=index, device=dev)[None, None, None, :]
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
    with np.errstate(over="ignore"):  # an extreme ratio: inf, which fits no image
        hs = np.round(np.sqrt(area * frac * aspect))
        ws = np.round(np.sqrt(area * frac / aspect))
    fits = (hs < height) & (ws < width)  # compared as floats: a side beyond int64 never wraps around to fit
    chosen = np.argmax(fits, axis=1)  # the first try that fits (0 when none does: masked below)
    use = (u[:, 0] < p) & fits.any(axis=1)
    rows = np.arange(n)
    bh = np.where(use, hs[rows, chosen], 0).astype(np.int64)
    bw = np.where(use, ws[rows, chosen], 0).astype(np.int64)
    top = np.floor(u[:, 21] * (height - bh + 1)).astype(np.int64)
    left = np.floor(u[:, 22] * (width - bw + 1)).astype(np.int64)
    return np.stack([np.where(use, top, 0), np.where(use, left, 0), bh, bw], axis=1)


def crop(x, corners, size, padding=0, fill=0.0):
    """Windows of ``size`` (h, w) cut from the batch ``x`` (N, C, H, W) padded by ``padding`` pixels on every side
    with ``fill``: ``corners[n] = (top, left)`` (a host int array (N, 2)) is window n's top-left corner in the padded
    image, so output pixel (i, j) of image n is ``x[n, :, top + i - padding, left + j - padding]``, or ``fill``
    where that lies outside the image. No padded copy is made: one gather (``take``) of the N*h*w source pixels
    from ``x`` flattened to (N*H*W, C), at clamped linear indices, then ``where`` puts ``fill`` outside. Returns a
    new array (N, C, h, w) of ``x``'s dtype, on its device."""
    xp = array_namespace(x)
    dev, dt = device_of(x), x.dtype
    index = wide_dtypes(xp)[0]  # int64 (int32 on JAX without 64-bit arrays)
    n, c, height, width = (int(d) for d in x.shape)
    h, w = (int(v) for v in size)
    corners = np.asarray(corners, dtype=np.int64)
    if corners.shape != (n, 2):
        raise ValueError(f"crop needs corners of shape ({n}, 2) for a batch of {n}; got {corners.shape}")
    span = (height + 2 * padding - h, width + 2 * padding - w)  # the largest top and left
    if h < 1 or w < 1 or padding < 0 or min(span) < 0 or (corners < 0).any() or (corners > np.array(span)).any():
        raise ValueError(f"crop needs windows of at least 1x1 inside the padded images ({height}x{width} padded by "
                         f"{padding}); got size {h}x{w} and corners from {corners.min(initial=0)} to "
                         f"{corners.max(initial=0)}")
    fill = check(fill, dtype_values(dt), "crop fill")
    if n * c == 0:
        return xp.zeros((n, c, h, w), dtype=dt, device=dev)
    at = xp.astype(asarray_like(corners, x), index)  # (N, 2) on x's device
    rows = at[:, 0, None] + (xp.arange(h, dtype=index, device=dev)[None, :] - padding)  # (N, h) source rows
    cols = at[:, 1, None] + (xp.arange(w, dtype=index, device=dev)[None, :] - padding)  # (N, w)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]  # (N, h, w)
    base = xp.arange(n, dtype=index, device=dev)[:, None, None] * (height * width)
    index = base + xp.clip(rows, 0, height - 1)[:, :, None] * width + xp.clip(cols, 0, width - 1)[:, None, :]
    flat = xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (n * height * width, c))  # one row per pixel
    picked = xp.take(flat, xp.reshape(index, (-1,)), axis=0)  # (N*h*w, C)
    y = xp.where(xp.reshape(inside, (-1, 1)), picked, xp.asarray(fill, dtype=dt, device=dev))
    return xp.permute_dims(xp.reshape(y, (n, h, w, c)), (0, 3, 1, 2))


def flip_horizontal(x, which):
    """The batch ``x`` (N, C, H, W) with image n mirrored left to right (column j takes column W - 1 - j) where
    ``which[n]`` (a host bool array (N,)) is True. Returns a new array of ``x``'s dtype, on its device."""
    xp = array_namespace(x)
    which = np.asarray(which)
    if which.dtype != np.bool_ or which.shape != (int(x.shape[0]),):
        raise ValueError(f"flip_horizontal needs a bool array of shape ({int(x.shape[0])},) saying which images to "
                         f"flip; got {which.dtype} of shape {which.shape}")
    mask = asarray_like(which, x)  # (N,) bool on x's device
    return xp.where(mask[:, None, None, None], xp.flip(x, axis=3), x)
