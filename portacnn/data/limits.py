"""How much one input file may make portacnn decode; each limit is set by an environment variable.

A data or image file states its own size: an IDX header its dimensions, a ``.npy`` header its shape and
dtype, a GIF its width and height. A broken or hostile file can state sizes it does not hold, or hold
far more than it states once decompressed (2 MB of gzip inflate to 2 GB; a 29-byte GIF claims
65535 x 65535 pixels). The readers in :mod:`portacnn.data` and the command line check what a file states
against these limits before they allocate or decode, and stop decoding at the stated size, so a bad file
costs about the limit at most and ends as a one-line error naming the file, the limit and its variable.

``PORTACNN_MAX_DATA_BYTES`` (default 1 GiB)
    the arrays one data file decodes to: an IDX payload, the arrays read from an ``.npz``, the pixels
    of a CSV file, the images and labels of one split of CIFAR binary files, and the images and labels
    one folder of image files decodes to at their final size.
``PORTACNN_MAX_IMAGE_SIDE`` (default 8192)
    the height and the width of one image, in pixels (image files, and the images of IDX, CSV and
    ``.npz`` files).
``PORTACNN_MAX_CSV_LINE_BYTES`` (default 1 MiB)
    one line of a CSV file, the header included (a row of 784 pixels takes about 3 KB).
``PORTACNN_MAX_IMAGE_FILES`` (default 1,000,000)
    the image files one folder may hold (an image-class folder, or a folder of images to predict): the
    listing stops there, before any header is read, so a runaway folder costs a bounded listing.

1 GiB holds 1.3 million 28 x 28 images (the Kannada-MNIST training set is 47 MB), yet stays below what
a 2 MB deflate stream can inflate to (about 2 GB). A value is a positive integer, optionally with a
binary suffix ``K``, ``M`` or ``G`` (``PORTACNN_MAX_DATA_BYTES=4G``); an unset or empty variable means
the default, anything else is a one-line :class:`ValueError` naming the variable. The variables are
read each time a file is opened, so a change takes effect at the next read.

This module imports nothing from portacnn; the command line validates every variable at start with
:func:`check_environment`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["Limit", "MAX_CSV_LINE_BYTES", "MAX_DATA_BYTES", "MAX_IMAGE_FILES", "MAX_IMAGE_SIDE", "check_environment"]

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_VALUE_RE = re.compile(r"([0-9]+(?:_[0-9]+)*)\s*(?:([KMGT])(?:i?B)?)?", re.IGNORECASE)  # 4096, 1_000, 4K, 4 KiB


@dataclass(frozen=True)
class Limit:
    """One limit: the environment variable that sets it, its default and its unit ("bytes", "pixels", "files")."""

    env: str
    default: int
    unit: str

    def get(self) -> int:
        """The value in force: the environment variable when set (and not empty), else the default."""
        text = os.environ.get(self.env, "").strip()
        if not text:
            return self.default
        m = _VALUE_RE.fullmatch(text)
        value = int(m.group(1)) * _SUFFIXES[(m.group(2) or "").upper()] if m else 0
        if value < 1 or (m.group(2) and self.unit != "bytes"):
            suffix = " (a suffix K, M or G allowed)" if self.unit == "bytes" else ""
            raise ValueError(f"environment variable {self.env} must be a positive integer number of {self.unit}"
                             f"{suffix}; got {text!r} (unset it for the default, {self.text(self.default)})")
        return value

    def text(self, value: int) -> str:
        """``value`` for a message: ``1073741824 bytes (1 GiB)`` or ``8192 pixels``."""
        return f"{value} {self.unit}" + (f" ({_binary(value)})" if self.unit == "bytes" and value >= 1024 else "")

    def hint(self, needed: int | None = None) -> str:
        """How to raise the limit: to ``needed`` (rounded up) when known, else to twice its value."""
        target = needed if needed is not None else 2 * self.get()
        return f"if the file is genuine, raise the limit: {self.env}={self._setting(target)}"

    def _setting(self, value: int) -> str:
        if self.unit != "bytes":
            return str(value)
        for suffix in ("G", "M", "K"):
            if value >= _SUFFIXES[suffix]:
                return f"{-(-value // _SUFFIXES[suffix])}{suffix}"
        return str(value)


def _binary(value: int) -> str:
    for suffix, name in (("T", "TiB"), ("G", "GiB"), ("M", "MiB"), ("K", "KiB")):
        if value >= _SUFFIXES[suffix]:
            return f"{value / _SUFFIXES[suffix]:.4g} {name}"
    return f"{value} bytes"


MAX_DATA_BYTES = Limit("PORTACNN_MAX_DATA_BYTES", 1 << 30, "bytes")
"""Most bytes the arrays of one data file may decode to (IDX payload, ``.npz`` arrays, CSV pixels)."""

MAX_IMAGE_SIDE = Limit("PORTACNN_MAX_IMAGE_SIDE", 8192, "pixels")
"""Largest height or width of one image, in pixels."""

MAX_CSV_LINE_BYTES = Limit("PORTACNN_MAX_CSV_LINE_BYTES", 1 << 20, "bytes")
"""Longest line of a CSV file, in bytes (the header included)."""

MAX_IMAGE_FILES = Limit("PORTACNN_MAX_IMAGE_FILES", 1_000_000, "files")
"""Most image files one folder may hold (counted while listing, before any is opened)."""


def check_environment() -> None:
    """Validate every limit variable now (a one-line ValueError naming the first bad one)."""
    for limit in (MAX_DATA_BYTES, MAX_IMAGE_SIDE, MAX_CSV_LINE_BYTES, MAX_IMAGE_FILES):
        limit.get()
