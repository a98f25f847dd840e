"""Image files (PNG, JPEG, BMP, GIF, TIFF, WebP) read with Pillow: :func:`open_image`, :func:`read_image`,
:func:`resize_images` and :data:`IMAGE_SUFFIXES`, the suffixes that mark a file as an image rather than a
data file.

The width and height a file declares are checked against ``PORTACNN_MAX_IMAGE_SIDE`` before any pixel
is decoded; every failure is a one-line :class:`~portacnn.data.errors.DataError` naming the file.

How a file's pixels become ``uint8`` channels (one rule for every reader: :func:`open_image`,
:func:`read_image`, :func:`~portacnn.data.image_folder.load_image_folder`):

* Greyscale modes (``1``, ``L``, ``LA``, ``I``, ``I;16``..., ``F``) give one channel, every other mode
  (``RGB``, ``RGBA``, ``P`` palettes, ``CMYK``, ``YCbCr``...) three. A palette image counts as colour
  even when its palette is grey (only its header is read to decide); pass ``channels=1`` for those.
* 16-bit greyscale (``I;16`` and its variants) is scaled to 8 bits as ``round(v / 257)``, so 0 stays 0
  and 65535 becomes 255 (Pillow's own ``convert("L")`` clips at 255, which saturates nearly every
  16-bit image). 32-bit ``I`` and ``F`` images hold values in ``0..255`` (taken as they are, rounded)
  or up to 65535 (scaled as 16-bit); negative, larger or non-finite values are a DataError.
* Transparency (``LA``, ``RGBA``, ``PA``, a palette or a colour key with a ``transparency`` entry) is
  composited on black: ``round(value * alpha / 255)``. Black is the background of the models' images
  (0 = background), and the colour a file keeps under fully transparent pixels is arbitrary, so
  dropping alpha would expose it.
* Colour to one channel is Pillow's ``convert("L")`` (ITU-R 601-2 luma); one channel to colour repeats
  it in R, G and B.
* Resizing is Pillow's ``Image.Resampling.LANCZOS`` on the 8-bit image, done only when the size differs.
* A multi-frame file (animated GIF, multi-page TIFF) gives its first frame.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DataError, _fail
from .limits import MAX_IMAGE_SIDE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})


def _image_size(size, name: str = "size") -> tuple[int, int] | None:
    """``size`` as ``(H, W)`` positive ints within ``PORTACNN_MAX_IMAGE_SIDE``, or None; else a ValueError."""
    if size is None:
        return None
    try:
        h, w = size
    except (TypeError, ValueError):
        h = w = None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in (h, w)):
        raise ValueError(f"{name} must be (height, width), two positive ints, or None; got {size!r}")
    max_side = MAX_IMAGE_SIDE.get()
    if max(h, w) > max_side:
        raise ValueError(f"{name}={(int(h), int(w))} is over the limit of {MAX_IMAGE_SIDE.text(max_side)} a side "
                         f"set by {MAX_IMAGE_SIDE.env}")  # fmt: skip
    return int(h), int(w)


def _check_channels(channels) -> None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")


def _is_colour(im) -> bool:
    """Whether an open Pillow image reads as three channels (from its mode: its header is enough)."""
    return im.mode not in _GREY_MODES


@contextmanager
def _opened(path):
    """The Pillow image of ``path``, its declared size checked against the side limit before any decoding.

    ``Image.open`` reads only the header. PIL's own pixel-count check is off meanwhile:
    ``PORTACNN_MAX_IMAGE_SIDE`` replaces it, so that the one limit a user can raise is the one that applies.
    Decoding errors raised inside the ``with`` body are one-line DataErrors naming the file too.
    """
    from PIL import Image

    max_side = MAX_IMAGE_SIDE.get()
    pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as im:
            width, height = im.size
            if max(width, height) > max_side:
                raise _fail(path, f"image of {width}x{height} pixels, over the limit of "
                            f"{MAX_IMAGE_SIDE.text(max_side)} a side set by {MAX_IMAGE_SIDE.env}",
                            MAX_IMAGE_SIDE.hint(max(width, height)))  # fmt: skip
            yield im
    except DataError:  # the side limit above: a ValueError, but not a decoder's
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, ValueError, SyntaxError,
            struct.error, EOFError) as e:  # PIL's decoders raise all of these on bad files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _fail(path, f"not a readable image ({first})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def _wide_grey(im, path) -> np.ndarray:
    """The 8-bit pixels of a 16- or 32-bit greyscale image (``I;16``..., ``I``, ``F``), by the module's rule."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    a = a.astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 65535):
        raise _fail(path, f"{im.mode}-mode image with values in {lo:g}..{hi:g}; 32-bit images must hold 8-bit "
                    f"(0..255) or 16-bit (0..65535) values", "save the image as 8- or 16-bit")  # fmt: skip
    return np.rint(a if hi <= 255 else a / 257).astype(np.uint8)


def _converted(im, channels, path):
    """An open Pillow image as a Pillow image of mode ``L`` (``channels`` 1) or ``RGB`` (3); ``channels``
    None keeps the image's own count. Applies the module's rules for 16-bit values and transparency."""
    from PIL import Image

    colour = _is_colour(im)
    channels = channels or (3 if colour else 1)
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        out = Image.fromarray(_wide_grey(im, path))
    elif im.mode in _ALPHA_MODES or "transparency" in im.info:
        a = np.asarray(im.convert("RGBA" if colour else "LA"), dtype=np.uint16)
        composited = ((a[..., :-1] * a[..., -1:] + 127) // 255).astype(np.uint8)
        out = Image.fromarray(composited if colour else composited[..., 0])
    else:  # the direct conversion, as read_image always did
        return im.convert("L" if channels == 1 else "RGB")
    return out.convert("L" if channels == 1 else "RGB")


def _resized(im, size):
    """A Pillow image resized to ``size`` ``(H, W)`` with LANCZOS, unless it has that size or ``size`` is None."""
    from PIL import Image

    if size is None or im.size == (size[1], size[0]):
        return im
    return im.resize((size[1], size[0]), Image.Resampling.LANCZOS)


def _chw(im) -> np.ndarray:
    """A Pillow ``L`` or ``RGB`` image as a uint8 ``(C, H, W)`` array."""
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def open_image(path, channels: int | None = None, size=None) -> np.ndarray:
    """An image file as ``uint8`` ``(C, H, W)``: ``C`` 1 for greyscale modes, 3 for colour ones.

    ``channels`` (1 or 3) converts to that count instead; ``size`` ``(H, W)`` resizes (LANCZOS), None keeps
    the file's size. The module docstring states the rules (16-bit values, transparency composited on
    black, colour to grey). The declared size is checked against ``PORTACNN_MAX_IMAGE_SIDE`` before any
    pixel is decoded. Raises :class:`DataError`.
    """
    _check_channels(channels)
    size = _image_size(size)
    with _opened(path) as im:
        return np.ascontiguousarray(_chw(_resized(_converted(im, channels, path), size)))


def read_image(path: Path, invert: bool, size=(28, 28)) -> np.ndarray:
    """A greyscale image file as uint8 ``(H, W)`` of ``size`` given the way Pillow gives it, ``(W, H)``.

    The one-channel reading of :func:`open_image` (colour through Pillow's ``convert("L")``), resized with
    LANCZOS when the file's size differs; ``invert`` flips dark digits on a light background to the
    white-on-black the models take. Raises :class:`DataError`.
    """
    with _opened(path) as im:
        a = _chw(_resized(_converted(im, 1, path), (size[1], size[0])))[0]
    return 255 - a if invert else a


def resize_images(images, size) -> np.ndarray:
    """``uint8`` images ``(N, C, H, W)`` (``C`` 1 or 3) resized to ``size`` ``(H, W)`` as the image readers
    resize (Pillow's LANCZOS, per image); a new ``(N, C, *size)`` array, a copy even when the size is the same.
    """
    from PIL import Image

    size = _image_size(size)
    if size is None:
        raise ValueError("size must be (height, width), two positive ints")
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1] not in (1, 3):
        raise DataError(f"resize_images: expected uint8 images (N, C, H, W) with C = 1 or 3, got {a.dtype} "
                        f"{a.shape}")  # fmt: skip
    out = np.empty((a.shape[0], a.shape[1], *size), dtype=np.uint8)
    for i, image in enumerate(a):
        pil = Image.fromarray(np.ascontiguousarray(image[0] if a.shape[1] == 1 else image.transpose(1, 2, 0)))
        out[i] = _chw(_resized(pil, size))
    return out
