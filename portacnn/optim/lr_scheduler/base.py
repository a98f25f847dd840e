"""The base :class:`LRScheduler`: construction (the epoch-0 rate), stepping, ``state_dict`` and the checks of a
loaded state; and :func:`check_progress`, the check of a saved state's progress fields."""

from __future__ import annotations

import copy

from ...validation import Integer, Real, Rule, _short, check
from ..optimizer import MAX_STEPS

#: parameter groups a saved schedule may rate (portacnn.optim's limit on an optimizer's groups)
MAX_SAVED_GROUPS = 1024
#: a count of steps or epochs of a schedule: at most what the int64 a trainer counts steps in holds
STEPS = Integer(1, MAX_STEPS)


def _per_group(name, optimizer, value):
    """``value`` once per parameter group: a list or tuple of that length, or one number for every group."""
    n = len(optimizer.param_groups)
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for {n} parameter groups; give one per group or a number")
    return values


def check_progress(state: dict, what: str) -> None:
    """The progress fields of a scheduler's state (a dict), where present: the rates (``_last_lr``,
    ``base_lrs``) lists of at most :data:`MAX_SAVED_GROUPS` non-negative numbers, ``last_epoch`` >= -1,
    ``_step_count`` >= 0; a ValueError naming ``what`` and the field otherwise."""
    for key in ("_last_lr", "base_lrs"):
        rates = state.get(key, [])
        if not isinstance(rates, list) or len(rates) > MAX_SAVED_GROUPS:
            raise ValueError(f"{what} {key} must be a list of at most {MAX_SAVED_GROUPS} rates; got {_short(rates)}")
        for rate in rates:
            check(rate, Real(0), f"each of {what} {key}")
    if "last_epoch" in state:
        check(state["last_epoch"], Integer(-1, MAX_STEPS), f"{what} last_epoch")
    if "_step_count" in state:
        check(state["_step_count"], Integer(0, MAX_STEPS), f"{what} _step_count")


class LRScheduler:
    """Base class: ``last_epoch`` counts ``step()`` calls (0 after construction); ``base_lrs`` are the groups'
    ``initial_lr`` (their ``lr`` when the first scheduler was attached).

    A subclass declares ``RULES``: each constructor argument it keeps as an attribute of the same name (and
    so in its state) -> its rule (:mod:`portacnn.validation`); :meth:`check_state` adds the rules that tie
    fields together. The constructor, :meth:`load_state_dict` and :func:`check_saved_state` apply them alike.
    """

    #: constructor argument kept as an attribute (a field of the state) -> rule
    RULES: dict[str, Rule] = {}
    _is_initial = False

    def __init__(self, optimizer):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer (it has no param_groups)")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self._initial_step()

    @classmethod
    def check_state(cls, state: dict, what: str) -> dict:
        """The fields of ``state`` (a scheduler's state, or a constructor's arguments) that ``RULES`` names, each
        by its rule, and the rules that tie them together; returns them normalised. A ValueError names ``what``
        and the field."""
        return {k: check(state[k], rule, f"{what} {k}") for k, rule in cls.RULES.items() if k in state}

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            del self._is_initial  # back to the class attribute, False; not part of the state

    def _group_lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        """The rates for ``self.last_epoch`` (already advanced)."""
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def step(self) -> None:
        self._step_count += 1
        self._update_lr()

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:  # SequentialLR restarting a scheduler at a milestone (torch's closed form at that epoch)
            self.last_epoch = epoch
            values = self._closed_form_lr() if hasattr(self, "_closed_form_lr") else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = self._group_lrs()

    def _write_groups(self) -> None:
        """Put the optimizer's groups where this schedule stands (its last rates; OneCycleLR's momentum too): what
        a restored scheduler does to an optimizer that was not restored with it."""
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def state_dict(self) -> dict:
        """Everything but the optimizer, as plain JSON-able values."""
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "optimizer"})

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved, into a scheduler built with the same arguments on the same
        kind of optimizer. Everything is checked before anything changes: every field known, the progress
        fields typed (one rate per parameter group), the arguments by the constructor's rules."""
        self._install(self._prepare(state))

    def _prepare(self, state):
        """``state`` checked, as :meth:`_install` takes it; nothing changed yet."""
        name = type(self).__name__
        if not isinstance(state, dict):
            raise ValueError(f"{name} state must be an object; got {_short(state)}")
        state = copy.deepcopy(dict(state))
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{name} state has unknown entries {sorted(map(str, unknown))}")
        self._check_loaded(state, f"{name} state")
        return state

    def _install(self, prepared) -> None:
        self.__dict__.update(prepared)

    def _check_loaded(self, state: dict, what: str) -> None:
        """``state`` (a copy, known fields only) fits this scheduler; normalises its arguments in place."""
        check_progress(state, what)
        n = len(self.optimizer.param_groups)
        for key in ("base_lrs", "_last_lr"):
            if key in state and len(state[key]) != n:
                raise ValueError(f"{what} {key} has {len(state[key])} rates; the optimizer has {n} parameter groups")
        own = {k: v for k, v in self.__dict__.items() if k != "optimizer"}
        checked = type(self).check_state({**own, **state}, what)
        state.update({k: v for k, v in checked.items() if k in state})
