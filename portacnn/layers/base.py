"""What every layer shares: :class:`Parameter`, the :class:`Layer` protocol and argument checks."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


class Parameter:
    """A trainable array and its gradient. ``name`` is the state-dict key ("0.weight") once in a model."""

    __slots__ = ("name", "data", "grad")

    def __init__(self, name: str, data: Any):
        self.name = name
        self.data = data
        self.grad = None

    def __repr__(self):
        return f"Parameter({self.name!r}, shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Layer:
    """A differentiable step of a :class:`~portacnn.Sequential` model.

    ``forward(x, training)`` keeps what ``backward`` needs; ``backward(grad_out)`` returns the gradient
    with respect to the input and stores the gradients of the layer's parameters in ``Parameter.grad``
    (``backward(grad_out, need_input_grad=False)`` may skip the input gradient and return None).
    ``initialize`` draws the parameters from the model's host generator, so every backend starts from the
    same numbers.

    What other modules may rely on is declared here, never probed: :meth:`parameters` (trained),
    :meth:`buffers` (state that is not trained, set back with :meth:`set_buffer`), :attr:`row_separable` (safe to cut a batch into row shards),
    :attr:`draws_random` (uses the model's generator while training), :attr:`input_channels` and
    :attr:`out_features` (the widths it fixes), :meth:`output_shape` and :meth:`replica`.
    """

    #: each output row depends on the same input row only, so a batch may be computed in row shards
    row_separable = True
    #: draws from the model's generator (``self.rng``) in a training forward pass, one array with the batch
    #: as first axis per call, so that data-parallel shards can take their rows of one whole-batch draw
    draws_random = False
    #: the channel count the input must have (None: any)
    input_channels = None
    #: the features of each output row, when the layer fixes them (None: they follow the input)
    out_features = None
    #: the rank of one input image the layer takes: 3 for images (C, H, W), 1 for flat features, None for any
    input_rank = None
    #: the features a flat input must have (None: any)
    input_features = None

    def initialize(self, rng: np.random.Generator, backend, dtype) -> None:
        """Create this layer's parameters (layers without parameters have nothing to do)."""

    def parameters(self) -> list[Parameter]:
        """The trained arrays, in state-dict order (``weight`` then ``bias`` by default)."""
        return [p for p in (getattr(self, "weight", None), getattr(self, "bias", None)) if p is not None]

    def named_parameters(self) -> dict[str, Parameter]:
        """Local name -> Parameter ("weight", "bias"; "body.0.weight" in a Residual, which overrides both
        methods); by default the last part of each parameter's own name."""
        return {p.name.rsplit(".", 1)[-1]: p for p in self.parameters()}

    def buffers(self) -> dict:
        """State that is not trained but belongs to the model (running statistics), local name -> array; none
        by default."""
        return {}

    def set_buffer(self, name: str, value) -> None:
        """Replace the buffer ``name`` (a key of :meth:`buffers`) by ``value`` (what loading and moving do)."""
        setattr(self, name, value)

    def sublayers(self) -> list[tuple[str, "Layer"]]:
        """(local name, layer) of the layers this one is made of ("body.0", ... for a Residual); none by default."""
        return []

    def output_shape(self, shape: tuple) -> tuple:
        """The per-image output shape for a per-image input ``shape`` ((C, H, W) or (F,)); unchanged by default.
        A ValueError (a phrase that follows the layer's name: "expects 3 input channels but gets 2") when the
        layer cannot take that input."""
        self.expect_rank(shape)
        return tuple(shape)

    def expect_rank(self, shape: tuple) -> None:
        """A ValueError when ``shape`` is not of :attr:`input_rank` (images (C, H, W) or flat features (F,))."""
        rank = self.input_rank
        if rank is None or len(shape) == rank:
            return
        if rank == 3:
            raise ValueError(f"would get flat input {tuple(shape)}: it takes images (C, H, W), so it cannot come "
                             "after a Flatten, Dense or GlobalAvgPool2D layer")
        raise ValueError(f"would get images of shape {tuple(shape)}: it takes flat features, so a Flatten must come "
                         "before it")

    # -- what a checkpoint reader asks of a layer before any array exists --------------------------------------
    def parameter_shapes(self) -> dict:
        """Local name -> shape of each parameter, in :meth:`parameters` order, from the configuration alone
        (nothing is allocated); none by default."""
        return {}

    def buffer_shapes(self) -> dict:
        """Local name -> shape of each buffer (:meth:`buffers`), from the configuration alone; none by default."""
        return {}

    def check_buffer(self, name: str, value) -> None:
        """A ValueError when a saved value (a host array) cannot be buffer ``name`` of this layer (a count that is
        not a whole number); anything goes by default."""

    def window_sizes(self) -> dict:
        """Name -> (h, w) of every spatial size the configuration names (kernel_size, stride, padding...), which
        a reader caps before it runs any shape; none by default."""
        return {}

    def cost(self, shape: tuple) -> dict:
        """What one image of input ``shape`` costs in this layer: ``operations`` (multiply-adds and comparisons),
        ``temporaries`` (values held besides the output, such as a padded copy) and ``columns`` (the largest
        im2col matrix, in values). Nothing by default (an element-wise layer's output is counted by the
        caller)."""
        return {"operations": 0, "temporaries": 0, "columns": 0}

    def replica(self) -> "Layer":
        """A copy for one data-parallel shard: the same configuration, its own :class:`Parameter` objects (each
        shard writes its own ``grad``) sharing the model's arrays. Layers with buffers must override it, since a
        shard updating its own copy of running statistics would silently diverge from the model."""
        if self.buffers():
            raise NotImplementedError(f"{type(self).__name__} has buffers and must define replica()")
        twin = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                setattr(twin, name, Parameter(value.name, value.data))
        return twin

    def release(self) -> None:
        """Drop what the last forward pass kept for backward (by convention the layer's private, underscore
        attributes): a model kept for inference then holds its weights only."""
        for name in [n for n in vars(self) if n.startswith("_")]:
            delattr(self, name)

    def __getstate__(self):
        """Pickles and deep copies hold the layer's configuration and parameters, not its forward caches."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the layer (stored in checkpoints)."""
        return {}

    def forward(self, x, training: bool = False):
        raise NotImplementedError

    def forward_then_relu(self, x, training: bool = False):
        """``max(forward(x), 0)`` in one pass with a backward that applies the ReLU's mask itself, or None when
        this layer cannot (the default)."""
        return None

    def fuse_after(self, before: "Layer", x, training: bool = False):
        """``self.forward(before.forward(x))`` in one step when the two can be fused, else None (the default)."""
        return None

    def infer(self, x):
        """The output in inference (what ``forward(x, training=False)`` returns; layers made of others override it
        to fold BatchNorm into convolutions, :mod:`.fold`)."""
        return self.forward(x, False)

    def backward(self, grad_out, need_input_grad=True):
        """Store parameter gradients; return d loss / d input, or None when ``need_input_grad`` is False
        (the first layer of a training step: nobody reads that gradient, and computing it is expensive)."""
        raise NotImplementedError

    def __call__(self, x, training: bool = False):
        return self.forward(x, training)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def short(self) -> str:
        """The layer in a few words, as a row of ``model.summary()`` shows it (Keras' habit): its type and the
        arguments that matter ("Conv2D(1->32, 3x3, pad 1)"); by default the type and the configuration's values
        ("Dropout(0.25)", "ReLU"). The full configuration is :meth:`__repr__`'s."""
        values = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in self.config().values())
        return f"{type(self).__name__}({values})" if values else type(self).__name__

    @staticmethod
    def _side(pair) -> str:
        """An (h, w) pair in a short description: "2" when both are equal, else "2x3"."""
        return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def run_forward(layers, x, training: bool = False):
    """``x`` through ``layers`` in order (what :meth:`Sequential.forward` and every data-parallel shard run).

    A layer followed by a ReLU may compute both in one pass (:meth:`Layer.forward_then_relu`, BatchNorm's fast
    path does); the ReLU is then told so (:meth:`~portacnn.layers.ReLU.fused`) and passes gradients through,
    its mask being applied by the layer before it."""
    i, n = 0, len(layers)
    while i < n:
        layer = layers[i]
        after = layers[i + 1] if i + 1 < n else None
        y = after.fuse_after(layer, x, training) if after is not None else None
        if y is not None:
            x, i = y, i + 2
            continue
        x = layer.forward(x, training)
        i += 1
    return x


def run_backward(layers, grad, input_grad: bool = True):
    """``grad`` back through ``layers`` in reverse; the first layer skips its input gradient unless asked
    (then None comes back, whatever the first layer returned)."""
    for i in range(len(layers) - 1, -1, -1):
        grad = layers[i].backward(grad, need_input_grad=input_grad or i > 0)
    return grad if input_grad else None


def check_distinct(layers, what: str) -> None:
    """A ValueError naming ``what`` when one layer object sits in two places of ``layers`` (nested ones
    included): the two places would share one forward cache and one set of parameters."""
    seen = set()

    def visit(items):
        for layer in items:
            if id(layer) in seen:
                raise ValueError(f"{what} holds the layer {layer!r} twice; give each place its own layer")
            seen.add(id(layer))
            visit([sub for _, sub in layer.sublayers()])

    visit(layers)


def check_input(layer: Layer, x, ndim: int, layout: str, channels: int | None = None) -> None:
    """Raise a ValueError naming the layer when ``x`` is not of rank ``ndim`` (and ``channels`` wide)."""
    shape = tuple(x.shape)
    if len(shape) != ndim or (channels is not None and shape[1] != channels):
        raise ValueError(f"{layer!r} expects input of shape {layout}; got shape {shape}")


def uniform(rng: np.random.Generator, bound: float, shape, backend, dtype):
    """PyTorch's default init: U(-bound, bound), drawn on the host, cast, moved once to the device."""
    host = rng.uniform(-bound, bound, size=shape)
    return backend.asarray(host, dtype=dtype)
