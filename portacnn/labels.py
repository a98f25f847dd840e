"""Class names: what a model calls its classes (``model.class_names``), checked in one place.

A model trained on a folder of class subfolders, on CIFAR or on any data with named classes carries their names;
checkpoints store them, and ``predict`` output, the confusion plot and ONNX metadata show them. Without names
(``None``), the class ids are the names.
"""

from __future__ import annotations

import numpy as np

from .validation import _short

#: the characters of one class name
MAX_NAME_LENGTH = 200
#: the class names a model may carry (a checkpoint's header must hold them)
MAX_CLASSES = 100_000


def check_class_names(names, num_classes: int | None, what: str = "class_names") -> list[str] | None:
    """``names`` as a list of ``num_classes`` distinct, printable, non-empty strings (None stays None); a
    one-line ValueError naming the problem otherwise. ``num_classes`` None: any count."""
    if names is None:
        return None
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{what} must be a list of strings, one per class; got {_short(names)}")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"{what} holds {len(names)} names, more than the {MAX_CLASSES} a model may carry")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise ValueError(f"{what}[{i}] must be a printable string of 1 to {MAX_NAME_LENGTH} characters; "
                             f"got {_short(name)}")
    if len(set(names)) != len(names):
        seen = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"{what} names {seen!r} twice; each class needs its own name")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{what} holds {len(names)} names but the model has {num_classes} classes")
    return list(names)


def class_label(names, class_id: int) -> str:
    """The name of class ``class_id`` (its id as text when there are no names)."""
    return str(class_id) if names is None else names[int(class_id)]


__all__ = ["MAX_CLASSES", "MAX_NAME_LENGTH", "check_class_names", "class_label"]
