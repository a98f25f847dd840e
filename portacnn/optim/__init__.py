"""Optimizers with PyTorch's update rules (``torch.optim.SGD``, ``Adam``, ``AdamW``, ``RMSprop``), gradient
clipping (:func:`clip_grad_norm`) and learning-rate schedules (:mod:`portacnn.optim.lr_scheduler`).

They update each ``Parameter.data`` in place from its ``.grad`` using only the array-API namespace of
the data. Hyper-parameters are Python floats, which the standard keeps in the arrays' dtype.

Every optimizer takes either a flat list of parameters or torch-style parameter groups::

    opt = AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=1e-3)
    opt = AdamW(split_decay(model), lr=1e-3)            # the same split, made from a model

A group's own hyper-parameters override the constructor's (``opt.defaults``). ``opt.param_groups`` is the
list of groups (dicts; a learning-rate scheduler writes ``group["lr"]``), ``opt.params`` the flat list of
all parameters, group after group. ``opt.lr = x`` (and the other hyper-parameter attributes) reads the first
group and writes every group. Checkpoints keep every group (its parameters, hyper-parameters, name and the
keys schedulers write, such as ``initial_lr``), so a run with groups and a schedule resumes exactly.

Each optimizer declares its hyper-parameters' rules once (``SGD.RULES``; :mod:`portacnn.validation`), and
they check the constructor's arguments, the groups, assignments, ``load_state_dict`` and a description read
from a file (:func:`check_saved`) alike. As in torch, ``lr`` may be 0 (where a schedule may end) but not less.

One module per optimizer: :mod:`~portacnn.optim.optimizer` (the base class), :mod:`~portacnn.optim.sgd`,
:mod:`~portacnn.optim.adam` (Adam, AdamW), :mod:`~portacnn.optim.rmsprop`, :mod:`~portacnn.optim.utils`
(split_decay, clip_grad_norm), :mod:`~portacnn.optim.saved` (OPTIMIZERS, check_saved).

:func:`by_name` reads a name as ``fit(optimizer="adam")`` takes it, from the same table (:data:`OPTIMIZERS`).
"""

from __future__ import annotations

from ..validation import _short
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import MAX_PARAM_GROUPS, Optimizer
from .rmsprop import RMSprop
from .saved import OPTIMIZERS, check_saved
from .sgd import SGD
from .utils import clip_grad_norm, split_decay


def by_name(name) -> type:
    """The optimizer class ``name`` names, in any case: "adam", "adamw", "sgd" or "rmsprop" (the keys of
    :data:`OPTIMIZERS`, the names checkpoints record); a one-line ValueError listing them otherwise.

    Built with its defaults (``by_name("rmsprop")(model.parameters())``) it has torch's default hyper-parameters,
    which are portacnn's, not Keras' (RMSprop: lr 1e-2 here, 1e-3 in Keras; AdamW: weight_decay 1e-2 here).
    """
    key = name.lower() if isinstance(name, str) else None
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer name {_short(name)}; known names: {', '.join(sorted(OPTIMIZERS))} "
                         "(or pass an optimizer, e.g. portacnn.optim.SGD(model.parameters(), lr=0.05))")
    return OPTIMIZERS[key]


__all__ = [
    "MAX_PARAM_GROUPS",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "by_name",
    "check_saved",
    "clip_grad_norm",
    "lr_scheduler",
    "split_decay",
]
