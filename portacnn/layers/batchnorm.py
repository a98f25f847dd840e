"""Batch normalisation, like torch.nn.BatchNorm2d / BatchNorm1d (same state keys, defaults and statistics).

Per channel c, over the M = N*H*W values of a batch x (N, C, H, W) (M = N for BatchNorm1D's (N, C)):

    training:  mu = mean(x)      var = mean((x - mu)^2)  (biased)      invstd = 1 / sqrt(var + eps)
               xhat = (x - mu) * invstd                  y = w * xhat + b
               running_mean <- (1 - momentum) * running_mean + momentum * mu
               running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)  (unbiased, as torch)
               num_batches_tracked <- num_batches_tracked + 1
    inference: invstd = 1 / sqrt(running_var + eps)      xhat = (x - running_mean) * invstd      y = w * xhat + b

    backward:  dw = sum(dy * xhat)      db = sum(dy)                                  (sums over N, H, W)
               training:  dx = (w * invstd / M) * (M * dy - db - xhat * dw)   (the batch statistics depend on x)
               inference: dx = w * invstd * dy                                 (a fixed per-channel affine map)

Data-parallel training over several processes (:mod:`portacnn.distributed`) sets ``sync``: a function
``sync(partial, m) -> (total, M)`` summing per-channel partial sums over every process's rows of the batch (m:
this process's count of values per channel) and giving the whole batch's M. The statistics and the backward's two sums are then the whole batch's (torch's
SyncBatchNorm)::

    mu = sync(sum(x)) / M      var = sync(sum((x - mu)^2)) / M      [db, dw] of the dx formula: sync([db, dw])

while ``weight.grad`` and ``bias.grad`` keep this process's part (the gradient allreduce adds the parts).

Without ``affine`` there is no weight or bias (w = 1, b = 0). Parameters: ``weight`` (ones), ``bias`` (zeros).
Buffers (:meth:`buffers`, set back by the model as the attributes of the same names): ``running_mean``
(zeros) and ``running_var`` (ones) in the model's dtype, and ``num_batches_tracked``, a 0-d int64 array as
in torch (a checkpoint stores it as a float64 tensor; loading turns it back into an int64 count). Buffers
are updated with array operations only (no host synchronisation). The layer mixes the rows of a batch, so
it is not row-separable: a model holding one is never cut into data-parallel shards.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace

from ..kernels import fast_path
from ..validation import Boolean, Integer, Real, check_all
from .base import Layer, Parameter, check_input

#: the largest num_batches_tracked a saved buffer may hold: counts are stored as float64, exact up to 2**53
MAX_TRACKED = 1 << 53


class _BatchNorm(Layer):
    """What BatchNorm2D and BatchNorm1D share; subclasses fix the input rank, the layout and the axes."""

    row_separable = False  # the batch statistics mix the rows
    sync = None  # set while data-parallel training sums the statistics over several processes
    _rank = 0
    _axes: tuple = ()

    RULES = {"num_features": Integer(1), "eps": Real(0.0, low_open=True), "momentum": Real(0.0, 1.0),
             "affine": Boolean()}

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        args = check_all(type(self).__name__, dict(num_features=num_features, eps=eps, momentum=momentum,
                                                   affine=affine), self.RULES)
        self.num_features, self.eps = args["num_features"], args["eps"]
        self.momentum, self.affine = args["momentum"], args["affine"]
        self.weight = self.bias = None
        self.running_mean = self.running_var = self.num_batches_tracked = None
        self.sync = None

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum, affine=self.affine)

    def short(self):
        return f"{type(self).__name__}({self.num_features}{'' if self.affine else ', no affine'})"

    def initialize(self, rng, backend, dtype):
        c = self.num_features
        if self.affine:
            self.weight = Parameter("weight", backend.asarray(np.ones(c), dtype=dtype))
            self.bias = Parameter("bias", backend.asarray(np.zeros(c), dtype=dtype))
        self.running_mean = backend.asarray(np.zeros(c), dtype=dtype)
        self.running_var = backend.asarray(np.ones(c), dtype=dtype)
        self.num_batches_tracked = backend.asarray(np.zeros((), dtype=np.int64))

    def buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var,
                "num_batches_tracked": self.num_batches_tracked}

    def parameter_shapes(self):
        c = self.num_features
        return {"weight": (c,), "bias": (c,)} if self.affine else {}

    def buffer_shapes(self):
        c = self.num_features
        return {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}

    def check_buffer(self, name, value):
        if name == "num_batches_tracked":
            count = float(np.asarray(value))
            if not (0 <= count <= MAX_TRACKED and count == math.floor(count)):
                raise ValueError(f"must hold a whole number of batches in 0..2**53; got {count!r}")

    def output_shape(self, shape):
        self.expect_rank(shape)
        if shape[0] != self.num_features:
            unit = "channels" if self.input_rank == 3 else "features"
            raise ValueError(f"expects {self.num_features} {unit} but gets {shape[0]}")
        return tuple(shape)

    def cost(self, shape):
        return {"operations": math.prod(shape), "temporaries": 0, "columns": 0}

    def _layout(self) -> str:
        raise NotImplementedError

    def _channels(self, xp, v):
        """A per-channel vector (C,) shaped to broadcast against the input."""
        return xp.reshape(v, (1, self.num_features) + (1,) * (self._rank - 2))

    def forward(self, x, training=False):
        return self._forward(x, training, relu=False)

    def forward_then_relu(self, x, training=False):
        """``max(bn(x), 0)`` in the pass that normalises, on a backend whose fast path fuses it (else None)."""
        if not (training and fast_path(x, "batchnorm_forward_train_relu") is not None):
            return None
        return self._forward(x, training, relu=True)

    def _forward(self, x, training, relu):
        xp = array_namespace(x)
        check_input(self, x, self._rank, self._layout(), self.num_features)
        axes = self._axes
        m = local = math.prod(int(x.shape[a]) for a in axes)
        self._fast = None
        name = "batchnorm_forward_train_relu" if relu else "batchnorm_forward_train"
        fast = fast_path(x, name) if training and self.sync is None and m >= 2 else None
        if fast is not None:  # a backend's one- or two-pass version (kernels/): the same statistics and output
            w, b = (None, None) if self.weight is None else (self.weight.data, self.bias.data)
            y, mean, var, saved = fast(x, w, b, self.eps)
            self._update_running(xp, mean, var, m)
            self._fast = (fast_path(x, "batchnorm_backward_train"), saved)
            return y
        if relu:
            return None
        if training:
            if self.sync is not None:  # the whole batch's statistics, over every process's rows
                total, m = self.sync(xp.sum(x, axis=axes), local)
                mean = total / float(m)
                xc = x - self._channels(xp, mean)
                var = self.sync(xp.sum(xc * xc, axis=axes), local)[0] / float(m)
            if m < 2:
                raise ValueError(f"{self!r} needs more than 1 value per channel when training; got input of shape "
                                 f"{tuple(x.shape)}")
            if self.sync is None:
                mean = xp.mean(x, axis=axes)
                xc = x - self._channels(xp, mean)
                var = xp.mean(xc * xc, axis=axes)
            invstd = 1.0 / xp.sqrt(var + self.eps)
            self._update_running(xp, mean, var, m)
        else:
            invstd = 1.0 / xp.sqrt(self.running_var + self.eps)
            xc = x - self._channels(xp, self.running_mean)
        xhat = xc * self._channels(xp, invstd)
        self._xhat, self._invstd, self._m, self._local, self._training = xhat, invstd, m, local, bool(training)
        if self.weight is None:
            return xhat
        return xhat * self._channels(xp, self.weight.data) + self._channels(xp, self.bias.data)

    def _update_running(self, xp, mean, var, m):
        mom = self.momentum
        self.running_mean = (1.0 - mom) * self.running_mean + mom * mean
        self.running_var = (1.0 - mom) * self.running_var + (mom * m / (m - 1)) * var
        self.num_batches_tracked = xp.asarray(self.num_batches_tracked + 1)

    def backward(self, grad_out, need_input_grad=True):
        if getattr(self, "_fast", None) is not None:
            fast, saved = self._fast
            dx, dw, db = fast(saved, None if self.weight is None else self.weight.data, grad_out, need_input_grad)
            if self.weight is not None:
                self.weight.grad, self.bias.grad = dw, db
            return dx
        xp = array_namespace(grad_out)
        axes, xhat = self._axes, self._xhat
        db = xp.sum(grad_out, axis=axes)
        dw = xp.sum(grad_out * xhat, axis=axes)
        if self.weight is not None:
            self.weight.grad, self.bias.grad = dw, db
        if not need_input_grad:
            return None
        scale = self._invstd if self.weight is None else self.weight.data * self._invstd
        if not self._training:
            return grad_out * self._channels(xp, scale)
        m = self._m
        if self.sync is not None:  # the whole batch's sums; the parameters' gradients above stay this process's part
            both, _ = self.sync(xp.stack([db, dw]), self._local)
            db, dw = both[0, ...], both[1, ...]
        inner = float(m) * grad_out - self._channels(xp, db) - xhat * self._channels(xp, dw)
        return inner * self._channels(xp, scale / float(m))


class BatchNorm2D(_BatchNorm):
    """BatchNorm2D(num_features, eps=1e-5, momentum=0.1, affine=True), like torch.nn.BatchNorm2d: input (N, C, H, W),
    statistics per channel over N, H and W."""

    _rank = 4
    _axes = (0, 2, 3)
    input_rank = 3

    @property
    def input_channels(self):
        return self.num_features

    def _layout(self):
        return f"(N, {self.num_features}, H, W)"


class BatchNorm1D(_BatchNorm):
    """BatchNorm1D(num_features, eps=1e-5, momentum=0.1, affine=True), like torch.nn.BatchNorm1d on input (N, C):
    statistics per feature over the batch."""

    _rank = 2
    _axes = (0,)
    input_rank = 1

    @property
    def out_features(self):
        return self.num_features

    @property
    def input_features(self):
        return self.num_features

    def _layout(self):
        return f"(N, {self.num_features})"
