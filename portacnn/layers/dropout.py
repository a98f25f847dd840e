"""Inverted dropout: while training, y = x * m / (1 - p) with m ~ Bernoulli(1 - p); at inference y = x.

The mask is drawn from the model's host NumPy generator (the standard has no random numbers), so a
seeded model drops the same units on every backend. backward: dx = dy * m / (1 - p).
"""

from __future__ import annotations

import numpy as np

from ..backend import asarray_like, numpy_dtype
from ..validation import Real, check_all
from .base import Layer


class Dropout(Layer):
    """Dropout(p): zero each element with probability p while training (p in [0, 1))."""

    draws_random = True

    RULES = {"p": Real(0.0, 1.0, high_open=True)}

    def __init__(self, p=0.5):
        self.p = check_all("Dropout", dict(p=p), self.RULES)["p"]
        self.rng = None

    def config(self):
        return dict(p=self.p)

    def initialize(self, rng, backend, dtype):
        self.rng = rng

    def forward(self, x, training=False):
        if not training or self.p == 0.0:
            self._scale = None
            return x
        if self.rng is None:
            raise RuntimeError("Dropout must belong to a Sequential model (which gives it a seeded generator)")
        keep = self.rng.random(tuple(x.shape), dtype=np.float32) >= self.p
        host_dtype = numpy_dtype(x.dtype)
        mask = keep.astype(host_dtype) * host_dtype.type(1.0 / (1.0 - self.p))
        self._scale = asarray_like(mask, x)  # to x's backend and device, whatever model.to() did
        return x * self._scale

    def backward(self, grad_out, need_input_grad=True):
        return grad_out if self._scale is None else grad_out * self._scale
