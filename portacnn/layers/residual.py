"""A residual block, as in ResNet: ``y = body(x) + shortcut(x)`` (the shortcut is the identity when None).

    forward:   y  = F(x) + S(x)          F = the body's layers in order, S = the shortcut's (or S(x) = x)
    backward:  dx = dF^T(dy) + dS^T(dy)   (each branch back-propagates the same dy; S = identity gives dy)

Both branches must give the same shape (a 1x1 strided Conv2D with a BatchNorm2D is the usual shortcut when
the body changes the channels or the size). Inside a :class:`~portacnn.Sequential` its parameters and
buffers are named like a torch module with ``body`` and ``shortcut`` sub-``Sequential``s:
"<i>.body.<j>.weight", "<i>.shortcut.<j>.running_mean", ...
"""

from __future__ import annotations

import math

from .base import Layer, check_distinct, run_backward, run_forward
from .fold import run_infer
from .plan import walk
from .spec import layer_from_spec, layer_spec


def _branch(layers, what: str) -> list:
    """A list of layers from a Layer, a list of layers, or their descriptions (as :meth:`config` gives them)."""
    items = [layers] if isinstance(layers, (Layer, dict)) else list(layers) if isinstance(layers, (list, tuple)) else None
    if not items:
        raise ValueError(f"Residual {what} must be a layer or a non-empty list of layers; got {layers!r}")
    out = []
    for j, item in enumerate(items):
        if isinstance(item, dict):
            item = layer_from_spec(item, f"Residual {what} item {j}")
        if not isinstance(item, Layer):
            raise ValueError(f"Residual {what} item {j} is not a portacnn layer: {item!r}")
        out.append(item)
    return out


class Residual(Layer):
    """Residual(layers, shortcut=None): ``layers(x) + shortcut(x)``, ``x`` itself when ``shortcut`` is None."""

    def __init__(self, layers, shortcut=None):
        self.body = _branch(layers, "layers")
        self.shortcut = None if shortcut is None else _branch(shortcut, "shortcut")
        check_distinct(self.children(), "Residual")

    def children(self) -> list:
        return self.body + (self.shortcut or [])

    def sublayers(self):
        """(prefix, layer) for each layer: "body.<j>" and "shortcut.<j>"."""
        named = [(f"body.{j}", layer) for j, layer in enumerate(self.body)]
        return named + [(f"shortcut.{j}", layer) for j, layer in enumerate(self.shortcut or [])]

    def config(self):
        return dict(layers=[layer_spec(layer) for layer in self.body],
                    shortcut=None if self.shortcut is None else [layer_spec(layer) for layer in self.shortcut])

    def short(self):
        return "Residual"  # its layers have their own rows in a summary

    def __repr__(self):
        body = ", ".join(repr(layer) for layer in self.body)
        short = "None" if self.shortcut is None else "[" + ", ".join(repr(layer) for layer in self.shortcut) + "]"
        return f"Residual([{body}], shortcut={short})"

    # -- the layer contract, from the children ------------------------------------------------------------
    def initialize(self, rng, backend, dtype):
        for layer in self.children():
            layer.initialize(rng, backend, dtype)

    def named_parameters(self):
        return {f"{prefix}.{name}": p for prefix, layer in self.sublayers()
                for name, p in layer.named_parameters().items()}

    def parameters(self):
        return list(self.named_parameters().values())

    def buffers(self):
        return {f"{prefix}.{name}": v for prefix, layer in self.sublayers() for name, v in layer.buffers().items()}

    def set_buffer(self, name, value):
        branch, j, rest = name.split(".", 2)
        (self.body if branch == "body" else self.shortcut)[int(j)].set_buffer(rest, value)

    @property
    def row_separable(self):
        return all(layer.row_separable for layer in self.children())

    @property
    def draws_random(self):
        return any(layer.draws_random for layer in self.children())

    @property
    def rng(self):
        """The generator of the first layer that draws random numbers (None when none does)."""
        return next((layer.rng for layer in self.children() if layer.draws_random), None)

    @rng.setter
    def rng(self, value):  # a data-parallel shard hands every drawing layer its stand-in
        for layer in self.children():
            if layer.draws_random:
                layer.rng = value

    @property
    def input_channels(self):
        return next((layer.input_channels for layer in self.children() if layer.input_channels is not None), None)

    @property
    def out_features(self):
        return next((layer.out_features for layer in reversed(self.body) if layer.out_features is not None), None)

    @property
    def input_rank(self):
        return next((layer.input_rank for layer in self.body if layer.input_rank is not None), None)

    def _branches(self, shape):
        """(output shape, tally) of the body and of the shortcut (the input itself when None), as :func:`.walk`
        gives them; a ValueError when a branch cannot take ``shape`` or the two disagree."""
        main = walk(self.body, shape, "body.")
        side = (tuple(shape), {"elements": 0, "operations": 0, "columns": 0}) if self.shortcut is None else \
            walk(self.shortcut, shape, "shortcut.")
        if main[0] != side[0]:
            raise ValueError(f"Residual: its layers give shape {main[0]} but its shortcut gives {side[0]} for input "
                             f"{tuple(shape)}; give it a shortcut (e.g. a 1x1 Conv2D with the body's stride) that matches")
        return main, side

    def output_shape(self, shape):
        return self._branches(tuple(shape))[0][0]

    def cost(self, shape):
        (out, main), (_, side) = self._branches(tuple(shape))
        return {"operations": main["operations"] + side["operations"] + math.prod(out),
                "temporaries": main["elements"] + side["elements"],  # every output inside both branches
                "columns": max(main["columns"], side["columns"])}

    def parameter_shapes(self):
        return {f"{prefix}.{name}": s for prefix, layer in self.sublayers()
                for name, s in layer.parameter_shapes().items()}

    def buffer_shapes(self):
        return {f"{prefix}.{name}": s for prefix, layer in self.sublayers() for name, s in layer.buffer_shapes().items()}

    def check_buffer(self, name, value):
        branch, j, rest = name.split(".", 2)
        (self.body if branch == "body" else self.shortcut)[int(j)].check_buffer(rest, value)

    def replica(self):
        twin = Residual.__new__(Residual)
        twin.body = [layer.replica() for layer in self.body]
        twin.shortcut = None if self.shortcut is None else [layer.replica() for layer in self.shortcut]
        return twin

    def release(self):
        super().release()
        for layer in self.children():
            layer.release()

    # -- the math -----------------------------------------------------------------------------------------
    def forward(self, x, training=False):
        main = run_forward(self.body, x, training)
        side = x if self.shortcut is None else run_forward(self.shortcut, x, training)
        if tuple(main.shape) != tuple(side.shape):
            raise ValueError(f"Residual: its layers give shape {tuple(main.shape)} but its shortcut gives "
                             f"{tuple(side.shape)} for input {tuple(x.shape)}; give it a shortcut that matches")
        return main + side

    def infer(self, x):
        main = run_infer(self.body, x)
        side = x if self.shortcut is None else run_infer(self.shortcut, x)
        if tuple(main.shape) != tuple(side.shape):
            return self.forward(x, False)  # the same error message as forward
        return main + side

    def backward(self, grad_out, need_input_grad=True):
        main = run_backward(self.body, grad_out, need_input_grad)
        if self.shortcut is None:
            return main + grad_out if need_input_grad else None
        side = run_backward(self.shortcut, grad_out, need_input_grad)
        return main + side if need_input_grad else None
