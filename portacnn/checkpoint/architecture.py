"""A stored architecture checked before any array exists: layer objects built from it, run on shapes only.

The layers hold every rule (:mod:`portacnn.layers`: their constructors check their fields, ``output_shape``
refuses an input they cannot take, ``cost`` and ``window_sizes`` say what they need); this module names no layer
type. It adds only what is about the file: its size limits (:mod:`.limits`), and the input a model that does not
store its input shape takes:

* a model whose first layer with a rank takes flat features reads a vector of the first declared feature count
  (``DEFAULT_INPUT_SIDE`` squared when none is declared);
* otherwise square images of the first declared channel count (1 when none is; the feature count of the first
  flat-input layer when only a global pooling stands between, as it turns channels into features). A model whose
  image layers lead through a Flatten to a layer of F features takes the largest side up to ``MAX_INPUT_SIDE``
  that gives exactly F (per axis, so a map of 12x16 is found; the squarest map first); any other takes
  ``DEFAULT_INPUT_SIDE`` when it fits, else the smallest side that fits. Every square side up to
  ``MAX_INPUT_SIDE`` is tried through the layers' own rules (which sides fit need not be a range).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import float_dtype_name
from ..layers.plan import check_input_shape as plan_input_shape
from ..layers.plan import describe, walk
from ..layers.spec import layer_from_spec
from . import limits
from .limits import Bad

#: nesting of the JSON inside one layer description (a Residual's lists of layers add two levels per block)
_MAX_JSON_DEPTH = 64


def _count(arch) -> None:
    """MAX_LAYERS (nested layers included) and MAX_DEPTH, from the JSON alone (every object with a "type" is a
    layer), before any layer is built."""
    if not isinstance(arch, list) or not arch:
        raise Bad("it must be a non-empty list of layers")
    count = [0]

    def visit(node, layers_deep: int, json_deep: int) -> None:
        if json_deep > _MAX_JSON_DEPTH:
            raise Bad(f"it is nested more than {_MAX_JSON_DEPTH} levels deep")
        if isinstance(node, dict):
            if "type" in node:
                count[0] += 1
                layers_deep += 1
                if count[0] > limits.MAX_LAYERS:
                    raise Bad(f"it has more than MAX_LAYERS = {limits.MAX_LAYERS} layers (nested ones included)")
                if layers_deep > limits.MAX_DEPTH + 1:
                    raise Bad(f"it nests layers inside layers more than MAX_DEPTH = {limits.MAX_DEPTH} deep")
            for value in node.values():
                visit(value, layers_deep, json_deep + 1)
        elif isinstance(node, list):
            for value in node:
                visit(value, layers_deep, json_deep + 1)

    visit(arch, 0, 0)


def _every_layer(layers):
    """(key, layer) of every layer, nested ones after the layer holding them ("3", "3.body.0", ...)."""
    for i, layer in enumerate(layers):
        yield str(i), layer
        yield from ((f"{i}.{name}", sub) for name, sub in _nested(layer))


def _nested(layer):
    for name, sub in layer.sublayers():
        yield name, sub
        yield from ((f"{name}.{inner}", deeper) for inner, deeper in _nested(sub))


def _fmt(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


def build(arch) -> list:
    """The layers ``arch`` describes, each field checked by its constructor, every window size within the limits."""
    _count(arch)
    layers = []
    for i, spec in enumerate(arch):
        try:
            layers.append(layer_from_spec(spec, f"layer {i}"))
        except ValueError as e:
            raise Bad(str(e)) from None
    for key, layer in _every_layer(layers):
        sizes = layer.window_sizes()
        for name, value in sizes.items():
            if max(value) > limits.MAX_INPUT_SIDE:
                raise Bad(f"{describe(key, layer)} {name} {_fmt(value)} exceeds MAX_INPUT_SIDE = {limits.MAX_INPUT_SIDE}, "
                          "the largest image side a checkpoint may imply")
        k = sizes.get("kernel_size")
        if k is not None and k[0] * k[1] > limits.MAX_WINDOW:
            raise Bad(f"{describe(key, layer)} window {_fmt(k)} has {k[0] * k[1]} cells, more than MAX_WINDOW = "
                      f"{limits.MAX_WINDOW} (each is one pass over the batch)")
    return layers


def parameter_shapes(layers) -> dict[str, tuple]:
    """State-dict key -> shape of every parameter, in ``model.parameters()`` order."""
    return {f"{i}.{name}": shape for i, layer in enumerate(layers) for name, shape in layer.parameter_shapes().items()}


def buffer_shapes(layers) -> dict[str, tuple]:
    """State-dict key -> shape of every layer buffer (running statistics and counts)."""
    return {f"{i}.{name}": shape for i, layer in enumerate(layers) for name, shape in layer.buffer_shapes().items()}


def check_buffer(layers, key: str, value) -> None:
    """The owning layer's check of a saved buffer value (``key`` "3.num_batches_tracked")."""
    i, name = key.split(".", 1)
    try:
        layers[int(i)].check_buffer(name, value)
    except ValueError as e:
        raise Bad(f"tensor {key!r} {e}") from None


def check_input_shape(value, what: str = "input_shape") -> tuple[int, ...]:
    """(C, H, W) of images, or (F,) of flat vectors (the layers' rule), each side at most MAX_INPUT_SIDE."""
    try:
        shape = plan_input_shape(value, what)
    except ValueError as e:
        raise Bad(str(e)) from None
    if len(shape) == 3 and max(shape[1:]) > limits.MAX_INPUT_SIDE:
        raise Bad(f"{what} {shape} has a side beyond MAX_INPUT_SIDE = {limits.MAX_INPUT_SIDE}")
    return shape


def _first(layers, attribute):
    """(index, value) of the first layer whose ``attribute`` is not None, or (None, None)."""
    return next(((i, getattr(layer, attribute)) for i, layer in enumerate(layers)
                 if getattr(layer, attribute) is not None), (None, None))


def num_classes(layers) -> int | None:
    """The features of the last layer that fixes them (a classifier's class count; None: unknown), as
    ``Sequential.num_classes`` reads them."""
    return next((layer.out_features for layer in reversed(layers) if layer.out_features is not None), None)


def _image_part(layers, channels: int, side: int) -> int:
    """How many of ``layers`` keep images (C, H, W) on a ``side`` x ``side`` input: the rest start with the layer that
    makes them flat (a Flatten, a global pooling)."""
    shape = (channels, side, side)
    for i, layer in enumerate(layers):
        shape = tuple(layer.output_shape(shape))
        if len(shape) != 3:
            return i
    return len(layers)


def _scan(layers, channels: int) -> dict[int, tuple]:
    """Side -> output shape of ``layers`` for every square input up to MAX_INPUT_SIDE that they take (each layer's
    own rules: which sides fit need not be a range, as a Residual's branches may agree on even sides only)."""
    out = {}
    for side in range(1, limits.MAX_INPUT_SIDE + 1):
        try:
            out[side] = walk(layers, (channels, side, side))[0]
        except ValueError:
            continue
    return out


def assumed_input(layers) -> tuple[tuple[int, ...], str]:
    """The input a model without a stored ``input_shape`` takes, and how it was chosen (module docstring)."""
    top, side_default = limits.MAX_INPUT_SIDE, limits.DEFAULT_INPUT_SIDE
    _, rank = _first(layers, "input_rank")
    j, features = _first(layers, "input_features")
    if rank != 3:  # flat input (or no layer that cares)
        if features is None:
            return (side_default * side_default,), "assumed (DEFAULT_INPUT_SIDE)"
        return (features,), f"inferred from {describe(j, layers[j])}"
    prefix = layers if j is None else layers[:j]
    _, channels = _first(prefix, "input_channels")
    if features is None and channels is not None:  # nothing ties the side: the default, when it fits (one walk)
        try:
            walk(prefix, (channels, side_default, side_default))
            return (channels, side_default, side_default), "assumed (DEFAULT_INPUT_SIDE, or the smallest side that fits)"
        except ValueError:
            pass
    fits = _scan(prefix, channels or 1)
    if not fits:
        try:
            walk(prefix, (channels or 1, top, top))
        except ValueError as e:
            raise Bad(f"the architecture fits no input up to MAX_INPUT_SIDE = {top} pixels a side ({e})") from None
    largest = max(fits)
    cut = _image_part(prefix, channels or 1, largest)
    flattened = features is not None and cut < len(prefix)
    if channels is None and flattened:  # no layer fixes the channels: 1, or the features of layer j when what
        images = walk(prefix[:cut], (1, largest, largest))[0]  # flattens them is a global pooling (channels only)
        if walk(prefix[cut : cut + 1], images)[0] == (images[0],) and images[1] * images[2] > 1:
            channels, fits = features, _scan(prefix, features)
    channels = channels or 1
    if flattened and len({math.prod(shape) for shape in fits.values()}) > 1:  # images flattened into layer j's
        return _flattened_into(layers, prefix[:cut], channels, fits, features, j)  # features: they fix the side
    side = side_default if side_default in fits else min(fits)
    return (channels, side, side), "assumed (DEFAULT_INPUT_SIDE, or the smallest side that fits)"


def _flattened_into(layers, image_layers, channels, fits, features, j) -> tuple[tuple[int, ...], str]:
    """The input whose feature map, flattened, gives layer j's ``features``: per axis, the largest input side that
    gives each output side (the axes of a stack of windows are independent), then the squarest feature map."""
    largest = [{}, {}]  # output side -> the largest input side giving it, per axis
    out_channels = None
    for side in sorted(fits):
        c, ho, wo = walk(image_layers, (channels, side, side))[0]
        out_channels = c
        largest[0][ho], largest[1][wo] = side, side
    best = None
    if out_channels and features % out_channels == 0:
        area = features // out_channels
        for ho, h in largest[0].items():
            wo = area // ho
            if area % ho == 0 and wo in largest[1]:
                rank = (-abs(ho - wo), h * largest[1][wo], h)  # the squarest map (images are), then the largest input
                if best is None or rank > best[0]:
                    best = (rank, (channels, h, largest[1][wo]))
    if best is None:
        top = limits.MAX_INPUT_SIDE
        raise Bad(f"no input image up to {top}x{top} pixels gives the {features} features {describe(j, layers[j])} "
                  "expects (if you trust this file, raise portacnn.checkpoint.MAX_INPUT_SIDE)")
    return best[1], f"inferred from {describe(j, layers[j])}"


def plan(layers, shape, itemsize: int) -> dict:
    """The input the model takes (``shape``, or the assumed one when None) and what one such image costs; every
    cap checked."""
    how = "stored"
    if shape is None:
        shape, how = assumed_input(layers)
    try:
        out, tally = walk(layers, shape)
    except ValueError as e:
        raise Bad(f"{e} (from a {shape} input)") from None
    nbytes = (math.prod(shape) + tally["elements"] + tally["columns"]) * itemsize
    side = "" if how == "stored" else f" (input shape {how}; store the real one with save(..., input_shape=(C, H, W)))"
    if nbytes > limits.MAX_ACTIVATION_BYTES:
        raise Bad(f"one {shape} input needs {nbytes / 2**20:.0f} MiB of activations, over MAX_ACTIVATION_BYTES = "
                  f"{limits.MAX_ACTIVATION_BYTES / 2**20:.0f} MiB per image{side}; if you trust this file, raise "
                  "portacnn.checkpoint.MAX_ACTIVATION_BYTES")
    if tally["operations"] > limits.MAX_OPERATIONS:
        raise Bad(f"one {shape} input needs {tally['operations']:.3g} operations, over MAX_OPERATIONS = "
                  f"{limits.MAX_OPERATIONS:.3g} per image{side}; if you trust this file, raise "
                  "portacnn.checkpoint.MAX_OPERATIONS")
    return {"input_shape": shape, "input_shape_from": how, "activation_bytes": nbytes,
            "operations": tally["operations"], "output_shape": out}


def check_architecture(arch, input_shape=None, dtype="float32") -> dict:
    """Validate an architecture (``Sequential.architecture()`` output) as :func:`portacnn.load` does, without
    building any array.

    Returns ``{"input_shape", "input_shape_from", "activation_bytes", "operations", "output_shape",
    "parameters"}`` for one image of the input the model takes (``input_shape``, else the one inferred or
    assumed as the module docstring says); raises ValueError naming the first problem or exceeded limit.
    """
    itemsize = np.dtype(float_dtype_name(dtype)).itemsize
    try:
        layers = build(arch)
        shape = None if input_shape is None else check_input_shape(input_shape)
        result = plan(layers, shape, itemsize)
    except Bad as e:
        raise ValueError(f"unusable architecture: {e}") from None
    return {**result, "parameters": sum(math.prod(s) for s in parameter_shapes(layers).values())}
