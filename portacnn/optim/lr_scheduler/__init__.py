"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s exact sequences.

Each scheduler writes ``group["lr"]`` of every parameter group of a portacnn optimizer. Construct it after the
optimizer (construction applies the epoch-0 rate, like torch), call ``optimizer.step()`` then
``scheduler.step()``. ``get_last_lr()`` is the list of per-group rates last set. The formulas are torch's own,
including its recursive ("chainable") forms, so the float sequences agree with torch's to rounding.

``state_dict()`` is a plain JSON-able dict; ``load_state_dict`` on a freshly built scheduler (same arguments,
same optimizer) resumes the sequence. As in torch, the optimizer's ``lr`` values are part of the optimizer's
own state (``Optimizer.state_dict`` saves its ``param_groups``), so restore both, scheduler last. Each
scheduler declares its arguments' rules once (``StepLR.RULES``; :mod:`portacnn.validation`); they check the
constructor's arguments, what ``load_state_dict`` loads and a state read from a file
(:func:`check_saved_state`) alike, so a loaded ``gamma`` of -3 or ``step_size`` of 0 is refused as the
constructor refuses it.

OneCycleLR also cycles the momentum (SGD's and RMSprop's ``momentum``, Adam's and AdamW's beta1) inversely to
the rate, as torch's does by default (``cycle_momentum=True``, between ``base_momentum=0.85`` and
``max_momentum=0.95``); the parameter groups then carry ``max_momentum`` and ``base_momentum``, as in torch.

To step a schedule from :func:`portacnn.training.fit` (per epoch or per optimizer step, saved in its checkpoints
so that a resumed run continues it exactly), use :class:`portacnn.callbacks.LearningRateScheduler`.

Not offered: ``step(epoch)``, torch's deprecated explicit-epoch form.

Modules: :mod:`.base` (LRScheduler), :mod:`.schedules` (StepLR, CosineAnnealingLR, LinearLR),
:mod:`.one_cycle`, :mod:`.sequential`, :mod:`.saved` (check_saved_state).
"""

from __future__ import annotations

from .base import MAX_SAVED_GROUPS, LRScheduler
from .one_cycle import OneCycleLR
from .saved import check_saved_state
from .schedules import CosineAnnealingLR, LinearLR, StepLR
from .sequential import SequentialLR

__all__ = ["CosineAnnealingLR", "LRScheduler", "LinearLR", "MAX_SAVED_GROUPS", "OneCycleLR", "SequentialLR",
           "StepLR", "check_saved_state"]
