"""StepLR, CosineAnnealingLR and LinearLR: one rate formula each, in torch's recursive ("chainable") form, with
the closed form SequentialLR restarts them from."""

from __future__ import annotations

import math

from ...validation import Real
from .base import STEPS, LRScheduler


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)`` (applied as torch does: the current rate times ``gamma``
    at every non-zero multiple of ``step_size``)."""

    RULES = {"step_size": STEPS, "gamma": Real(0)}

    def __init__(self, optimizer, step_size, gamma=0.1):
        args = self.check_state(dict(step_size=step_size, gamma=gamma), "StepLR")
        self.step_size, self.gamma = args["step_size"], args["gamma"]
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

    RULES = {"T_max": STEPS, "eta_min": Real(0)}

    def __init__(self, optimizer, T_max, eta_min=0.0):
        args = self.check_state(dict(T_max=T_max, eta_min=eta_min), "CosineAnnealingLR")
        self.T_max, self.eta_min = args["T_max"], args["eta_min"]
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

    RULES = {"start_factor": Real(0, 1, low_open=True), "end_factor": Real(0, 1), "total_iters": STEPS}

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5):
        args = self.check_state(dict(start_factor=start_factor, end_factor=end_factor, total_iters=total_iters),
                                "LinearLR")
        self.start_factor, self.end_factor, self.total_iters = (args[k] for k in self.RULES)
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
