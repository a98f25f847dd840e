""":func:`check_saved_state`: a scheduler's state read from an untrusted file, checked before any scheduler
exists, by the rules the schedulers' constructors use."""

from __future__ import annotations

from ...validation import _short
from .base import check_progress
from .one_cycle import OneCycleLR
from .schedules import CosineAnnealingLR, LinearLR, StepLR
from .sequential import SequentialLR

#: the schedulers whose fields a saved state is checked against (no two name a field alike)
SCHEDULERS = (StepLR, CosineAnnealingLR, LinearLR, OneCycleLR, SequentialLR)


def check_saved_state(state, what: str = "scheduler") -> None:
    """A saved scheduler state read from an untrusted file, before any scheduler exists: its progress fields
    typed (rates non-negative, at most :data:`MAX_SAVED_GROUPS` of them; ``last_epoch`` >= -1, ``_step_count``
    >= 0), every field a scheduler's constructor takes (``gamma``, ``step_size``, ``T_max``, ``total_steps``,
    ``_milestones``...) by that constructor's rules, with the rules that tie fields together (OneCycleLR's
    ``_phases``, SequentialLR's milestone count), and SequentialLR's schedulers each in turn. A ValueError
    naming ``what`` and the field otherwise; the scheduler that loads it checks the rest (that every field is
    its own, one rate per parameter group: :meth:`LRScheduler.load_state_dict`)."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} must be an object; got {_short(state)}")
    check_progress(state, what)
    for cls in SCHEDULERS:
        cls.check_state(state, what)
    inner = state.get("_schedulers", [])
    if not isinstance(inner, list):
        raise ValueError(f"{what} _schedulers must be a list; got {_short(inner)}")
    for i, sub in enumerate(inner):
        check_saved_state(sub, f"{what} _schedulers[{i}]")
