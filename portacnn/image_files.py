"""Image files read for a model, as it was trained: :func:`read_images`.

Each file is read at its own size (:func:`portacnn.data.open_image`) and made into what the model reads, every
change said out loud, never guessed silently:

* **channels**: a colour image for a greyscale model is converted (ITU-R 601-2 luma, Pillow's ``convert("L")``)
  with an :class:`~portacnn.preprocessing.InputWarning` when its channels really differ (a grey image stored as
  RGB is converted without a word); a greyscale image for a colour model repeats its channel in R, G and B.
* **size**: an image of another size is resized (Pillow's LANCZOS) with a warning that names the files and sizes.
  ``resize="auto"`` (the default) does so only when its aspect ratio is within :data:`ASPECT_TOLERANCE` of the
  model's; a wider or taller image is refused with a message naming the choices: ``"stretch"`` (resize to the
  model's size whatever the aspect), ``"pad"`` (pad the short side with the training images' background level,
  centred, then resize) or ``"crop"`` (cut the long side, centred, then resize).
* **polarity**: ``invert=True`` turns dark-on-light images into the light-on-dark the Kannada models learnt; the
  model's preprocessing questions images whose background looks unlike its training images' (see
  :meth:`portacnn.preprocessing.Preprocessing.questions`, applied when the model reads them).
"""

from __future__ import annotations

import warnings

import numpy as np

from . import data
from .preprocessing import CHANNELS, InputWarning, Preprocessing
from .validation import Options, check

#: how far (as a ratio, 0.1 = 10 %) an image's aspect may differ from the model's and still be resized by "auto"
ASPECT_TOLERANCE = 0.1
#: what to do with an image whose size differs from the model's
RESIZE_MODES = ("auto", "stretch", "pad", "crop")
#: files named in one warning (the rest counted)
SHOWN = 3


def _aspect_gap(h: int, w: int, size) -> float:
    """How much wider or taller (a ratio above 1, minus 1) an h x w image is than the model's ``size``."""
    ratio = (w / h) / (size[1] / size[0])
    return max(ratio, 1 / ratio) - 1


def _centre(a: np.ndarray, size, how: str, fill: int) -> np.ndarray:
    """``a`` (C, H, W) padded (with ``fill``) or cropped, centred, to the aspect ratio of ``size``."""
    c, h, w = a.shape
    if h * size[1] == w * size[0]:
        return a
    wide = w * size[0] > h * size[1]  # wider than the model's aspect
    if how == "pad":
        new_h, new_w = (round(w * size[0] / size[1]), w) if wide else (h, round(h * size[1] / size[0]))
        out = np.full((c, new_h, new_w), fill, np.uint8)
        top, left = (new_h - h) // 2, (new_w - w) // 2
        out[:, top:top + h, left:left + w] = a
        return out
    new_h, new_w = (h, max(1, round(h * size[1] / size[0]))) if wide else (max(1, round(w * size[0] / size[1])), w)
    top, left = (h - new_h) // 2, (w - new_w) // 2
    return a[:, top:top + new_h, left:left + new_w]


def _listed(items) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def read_images(paths, model=None, preprocessing: Preprocessing | None = None, resize: str = "auto",
                invert: bool = False) -> np.ndarray:
    """The image files ``paths`` as raw ``uint8`` images ``(N, C, H, W)`` that ``model`` reads (its
    :attr:`~portacnn.Sequential.preprocessing`, or ``preprocessing`` given; or, for a model that has none, its
    input shape): pass them to ``model.predict``. Converted, resized, padded or cropped as the module docstring
    says, each change an :class:`~portacnn.preprocessing.InputWarning`; an image whose aspect ratio is beyond
    :data:`ASPECT_TOLERANCE` with ``resize="auto"``, or an unreadable file, is a one-line
    :class:`~portacnn.data.DataError`."""
    check(resize, Options(*RESIZE_MODES), "resize")
    prep = preprocessing if preprocessing is not None else getattr(model, "preprocessing", None)
    paths = list(paths)
    if prep is None:
        shape = getattr(model, "input_shape", None)
        channels = model.input_channels() if hasattr(model, "input_channels") else None
        if (shape is None or len(shape) != 3) and channels in CHANNELS and paths:
            # an older checkpoint stores no size, only its first layer's channels: the first image's size, as
            # predict has always read such a model's images (the model then says whether it takes them)
            shape = (channels, *data.open_image(paths[0], channels=channels).shape[1:])
        if shape is None or len(shape) != 3:
            raise ValueError("read_images needs the image size the model reads: a model with a preprocessing or an "
                             "input_shape (C, H, W), or preprocessing=")
        prep = Preprocessing.for_shape(shape)
    size, channels = tuple(prep.size), prep.channels
    fill = 0 if prep.border is None else int(round(prep.border * 255))
    limit = data.limits.MAX_DATA_BYTES  # the data readers' limit, on what these files decode to
    need, allowed = len(paths) * channels * size[0] * size[1], limit.get()
    if need > allowed:
        raise data.DataError(f"{len(paths)} image files of {channels}x{size[0]}x{size[1]} = {need} {limit.unit}, over "
                             f"the limit of {limit.text(allowed)} set by {limit.env} -- {limit.hint(need)}")
    out = np.empty((len(paths), channels, *size), np.uint8)
    coloured, resized, shaped = [], [], []
    for i, path in enumerate(paths):
        a = data.open_image(path)  # its own channels and size
        if a.shape[0] != channels:
            if channels == 1 and not (np.array_equal(a[0], a[1]) and np.array_equal(a[1], a[2])):
                coloured.append(str(path))
            a = data.open_image(path, channels=channels)
        if invert:
            a = 255 - a
        h, w = a.shape[1:]
        if (h, w) != size:
            gap = _aspect_gap(h, w, size)
            if resize == "auto" and gap > ASPECT_TOLERANCE:
                raise data.DataError(f"{path}: a {w}x{h} image (width/height {w / h:.2f}); the model reads {size[1]}x"
                                     f"{size[0]} ({size[1] / size[0]:.2f}), so resizing would distort it; choose how "
                                     "to fit it: --resize stretch, pad or crop (resize='stretch'|'pad'|'crop')")
            if resize in ("pad", "crop"):
                a = _centre(a, size, resize, fill)
                if a.shape[1:] != (h, w):
                    shaped.append(f"{path} {w}x{h}")
            a = data.resize_images(a[None], size)[0]
            resized.append(f"{path} {w}x{h}")
        out[i] = a
    if coloured:
        warnings.warn(f"{len(coloured)} colour image(s) read as greyscale, as the model reads one channel: "
                      f"{_listed(coloured)}", InputWarning, stacklevel=2)
    if shaped:
        warnings.warn(f"{len(shaped)} image(s) {'padded' if resize == 'pad' else 'cropped'} to the model's aspect "
                      f"ratio, centred: {_listed(shaped)}", InputWarning, stacklevel=2)
    if resized:
        warnings.warn(f"{len(resized)} image(s) resized to the {size[1]}x{size[0]} the model reads "
                      f"({prep.resample}{', stretched' if resize == 'stretch' else ''}): {_listed(resized)}",
                      InputWarning, stacklevel=2)
    return out


__all__ = ["ASPECT_TOLERANCE", "RESIZE_MODES", "read_images"]
