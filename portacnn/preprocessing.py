"""What a model does to raw images before its first layer, stored with the model: :class:`Preprocessing`.

A model trained on raw images (integer pixels, 0..255) keeps how it read them: the image size and channel count
it takes, the scaling to [0, 1], an optional per-channel normalisation ``(x / 255 - mean) / std``, how image
files are resized, and how bright the border of its training images was (their background). Checkpoints store
it, so a loaded model reads raw images itself: ``model.predict(uint8_images)`` applies it, and the command line
reads image files through it. Float arrays stay what they always were: model input, used as they are.

Raw images are ``(N, H, W)`` (one channel), ``(N, C, H, W)`` or channels-last ``(N, H, W, C)``
(:func:`channels_first_axes` says which, from the shape). An input the model cannot read as it was trained
(other channels, another size) is a one-line ValueError naming the fix; one it can read but that looks unlike
its training images (a light background where they had a dark one: the polarity is reversed; or a border unlike
any of theirs) gets a visible :class:`InputWarning`, never a silent guess.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from .data.layout import CHANNELS, to_channels_first
from .validation import Integer, NoneValue, Options, Pair, Real, Rule, _short, check, check_all

#: how image files are resized to the model's size: Pillow's LANCZOS filter, what every portacnn reader uses
#: (recorded in checkpoints, so that a reader with another filter can tell)
RESAMPLE = ("lanczos",)
#: a border this much brighter or darker (in [0, 1]) than the training images' is questioned, or three of their
#: spreads if that is more
BORDER_TOLERANCE = 0.25
#: the images whose border is measured when a large batch is checked
BORDER_SAMPLE = 512


class InputWarning(UserWarning):
    """Raw images a model can read but should question: unlike its training images, converted or resized."""


def channels_first_axes(shape, layout: str = "auto") -> tuple[int, ...] | None:
    """The ``permute_dims`` axes that make raw images of ``shape`` channels-first (N, C, H, W); None when they are
    (N, H, W) (one channel: a new axis, not a permutation). Where the channels are is decided by the one rule
    of the data readers (:mod:`portacnn.data.layout`: ``layout`` "auto" reads axis 1 of 1 or 3 as channels-first
    and a last axis of 1 or 3 as channels-last, an axis 1 of 1 winning; a shape that reads both ways or neither,
    or holds 4 channels, is a one-line ValueError saying what to do)."""
    from .data.layout import channel_layout, _LayoutError

    check(layout, Options("auto", "channels_first", "channels_last"), "layout")
    try:
        kind = channel_layout(shape, layout)
    except _LayoutError as e:
        hint = e.hint
        if e.kind == "ambiguous":  # fit and predict take no layout=: the array is made channels-first first
            hint = ("pass layout='channels_first' or 'channels_last' (for fit or predict, make them (N, C, H, W) "
                    "first: portacnn.data.to_channels_first(x, layout=...))")
        raise ValueError(f"the raw images array {e.problem}" + (f" -- {hint}" if hint else "")) from None
    return None if kind == "none" else (0, 1, 2, 3) if kind == "channels_first" else (0, 3, 1, 2)


def raw_shape(shape, layout: str = "auto") -> tuple[int, int, int, int]:
    """The channels-first (N, C, H, W) of raw images of ``shape``."""
    axes = channels_first_axes(shape, layout)
    shape = tuple(int(d) for d in shape)
    return (shape[0], 1, shape[1], shape[2]) if axes is None else tuple(shape[a] for a in axes)


def border_levels(images) -> np.ndarray:
    """Each image's mean border level in [0, 1] (its outermost rows and columns, all channels), from host raw
    channels-first uint8 images (N, C, H, W): float64 (N,)."""
    a = np.asarray(images)
    n = a.shape[0]
    if a.shape[2] <= 2 or a.shape[3] <= 2:  # all border
        return a.reshape(n, -1).mean(axis=1) / 255.0
    edge = np.concatenate([a[:, :, 0, :].reshape(n, -1), a[:, :, -1, :].reshape(n, -1),
                           a[:, :, 1:-1, 0].reshape(n, -1), a[:, :, 1:-1, -1].reshape(n, -1)], axis=1)
    return edge.mean(axis=1, dtype=np.float64) / 255.0


class _Levels(Rule):
    """A tuple of ``count`` finite reals in a range (a per-channel mean or standard deviation)."""

    def __init__(self, low: float, low_open: bool, what: str):
        self.rule, self.what = Real(low, 1, low_open=low_open), what

    def describe(self):
        return f"a list of one {self.what} per channel, each {self.rule.describe()}"

    def check(self, value, what):
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or len(value) not in CHANNELS:
            self._fail(value, what)
        return tuple(self.rule.check(v, f"{what}[{i}]") for i, v in enumerate(value))


class _Channels(Rule):
    """1 or 3 (grey or colour)."""

    def describe(self):
        return "1 or 3"

    def check(self, value, what):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in CHANNELS:
            self._fail(value, what)
        return int(value)


#: the rule of every field: what the constructor takes and what a checkpoint may store (one home for both)
RULES: dict[str, Rule] = {
    "channels": _Channels(),
    "size": Pair(Integer(1, 1 << 20)),  # each side (the data readers' side limit applies to image files on top)
    "mean": _Levels(0, False, "mean in [0, 1]") | NoneValue(),
    "std": _Levels(0, True, "standard deviation") | NoneValue(),
    "border": Real(0, 1) | NoneValue(),
    "border_spread": Real(0, 1) | NoneValue(),
    "resample": Options(*RESAMPLE),
}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a model reads raw images. ``channels`` (1 or 3) and ``size`` (H, W) are what its first layer takes;
    ``mean`` and ``std`` (one per channel, of pixels scaled to [0, 1]; both None: no normalisation) normalise;
    ``border`` and ``border_spread`` are the mean and the spread over images of the training images' border level
    (None: unknown, nothing questioned); ``resample`` names the filter image files are resized with."""

    channels: int
    size: tuple
    mean: tuple | None = None
    std: tuple | None = None
    border: float | None = None
    border_spread: float | None = None
    resample: str = "lanczos"

    def __post_init__(self):
        checked = check_all("Preprocessing", dataclasses.asdict(self), RULES)
        if (self.mean is None) != (self.std is None):
            raise ValueError("Preprocessing needs both mean and std, or neither")
        if (self.border is None) != (self.border_spread is None):
            raise ValueError("Preprocessing needs both border and border_spread, or neither")
        for key in ("mean", "std"):
            if checked[key] is not None and len(checked[key]) != checked["channels"]:
                raise ValueError(f"Preprocessing {key} needs {checked['channels']} values (one per channel); "
                                 f"got {len(checked[key])}")
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    # -- making one ------------------------------------------------------------------------------------------
    @classmethod
    def from_images(cls, images, normalize: bool = False, resample: str = "lanczos", layout: str = "auto"):
        """The preprocessing of a model trained on ``images`` (raw integer pixels 0..255, host arrays):
        their channels and size, their border level, and with ``normalize`` their per-channel mean and
        standard deviation (of pixels scaled to [0, 1], computed in float64 from each channel's counts of the 256
        pixel values)."""
        a = _host_raw(images, "images", layout)
        n, c, h, w = a.shape
        mean = std = None
        if normalize:
            mean, std = [], []
            levels = np.arange(256, dtype=np.float64) / 255.0
            for k in range(c):  # from the counts of each pixel value: exact, and no float64 copy of the images
                counts = np.bincount(a[:, k].reshape(-1).astype(np.intp, copy=False), minlength=256)
                m = float(counts @ levels) / counts.sum()
                s = float(np.sqrt(counts @ (levels - m) ** 2 / counts.sum()))
                if not s > 1e-6:
                    raise ValueError(f"cannot normalise: channel {k} of the training images is constant")
                mean.append(m)
                std.append(s)
        levels = border_levels(a)
        return cls(channels=c, size=(h, w), mean=None if mean is None else tuple(mean),
                   std=None if std is None else tuple(std), border=float(levels.mean()),
                   border_spread=float(levels.std()), resample=resample)

    @classmethod
    def for_shape(cls, input_shape):
        """The plain preprocessing (scale to [0, 1] only) of a model that reads ``input_shape`` (C, H, W)."""
        c, h, w = input_shape
        return cls(channels=c, size=(h, w))

    # -- stored form --------------------------------------------------------------------------------------------
    def to_config(self) -> dict:
        """A JSON-ready dict (what a checkpoint stores)."""
        out = dataclasses.asdict(self)
        out["size"] = list(self.size)
        for key in ("mean", "std"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_config(cls, config) -> Preprocessing:
        """Rebuild from :meth:`to_config`'s dict (unknown or missing fields, values out of their rules: a one-line
        ValueError), as a checkpoint reader does with an untrusted file."""
        check_all("preprocessing", config, RULES, required=("channels", "size"))
        return cls(**config)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W): what the model's first layer reads."""
        return (self.channels, *self.size)

    def describe(self) -> str:
        """One line: ``"3x32x32, scaled to [0, 1], normalised per channel"``."""
        text = f"{self.channels}x{self.size[0]}x{self.size[1]}, scaled to [0, 1]"
        return text + (", normalised per channel" if self.mean is not None else "")

    # -- applying it --------------------------------------------------------------------------------------------
    def check_shape(self, shape, what: str = "x") -> None:
        """Raw channels-first ``shape`` (N, C, H, W) against what the model reads; a one-line ValueError naming
        the fix otherwise (arrays are never resized or converted silently)."""
        _, c, h, w = shape
        if c != self.channels:
            have = "greyscale" if c == 1 else f"{c}-channel"
            want = "greyscale (1 channel)" if self.channels == 1 else f"{self.channels}-channel colour"
            raise ValueError(f"{what} holds {have} images; the model reads {want} images "
                             f"({'average the channels' if self.channels == 1 else 'repeat the grey channel'} first, "
                             "or train a model for them)")
        if (h, w) != tuple(self.size):
            raise ValueError(f"{what} holds {h}x{w} images; the model reads {self.size[0]}x{self.size[1]} "
                             "(resize them first: portacnn.data.resize_images, or portacnn predict --resize)")

    def apply(self, batch, xp, dtype):
        """Raw channels-first ``batch`` (already in namespace ``xp``, cast to the float ``dtype``) scaled and
        normalised: ``batch / 255``, then ``(x - mean) / std`` per channel."""
        out = batch / 255.0
        if self.mean is not None:
            shape = (1, self.channels, 1, 1)
            dev = _device(batch)
            mean = xp.reshape(xp.asarray(self.mean, dtype=dtype, device=dev), shape)
            std = xp.reshape(xp.asarray(self.std, dtype=dtype, device=dev), shape)
            out = (out - mean) / std
        return out

    def to_model_input(self, images, dtype: str = "float32") -> np.ndarray:
        """Host raw ``images`` (any layout; checked as :meth:`check_shape` does) as the host float array the model
        takes: what reading them in the model does, for code that needs the floats themselves."""
        a = _host_raw(images, "images")
        self.check_shape(a.shape, "images")
        out = np.empty(a.shape, dtype=dtype)
        step = max(1, (64 << 20) // max(1, out[:1].nbytes))  # 64 MiB of rows at a time: no full-size temporaries
        for lo in range(0, a.shape[0], step):
            out[lo:lo + step] = self.apply(a[lo:lo + step].astype(dtype), np, np.dtype(dtype))
        return out

    def questions(self, images, names=None, were_inverted: bool = False) -> list[str]:
        """What looks wrong about host raw channels-first ``images`` (N, C, H, W) compared with the training
        images, one line each (empty: nothing): a border level far from theirs, and when it is near their
        opposite, a reversed polarity (a light background where theirs was dark; said only when theirs was clearly
        dark or light, within :data:`BORDER_TOLERANCE` of 0 or 1). Any raw layout is taken; the
        first odd images are named by ``names`` (one per image), else by their row numbers. ``were_inverted``: the
        images were inverted already (``--invert``), so a reversed polarity points at that, not at inverting."""
        if self.border is None or images.shape[0] == 0:
            return []
        a = to_channels_first(images)
        rows = np.arange(a.shape[0])
        if a.shape[0] > BORDER_SAMPLE:  # evenly spread rows: cheap for a million images
            rows = np.linspace(0, a.shape[0] - 1, BORDER_SAMPLE).astype(np.int64)
            a = a[rows]
        levels = border_levels(a)
        tolerance = max(BORDER_TOLERANCE, 3 * self.border_spread)
        odd = np.abs(levels - self.border) > tolerance
        if not odd.any():
            return []
        sampled = " sampled" if len(levels) < images.shape[0] else ""
        clear = abs(self.border - 0.5) >= 0.5 - BORDER_TOLERANCE  # a dark or a light background, not a mid grey
        inverted = odd & clear & (np.abs((1.0 - levels) - self.border) <= tolerance)
        found = []
        for group, why in ((inverted, "reversed"), (odd & ~inverted, "unlike")):
            if not group.any():
                continue
            which = [str(names[r]) if names is not None else f"#{r}" for r in rows[group][:3]]
            text = (f"{int(group.sum())} of {len(levels)}{sampled} images ({', '.join(which)}"
                    f"{', ...' if group.sum() > 3 else ''}) have a border level of {float(levels[group].mean()):.2f}"
                    f"{' on average' if group.sum() > 1 else ''}, unlike the training images' {self.border:.2f}")
            if why == "reversed":
                dark = "dark" if self.border < 0.5 else "light"
                opposite = "light" if dark == "dark" else "dark"
                fix = ("they were inverted (--invert): drop it if so" if were_inverted else
                       "invert them (portacnn predict --invert) if so")
                text += (f": they look like {opposite} backgrounds where the model learnt {dark} ones (reversed "
                         f"polarity); {fix}")
            else:
                text += ": the model may answer confidently on images unlike anything it was trained on"
            found.append(text)
        return found

    def warn_about(self, images, what: str = "x") -> None:
        """Issue an :class:`InputWarning` for each of :meth:`questions`, attributed to the caller's code."""
        for text in self.questions(images):
            warnings.warn(f"{what}: {text}", InputWarning, stacklevel=_outside_package())


def _outside_package() -> int:
    """The ``stacklevel`` of the first frame outside portacnn: where the user's call is."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _device(x):
    from array_api_compat import device

    return device(x)


def _host_raw(images, what: str, layout: str = "auto") -> np.ndarray:
    """Host raw images as channels-first uint8-valued integers (N, C, H, W), checked to hold pixels 0..255."""
    a = np.asarray(images)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold raw integer pixels 0..255 (e.g. uint8); got dtype {a.dtype}")
    a = to_channels_first(a, layout)
    if a.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 images)")
    check_raw_values(a, what)
    return a


def check_raw_values(x, what: str = "x") -> None:
    """Raw integer pixels in any library lie in 0..255 (uint8 always does)."""
    from array_api_compat import array_namespace

    xp = array_namespace(x)
    if str(x.dtype).endswith("uint8") or math.prod(x.shape) == 0:
        return
    lo, hi = int(xp.min(x)), int(xp.max(x))
    if lo < 0 or hi > 255:
        raise ValueError(f"{what} holds integer pixels {lo}..{hi}; raw images are 0..255 (uint8), float images are "
                         "model input already scaled")


__all__ = ["CHANNELS", "InputWarning", "Preprocessing", "RESAMPLE", "border_levels", "channels_first_axes",
           "raw_shape"]
