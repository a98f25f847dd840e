"""What the ``portacnn`` commands share: the usage error, the exit codes and printing helpers."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from .. import data
from .._atomic import TargetError, check_target
from ..checkpoint import check_architecture
from ..preprocessing import InputWarning, raw_shape

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


def _input_file(text, kind: str = "file") -> Path:
    """``text`` as the Path of an existing regular file, else a UsageError that says what it is instead (a
    folder, nothing, a device or FIFO); ``kind`` names what was expected ("checkpoint file")."""
    path = Path(text)
    article = "an" if kind[0] in "aeiou" else "a"
    if path.is_dir():
        raise UsageError(f"{text}: is a folder, not {article} {kind}; name the {kind}s inside it")
    if not path.exists():
        raise UsageError(f"{text}: no such file")
    if not path.is_file():
        raise UsageError(f"{text}: is not a regular file (a device or FIFO?); give {article} {kind}")
    return path


def _output_file(text) -> Path:
    """``text`` as a Path a file can be written to (its folder exists, it is not a folder), checked before any
    work; else a UsageError naming it (:func:`portacnn._atomic.check_target`)."""
    try:
        return check_target(text)
    except TargetError as e:
        raise UsageError(str(e)) from None


def _say(args, *lines):
    if not getattr(args, "json", False) and getattr(args, "rank", 0) == 0:
        for line in lines:
            print(line, flush=True)


def _emit_json(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def _check_fits(model, images, source, model_path):
    """Raw images (any layout) or float ones against the model's architecture first (no array is made: a
    20000x20000 image is refused by its activation memory, not by running it), then one image through the model
    (raw ones through its preprocessing), so a size or channel mismatch is one clear line, not a traceback."""
    raw = np.dtype(images.dtype).kind in "iu"
    try:
        shape = raw_shape(images.shape)[1:] if raw else tuple(int(d) for d in images.shape[1:])
    except ValueError as e:
        raise UsageError(f"{source}: {e}") from None
    text = "x".join(str(d) for d in shape)
    try:
        if raw and getattr(model, "preprocessing", None) is not None:  # its size and channels, said as such
            model.preprocessing.check_shape((0, *shape), "the data")
        check_architecture(model.architecture(), shape, model.dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)  # said once, when the images are predicted
            model.predict_proba(np.asarray(images[:1]) if raw else data.preprocess(np.asarray(images[:1])))
    except (ValueError, RuntimeError, TypeError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"{source}: its {text} images do not fit the model in {model_path} ({first})") from None


def _chunks(images, batch_size, target_bytes=64 << 20):
    """Spans of whole batches holding about ``target_bytes`` of float32 pixels each: the unit the CLI scales to
    float32 at a time, so memory follows the image size and the batch, not the number of images."""
    n = int(images.shape[0])
    per_image = 4 * math.prod(int(d) for d in images.shape[1:])
    step = max(batch_size, (target_bytes // max(per_image, 1) // batch_size) * batch_size)
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]
