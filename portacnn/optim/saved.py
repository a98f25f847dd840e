"""The optimizers by the type name a saved description gives (:data:`OPTIMIZERS`), and :func:`check_saved`,
the check of such a description read from an untrusted file."""

from __future__ import annotations

from ..validation import _short
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .sgd import SGD

#: type name (the class's name in lower case, as a checkpoint records it) -> optimizer class
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def check_saved(spec: dict, param_shapes: list[tuple], buffer_shapes: dict[str, tuple]) -> None:
    """A saved optimizer description, as a checkpoint holds it and before anything is built from it, checked by
    the rules its optimizer's constructor uses; a one-line ValueError names the first problem.

    ``spec`` is ``{"type": one of OPTIMIZERS, "steps": count or one per parameter, <the first group's
    hyper-parameters>, "param_groups": [{<hyper-parameters>, "params": [indices], maybe "name" and the keys
    schedulers write}]}`` (``param_groups`` may be missing, as in files written before groups were saved);
    ``param_shapes`` the shapes of the parameters the indices count; ``buffer_shapes`` the shape of each
    saved buffer by its key ``"<parameter index>.<buffer name>"``. Checked: every field known and present and
    of its rule (the constructor's), the groups (at most MAX_PARAM_GROUPS) holding each parameter once, each
    buffer a buffer of that optimizer of an existing parameter, of its shape.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"the optimizer description is not an object: {_short(spec)}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer type {_short(kind)} (known: {', '.join(OPTIMIZERS)})")
    OPTIMIZERS[kind].check_saved(spec, param_shapes, buffer_shapes)
