"""The checks every format reader shares: the ``num_classes`` argument, the label range, and the sizes
a file declares against the limits of :mod:`portacnn.data.limits` (data bytes, image side).
"""

from __future__ import annotations

import numpy as np

from . import limits
from .errors import _fail


def _check_num_classes(num_classes) -> None:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):  # fmt: skip
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")


def _check_limit(path, limit, amount: int, what: str, *, line: int | None = None) -> None:
    """Raise DataError when ``amount`` (the ``what`` a file declares) is over ``limit`` (a limits.Limit)."""
    value = limit.get()
    if amount > value:
        raise _fail(path, f"{what} = {amount} {limit.unit}, over the limit of {limit.text(value)} set by "
                    f"{limit.env}", limit.hint(amount), line=line)  # fmt: skip


def _check_image_side(path, height: int, width: int) -> None:
    """Raise DataError when an image side is over ``PORTACNN_MAX_IMAGE_SIDE``."""
    _check_limit(path, limits.MAX_IMAGE_SIDE, max(height, width), f"images of {height}x{width} pixels: side")


def _check_labels(labels: np.ndarray, num_classes, path) -> None:
    if num_classes is None or labels.size == 0:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(path, f"label {int(labels[i])} at index {i} is outside 0..{num_classes - 1} "
                    f"(num_classes={num_classes}); {int(bad.sum())} labels are out of range",
                    "check the file or pass a larger num_classes")  # fmt: skip
