"""Where the channels of a batch of images are: :func:`to_channels_first`, the canonical raw form.

Greyscale readers (IDX, CSV) return ``uint8`` ``(N, H, W)``; anything with channels is ``uint8``
channels-first ``(N, C, H, W)`` with ``C`` 1 (grey) or 3 (RGB), the layout the models and PyTorch take.
Arrays from elsewhere (Keras, TensorFlow, PIL stacks) are often channels-last ``(N, H, W, C)``; this
module says which a 4-D shape is, from the shape alone, so a reader can decide before it reads the data.

``layout="auto"`` reads a 4-D shape as follows. Axis 1 of 1 or 3 is a channel axis (channels-first);
a last axis of 1 or 3 is one (channels-last). Exactly one of the two: that one. Both (``(N, 3, 32, 3)``:
3 channels of 32 x 3, or 3 x 32 pixels of 3 channels?) is ambiguous and an error asking for
``layout="channels_first"`` or ``"channels_last"``, except that an axis 1 of size 1 always wins:
``(N, 1, H, W)`` is how :func:`~portacnn.data.preprocessing.preprocess` has always read greyscale batches,
and a one-pixel-high colour strip is not an image anyone trains on. Neither is an error too.

Four channels (RGBA) are refused rather than guessed at: dropping alpha exposes whatever colour the
encoder left under transparent pixels, and compositing needs a background only the user knows. The
message says how to drop it (``images[..., :3]``); image files are composited on black when read
(:func:`~portacnn.data.images.open_image`).
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

LAYOUTS = ("auto", "channels_first", "channels_last")
#: the channel counts images have (grey, colour)
CHANNELS = (1, 3)


class _LayoutError(DataError):
    """A shape that is no batch of images of 1 or 3 channels: ``problem`` and ``hint`` for a reader's message,
    ``kind`` one of ``"rank"``, ``"channels"``, ``"rgba"``, ``"ambiguous"``."""

    def __init__(self, kind: str, problem: str, hint: str | None = None):
        super().__init__(problem + (f" -- {hint}" if hint else ""))
        self.kind, self.problem, self.hint = kind, problem, hint


def _check_layout_argument(layout) -> None:
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}, got {layout!r}")


def channel_layout(shape, layout: str = "auto") -> str:
    """``"none"`` (a 3-D ``(N, H, W)`` shape), ``"channels_first"`` or ``"channels_last"`` for ``shape``.

    Needs only the shape (a ``.npy`` header is enough). Raises :class:`_LayoutError` (a DataError without a
    path: the caller names the file) for any other rank, a channel count other than 1 or 3, 4 channels
    (RGBA, refused) and an ambiguous ``auto`` reading.
    """
    _check_layout_argument(layout)
    shape = tuple(int(d) for d in shape)
    if len(shape) == 3:
        return "none"
    if len(shape) != 4:
        raise _LayoutError("rank", f"has shape {shape}; expected images (N, H, W), (N, C, H, W) or (N, H, W, C) with "
                           f"C = 1 or 3")  # fmt: skip
    first, last = shape[1] in CHANNELS, shape[-1] in CHANNELS
    if layout == "auto":
        if first and last and shape[1] != 1:
            raise _LayoutError("ambiguous", f"has shape {shape}, which reads as channels-first (N, C, H, W) and as "
                               f"channels-last (N, H, W, C)",
                               'pass layout="channels_first" or layout="channels_last"')  # fmt: skip
        if first or last:
            return "channels_first" if first else "channels_last"
        axis = 1 if shape[1] == 4 else -1 if shape[-1] == 4 else None
    else:
        axis = 1 if layout == "channels_first" else -1
        if shape[axis] in CHANNELS:
            return layout
        axis = axis if shape[axis] == 4 else None
    if axis is not None:
        where = "images[:, :3]" if axis == 1 else "images[..., :3]"
        raise _LayoutError("rgba", f"has shape {shape}: 4 channels (RGBA?) are not taken",
                           f"drop the alpha channel ({where}) or composite it on a background first")  # fmt: skip
    wanted = {"auto": "axis 1 (channels-first) or the last axis (channels-last)",
              "channels_first": "axis 1 (channels-first)", "channels_last": "the last axis (channels-last)"}[layout]
    raise _LayoutError("channels", f"has shape {shape}; expected 1 or 3 channels on {wanted}",
                       "pass (N, H, W) greyscale, (N, C, H, W) or (N, H, W, C) images with C = 1 or 3")  # fmt: skip


def _channels_first(a: np.ndarray, layout: str, where: str) -> np.ndarray:
    """``a`` as a channels-first view; a layout problem is a one-line DataError starting with ``where``."""
    try:
        kind = channel_layout(a.shape, layout)
    except _LayoutError as e:
        raise DataError(f"{where}: the images array {e}") from None
    if kind == "none":
        return a[:, None]
    return a if kind == "channels_first" else a.transpose(0, 3, 1, 2)


def to_channels_first(images, layout: str = "auto") -> np.ndarray:
    """A batch of images as channels-first ``(N, C, H, W)``, ``C`` 1 or 3, dtype unchanged.

    ``(N, H, W)`` becomes ``(N, 1, H, W)``; ``(N, C, H, W)`` is kept; ``(N, H, W, C)`` is transposed.
    ``layout`` is ``"auto"`` (decided from the shape, see the module docstring), ``"channels_first"`` or
    ``"channels_last"``; a 3-D batch has no channel axis whatever ``layout`` says. Returns a view of the
    input (no copy; ``numpy.ascontiguousarray`` it when a contiguous array matters). Raises
    :class:`DataError` for other ranks, other channel counts, 4 channels (RGBA) and ambiguous shapes.
    """
    _check_layout_argument(layout)
    return _channels_first(np.asarray(images), layout, "to_channels_first")
