"""Fully connected layer.

Shapes: x (N, in), W (out, in) (PyTorch's layout), b (out,), y (N, out).

    forward:   y = x @ W^T + b
    backward:  dW = dy^T @ x      db = sum_n dy      dx = dy @ W
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from ..kernels.gemm import matmul
from ..validation import Boolean, Integer, check_all
from .base import Layer, Parameter, check_input, uniform


class Dense(Layer):
    """Dense(in_features, out_features, bias=True), like torch.nn.Linear (same default initialisation)."""

    RULES = {"in_features": Integer(1), "out_features": Integer(1), "bias": Boolean()}
    input_rank = 1

    def __init__(self, in_features, out_features, bias=True):
        args = check_all("Dense", dict(in_features=in_features, out_features=out_features, bias=bias), self.RULES)
        self.in_features, self.out_features, self.use_bias = args["in_features"], args["out_features"], args["bias"]
        self.weight = self.bias = None

    @property
    def input_features(self):
        return self.in_features

    def output_shape(self, shape):
        self.expect_rank(shape)
        if shape[0] != self.in_features:
            raise ValueError(f"expects {self.in_features} features but gets {shape[0]}")
        return (self.out_features,)

    def parameter_shapes(self):
        shapes = {"weight": (self.out_features, self.in_features)}
        return {**shapes, "bias": (self.out_features,)} if self.use_bias else shapes

    def cost(self, shape):
        return {"operations": self.in_features * self.out_features, "temporaries": 0, "columns": 0}

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.use_bias)

    def short(self):
        return f"Dense({self.in_features}->{self.out_features}{'' if self.use_bias else ', no bias'})"

    def initialize(self, rng, backend, dtype):
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter("weight", uniform(rng, bound, (self.out_features, self.in_features), backend, dtype))
        if self.use_bias:
            self.bias = Parameter("bias", uniform(rng, bound, (self.out_features,), backend, dtype))

    def forward(self, x, training=False):
        xp = array_namespace(x)
        check_input(self, x, 2, f"(N, {self.in_features})", self.in_features)
        self._x = x
        y = matmul(x, xp.matrix_transpose(self.weight.data))
        return y if self.bias is None else y + self.bias.data

    def backward(self, grad_out, need_input_grad=True):
        xp = array_namespace(grad_out)
        self.weight.grad = matmul(xp.matrix_transpose(grad_out), self._x)
        if self.bias is not None:
            self.bias.grad = xp.sum(grad_out, axis=0)
        return matmul(grad_out, self.weight.data) if need_input_grad else None
