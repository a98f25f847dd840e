"""The arguments of the augmentations: rules of :mod:`portacnn.validation`, and the ranges a batch's dtype can
hold (checked again on each batch, where only its dtype and size tell what gives finite pixels)."""

from __future__ import annotations

import math

import numpy as np

from ..backend import numpy_dtype
from ..validation import Integer, NoneValue, Pair, Real, Rule, Tuple


class _Example(Rule):
    """``rule``, with a hint on what to pass at the end of its description (and so of its messages); ``text``
    replaces the rule's own description when given."""

    def __init__(self, rule: Rule, hint: str, text: str | None = None):
        self.rule, self.hint, self.text = rule, hint, text

    def describe(self):
        return f"{self.text or self.rule.describe()} ({self.hint})"

    def check(self, value, what):
        try:
            return self.rule.check(value, what)
        except ValueError:
            self._fail(value, what)


class _Range(Rule):
    """A range (lo, hi) with lo <= hi, each end a value of ``rule`` (a :class:`Real`); gives a tuple of floats.
    A list, a tuple or a 1-D array of two numbers."""

    def __init__(self, rule: Rule):
        self.rule = rule

    def describe(self):
        return f"a range (lo, hi) with lo <= hi, each {self.rule.describe()}"

    def check(self, value, what):
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 2:
            self._fail(value, what)
        try:
            lo, hi = (self.rule.check(v, what) for v in value)
        except ValueError:
            self._fail(value, what)
        if lo > hi:
            self._fail(value, what)
        return lo, hi


class _Spread(Rule):
    """A number d >= 0 for the range (-d, d), or a range (lo, hi) (:class:`_Range` of ``rule``)."""

    def __init__(self, rule: Real):
        self.range = _Range(rule)
        self.number = Real(0, rule.high, high_open=rule.high_open)

    def describe(self):
        return f"a number d {_bounds_text(self.number)} for the range (-d, d), or {self.range.describe()}"

    def check(self, value, what):
        if isinstance(value, (list, tuple, np.ndarray)):
            return self.range.check(value, what)
        try:
            d = self.number.check(value, what)
        except ValueError:
            self._fail(value, what)
        return 0.0 - d, d  # not -0.0


class _Shear(Rule):
    """A number s for an x-shear in (-s, s), an x range (lo, hi), or x and y ranges (xlo, xhi, ylo, yhi), of
    angles strictly between -90 and 90 degrees; gives the four ends."""

    def __init__(self):
        self.one = _Spread(Real(-90, 90, low_open=True, high_open=True))

    def describe(self):
        return ("a number s for an x-shear in (-s, s), an x range (lo, hi) or x and y ranges (xlo, xhi, ylo, "
                "yhi), lo <= hi, of angles strictly between -90 and 90 degrees (e.g. shear=5)")

    def check(self, value, what):
        try:
            if isinstance(value, (list, tuple, np.ndarray)) and len(value) == 4:
                return self.one.check(list(value[:2]), what) + self.one.check(list(value[2:]), what)
            if isinstance(value, (list, tuple, np.ndarray)) and len(value) != 2:
                self._fail(value, what)
            return self.one.check(value, what) + (0.0, 0.0)
        except ValueError:
            self._fail(value, what)


def _bounds_text(rule: Real) -> str:
    return rule.describe().replace("a finite number ", "")


FRACTION = Real(0, 1)
DEGREES = _Example(_Spread(Real(-360, 360)), "angles in degrees, e.g. degrees=10")
TRANSLATE = NoneValue() | _Example(Tuple(FRACTION, FRACTION), "e.g. translate=(0.1, 0.1)",
                                   "two fractions (tx, ty) of the width and height, each in [0, 1]")
AFFINE_SCALE = NoneValue() | _Example(_Range(Real(0, low_open=True)), "factors, e.g. scale=(0.9, 1.1)")
SHEAR = NoneValue() | _Shear()
PROBABILITY = _Example(FRACTION, "a probability, e.g. p=0.5")
AREA = _Example(_Range(FRACTION), "area fractions, e.g. scale=(0.02, 0.2)")
RATIO = _Example(_Range(Real(0, low_open=True)), "aspect ratios h/w, e.g. ratio=(0.3, 3.3)")
VALUE = _Example(Real(), "the erased pixels' value, e.g. value=0.0")
#: the largest crop side and padding (pixels): far beyond any image, small enough that no index overflows int64
MAX_PIXELS = 1 << 20
CROP_SIZE = NoneValue() | _Example(Pair(Integer(1, MAX_PIXELS)), "e.g. size=32, size=(28, 32)",
                                   f"a side in pixels (an int from 1 to {MAX_PIXELS}) or a pair (h, w) of them")
PADDING = _Example(Integer(0, MAX_PIXELS), "pixels added on each side, e.g. padding=4")
FILL = _Example(Real(), "the padding's value, e.g. fill=0.0")


def round_up(value: float) -> float:
    """``value`` rounded up to 3 significant digits (a bound to print: what it names must pass)."""
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    return math.ceil(value / step * (1 + 1e-12)) * step


def dtype_values(dtype) -> Rule:
    """The finite values a floating ``dtype`` holds, as a rule."""
    info = np.finfo(numpy_dtype(dtype))
    top = float(info.max)
    return _Example(Real(-top, top), f"what {np.dtype(numpy_dtype(dtype)).name} images can hold")


def check_batch(transform, x) -> None:
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"{transform!r} expects a batch of shape (N, C, H, W); got shape {shape} (add the "
                         "missing axes, e.g. x[:, None] for (N, H, W) images)")
    if numpy_dtype(x.dtype).kind != "f":
        raise ValueError(f"{transform!r} expects a real floating batch; got dtype {x.dtype} (convert it with "
                         "backend.asarray(x, dtype='float32') first)")


def check_rng(transform, rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{transform!r} needs rng, a numpy.random.Generator; got {type(rng).__name__} (pass "
                         "np.random.default_rng(seed))")


def tuple_repr(value):
    return tuple(value) if isinstance(value, list) else value
