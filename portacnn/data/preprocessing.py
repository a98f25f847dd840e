"""Raw images to model input: :func:`preprocess` (``uint8`` ``(N, H, W)`` -> ``float32`` ``(N, 1, H, W)``
in ``[0, 1]``).

(Named ``preprocessing`` so that the module never hides the function ``portacnn.data.preprocess``.)
"""

from __future__ import annotations

import numpy as np

from .errors import DataError


def preprocess(images) -> np.ndarray:
    """Images -> ``float32`` ``(N, 1, H, W)`` in ``[0, 1]``.

    Integer input (``uint8`` or any integer dtype with values in ``0..255``) of shape ``(N, H, W)``
    or ``(N, 1, H, W)`` is divided by 255 in float32. Float input must already be in ``[0, 1]`` and
    finite; it is only cast to float32. Raises :class:`DataError` on NaN/inf or out-of-range values.
    """
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    elif not (a.ndim == 4 and a.shape[1] == 1):
        raise DataError(f"preprocess: expected images of shape (N, H, W) or (N, 1, H, W), got {a.shape}")
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
