"""Raw images to model input: :func:`preprocess` (``uint8`` ``(N, H, W)``, ``(N, C, H, W)`` or
``(N, H, W, C)`` -> ``float32`` ``(N, C, H, W)`` in ``[0, 1]``).

(Named ``preprocessing`` so that the module never hides the function ``portacnn.data.preprocess``.)
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .layout import _channels_first, _check_layout_argument


def preprocess(images, layout: str = "auto") -> np.ndarray:
    """Images -> ``float32`` ``(N, C, H, W)`` in ``[0, 1]``.

    Greyscale ``(N, H, W)`` becomes ``(N, 1, H, W)``; ``(N, C, H, W)`` and channels-last ``(N, H, W, C)``
    (``C`` 1 or 3) become channels-first as :func:`~portacnn.data.layout.to_channels_first` reads them
    (``layout`` is passed on: ``"auto"``, ``"channels_first"`` or ``"channels_last"``). Integer input
    (``uint8`` or any integer dtype with values in ``0..255``) is divided by 255 in float32. Float input
    must already be in ``[0, 1]`` and finite; it is only cast to float32. Raises :class:`DataError` on
    NaN/inf, out-of-range values and shapes that are no batch of 1- or 3-channel images.
    """
    _check_layout_argument(layout)
    a = _channels_first(np.asarray(images), layout, "preprocess")
    out = np.empty(a.shape, dtype=np.float32)
    if a.dtype == np.uint8:
        np.divide(a, np.float32(255), out=out, dtype=np.float32)
        return out
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
            raise DataError(f"preprocess: integer images must be in 0..255, got {int(a.min())}..{int(a.max())}")
        np.divide(a, np.float32(255), out=out, dtype=np.float32, casting="unsafe")
        return out
    if np.issubdtype(a.dtype, np.floating):
        nonfinite = int(a.size - np.count_nonzero(np.isfinite(a)))
        if nonfinite:
            nan = int(np.count_nonzero(np.isnan(a)))
            raise DataError(f"preprocess: {nonfinite} non-finite values in the images ({nan} NaN, "
                            f"{nonfinite - nan} inf)")  # fmt: skip
        if a.size and (float(a.min()) < 0.0 or float(a.max()) > 1.0):
            raise DataError(f"preprocess: float images must already be in [0, 1], got "
                            f"{float(a.min())}..{float(a.max())}; pass uint8 images (0..255) to have them "
                            f"scaled")  # fmt: skip
        out[...] = a
        return out
    raise DataError(f"preprocess: unsupported image dtype {a.dtype}; expected uint8, integer or float")
