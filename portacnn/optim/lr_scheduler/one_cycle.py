"""OneCycleLR: the 1cycle policy, rates and momentum (beta1), as ``torch.optim.lr_scheduler.OneCycleLR``."""

from __future__ import annotations

import math

from ...validation import Boolean, Options, Real, _short, check
from .base import STEPS, LRScheduler, _per_group


def _phases(total_steps: int, pct_start: float, three_phase: bool) -> list[list]:
    """[end step, start lr, end lr, start momentum, end momentum] (group keys) of each phase, as torch's
    _schedule_phases."""
    t = total_steps
    if three_phase:
        return [[float(pct_start * t) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
                [float(2 * pct_start * t) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"],
                [t - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"]]
    return [[float(pct_start * t) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"],
            [t - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"]]


def _cycles_beta1(optimizer, cycle_momentum: bool) -> bool:
    """Whether the momentum cycled is beta1 (Adam, AdamW) rather than ``momentum`` (SGD, RMSprop); a ValueError
    if ``cycle_momentum`` and the optimizer has neither."""
    defaults = getattr(optimizer, "defaults", {})
    if cycle_momentum and "momentum" not in defaults and "betas" not in defaults:
        raise ValueError(f"OneCycleLR cycle_momentum=True needs an optimizer with momentum or betas (SGD, "
                         f"RMSprop, Adam, AdamW), not {type(optimizer).__name__}; pass cycle_momentum=False")
    return "betas" in defaults


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

    ``max_lr``, the factors and the momenta live on in the parameter groups (``initial_lr``, ``max_lr``,
    ``min_lr``, ``max_momentum``, ``base_momentum``), which the optimizer's own state saves and checks.
    """

    RULES = {"total_steps": STEPS, "pct_start": Real(0, 1), "anneal_strategy": Options("cos", "linear"),
             "div_factor": Real(0, low_open=True), "final_div_factor": Real(0, low_open=True),
             "three_phase": Boolean(), "cycle_momentum": Boolean()}
    #: the arguments given per parameter group (a number, or one per group), each value's rule; a momentum
    #: cycled into beta1 must also stay below 1
    PER_GROUP = {"max_lr": Real(0, low_open=True), "max_momentum": Real(0), "base_momentum": Real(0)}

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer (it has no param_groups)")
        args = self.check_state(dict(total_steps=total_steps, pct_start=pct_start, anneal_strategy=anneal_strategy,
                                     div_factor=div_factor, final_div_factor=final_div_factor,
                                     three_phase=three_phase, cycle_momentum=cycle_momentum), "OneCycleLR")
        self.total_steps, self.pct_start = args["total_steps"], args["pct_start"]
        self.anneal_strategy, self.cycle_momentum = args["anneal_strategy"], args["cycle_momentum"]
        max_lrs = self._per_group(optimizer, "max_lr", max_lr, self.PER_GROUP["max_lr"])
        self.use_beta1 = _cycles_beta1(optimizer, self.cycle_momentum)
        if self.cycle_momentum:
            rule = Real(0, 1, high_open=True) if self.use_beta1 else self.PER_GROUP["max_momentum"]
            tops = self._per_group(optimizer, "max_momentum", max_momentum, rule)
            bottoms = self._per_group(optimizer, "base_momentum", base_momentum, rule)
        self._phases = _phases(self.total_steps, self.pct_start, args["three_phase"])
        for group, top in zip(optimizer.param_groups, max_lrs):
            group["initial_lr"] = top / args["div_factor"]
            group["max_lr"] = top
            group["min_lr"] = group["initial_lr"] / args["final_div_factor"]
        if self.cycle_momentum:
            for group, top, bottom in zip(optimizer.param_groups, tops, bottoms):
                self._set_momentum(group, top)
                group["max_momentum"] = top
                group["base_momentum"] = bottom
        super().__init__(optimizer)

    @staticmethod
    def _per_group(optimizer, name, value, rule):
        return [check(v, rule, f"OneCycleLR {name}") for v in _per_group(f"OneCycleLR {name}", optimizer, value)]

    @classmethod
    def check_state(cls, state, what):
        """``RULES``' fields, ``use_beta1`` a bool, and ``_phases`` those of ``total_steps`` and ``pct_start``
        (2 phases, or 3 with ``three_phase``)."""
        out = super().check_state(state, what)
        if "use_beta1" in state:
            out["use_beta1"] = check(state["use_beta1"], Boolean(), f"{what} use_beta1")
        if "_phases" in state:
            phases = state["_phases"]
            if "total_steps" not in out or "pct_start" not in out or not isinstance(phases, list) \
                    or len(phases) not in (2, 3):
                raise ValueError(f"{what} _phases must be the 2 or 3 phases of its total_steps and pct_start; got "
                                 f"{_short(phases)}")
            want = _phases(out["total_steps"], out["pct_start"], len(phases) == 3)
            if phases != want:
                raise ValueError(f"{what} _phases must be {_short(want)} (those of total_steps {out['total_steps']} "
                                 f"and pct_start {out['pct_start']:g}); got {_short(phases)}")
            out["_phases"] = want
        return out

    def _check_loaded(self, state, what):
        super()._check_loaded(state, what)
        use_beta1 = _cycles_beta1(self.optimizer, state.get("cycle_momentum", self.cycle_momentum))
        if state.get("use_beta1", self.use_beta1) != use_beta1:
            raise ValueError(f"{what} use_beta1 is {state['use_beta1']}; this scheduler's optimizer "
                             f"({type(self.optimizer).__name__}) has {'betas' if use_beta1 else 'no betas'}")

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
