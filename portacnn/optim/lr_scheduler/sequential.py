"""SequentialLR: one scheduler after another, as ``torch.optim.lr_scheduler.SequentialLR``."""

from __future__ import annotations

import copy
from bisect import bisect_right

from ...validation import Rule, _short
from .base import STEPS, LRScheduler


class SortedPositiveInts(Rule):
    """A list (or tuple) of positive ints in non-decreasing order; gives a list."""

    def describe(self):
        return "a list of positive ints in increasing order"

    def check(self, value, what):
        if not isinstance(value, (list, tuple)) or not all(STEPS.accepts(v) for v in value):
            self._fail(value, what)
        value = [int(v) for v in value]
        if value != sorted(value):
            self._fail(value, what)
        return value


class SequentialLR(LRScheduler):
    """Hand over from one scheduler to the next at each of ``milestones`` (torch's semantics: at a milestone
    the next scheduler restarts at its epoch 0, from the groups' ``initial_lr``)."""

    RULES = {"_milestones": SortedPositiveInts()}  # the argument milestones, kept as _milestones

    def __init__(self, optimizer, schedulers, milestones):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR schedulers must hold at least one scheduler")
        for i, s in enumerate(schedulers):
            if getattr(s, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR schedulers[{i}] belongs to another optimizer")
        milestones = self.RULES["_milestones"].check(milestones, "SequentialLR milestones")
        self._check_count(milestones, len(schedulers), "SequentialLR milestones")
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = 0
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in schedulers:  # torch's recursive_undo: the construction step did not count
            s.last_epoch -= 1
        first = schedulers[bisect_right(milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    @staticmethod
    def _check_count(milestones, schedulers: int, what: str) -> None:
        if len(milestones) != schedulers - 1:
            raise ValueError(f"{what} must have len(schedulers) - 1 = {schedulers - 1} entries; got "
                             f"{len(milestones)}")

    @classmethod
    def check_state(cls, state, what):
        """``_milestones`` by its rule, one fewer than the ``_schedulers`` when the state holds both."""
        out = super().check_state(state, what)
        inner = state.get("_schedulers")
        if "_milestones" in out and isinstance(inner, list):
            cls._check_count(out["_milestones"], len(inner), f"{what} _milestones")
        return out

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def _write_groups(self):
        self._schedulers[bisect_right(self._milestones, self.last_epoch)]._write_groups()
        super()._write_groups()

    def state_dict(self):
        state = copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")})
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def _prepare(self, state):
        """Its own fields and each scheduler's state, all checked before any is installed."""
        if not isinstance(state, dict):
            raise ValueError(f"SequentialLR state must be an object; got {_short(state)}")
        state = dict(state)
        inner = state.pop("_schedulers", None)
        if not isinstance(inner, list) or len(inner) != len(self._schedulers):
            count = f"{len(inner)} schedulers" if isinstance(inner, list) else f"_schedulers {_short(inner)}"
            raise ValueError(f"SequentialLR state has {count}, not {len(self._schedulers)}")
        return LRScheduler._prepare(self, state), [s._prepare(d) for s, d in zip(self._schedulers, inner)]

    def _install(self, prepared):
        own, inner = prepared
        LRScheduler._install(self, own)
        for s, p in zip(self._schedulers, inner):
            s._install(p)
