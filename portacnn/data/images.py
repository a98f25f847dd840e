"""Image files (PNG, JPEG, BMP, GIF, TIFF, WebP) read with Pillow: :func:`read_image` and
:data:`IMAGE_SUFFIXES`, the suffixes that mark a file as an image rather than a data file.

The width and height a file declares are checked against ``PORTACNN_MAX_IMAGE_SIDE`` before any pixel
is decoded; every failure is a one-line :class:`~portacnn.data.errors.DataError` naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import DataError, _fail
from .limits import MAX_IMAGE_SIDE

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_image(path: Path, invert: bool, size=(28, 28)) -> np.ndarray:
    """A greyscale image file as uint8 ``size``; its declared size is checked against the side limit first.

    ``Image.open`` reads only the header, so the width and height a file claims are known before any
    pixel is decoded. PIL's own pixel-count check is off meanwhile: ``PORTACNN_MAX_IMAGE_SIDE``
    replaces it, so that the one limit a user can raise is the one that applies. ``invert`` flips dark
    digits on a light background to the white-on-black the models take. Raises :class:`DataError`.
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
            im = im.convert("L")
            if im.size != size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            a = np.asarray(im, dtype=np.uint8)
    except DataError:  # the side limit above: a ValueError, but not a decoder's
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, ValueError, SyntaxError,
            struct.error, EOFError) as e:  # PIL's decoders raise all of these on bad files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _fail(path, f"not a readable image ({first})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    return 255 - a if invert else a
