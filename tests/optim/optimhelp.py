"""Helpers shared by the optimizer tests: a small model with parameters of several shapes, host snapshots of
its parameters, and a seeded sequence of gradients."""

import numpy as np

import portacnn as pc
from conftest import to_numpy
from portacnn.layers import Conv2D, Dense, Flatten


def small_model(backend, dtype):
    """Parameters of several shapes: (3,2,3,3), (3,), (4,12), (4,)."""
    return pc.Sequential([Conv2D(2, 3, 3), Flatten(), Dense(12, 4)], backend=backend, dtype=dtype, seed=7)


def snapshot(backend, params):
    return [np.array(to_numpy(backend, p.data), dtype=np.float64, copy=True) for p in params]


def grad_sequence(params, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(tuple(p.data.shape)) for p in params] for _ in range(steps)]
