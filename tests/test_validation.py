"""The argument-check vocabulary (portacnn.validation): what each rule accepts, gives back and refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portacnn.validation import (AnyOf, Boolean, Integer, Name, NoneValue, Options, Pair, Real, Text, Tuple, check,
                                 check_all)


@pytest.mark.parametrize("rule, value, want", [
    (Integer(1), 3, 3), (Integer(1), np.int64(3), 3), (Integer(0, 5), 0, 0), (Integer(0, 5), 5, 5),
    (Real(0, low_open=True), 1, 1.0), (Real(0, 1, high_open=True), np.float32(0.5), 0.5), (Real(), -2.5, -2.5),
    (Real(finite=False), math.inf, math.inf), (Boolean(), True, True), (Boolean(), np.bool_(False), False),
    (Options("a", "b"), "b", "b"), (Text(4), "abcd", "abcd"), (NoneValue(), None, None),
    (Tuple(Real(0, 1), Real(0, 1)), [0.9, 0.999], (0.9, 0.999)), (Pair(Integer(1)), 3, (3, 3)),
    (Pair(Integer(0)), [2, 0], (2, 0)), (Name(4), "ab c", "ab c"), (Integer(0) | NoneValue(), None, None), (Integer(0) | NoneValue(), 4, 4),
    (Options("same") | Pair(Integer(0)), "same", "same"), (Options("same") | Pair(Integer(0)), 1, (1, 1)),
])
def test_accepts_and_normalises(rule, value, want):
    got = check(value, rule, "x")
    assert got == want and type(got) is type(want)
    assert rule.accepts(value)


@pytest.mark.parametrize("rule, value", [
    (Integer(1), 0), (Integer(1), True), (Integer(1), 2.0), (Integer(1), "3"), (Integer(0, 5), 6), (Integer(), None),
    (Real(0, low_open=True), 0), (Real(0, low_open=True), 0.0), (Real(), True), (Real(), "1"), (Real(), math.nan),
    (Real(), math.inf), (Real(0, 1), 1.5), (Real(0, 1, high_open=True), 1), (Real(finite=False), math.nan),
    (Boolean(), 1), (Boolean(), 0), (Boolean(), "no"), (Boolean(), None), (Options("a", "b"), "A"),
    (Options("a"), 1), (Text(3), "abcd"), (Text(3), ""), (Text(3), 5), (NoneValue(), 0),
    (Tuple(Real(0, 1), Real(0, 1)), [0.9]), (Tuple(Real(0, 1), Real(0, 1)), (0.9, 2)), (Tuple(Real()), 1.0),
    (Pair(Integer(1)), (1, 2, 3)), (Pair(Integer(1)), (1, 0)), (Pair(Integer(1)), True),
    (Integer(0) | NoneValue(), -1), (Options("same") | Pair(Integer(0)), "full"), (Real(), 10**400),
    (Name(4), ""), (Name(4), "abcde"), (Name(4), "a\nb"), (Name(4), 3),
])
def test_refuses_with_one_line_naming_the_argument(rule, value):
    assert not rule.accepts(value)
    with pytest.raises(ValueError) as info:
        check(value, rule, "Thing arg")
    msg = str(info.value)
    assert msg.startswith("Thing arg must be ") and "; got " in msg and "\n" not in msg


def test_messages_say_what_is_wanted():
    with pytest.raises(ValueError, match=r"^SGD nesterov must be True or False; got 'no'$"):
        check("no", Boolean(), "SGD nesterov")
    with pytest.raises(ValueError, match=r"must be a positive int; got 0"):
        check(0, Integer(1), "Dense in_features")
    with pytest.raises(ValueError, match=r"must be a finite number > 0; got -3"):
        check(-3, Real(0, low_open=True), "StepLR gamma")
    with pytest.raises(ValueError, match=r"one of 'same', 'valid' or a non-negative int or a pair \(h, w\) of them; got 'full'"):
        check("full", Options("same", "valid") | Pair(Integer(0)), "Conv2D padding")
    long = "x" * 500
    with pytest.raises(ValueError) as info:
        check(long, Integer(), "n")
    assert len(str(info.value)) < 120  # the value is cut short


def test_check_all_checks_every_key_and_knows_them():
    rules = {"lr": Real(0, low_open=True), "nesterov": Boolean()}
    assert check_all("SGD", {"lr": 1, "nesterov": False}, rules) == {"lr": 1.0, "nesterov": False}
    with pytest.raises(ValueError, match=r"SGD got unknown field\(s\) \['momentun'\]; known: \['lr', 'nesterov'\]"):
        check_all("SGD", {"lr": 1, "momentun": 0.9}, rules)
    with pytest.raises(ValueError, match=r"SGD is missing field\(s\) \['nesterov'\]"):
        check_all("SGD", {"lr": 1}, rules, required=rules)
    with pytest.raises(ValueError, match=r"^SGD lr must be a finite number > 0; got 0$"):
        check_all("SGD", {"lr": 0}, rules)
    with pytest.raises(ValueError, match="settings must be a dict"):
        check_all("SGD", [("lr", 1)], rules)


def test_anyof_flattens():
    rule = Integer(0) | NoneValue() | Options("auto")
    assert isinstance(rule, AnyOf) and len(rule.rules) == 3
    assert rule.check("auto", "w") == "auto"


def test_arrays_and_huge_ints_in_values_and_messages():
    assert check(np.array([0.1, 0.2]), Tuple(Real(), Real()), "t") == (0.1, 0.2)  # a 1-D array reads as its list
    for value in (np.ones((3, 3)), 10**5000):
        with pytest.raises(ValueError) as info:
            check(value, Pair(Integer(1, 100)), "k")
        assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_64_bit_bounds_are_said_in_words():
    from portacnn.validation import INT64_MAX

    with pytest.raises(ValueError, match=r"^n must be a non-negative 64-bit int; got 2\*\*63$".replace("2\\*\\*63", str(2**63))):
        check(2**63, Integer(0, INT64_MAX), "n")
    assert Integer(1, INT64_MAX).describe() == "a positive 64-bit int"
    assert Integer(-INT64_MAX - 1, INT64_MAX).describe() == "a 64-bit int"
