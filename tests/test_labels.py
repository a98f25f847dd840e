"""portacnn.labels: class names, one rule for the model attribute and the checkpoint field."""

from __future__ import annotations

import numpy as np
import pytest

import portacnn as pc
from portacnn.labels import MAX_NAME_LENGTH, check_class_names, class_label
from portacnn.layers import Dense


@pytest.mark.parametrize("names, fragment", [
    ("abc", "list of strings"), (["a", 1, "c"], "[1]"), (["a", "", "c"], "[1]"), (["a", "b\n", "c"], "[1]"),
    (["a", "x" * (MAX_NAME_LENGTH + 1), "c"], "[1]"), (["a", "b", "a"], "'a' twice"), (["a", "b"], "3 classes"),
])
def test_bad_class_names_are_one_line_errors(names, fragment):
    with pytest.raises(ValueError) as err:
        check_class_names(names, 3)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_names_are_kept_as_a_list_and_shown_by_class_id():
    assert check_class_names(np.array(["b", "a", "c"]), 3) == ["b", "a", "c"]
    assert check_class_names(None, 3) is None
    assert class_label(["b", "a", "c"], np.int64(1)) == "a" and class_label(None, 2) == "2"
    m = pc.Sequential([Dense(4, 3)])
    m.class_names = ("x", "y", "z")
    assert m.class_names == ["x", "y", "z"]
    with pytest.raises(ValueError, match="3 classes"):
        m.class_names = ["x", "y"]
