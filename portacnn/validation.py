"""One vocabulary of argument checks, shared by constructors and by everything that reads a saved form.

A rule says what a value may be and normalises it (``Integer`` gives a Python int, ``Real`` a float, ``Pair``
an (h, w) tuple); a value it refuses is a one-line :class:`ValueError` naming the argument, the rule and the
value. The same rule object checks ``SGD(nesterov=...)`` typed in Python and the ``nesterov`` read back from a
checkpoint, so a file can never hold what the constructor refuses, nor be refused for what it accepts::

    RULES = {"lr": Real(0, low_open=True), "nesterov": Boolean(), "betas": Tuple(Real(0, 1, high_open=True),
             Real(0, 1, high_open=True))}
    hp = check_all("Adam", {"lr": 1e-3, ...}, RULES)          # every key known, every value checked

The rules are strict where Python is loose: a bool is not a number (``True`` is not ``lr=1``), a number is not
a bool (``nesterov=1`` or ``"no"`` are refused, not coerced), and numbers are finite unless a rule allows
infinity. Modelled on scikit-learn's parameter constraints (``Interval``, ``StrOptions``), written small.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


#: the largest int a 64-bit count holds (what trainers and files count steps, epochs and images in)
INT64_MAX = (1 << 63) - 1


def _short(value, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (an int too long for repr: its size in bits)."""
    try:
        text = " ".join(repr(value).split())
    except ValueError:  # Python refuses to print an int of more than 4300 digits
        text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Rule:
    """What a value may be. ``check(value, what)`` returns the normalised value or raises a ValueError; the
    message reads ``"<what> must be <describe()>; got <value>"``."""

    def describe(self) -> str:
        raise NotImplementedError

    def accepts(self, value) -> bool:
        """True when ``check`` would pass (no exception)."""
        try:
            self.check(value, "value")
        except ValueError:
            return False
        return True

    def check(self, value, what: str):
        raise NotImplementedError

    def _fail(self, value, what: str):
        raise ValueError(f"{what} must be {self.describe()}; got {_short(value)}")

    def __or__(self, other: "Rule") -> "Rule":
        return AnyOf(self, other)


def _bounds(low, high, low_open, high_open) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}" if isinstance(low, float) else
                     f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}" if isinstance(high, float) else
                     f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


class Integer(Rule):
    """A whole number (Python or NumPy int, never a bool) within ``[low, high]``; gives an int."""

    def __init__(self, low=None, high=None):
        self.low, self.high = low, high

    def describe(self):
        if self.high == INT64_MAX:  # the bound of a 64-bit count, in words rather than 19 digits
            kind = {1: "a positive 64-bit int", 0: "a non-negative 64-bit int", -INT64_MAX - 1: "a 64-bit int"}
            return kind.get(self.low, f"a 64-bit int >= {self.low}")
        if self.low == 1 and self.high is None:
            return "a positive int"
        if self.low == 0 and self.high is None:
            return "a non-negative int"
        rng = _bounds(self.low, self.high, False, False)
        return "an int" + (f" {rng}" if rng else "")

    def check(self, value, what):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
            self._fail(value, what)
        number = int(value)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            self._fail(value, what)
        return number


class Real(Rule):
    """A real number (int or float, never a bool) within the bounds, finite unless ``finite=False``; gives a
    float."""

    def __init__(self, low=None, high=None, low_open=False, high_open=False, finite=True):
        self.low, self.high, self.low_open, self.high_open, self.finite = low, high, low_open, high_open, finite

    def describe(self):
        rng = _bounds(self.low, self.high, self.low_open, self.high_open)
        return ("a finite number" if self.finite else "a number") + (f" {rng}" if rng else "")

    def check(self, value, what):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
            self._fail(value, what)
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            self._fail(value, what)
        if math.isnan(number) or (self.finite and not math.isfinite(number)):
            self._fail(value, what)
        low, high = self.low, self.high
        if low is not None and (number < low or (self.low_open and number == low)):
            self._fail(value, what)
        if high is not None and (number > high or (self.high_open and number == high)):
            self._fail(value, what)
        value = number
        return value


class Boolean(Rule):
    """True or False (a NumPy bool too), nothing else: not 0/1, not "yes"."""

    def describe(self):
        return "True or False"

    def check(self, value, what):
        if not isinstance(value, (bool, np.bool_)):
            self._fail(value, what)
        return bool(value)


class Options(Rule):
    """One of a fixed set of strings (case-sensitive)."""

    def __init__(self, *choices: str):
        self.choices = tuple(choices)

    def describe(self):
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def check(self, value, what):
        if not isinstance(value, str) or value not in self.choices:
            self._fail(value, what)
        return value


class Text(Rule):
    """A string of ``1..max_length`` characters (``empty=True``: 0 allowed)."""

    def __init__(self, max_length: int = 4096, empty: bool = False):
        self.max_length, self.empty = max_length, empty

    def describe(self):
        return f"a {'' if self.empty else 'non-empty '}string of at most {self.max_length} characters"

    def check(self, value, what):
        if not isinstance(value, str) or len(value) > self.max_length or (not value and not self.empty):
            self._fail(value, what)
        return value


class Name(Rule):
    """A printable string of 1..``max_length`` characters (shown on a terminal: no control characters)."""

    def __init__(self, max_length: int = 64):
        self.max_length = max_length

    def describe(self):
        return f"a printable string of 1 to {self.max_length} characters"

    def check(self, value, what):
        if not isinstance(value, str) or not value or len(value) > self.max_length or not value.isprintable():
            self._fail(value, what)
        return value


class NoneValue(Rule):
    """Exactly None (combine: ``Integer(0) | NoneValue()``)."""

    def describe(self):
        return "None"

    def check(self, value, what):
        if value is not None:
            self._fail(value, what)
        return None


class Tuple(Rule):
    """A list or tuple of exactly one value per rule, each checked by its rule; gives a tuple."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def describe(self):
        return "a list (" + ", ".join(r.describe() for r in self.rules) + ")"

    def check(self, value, what):
        if isinstance(value, np.ndarray) and value.ndim == 1:  # a 1-D array reads as its list
            value = value.tolist()
        if not isinstance(value, (tuple, list)) or len(value) != len(self.rules):
            self._fail(value, what)
        try:
            return tuple(r.check(v, what) for r, v in zip(self.rules, value))
        except ValueError:
            self._fail(value, what)


class Pair(Rule):
    """An (h, w) pair of values of ``rule``, or one value for both: ``3`` and ``(3, 3)`` give (3, 3)."""

    def __init__(self, rule: Rule):
        self.rule = rule

    def describe(self):
        return f"{self.rule.describe()} or a pair (h, w) of them"

    def check(self, value, what):
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                self._fail(value, what)
            try:
                return tuple(self.rule.check(v, what) for v in value)
            except ValueError:
                self._fail(value, what)
        try:
            v = self.rule.check(value, what)
        except ValueError:
            self._fail(value, what)
        return (v, v)


class AnyOf(Rule):
    """The first of ``rules`` that accepts the value (``a | b`` builds one)."""

    def __init__(self, *rules: Rule):
        flat = []
        for r in rules:
            flat.extend(r.rules if isinstance(r, AnyOf) else [r])
        self.rules = tuple(flat)

    def describe(self):
        return " or ".join(r.describe() for r in self.rules)

    def check(self, value, what):
        for r in self.rules:
            try:
                return r.check(value, what)
            except ValueError:
                continue
        self._fail(value, what)


def check(value, rule: Rule, what: str):
    """``rule.check(value, what)``: the normalised value, or a one-line ValueError naming ``what``."""
    return rule.check(value, what)


def check_all(owner: str, values: dict, rules: dict, required=None) -> dict:
    """Every entry of ``values`` checked by its rule in ``rules`` (an unknown key is a ValueError that lists the
    known ones; so is a missing key of ``required``, which defaults to none); returns the normalised dict.
    Messages name each argument as ``"<owner> <key>"``."""
    if not isinstance(values, dict):
        raise ValueError(f"{owner} settings must be a dict of {sorted(rules)}; got {_short(values)}")
    unknown = sorted(str(k) for k in values if k not in rules)
    if unknown:
        raise ValueError(f"{owner} got unknown field(s) {unknown}; known: {sorted(rules)}")
    missing = sorted(k for k in (required or ()) if k not in values)
    if missing:
        raise ValueError(f"{owner} is missing field(s) {missing}")
    return {k: rules[k].check(v, f"{owner} {k}") for k, v in values.items()}
