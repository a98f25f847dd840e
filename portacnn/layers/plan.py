"""Layers run on shapes only: what a stack of layers gives for one input image, and what that costs.

Each layer declares its own rules (:meth:`~portacnn.layers.Layer.output_shape` refuses an input it cannot take,
:meth:`~portacnn.layers.Layer.cost` says what one image costs); this module only walks them, so a reader of an
untrusted checkpoint (:mod:`portacnn.checkpoint`) checks an architecture without allocating an array or naming a
layer type, and :class:`~portacnn.layers.Residual` walks its branches the same way.
"""

from __future__ import annotations

import math

from ..validation import Integer, Tuple, _short


#: the per-image input shape of a stack of layers: (C, H, W) of images or (F,) of flat vectors
_SIZE = Integer(1, 1 << 31)
INPUT_SHAPE = Tuple(_SIZE, _SIZE, _SIZE) | Tuple(_SIZE)


def check_input_shape(value, what: str = "input_shape") -> tuple[int, ...]:
    """``value`` as a per-image input shape (:data:`INPUT_SHAPE`), or a one-line ValueError naming ``what``."""
    try:
        return INPUT_SHAPE.check(value, what)
    except ValueError:
        raise ValueError(f"{what} must be (C, H, W) (or (F,) for flat input) of positive ints; got {_short(value)}") \
            from None


def describe(key: str, layer) -> str:
    """How messages name a layer: "layer 3 (Conv2D)"."""
    return f"layer {key} ({type(layer).__name__})"


def walk(layers, shape: tuple, prefix: str = "") -> tuple[tuple, dict]:
    """(output shape, tally) of ``layers`` run in order on one image of ``shape``. The tally sums ``elements`` (every
    layer's output and temporaries), ``operations``, and keeps the largest ``columns``. A layer that cannot take
    what it gets is a ValueError naming it ("layer 3 (Conv2D) expects 3 input channels but gets 2")."""
    tally = {"elements": 0, "operations": 0, "columns": 0}
    cur = tuple(shape)
    for i, layer in enumerate(layers):
        key = f"{prefix}{i}"
        try:
            out = tuple(layer.output_shape(cur))
            cost = layer.cost(cur)
        except ValueError as e:
            text = str(e)  # a nested walk's "layer body.0 (Conv2D) ..." becomes "layer 3.body.0 (Conv2D) ..."
            raise ValueError(f"layer {key}.{text[6:]}" if text.startswith("layer ") else
                             f"{describe(key, layer)} {text}") from None
        tally["elements"] += math.prod(out) + cost.get("temporaries", 0)
        tally["operations"] += cost.get("operations", 0)
        tally["columns"] = max(tally["columns"], cost.get("columns", 0))
        cur = out
    return cur, tally
