"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s exact sequences.

Each scheduler writes ``group["lr"]`` of every parameter group of a portacnn optimizer. Construct it after the
optimizer (construction applies the epoch-0 rate, like torch), call ``optimizer.step()`` then
``scheduler.step()``. ``get_last_lr()`` is the list of per-group rates last set. The formulas are torch's own,
including its recursive ("chainable") forms, so the float sequences agree with torch's to rounding.

``state_dict()`` is a plain JSON-able dict; ``load_state_dict`` on a freshly built scheduler (same arguments,
same optimizer) resumes the sequence. As in torch, the optimizer's ``lr`` values are part of the optimizer's
own state (``Optimizer.state_dict`` saves its ``param_groups``), so restore both, scheduler last.

OneCycleLR also cycles the momentum (SGD's and RMSprop's ``momentum``, Adam's and AdamW's beta1) inversely to
the rate, as torch's does by default (``cycle_momentum=True``, between ``base_momentum=0.85`` and
``max_momentum=0.95``); the parameter groups then carry ``max_momentum`` and ``base_momentum``, as in torch.

To step a schedule from :func:`portacnn.training.fit` (per epoch or per optimizer step, saved in its checkpoints
so that a resumed run continues it exactly), use :class:`portacnn.training.LearningRateScheduler`.

Not offered: ``step(epoch)``, torch's deprecated explicit-epoch form.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right

from ..validation import Integer, Real, _short, check

__all__ = ["CosineAnnealingLR", "LRScheduler", "LinearLR", "OneCycleLR", "SequentialLR", "StepLR"]


def _finite(name, value, low=None, high=None, low_open=False, high_open=False):
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if (bad or (low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high)))):
        span = (f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}" if high is not None
                else f"{'>' if low_open else '>='} {low}")
        raise ValueError(f"{name} must be a finite number {span}; got {value!r}")
    return float(value)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def _per_group(name, optimizer, value):
    """``value`` once per parameter group: a list or tuple of that length, or one number for every group."""
    n = len(optimizer.param_groups)
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for {n} parameter groups; give one per group or a number")
    return values


#: parameter groups a saved schedule may rate (portacnn.optim's limit on an optimizer's groups)
MAX_SAVED_GROUPS = 1024


def check_saved_state(state, what: str = "scheduler") -> None:
    """A saved scheduler state read from an untrusted file, before any scheduler exists: its progress fields
    typed (rates non-negative, at most :data:`MAX_SAVED_GROUPS` of them; ``last_epoch`` >= -1, ``_step_count``
    >= 0), SequentialLR's schedulers each in turn. A ValueError naming ``what`` and the field otherwise; the
    scheduler that loads it checks the rest (:meth:`LRScheduler.load_state_dict`)."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} must be an object; got {_short(state)}")
    for key in ("_last_lr", "base_lrs"):
        rates = state.get(key, [])
        if not isinstance(rates, list) or len(rates) > MAX_SAVED_GROUPS:
            raise ValueError(f"{what} {key} must be a list of at most {MAX_SAVED_GROUPS} rates; got {_short(rates)}")
        for rate in rates:
            check(rate, Real(0), f"each of {what} {key}")
    if "last_epoch" in state:
        check(state["last_epoch"], Integer(-1), f"{what} last_epoch")
    if "_step_count" in state:
        check(state["_step_count"], Integer(0), f"{what} _step_count")
    inner = state.get("_schedulers", [])
    if not isinstance(inner, list):
        raise ValueError(f"{what} _schedulers must be a list; got {_short(inner)}")
    for i, sub in enumerate(inner):
        check_saved_state(sub, f"{what} _schedulers[{i}]")


class LRScheduler:
    """Base class: ``last_epoch`` counts ``step()`` calls (0 after construction); ``base_lrs`` are the groups'
    ``initial_lr`` (their ``lr`` when the first scheduler was attached)."""

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
        state = copy.deepcopy(dict(state))
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{type(self).__name__} state has unknown entries {sorted(unknown)}")
        self.__dict__.update(state)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)`` (applied as torch does: the current rate times ``gamma``
    at every non-zero multiple of ``step_size``)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = _positive_int("StepLR step_size", step_size)
        self.gamma = _finite("StepLR gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._group_lrs()
        return [lr * self.gamma for lr in self._group_lrs()]

    def _closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (torch's recursive form;
    past ``T_max`` it rises again, as torch's does)."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max = _positive_int("CosineAnnealingLR T_max", T_max)
        self.eta_min = _finite("CosineAnnealingLR eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def get_lr(self):
        e, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._group_lrs()
        if self._step_count == 1 and e > 0:
            return [lo + (base - lo) * (1 + math.cos(e * math.pi / T)) / 2 for base in self.base_lrs]
        if (e - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._group_lrs())]
        return [(1 + math.cos(math.pi * e / T)) / (1 + math.cos(math.pi * (e - 1) / T)) * (lr - lo) + lo
                for lr in self._group_lrs()]

    def _closed_form_lr(self):
        lo = self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2 for base in self.base_lrs]


class LinearLR(LRScheduler):
    """``lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)``
    (torch's recursive form)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        self.start_factor = _finite("LinearLR start_factor", start_factor, low=0.0, high=1.0, low_open=True)
        self.end_factor = _finite("LinearLR end_factor", end_factor, low=0.0, high=1.0)
        self.total_iters = _positive_int("LinearLR total_iters", total_iters)
        super().__init__(optimizer)

    def get_lr(self):
        e, a, b, n = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if e == 0:
            return [lr * a for lr in self._group_lrs()]
        if self._is_initial or e > n:
            return self._group_lrs()
        return [lr * (1.0 + (b - a) / (n * a + (e - 1) * (b - a))) for lr in self._group_lrs()]

    def _closed_form_lr(self):
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return [base * (a + (b - a) * min(n, self.last_epoch) / n) for base in self.base_lrs]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): from ``max_lr / div_factor`` up to ``max_lr`` over the first
    ``pct_start`` of ``total_steps``, then down to ``max_lr / div_factor / final_div_factor`` (with
    ``three_phase``: up, back down to the start, then to the minimum), annealing by cosine or linearly::

        cos:    lr = end + (start - end) / 2 * (1 + cos(pi * pct))       linear: lr = start + (end - start) * pct

    Stepping more than ``total_steps`` times is a ValueError, as in torch. ``max_lr`` is a number or one per
    group.

    ``cycle_momentum`` (torch's default, True) anneals the momentum the other way, from ``max_momentum`` down
    to ``base_momentum`` while the rate rises and back up while it falls (three phases: down, up, then held at
    ``max_momentum``), with the same annealing: it is written to ``group["betas"][0]`` for Adam and AdamW,
    to ``group["momentum"]`` for SGD and RMSprop (a momentum of 0 becomes ``max_momentum`` at construction, as in
    torch). Both are numbers or one per group; an optimizer with neither momentum nor betas is a ValueError
    unless ``cycle_momentum=False``.
    """

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer (it has no param_groups)")
        self.total_steps = _positive_int("OneCycleLR total_steps", total_steps)
        self.pct_start = _finite("OneCycleLR pct_start", pct_start, low=0.0, high=1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR anneal_strategy must be 'cos' or 'linear'; got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        div_factor = _finite("OneCycleLR div_factor", div_factor, low=0.0, low_open=True)
        final_div_factor = _finite("OneCycleLR final_div_factor", final_div_factor, low=0.0, low_open=True)
        max_lrs = [_finite("OneCycleLR max_lr", v, low=0.0, low_open=True)
                   for v in _per_group("OneCycleLR max_lr", optimizer, max_lr)]
        if not isinstance(cycle_momentum, bool):
            raise ValueError(f"OneCycleLR cycle_momentum must be True or False; got {cycle_momentum!r}")
        self.cycle_momentum = cycle_momentum
        defaults = getattr(optimizer, "defaults", {})
        self.use_beta1 = "betas" in defaults
        if cycle_momentum:
            if "momentum" not in defaults and not self.use_beta1:
                raise ValueError(f"OneCycleLR cycle_momentum=True needs an optimizer with momentum or betas (SGD, "
                                 f"RMSprop, Adam, AdamW), not {type(optimizer).__name__}; pass cycle_momentum=False")
            high = 1.0 if self.use_beta1 else None  # beta1 must stay below 1
            tops = [_finite("OneCycleLR max_momentum", v, low=0.0, high=high, high_open=True)
                    for v in _per_group("OneCycleLR max_momentum", optimizer, max_momentum)]
            bottoms = [_finite("OneCycleLR base_momentum", v, low=0.0, high=high, high_open=True)
                       for v in _per_group("OneCycleLR base_momentum", optimizer, base_momentum)]
        t = self.total_steps
        # [end step, start lr, end lr, start momentum, end momentum] (group keys), as torch's _schedule_phases
        if three_phase:
            self._phases = [[float(self.pct_start * t) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                            [float(2 * self.pct_start * t) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"],
                            [t - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"]]
        else:
            self._phases = [[float(self.pct_start * t) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                            [t - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"]]
        for group, top in zip(optimizer.param_groups, max_lrs):
            group["initial_lr"] = top / div_factor
            group["max_lr"] = top
            group["min_lr"] = group["initial_lr"] / final_div_factor
        if cycle_momentum:
            for group, top, bottom in zip(optimizer.param_groups, tops, bottoms):
                self._set_momentum(group, top)
                group["max_momentum"] = top
                group["base_momentum"] = bottom
        super().__init__(optimizer)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _phase(self, step):
        """(phase, pct) of step ``step``: the phase it lies in and how far through it."""
        start_step = 0.0
        for i, phase in enumerate(self._phases):
            if step <= phase[0] or i == len(self._phases) - 1:
                return phase, (step - start_step) / (phase[0] - start_step)
            start_step = phase[0]

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {step} times; total_steps is {self.total_steps}")
        (_, start, end, m_start, m_end), pct = self._phase(step)
        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal(group[start], group[end], pct))
            if self.cycle_momentum:  # as torch: a side effect of computing the rates
                self._set_momentum(group, self._anneal(group[m_start], group[m_end], pct))
        return lrs

    def _write_groups(self):
        super()._write_groups()
        if self.cycle_momentum:
            (_, _, _, m_start, m_end), pct = self._phase(self.last_epoch)
            for group in self.optimizer.param_groups:
                self._set_momentum(group, self._anneal(group[m_start], group[m_end], pct))


class SequentialLR(LRScheduler):
    """Hand over from one scheduler to the next at each of ``milestones`` (torch's semantics: at a milestone
    the next scheduler restarts at its epoch 0, from the groups' ``initial_lr``)."""

    def __init__(self, optimizer, schedulers, milestones):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR schedulers must hold at least one scheduler")
        for i, s in enumerate(schedulers):
            if getattr(s, "optimizer", None) is not optimizer:
                raise ValueError(f"SequentialLR schedulers[{i}] belongs to another optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR milestones must have len(schedulers) - 1 = {len(schedulers) - 1} "
                             f"entries; got {len(milestones)}")
        if any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"SequentialLR milestones must be increasing positive integers; got {milestones!r}")
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

    def load_state_dict(self, state):
        state = dict(state)
        inner = state.pop("_schedulers")
        if len(inner) != len(self._schedulers):
            raise ValueError(f"SequentialLR state has {len(inner)} schedulers, not {len(self._schedulers)}")
        LRScheduler.load_state_dict(self, state)
        for s, d in zip(self._schedulers, inner):
            s.load_state_dict(d)
