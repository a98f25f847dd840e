"""Checkpoints: safetensors files that rebuild a model (and its training state) on any backend.

A checkpoint holds the parameters and layer buffers (a BatchNorm's running statistics, its
num_batches_tracked count stored as a float64 tensor) under their state-dict keys ("0.weight",
"1.running_mean", ...), optimizer buffers under
"optim.<param index>.<name>", and JSON metadata: the architecture, dtype, seed, portacnn version, the input
image shape when known, and, when saved during training, the optimizer's type and hyper-parameters, the
trainer's position (epoch, step, history, random generator state) and free-form run information
("extra"). safetensors is a flat header plus raw numbers: loading it can never run code, unlike
pickle-based formats.

Files are written atomically: to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the target, so a crash at any moment leaves either the previous complete file or the new one.

Trust nothing
-------------
:func:`load` treats every file as hostile. Each problem is a :class:`CheckpointError` (a ValueError) of
one line naming the file, raised from the header and the stored numbers alone, in well under a second,
before the model, its activations or any other large array exists:

* **Integrity.** Every checkpoint portacnn writes carries a SHA-256 over all tensors and metadata; one
  that does not match is refused. A file *without* one is refused too (a flipped bit in a weight would
  otherwise load unnoticed), unless the caller opts out for a foreign file it trusts:
  ``load(path, allow_unsigned=True)``. The opt-out skips nothing else, and never accepts a wrong checksum.
* **Architecture.** Layer fields are checked one by one (types, known fields only, ``MAX_LAYERS`` counting
  the layers inside Residual blocks, which nest at most ``MAX_DEPTH`` deep; kernel sizes, dilated kernels,
  strides and paddings at most ``MAX_INPUT_SIDE``; a convolution's padding below its dilated kernel size,
  "same" only with stride 1, a pooling padding at most half its window, as in torch; at most
  ``MAX_WINDOW`` cells per window), then
  the layers are run on *shapes only* for the input the model takes: every window must fit its input
  (a convolution's padded input at least its dilated kernel; a pool's ``kernel_size - padding <= input
  size``: a larger window only sees padding past both edges of the image), channels and features must chain (both branches of a Residual block to the same shape), and one
  image may need at most ``MAX_ACTIVATION_BYTES`` of
  activations (the input, every layer's output, every padded copy and the largest im2col matrix, times
  the dtype's size) and ``MAX_OPERATIONS`` multiply-adds and comparisons.
* **The input the model takes** is, in this order: the ``input_shape`` stored in the metadata (written
  by :func:`save` when it is known: given as ``save(..., input_shape=(C, H, W))``, kept from the file a
  model was loaded from, or (1, 28, 28) for the zoo's networks); else, for a model whose first Dense layer
  follows a Flatten, the largest image up to ``MAX_INPUT_SIDE`` x ``MAX_INPUT_SIDE`` whose features fit
  that layer, with the squarest feature map (29x29 or 31x31 for the zoo's layers; channels from the
  first convolution, 1 without one; a GlobalAvgPool2D reached before any convolution takes the
  in_features of the Dense layer after it as channels); else ``DEFAULT_INPUT_SIDE`` (28, the library's
  images) per side when the model takes it, or the smallest side up to ``MAX_INPUT_SIDE`` that it takes. A model whose
  first layers are not convolutions or pooling reads a flat vector of its first Dense layer's
  ``in_features``. :func:`check_architecture` tells which input a model gets and what it costs.
* **Weights** (parameters and layer buffers) must be float, finite, and exactly the keys and shapes the
  architecture implies (compared before anything is built; a num_batches_tracked count a non-negative whole
  number); optimizer buffers must belong to a parameter and have its shape.
* **Metadata fields** follow an explicit schema: ``optimizer`` (type sgd, adam, adamw or rmsprop, exactly
  its hyper-parameters, each of the right type and range, per-parameter step counts, and its parameter
  groups: each group's hyper-parameters and schedule keys, their parameter indices a partition of the
  model's parameters; files without groups load as one group), ``train_state`` (the fields ``fit`` writes,
  non-negative and consistent: ``step <= seen <= step * batch_size``, ``correct <= seen``, history lists of
  finite floats, one per finished epoch, a random generator state numpy accepts, and the callbacks' states:
  bounded JSON, the known callbacks' fields checked one by one) and ``extra`` (free-form JSON, but the keys
  the CLI writes are typed and bounded: ``model`` and ``protocol`` short names, ``epochs`` in
  1..``MAX_EPOCHS``, ``limit`` a non-negative int or null, ``data`` a string or null, and the training
  recipe: ``optimizer``, ``schedule``, ``lr``, ``weight_decay``, ``label_smoothing``, ``val_split``,
  ``early_stopping``, ``augment``). Nothing read from a checkpoint is ever used as a path to open:
  ``extra["data"]`` only records where a run's data came from.

Every limit is a module constant: a model beyond one is refused with a message naming it; raise it
(``portacnn.checkpoint.MAX_ACTIVATION_BYTES = ...``) only for a file you trust. :func:`save` runs the same
checks on what it is about to write and refuses (writing nothing) rather than produce a file that
:func:`load` would refuse, so every checkpoint portacnn writes loads.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from pathlib import Path

import numpy as np

from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ._atomic import atomic_write
from ._version import __version__
from .backend import DTYPES, float_dtype_name
from .layers.base import pair
from .optim import OPTIMIZERS
from .optim.lr_scheduler import check_saved_state
from .train_state import TrainState

FORMAT = "portacnn-checkpoint"
FORMAT_VERSION = "1"

# -- limits (module constants: raise one only for a file you trust) -----------------------------------------
#: a real header is a few KB (tensor offsets, architecture, per-epoch history); 16 MiB holds MAX_EPOCHS epochs
_MAX_HEADER = 16 * 1024 * 1024
#: layers in an architecture: far deeper than anything this CPU-first library trains
MAX_LAYERS = 256
#: tensors in a file, for MAX_LAYERS layers of the most: a BatchNorm's 2 parameters with at most 3 optimizer
#: buffers each, and its 3 buffers
MAX_TENSORS = 11 * MAX_LAYERS
#: largest image side (and kernel size, stride, padding) a checkpoint may imply; the zoo reads 28x28
MAX_INPUT_SIDE = 1024
#: image side assumed for a model that neither stores its input shape nor implies one through a Dense layer
DEFAULT_INPUT_SIDE = 28
#: cells of one convolution or pooling window (kh * kw): each is a pass over the batch (~3 us of Python alone)
MAX_WINDOW = 128 * 128
#: activation memory of ONE image (a batch of N needs N times this); VGG-16 at 224x224 needs ~0.55 GiB in float64
MAX_ACTIVATION_BYTES = 1 << 30
#: multiply-adds and comparisons of one image's forward pass; VGG-16 at 224x224 is 1.5e10
MAX_OPERATIONS = 2 * 10**10
#: epochs of a run (train_state, history, extra["epochs"])
MAX_EPOCHS = 100_000
#: images per batch in a training state
MAX_BATCH_SIZE = 1 << 24
#: counters (steps, images seen, optimizer updates) must fit the int64 the trainer keeps them in on a device
_MAX_COUNT = (1 << 63) - 1
#: characters of a string the CLI stores in "extra" ("model", "protocol": names; "data": a path)
_MAX_NAME, _MAX_TEXT = 64, 4096
#: training protocols the CLI knows (extra["protocol"])
PROTOCOLS = ("full", "tutorial")
#: the learning-rate schedules the command line offers (``extra["schedule"]`` of its checkpoints)
SCHEDULES = ("constant", "step", "cosine", "onecycle")
#: ... and its augmentations (``extra["augment"]``)
AUGMENTATIONS = ("none", "affine", "affine+erase")


class CheckpointError(ValueError):
    """A file that is not a usable portacnn checkpoint; the message names the file and the problem."""


class _Bad(Exception):
    """One problem found by a validator; the caller puts the file name and the section in front."""


def _in_checked(check, *args) -> None:
    """``check(*args)`` with its ValueError turned into a refusal of the file (:class:`_Bad`)."""
    try:
        check(*args)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- scalar checks ------------------------------------------------------------------------------------------
def _int(value, what, low=0, high=_MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what} must be an integer; got {_short(value)}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"in {low}..{high}"
        raise _Bad(f"{what} must be {bound}; got {_short(value)}")
    return value


def _number(value, what, low=None, high=None, low_open=False, high_open=False) -> float:
    try:
        finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an int beyond any float
        finite = False
    if not finite:
        raise _Bad(f"{what} must be a finite number; got {_short(value)}")
    if (low is not None and (value < low or (low_open and value == low))) or (
            high is not None and (value > high or (high_open and value == high))):
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        raise _Bad(f"{what} must lie in {lo or '(-inf, '}{hi or 'inf)'}; got {_short(value)}")
    return float(value)


def _name(value, what, limit=_MAX_NAME) -> str:
    """A short printable string (it may be shown on a terminal: no control characters)."""
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _Bad(f"{what} must be a printable string of 1 to {limit} characters; got {_short(value)}")
    return value


def _pair(value, what, low) -> tuple[int, int]:
    """The layers' own pair rule (:func:`portacnn.layers.base.pair`), each value at least ``low``."""
    try:
        h, w = pair(value, what)
    except ValueError:
        h = w = None
    if h is None or min(h, w) < low:
        raise _Bad(f"{what} must be an int >= {low} or a pair [h, w] of them; got {_short(value)}")
    return h, w


def _fmt(pair) -> str:
    return f"{pair[0]}x{pair[1]}"


def _pads(p) -> str:
    """Padding ((top, bottom), (left, right)) as "1x2", or "0+1x0+1" when a side differs."""
    return "x".join(str(a) if a == b else f"{a}+{b}" for a, b in p)


_FITS = {False: "kernel_size - padding must be at most the input size",
         True: "the padded input must be at least the dilated kernel size"}


def _fits(layer, axis: int) -> int:
    """The smallest input side (along ``axis``) a windowed layer takes. A convolution (whose padding is below its
    dilated kernel on each side, so every window sees the image) takes any padded side at least its dilated
    kernel, as torch; a pool keeps the older, stricter rule (kernel - padding at most the input)."""
    (lo, hi), e = layer["p"][axis], layer["e"][axis]
    return e - lo - hi if layer["type"] == "Conv2D" else e - max(lo, hi)


def _main_path(layers) -> list[dict]:
    """The layers with each Residual replaced by its own (main-path) layers, recursively."""
    out = []
    for layer in layers:
        out += _main_path(layer["body"]) if layer["type"] == "Residual" else [layer]
    return out


# -- architecture -------------------------------------------------------------------------------------------
_LAYER_FIELDS = {  # type -> (required fields, optional fields)
    "Conv2D": ({"in_channels", "out_channels", "kernel_size"}, {"stride", "padding", "dilation", "bias"}),
    "MaxPool2D": ({"kernel_size"}, {"stride", "padding"}),
    "Dense": ({"in_features", "out_features"}, {"bias"}),
    "Dropout": (set(), {"p"}),
    "ReLU": (set(), set()),
    "Flatten": (set(), set()),
    "LeakyReLU": (set(), {"negative_slope"}),
    "Sigmoid": (set(), set()),
    "Tanh": (set(), set()),
    "AvgPool2D": ({"kernel_size"}, {"stride", "padding"}),
    "GlobalAvgPool2D": (set(), set()),
    "BatchNorm2D": ({"num_features"}, {"eps", "momentum", "affine"}),
    "BatchNorm1D": ({"num_features"}, {"eps", "momentum", "affine"}),
    "Residual": ({"layers"}, {"shortcut"}),
}
#: how deep Residual blocks may nest (each level is one recursion of every check)
MAX_DEPTH = 8
_BATCHNORMS = ("BatchNorm2D", "BatchNorm1D")
#: largest num_batches_tracked a checkpoint may hold: counts are stored as float64, exact up to 2**53
_MAX_TRACKED = 1 << 53
_WINDOWED = ("Conv2D", "MaxPool2D", "AvgPool2D")
_POOLS = ("MaxPool2D", "AvgPool2D")
#: layers that keep the shape of what they get (element-wise), any rank
_ELEMENTWISE = ("ReLU", "Dropout", "LeakyReLU", "Sigmoid", "Tanh")


def _layers(arch, prefix: str = "", depth: int = 0, count: list | None = None) -> list[dict]:
    """The architecture as normalized layer descriptions; every field type- and range-checked on its own.
    A Residual's layers are checked the same way (keys "<i>.body.<j>", "<i>.shortcut.<j>"); every layer,
    nested ones included, counts towards MAX_LAYERS."""
    what = "it" if not prefix else f"layer {prefix[:-1]}"
    if not isinstance(arch, list) or not arch:
        raise _Bad(f"{what} must be a non-empty list of layers")
    count = [0] if count is None else count
    count[0] += len(arch)
    if count[0] > MAX_LAYERS:
        raise _Bad(f"it has more than MAX_LAYERS = {MAX_LAYERS} layers (nested ones included)")
    layers = []
    for i, spec in enumerate(arch):
        key = f"{prefix}{i}"
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or spec["type"] not in _LAYER_FIELDS:
            raise _Bad(f"item {key} is not a known layer ({', '.join(_LAYER_FIELDS)}): {_short(spec)}")
        kind = spec["type"]
        where = f"layer {key} ({kind})"
        required, optional = _LAYER_FIELDS[kind]
        unknown = sorted(set(spec) - required - optional - {"type"})
        missing = sorted(required - set(spec))
        if unknown or missing:
            raise _Bad(f"{where} has unknown fields {unknown} or lacks fields {missing}")
        layer = {"type": kind, "index": key, "where": where}
        if kind == "Residual":
            if depth >= MAX_DEPTH:
                raise _Bad(f"{where} nests Residual blocks more than MAX_DEPTH = {MAX_DEPTH} deep")
            layer["body"] = _layers(spec["layers"], f"{key}.body.", depth + 1, count)
            shortcut = spec.get("shortcut")
            layer["shortcut"] = None if shortcut is None else _layers(shortcut, f"{key}.shortcut.", depth + 1, count)
        if kind in ("Conv2D", "Dense"):
            a, b = ("in_channels", "out_channels") if kind == "Conv2D" else ("in_features", "out_features")
            layer["in"] = _int(spec[a], f"{where} {a}", 1, None)
            layer["out"] = _int(spec[b], f"{where} {b}", 1, None)
            bias = spec.get("bias", True)
            if not isinstance(bias, bool):
                raise _Bad(f"{where} bias must be true or false; got {_short(bias)}")
            layer["bias"] = bias
        if kind in _BATCHNORMS:
            layer["in"] = layer["out"] = _int(spec["num_features"], f"{where} num_features", 1, None)
            _number(spec.get("eps", 1e-5), f"{where} eps", 0.0, low_open=True)
            _number(spec.get("momentum", 0.1), f"{where} momentum", 0.0, 1.0)
            affine = spec.get("affine", True)
            if not isinstance(affine, bool):
                raise _Bad(f"{where} affine must be true or false; got {_short(affine)}")
            layer["affine"] = affine
        if kind == "Dropout":
            _number(spec.get("p", 0.5), f"{where} p", 0.0, 1.0, high_open=True)
        if kind == "LeakyReLU":  # any finite slope, as torch (negative and > 1 included)
            _number(spec.get("negative_slope", 0.01), f"{where} negative_slope")
        if kind in _WINDOWED:
            layer.update(_window(spec, kind, where))
        layers.append(layer)
    return layers


def _window(spec, kind, where) -> dict:
    """A windowed layer's kernel ``k``, stride ``s``, dilation ``d``, dilated extent ``e`` (d*(k-1)+1) and
    padding ``p`` as ((top, bottom), (left, right)) ("same" pads d*(k-1) per axis, the odd one at the end, as
    torch; "valid" is none)."""
    k = _pair(spec["kernel_size"], f"{where} kernel_size", 1)
    stride = spec.get("stride", 1 if kind == "Conv2D" else None)
    s = k if stride is None else _pair(stride, f"{where} stride", 1)
    d = _pair(spec.get("dilation", 1), f"{where} dilation", 1)
    e = tuple(di * (ki - 1) + 1 for di, ki in zip(d, k))
    padding = spec.get("padding", 0)
    if kind == "Conv2D" and isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise _Bad(f"{where} padding must be 'same', 'valid', an int or a pair; got {_short(padding)}")
        if padding == "same" and s != (1, 1):
            raise _Bad(f"{where} padding 'same' needs stride 1 (as in torch); got stride {_fmt(s)}")
        p = tuple(((ei - 1) // 2, ei - 1 - (ei - 1) // 2) if padding == "same" else (0, 0) for ei in e)
    else:
        sym = _pair(padding, f"{where} padding", 0)
        p = tuple((pi, pi) for pi in sym)
        if kind == "Conv2D" and any(pi >= ei for pi, ei in zip(sym, e)):
            size = f"kernel size {_fmt(k)}" if d == (1, 1) else f"dilated kernel size {_fmt(e)}"
            raise _Bad(f"{where} padding {_fmt(sym)} must be below its {size} (more padding only adds outputs that "
                       "see nothing but zeros)")
        if kind in _POOLS and any(2 * pi > ki for pi, ki in zip(sym, k)):
            raise _Bad(f"{where} padding {_fmt(sym)} must be at most half its kernel size {_fmt(k)} (as in torch)")
    for what, v in (("kernel_size", k), ("dilated kernel", e), ("stride", s), ("padding", tuple(max(pi) for pi in p))):
        if max(v) > MAX_INPUT_SIDE:
            raise _Bad(f"{where} {what} {_fmt(v)} exceeds MAX_INPUT_SIDE = {MAX_INPUT_SIDE}, the largest "
                       "image side a checkpoint may imply")
    if k[0] * k[1] > MAX_WINDOW:
        raise _Bad(f"{where} window {_fmt(k)} has {k[0] * k[1]} cells, more than MAX_WINDOW = {MAX_WINDOW} "
                   "(each is one pass over the batch)")
    return dict(k=k, s=s, d=d, e=e, p=p)


def _children(layer) -> list[dict]:
    """A Residual's layers, body then shortcut (the order of its parameters); none for other layers."""
    return layer.get("body", []) + (layer.get("shortcut") or [])


def _parameter_shapes(layers) -> dict[str, tuple]:
    """State-dict key -> shape, in ``model.parameters()`` order (weight then bias, layer by layer)."""
    shapes = {}
    for layer in layers:
        i = layer["index"]
        if layer["type"] == "Residual":
            shapes.update(_parameter_shapes(_children(layer)))
            continue
        if layer["type"] == "Conv2D":
            shapes[f"{i}.weight"] = (layer["out"], layer["in"], *layer["k"])
        elif layer["type"] == "Dense":
            shapes[f"{i}.weight"] = (layer["out"], layer["in"])
        elif layer["type"] in _BATCHNORMS:
            if layer["affine"]:
                shapes[f"{i}.weight"] = shapes[f"{i}.bias"] = (layer["in"],)
            continue
        else:
            continue
        if layer["bias"]:
            shapes[f"{i}.bias"] = (layer["out"],)
    return shapes


def _buffer_shapes(layers) -> dict[str, tuple]:
    """State-dict key -> shape of every layer buffer (a BatchNorm's running statistics and batch count)."""
    shapes = {}
    for layer in layers:
        shapes.update(_buffer_shapes(_children(layer)))
        if layer["type"] in _BATCHNORMS:
            i, c = layer["index"], layer["in"]
            shapes.update({f"{i}.running_mean": (c,), f"{i}.running_var": (c,), f"{i}.num_batches_tracked": ()})
    return shapes


def _input_shape(value, what="input_shape") -> tuple[int, ...]:
    """(C, H, W) of images, or (F,) of flat vectors."""
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3) or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value):
        raise _Bad(f"{what} must be [C, H, W] (or [F] for flat input) of positive ints; got {_short(value)}")
    shape = tuple(int(v) for v in value)
    if len(shape) == 3 and max(shape[1:]) > MAX_INPUT_SIDE:
        raise _Bad(f"{what} {shape} has a side beyond MAX_INPUT_SIDE = {MAX_INPUT_SIDE}")
    return shape


def _assumed_input(layers) -> tuple[tuple[int, ...], str]:
    """The input a model without a stored ``input_shape`` takes, and how it was chosen (module docstring).
    A Residual counts as its layers (its shortcut must give the same shape; :func:`_walk` checks that)."""
    layers = _main_path(layers)
    brk = next((j for j, layer in enumerate(layers) if layer["type"] in ("Flatten", "Dense", "GlobalAvgPool2D")),
               len(layers))
    # the layers before the break that fix the channel count of the image (a convolution's or a BatchNorm2D's)
    fixers = [layer for layer in layers[:brk] if layer["type"] in ("Conv2D", "BatchNorm2D")]
    pooled = None  # without a convolution, the channels a GlobalAvgPool2D hands the Dense layer after it
    if brk < len(layers) and layers[brk]["type"] == "GlobalAvgPool2D" and not fixers:
        dense = next((layer for layer in layers[brk:] if layer["type"] in ("Dense", "BatchNorm1D")), None)
        pooled = 1 if dense is None else dense["in"]
    windowed = [layer for layer in layers[:brk] if layer["type"] in _WINDOWED]
    if not windowed and pooled is None and not fixers:
        dense = next((layer for layer in layers if layer["type"] in ("Dense", "BatchNorm1D")), None)
        if dense is None:
            return (DEFAULT_INPUT_SIDE * DEFAULT_INPUT_SIDE,), "assumed (DEFAULT_INPUT_SIDE)"
        return (dense["in"],), f"inferred from {dense['where']}"
    convs = [layer for layer in layers[:brk] if layer["type"] == "Conv2D"]
    channels = fixers[0]["in"] if fixers else (pooled or 1)
    last_channels = convs[-1]["out"] if convs else channels
    # every input side 1..MAX_INPUT_SIDE at once, through the windowed layers (per axis: they are independent)
    sides = np.arange(1, MAX_INPUT_SIDE + 1, dtype=np.int64)
    out, ok = [sides.copy(), sides.copy()], [np.ones(MAX_INPUT_SIDE, bool), np.ones(MAX_INPUT_SIDE, bool)]
    for layer in windowed:
        for a in (0, 1):
            e, s, (lo, hi) = layer["e"][a], layer["s"][a], layer["p"][a]
            ok[a] &= out[a] >= _fits(layer, a)  # the window fits (which also makes the output at least 1)
            out[a] = (out[a] + lo + hi - e) // s + 1
        if not (ok[0].any() and ok[1].any()):
            raise _Bad(f"{layer['where']}: its {_fmt(layer['e'])} window (padding {_pads(layer['p'])}) fits no input "
                       f"up to MAX_INPUT_SIDE = {MAX_INPUT_SIDE} pixels a side")
    after = next((layer for layer in layers[brk:] if layer["type"] not in ("Flatten",) + _ELEMENTWISE), None)
    if brk < len(layers) and layers[brk]["type"] == "Flatten" and after is not None and after["type"] in (
            "Dense", "BatchNorm1D"):
        features = after["in"]
        largest = [{}, {}]  # output side -> largest input side giving it
        for a in (0, 1):
            for inp, o in zip(sides[ok[a]].tolist(), out[a][ok[a]].tolist()):
                largest[a][o] = inp
        best = None
        if features % last_channels == 0:
            area = features // last_channels
            for ho, h in largest[0].items():
                wo = area // ho
                if area % ho == 0 and wo in largest[1]:
                    # the squarest feature map (images are), then the largest input giving it
                    rank = (-abs(ho - wo), h * largest[1][wo], h)
                    if best is None or rank > best[0]:
                        best = (rank, (channels, h, largest[1][wo]))
        if best is None:
            raise _Bad(f"no input image up to {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} pixels gives the {features} features "
                       f"{after['where']} expects (if you trust this file, raise "
                       "portacnn.checkpoint.MAX_INPUT_SIDE)")
        return best[1], f"inferred from {after['where']}"
    h, w = (DEFAULT_INPUT_SIDE if ok[a][DEFAULT_INPUT_SIDE - 1] else int(sides[ok[a]][0]) for a in (0, 1))
    return (channels, h, w), "assumed (DEFAULT_INPUT_SIDE, or the smallest side that fits)"


def _walk(layers, shape, itemsize) -> dict:
    """Run the layers on shapes only: check that they chain and what one image of ``shape`` costs."""
    tally = {"elements": math.prod(shape), "columns": 0, "operations": 0}
    cur = _chain(layers, tuple(shape), shape, tally)
    nbytes = (tally["elements"] + tally["columns"]) * itemsize
    return {"activation_bytes": nbytes, "operations": tally["operations"], "output_shape": cur}


def _chain(layers, cur, shape, tally) -> tuple:
    """The shape ``cur`` becomes through ``layers`` (a model input of ``shape``), costs added to ``tally``."""
    for layer in layers:
        kind, where = layer["type"], layer["where"]
        if kind in _WINDOWED:
            if len(cur) != 3:
                raise _Bad(f"{where} comes after a Flatten, Dense or GlobalAvgPool2D layer: it would get flat "
                           f"input {cur}")
            c, h, w = cur
            if kind == "Conv2D" and c != layer["in"]:
                raise _Bad(f"{where} expects {layer['in']} input channels but gets {c} (from a {shape} input)")
            (kh, kw), (eh, ew), (sh, sw), (py, px) = layer["k"], layer["e"], layer["s"], layer["p"]
            if h < _fits(layer, 0) or w < _fits(layer, 1):
                raise _Bad(f"{where}: its {eh}x{ew} window (padding {_pads(layer['p'])}) does not fit the {h}x{w} input "
                           f"it gets from a {shape} input ({_FITS[layer['type'] == 'Conv2D']})")
            hp, wp = h + sum(py), w + sum(px)
            ho, wo = (hp - eh) // sh + 1, (wp - ew) // sw + 1
            if hp > h or wp > w:
                tally["elements"] += c * hp * wp  # the padded copy
            if kind == "Conv2D":
                oc = layer["out"]
                tally["columns"] = max(tally["columns"], c * kh * kw * ho * wo)
                tally["operations"] += oc * ho * wo * c * kh * kw
            else:
                oc = c
                tally["operations"] += c * ho * wo * kh * kw
            cur = (oc, ho, wo)
        elif kind == "Residual":
            main = _chain(layer["body"], cur, shape, tally)
            side = cur if layer["shortcut"] is None else _chain(layer["shortcut"], cur, shape, tally)
            if main != side:
                raise _Bad(f"{where}: its layers give shape {main} but its shortcut gives {side} (from a {shape} input)")
            tally["operations"] += math.prod(main)
            cur = main
        elif kind == "GlobalAvgPool2D":
            if len(cur) != 3:
                raise _Bad(f"{where} comes after a Flatten, Dense or GlobalAvgPool2D layer: it would get flat "
                           f"input {cur}")
            tally["operations"] += math.prod(cur)
            cur = (cur[0],)
        elif kind in _BATCHNORMS:
            rank, what = (3, "images (C, H, W)") if kind == "BatchNorm2D" else (1, "flat features")
            if len(cur) != rank:
                raise _Bad(f"{where} takes {what} but would get shape {cur} (from a {shape} input)")
            if cur[0] != layer["in"]:
                unit = "channels" if kind == "BatchNorm2D" else "features"
                raise _Bad(f"{where} expects {layer['in']} {unit} but gets {cur[0]} (from a {shape} input)")
            tally["operations"] += math.prod(cur)
        elif kind == "Flatten":
            cur = (math.prod(cur),)
        elif kind == "Dense":
            if len(cur) != 1:
                raise _Bad(f"{where} would get images of shape {cur}: a Flatten must come before it")
            if cur[0] != layer["in"]:
                raise _Bad(f"{where} expects {layer['in']} features but gets {cur[0]} (from a {shape} input)")
            tally["operations"] += layer["in"] * layer["out"]
            cur = (layer["out"],)
        tally["elements"] += math.prod(cur)
    return cur


def _plan(layers, input_shape, itemsize) -> dict:
    """The input the model takes and what one such image costs; every cap checked."""
    if input_shape is not None:
        shape, how = input_shape, "stored"
    else:
        shape, how = _assumed_input(layers)
    plan = _walk(layers, shape, itemsize)
    side = "" if how == "stored" else f" (input shape {how}; store the real one with save(..., input_shape=(C, H, W)))"
    if plan["activation_bytes"] > MAX_ACTIVATION_BYTES:
        raise _Bad(f"one {shape} input needs {plan['activation_bytes'] / 2**20:.0f} MiB of activations, over "
                   f"MAX_ACTIVATION_BYTES = {MAX_ACTIVATION_BYTES / 2**20:.0f} MiB per image{side}; if you trust this "
                   "file, raise portacnn.checkpoint.MAX_ACTIVATION_BYTES")
    if plan["operations"] > MAX_OPERATIONS:
        raise _Bad(f"one {shape} input needs {plan['operations']:.3g} operations, over MAX_OPERATIONS = "
                   f"{MAX_OPERATIONS:.3g} per image{side}; if you trust this file, raise "
                   "portacnn.checkpoint.MAX_OPERATIONS")
    return {"input_shape": shape, "input_shape_from": how, **plan}


def check_architecture(arch, input_shape=None, dtype="float32") -> dict:
    """Validate an architecture (``Sequential.architecture()`` output) as :func:`load` does, without building it.

    Returns ``{"input_shape", "input_shape_from", "activation_bytes", "operations", "output_shape",
    "parameters"}`` for one image of the input the model takes (``input_shape``, else the one inferred or
    assumed as the module docstring says); raises ValueError naming the first problem or exceeded limit.
    """
    itemsize = np.dtype(float_dtype_name(dtype)).itemsize
    try:
        layers = _layers(arch)
        shape = None if input_shape is None else _input_shape(input_shape)
        plan = _plan(layers, shape, itemsize)
    except _Bad as e:
        raise ValueError(f"unusable architecture: {e}") from None
    return {**plan, "parameters": sum(math.prod(s) for s in _parameter_shapes(layers).values())}


# -- optimizer, training state, run information -------------------------------------------------------------
_OPTIMIZER_FIELDS = {"adam": {"lr", "betas", "eps", "weight_decay"}, "adamw": {"lr", "betas", "eps", "weight_decay"},
                     "sgd": {"lr", "momentum", "weight_decay", "nesterov"},
                     "rmsprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered"}}
_OPTIMIZER_BUFFERS = {"adam": {"m", "v"}, "adamw": {"m", "v"}, "sgd": {"momentum"},
                      "rmsprop": {"squareavg", "momentum", "gradavg"}}
#: what a parameter group may hold besides "params" and its hyper-parameters: a name, and the keys schedulers
#: write (initial_lr; OneCycleLR's max_lr, min_lr, max_momentum, base_momentum): portacnn.optim.Optimizer's list
_GROUP_EXTRA = frozenset(OPTIMIZERS["sgd"]._GROUP_EXTRA)
#: parameter groups of an optimizer (split_decay makes 2; one per parameter is the most that is useful)
MAX_PARAM_GROUPS = 1024


def _check_hyperparameters(kind: str, spec: dict, where: str = "") -> None:
    """The hyper-parameters of an optimizer of type ``kind`` in ``spec`` (the description, or one group)."""
    _number(spec["lr"], f"{where}lr", 0.0)  # a schedule may bring it to exactly 0 (cosine annealing's last step)
    _number(spec["weight_decay"], f"{where}weight_decay", 0.0)
    if kind == "rmsprop":
        _number(spec["alpha"], f"{where}alpha", 0.0)
        _number(spec["eps"], f"{where}eps", 0.0)
        _number(spec["momentum"], f"{where}momentum", 0.0)
        if not isinstance(spec["centered"], bool):
            raise _Bad(f"{where}centered must be true or false; got {_short(spec['centered'])}")
    elif kind in ("adam", "adamw"):
        betas = spec["betas"]
        if not isinstance(betas, list) or len(betas) != 2:
            raise _Bad(f"{where}betas must be a pair [beta1, beta2]; got {_short(betas)}")
        for b in betas:
            _number(b, f"each of {where}betas", 0.0, 1.0, high_open=True)
        _number(spec["eps"], f"{where}eps", 0.0)
    else:
        momentum = _number(spec["momentum"], f"{where}momentum", 0.0)
        if not isinstance(spec["nesterov"], bool):
            raise _Bad(f"{where}nesterov must be true or false; got {_short(spec['nesterov'])}")
        if spec["nesterov"] and momentum == 0:
            raise _Bad(f"{where}nesterov needs momentum > 0")


def _check_param_groups(kind: str, groups, n: int) -> None:
    """``param_groups``: each group's hyper-parameters, scheduler keys and parameters (indices into the
    architecture's parameters), the groups together holding every parameter exactly once."""
    if not isinstance(groups, list) or not 1 <= len(groups) <= MAX_PARAM_GROUPS:
        raise _Bad(f"'param_groups' must be a list of 1 to {MAX_PARAM_GROUPS} groups; got {_short(groups)}")
    required = _OPTIMIZER_FIELDS[kind] | {"params"}
    seen, total = set(), 0
    for g, group in enumerate(groups):
        where = f"param_groups[{g}] "
        if not isinstance(group, dict):
            raise _Bad(f"{where}is not an object: {_short(group)}")
        unknown, missing = sorted(set(group) - required - _GROUP_EXTRA), sorted(required - set(group))
        if unknown or missing:
            raise _Bad(f"{where}has unknown fields {unknown} or lacks fields {missing}")
        params = group["params"]
        if not isinstance(params, list):
            raise _Bad(f"{where}params must be a list of parameter indices; got {_short(params)}")
        total += len(params)
        if total > n:
            raise _Bad(f"'param_groups' list more than the architecture's {n} parameters")
        for i in params:
            _int(i, f"each of {where}params", 0, n - 1)
            if i in seen:
                raise _Bad(f"parameter {i} is in more than one of 'param_groups'")
            seen.add(i)
        _check_hyperparameters(kind, group, where)
        for key in sorted(_GROUP_EXTRA & set(group)):
            if key == "name":
                _name(group[key], f"{where}name")
            else:
                _number(group[key], f"{where}{key}", 0.0)
    if total != n:
        raise _Bad(f"'param_groups' hold {total} of the architecture's {n} parameters; each must be in one group")


def _check_optimizer(spec, shapes: dict, buffers: dict) -> None:
    """The optimizer description (type, steps, hyper-parameters, parameter groups) and its buffers
    ("<i>.<name>" -> array). Indices are those of the architecture's parameters, in the model's order."""
    if not isinstance(spec, dict):
        raise _Bad(f"it is not an object: {_short(spec)}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _OPTIMIZER_FIELDS:
        raise _Bad(f"unknown optimizer type {_short(kind)} (known: {', '.join(_OPTIMIZER_FIELDS)})")
    expected = _OPTIMIZER_FIELDS[kind] | {"type", "steps"}
    unknown, missing = sorted(set(spec) - expected - {"param_groups"}), sorted(expected - set(spec))
    if unknown or missing:
        raise _Bad(f"{kind} has unknown fields {unknown} or lacks fields {missing}")
    n = len(shapes)
    steps = spec["steps"]
    if isinstance(steps, list):
        if len(steps) != n:
            raise _Bad(f"'steps' counts updates of {len(steps)} parameters; the architecture has {n}")
        for t in steps:
            _int(t, "each of 'steps'")
    else:
        _int(steps, "'steps'")
    _check_hyperparameters(kind, spec)  # the first group's (files before 'param_groups': the only group's)
    if "param_groups" in spec:
        _check_param_groups(kind, spec["param_groups"], n)
    order = list(shapes.values())
    for key, value in buffers.items():
        m = re.fullmatch(r"(0|[1-9][0-9]{0,5})\.([a-z]+)", key)
        if m is None or int(m.group(1)) >= n or m.group(2) not in _OPTIMIZER_BUFFERS[kind]:
            raise _Bad(f"tensor 'optim.{key}' is not a {kind} buffer of one of the {n} parameters")
        if tuple(value.shape) != order[int(m.group(1))]:
            raise _Bad(f"tensor 'optim.{key}' has shape {tuple(value.shape)}; its parameter has "
                       f"{order[int(m.group(1))]}")


_TRAIN_STATE_FIELDS = TrainState.REQUIRED  # the schema's fields are the dataclass's
_TRAIN_STATE_OPTIONAL = TrainState.OPTIONAL
_HISTORY_KEYS = {"loss": None, "accuracy": (0.0, 1.0), "val_loss": None, "val_accuracy": (0.0, 1.0), "lr": (0.0, None)}
#: callbacks with state in a training state (fit's callbacks=[...]), and the bounds of their (untrusted) states:
#: nesting, values in all (numbers, strings, lists, objects), characters of a key
MAX_CALLBACKS = 64
_MAX_STATE_DEPTH = 16
_MAX_STATE_VALUES = 100_000
_INT64 = 1 << 63
_CLASS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _float_list(value, what, length_max, exact, bounds=None, non_finite=False) -> None:
    """A list of at most (``exact``: exactly) ``length_max`` numbers within ``bounds``; ``non_finite`` also
    lets NaN and infinities through (a validation loss can blow up while the weights stay finite)."""
    if not isinstance(value, list):
        raise _Bad(f"{what} must be a list of numbers; got {_short(value)}")
    if len(value) > length_max or (exact and len(value) != length_max):
        need = f"{length_max}" if exact else f"at most {length_max}"
        raise _Bad(f"{what} has {len(value)} values; the saved epoch count needs {need}")
    low, high = bounds or (None, None)
    for v in value:
        if non_finite and isinstance(v, float) and not math.isfinite(v):
            continue
        _number(v, f"each value of {what}", low, high)


def _check_train_state(state) -> None:
    """What ``fit(resume=...)`` reads (see portacnn.training.fit's snapshot)."""
    if not isinstance(state, dict):
        raise _Bad("it is not an object")
    unknown = sorted(set(state) - _TRAIN_STATE_FIELDS - _TRAIN_STATE_OPTIONAL)
    missing = sorted(_TRAIN_STATE_FIELDS - set(state))
    if unknown or missing:
        raise _Bad(f"unknown fields {unknown} or missing fields {missing}")
    epoch = _int(state["epoch"], "field 'epoch'", 0, MAX_EPOCHS)
    step = _int(state["step"], "field 'step'")
    seen = _int(state["seen"], "field 'seen'")
    correct = _int(state["correct"], "field 'correct'")
    batch_size = _int(state["batch_size"], "field 'batch_size'", 1, MAX_BATCH_SIZE)
    _int(state["seed"], "field 'seed'", 0, (1 << 128) - 1)
    loss_sum = _number(state["loss_sum"], "field 'loss_sum'")
    if not step <= seen <= step * batch_size:
        raise _Bad(f"field 'seen' ({seen}) must lie between 'step' ({step}) and step * batch_size "
                   f"({step * batch_size}): every step reads 1 to batch_size images")
    if correct > seen:
        raise _Bad(f"field 'correct' ({correct}) exceeds the {seen} images seen")
    if seen == 0 and loss_sum != 0:
        raise _Bad(f"field 'loss_sum' is {loss_sum} before any image was seen")
    rng = state["rng"]
    try:
        np.random.default_rng().bit_generator.state = rng
    except Exception:  # numpy raises TypeError, ValueError, KeyError, OverflowError... for bad states
        raise _Bad(f"field 'rng' is not a state numpy's default generator (PCG64) accepts: {_short(rng)}") from None
    history = state["history"]
    if not isinstance(history, dict):
        raise _Bad(f"field 'history' must be an object of lists; got {_short(history)}")
    unknown = sorted(set(history) - set(_HISTORY_KEYS))
    if unknown or not {"loss", "accuracy"} <= set(history) or (("val_loss" in history) != ("val_accuracy" in history)):
        raise _Bad(f"field 'history' must hold 'loss' and 'accuracy' (and 'val_loss' with 'val_accuracy'); "
                   f"got keys {sorted(history)}")
    for key, values in history.items():
        # training metrics: one per finished epoch; validation ones: at most that (a resumed run may drop them)
        _float_list(values, f"history[{key!r}]", epoch, key in ("loss", "accuracy"), _HISTORY_KEYS[key],
                    non_finite=key == "val_loss")
    if "val_loss" in history and len(history["val_loss"]) != len(history["val_accuracy"]):
        raise _Bad("history['val_loss'] and history['val_accuracy'] differ in length")
    if "epoch_times" in state:
        _float_list(state["epoch_times"], "field 'epoch_times'", epoch, False, (0.0, None))
    if state.get("callbacks") is not None:
        _check_callbacks(state["callbacks"], epoch)


def _plain_json(value, what: str, budget: list, depth: int = 0) -> None:
    """JSON of bounded size (``budget[0]`` values left in all) and nesting, with finite numbers, 64-bit integers,
    strings of at most _MAX_TEXT characters and keys of at most _MAX_NAME."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _Bad(f"the callbacks' states hold more than {_MAX_STATE_VALUES} values")
    if depth > _MAX_STATE_DEPTH:
        raise _Bad(f"{what} is nested more than {_MAX_STATE_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise _Bad(f"{what} must be a 64-bit integer; got {_short(value)}")
    elif isinstance(value, float):
        _number(value, what)
    elif isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise _Bad(f"{what} is a string of more than {_MAX_TEXT} characters")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(item, f"{what}[{i}]", budget, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if len(key) > _MAX_NAME or not key.isprintable():
                raise _Bad(f"{what} has a key that is not a printable name of at most {_MAX_NAME} characters: {_short(key)}")
            _plain_json(item, f"{what}[{key!r}]", budget, depth + 1)
    else:
        raise _Bad(f"{what} is not JSON: {_short(value)}")


def _object(value, what: str, keys) -> dict:
    if not isinstance(value, dict) or set(value) != set(keys):
        raise _Bad(f"{what} must be an object with the keys {sorted(keys)}; got {_short(value)}")
    return value


def _optional_epoch(value, what: str, epoch: int) -> None:
    """None, or an epoch the run has finished (0-based, below ``epoch``)."""
    if value is not None:
        if epoch == 0:
            raise _Bad(f"{what} must be null before any epoch has finished; got {_short(value)}")
        _int(value, what, 0, epoch - 1)


def _monitor_state(state, what, epoch, extra=()) -> None:
    _object(state, what, ("monitor", "mode", "best", "best_epoch") + extra)
    _name(state["monitor"], f"{what} monitor")
    if state["mode"] not in ("min", "max"):
        raise _Bad(f"{what} mode must be 'min' or 'max'; got {_short(state['mode'])}")
    if state["best"] is not None:
        _number(state["best"], f"{what} best")
    _optional_epoch(state["best_epoch"], f"{what} best_epoch", epoch)


def _early_stopping_state(state, what, epoch) -> None:
    _monitor_state(state, what, epoch, ("wait", "stopped_epoch"))
    _int(state["wait"], f"{what} wait", 0, epoch)
    _optional_epoch(state["stopped_epoch"], f"{what} stopped_epoch", epoch)


def _lr_scheduler_state(state, what, epoch) -> None:
    _object(state, what, ("per", "offset", "scheduler"))
    if state["per"] not in ("epoch", "step"):
        raise _Bad(f"{what} per must be 'epoch' or 'step'; got {_short(state['per'])}")
    if state["offset"] is not None:
        _int(state["offset"], f"{what} offset", -_MAX_COUNT)
    scheduler = _object(state["scheduler"], f"{what} scheduler", ("type", "state"))
    if not isinstance(scheduler["type"], str) or not _CLASS_NAME.fullmatch(scheduler["type"]):
        raise _Bad(f"{what} scheduler type must be a class name; got {_short(scheduler['type'])}")
    _in_checked(check_saved_state, scheduler["state"], f"{what} scheduler")


#: the callbacks of portacnn.training whose states are checked field by field (others: bounded JSON only)
_CALLBACK_STATES = {
    "EarlyStopping": _early_stopping_state,
    "ModelCheckpoint": _monitor_state,
    "LearningRateScheduler": _lr_scheduler_state,
}


def _check_callbacks(callbacks, epoch: int) -> None:
    """``[{"type": class name, "state": object}]``: at most MAX_CALLBACKS, every state bounded JSON, the states of
    portacnn's own callbacks field by field."""
    if not isinstance(callbacks, list) or len(callbacks) > MAX_CALLBACKS:
        raise _Bad(f"field 'callbacks' must be a list of at most {MAX_CALLBACKS} callback states; got {_short(callbacks)}")
    budget = [_MAX_STATE_VALUES]
    for i, entry in enumerate(callbacks):
        what = f"callbacks[{i}]"
        entry = _object(entry, what, ("type", "state"))
        kind = entry["type"]
        if not isinstance(kind, str) or not _CLASS_NAME.fullmatch(kind):
            raise _Bad(f"{what} type must be a class name; got {_short(kind)}")
        what = f"callbacks[{i}] ({kind}) state"
        if not isinstance(entry["state"], dict):
            raise _Bad(f"{what} must be an object; got {_short(entry['state'])}")
        _plain_json(entry["state"], what, budget, 1)
        if kind in _CALLBACK_STATES:
            _CALLBACK_STATES[kind](entry["state"], what, epoch)


def _check_extra(extra) -> None:
    """Free-form JSON, but the keys the CLI writes are typed and bounded (and none is ever opened as a path)."""
    if not isinstance(extra, dict):
        raise _Bad(f"it is not an object: {_short(extra)}")
    if "model" in extra:
        _name(extra["model"], "'model'")
    if "protocol" in extra and extra["protocol"] is not None and extra["protocol"] not in PROTOCOLS:
        raise _Bad(f"'protocol' must be one of {', '.join(PROTOCOLS)} or null; got {_short(extra['protocol'])}")
    if "epochs" in extra:
        _int(extra["epochs"], "'epochs'", 1, MAX_EPOCHS)
    if "limit" in extra and extra["limit"] is not None:
        _int(extra["limit"], "'limit'")
    if "data" in extra and extra["data"] is not None:  # a record of where the data came from, never opened
        data = extra["data"]
        if not isinstance(data, str) or len(data) > _MAX_TEXT or "\x00" in data:
            raise _Bad(f"'data' must be a string of at most {_MAX_TEXT} characters or null; got {_short(data)}")
    # the command line's training recipe (a resumed run takes it from here)
    if "optimizer" in extra and extra["optimizer"] not in OPTIMIZERS:
        raise _Bad(f"'optimizer' must be one of {', '.join(OPTIMIZERS)}; got {_short(extra['optimizer'])}")
    if "augment" in extra and extra["augment"] not in AUGMENTATIONS:
        raise _Bad(f"'augment' must be one of {', '.join(AUGMENTATIONS)}; got {_short(extra['augment'])}")
    if "schedule" in extra and extra["schedule"] not in SCHEDULES:
        raise _Bad(f"'schedule' must be one of {', '.join(SCHEDULES)}; got {_short(extra['schedule'])}")
    if "lr" in extra:
        _number(extra["lr"], "'lr'", 0.0, low_open=True)
    if extra.get("weight_decay") is not None:
        _number(extra["weight_decay"], "'weight_decay'", 0.0)
    for key in ("label_smoothing", "val_split"):
        if key in extra:
            _number(extra[key], f"'{key}'", 0.0, 1.0, high_open=True)
    if extra.get("early_stopping") is not None:
        _int(extra["early_stopping"], "'early_stopping'", 1, MAX_EPOCHS)


# -- the file -----------------------------------------------------------------------------------------------
def _json(meta, key, default=None):
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError, RecursionError):
        raise _Bad(f"checkpoint metadata field {key!r} is not valid JSON") from None


def _in(what: str, check, *args):
    """``check(*args)``, its problem (if any) put after ``what``."""
    try:
        return check(*args)
    except _Bad as e:
        raise _Bad(f"{what}: {e}") from None


def _validate(tensors: dict, meta: dict, dtype: str | None) -> dict:
    """Everything :func:`read` checks before a model is built; returns the parsed fields."""
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise _Bad(f"checkpoint format version {_short(meta['format_version'])} is not {FORMAT_VERSION} "
                   "(written by another portacnn version)")
    saved_dtype = meta.get("dtype", "float32")
    if saved_dtype not in DTYPES:
        raise _Bad(f"checkpoint metadata field 'dtype' must be one of {', '.join(DTYPES)}; got {_short(saved_dtype)}")
    seed = _json(meta, "seed", 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 128):
        raise _Bad(f"checkpoint metadata field 'seed' is not a non-negative integer: {_short(seed)}")
    for key in ("portacnn_version",):
        if key in meta and (len(meta[key]) > _MAX_NAME or not meta[key].isprintable()):
            raise _Bad(f"checkpoint metadata field {key!r} is not a short printable string")
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    for key, value in tensors.items():
        if value.dtype.kind != "f":
            raise _Bad(f"tensor {key!r} has dtype {value.dtype}; checkpoints hold float tensors")
        if key in weights and not np.all(np.isfinite(value)):
            raise _Bad(f"tensor {key!r} holds NaN or infinite values")
    layers = _in("unusable architecture in the checkpoint", _layers, _json(meta, "architecture"))
    shapes = _parameter_shapes(layers)
    expected = {**shapes, **_buffer_shapes(layers)}  # parameters, then layer buffers (running statistics)
    # checked before anything is built, so a corrupted size never allocates a huge model
    stored, needed = sum(int(v.size) for v in weights.values()), sum(math.prod(s) for s in expected.values())
    if needed > stored:
        raise _Bad(f"weights do not match the saved architecture: it needs {needed} parameters but the file holds {stored}")
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise _Bad(f"weights do not match the saved architecture: missing keys {missing}, unexpected keys {unexpected}")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise _Bad(f"weights do not match the saved architecture: tensor {key!r} has shape "
                       f"{tuple(weights[key].shape)}; the architecture needs {shape}")
        if key.endswith(".num_batches_tracked"):
            count = float(weights[key])
            if count < 0 or count != math.floor(count) or count > _MAX_TRACKED:
                raise _Bad(f"tensor {key!r} must hold a whole number of batches in 0..2**53; got {count!r}")
    input_shape = _json(meta, "input_shape")
    if input_shape is not None:
        input_shape = _in("checkpoint metadata field 'input_shape'", _input_shape, input_shape)
    plan = _in("unsafe architecture in the checkpoint", _plan, layers, input_shape, np.dtype(dtype or saved_dtype).itemsize)
    optimizer = _json(meta, "optimizer")
    buffers = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    if optimizer is not None:
        _in("unusable optimizer description in the checkpoint metadata", _check_optimizer, optimizer, shapes, buffers)
    elif buffers:
        raise _Bad(f"the file holds optimizer buffers ({_short(sorted(buffers))}) but no optimizer description")
    train_state = _json(meta, "train_state")
    if train_state is not None:
        _in("corrupted training state in the checkpoint metadata", _check_train_state, train_state)
    extra = _json(meta, "extra")
    if extra is not None:
        _in("bad run information ('extra') in the checkpoint metadata", _check_extra, extra)
    return {"architecture": _json(meta, "architecture"), "dtype": saved_dtype, "seed": seed, "weights": weights,
            "optimizer": optimizer, "optimizer_state": buffers, "train_state": train_state, "extra": extra,
            "input_shape": input_shape, "plan": plan}


def _looks_like_pickle(data: bytes) -> bool:
    """Pickles (protocol 2+ start with PROTO 0x80; 0/1 are opcodes ending in STOP '.') and zip-based torch.save files.

    A safetensors file starts with its header's length as 8 little-endian bytes, which can begin with any
    byte (0x80 for a 384-byte header), and then its JSON header at byte 8: that is never taken for a pickle
    (a zip's byte 8 is its compression method, a protocol-4+ pickle's is inside its frame length)."""
    if data[8:9] == b"{":
        return False
    if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":
        return True
    return data[:1] in (b"(", b"c", b"]", b"}", b"I", b"S", b"V", b"N") and data.rstrip()[-1:] == b"."


def _digest(tensors: dict, meta: dict) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and every metadata field but itself.

    safetensors has no checksum of its own, so a flipped bit in the numbers would load silently; with
    this, any change to the file's content is detected.
    """
    h = hashlib.sha256()
    for key in sorted(meta):
        if key != "sha256":
            h.update(json.dumps([key, meta[key]]).encode())
    for key in sorted(tensors):
        a = np.ascontiguousarray(tensors[key])
        h.update(json.dumps([key, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a checkpoint file, with every way it can be broken turned into CheckpointError.

    Only the header (at most ``_MAX_HEADER`` bytes) is read first: the file's size must equal what the header
    declares, and the tensors must fit what the stored architecture can need (its parameters, plus an
    optimizer's buffers, in float64), before the rest of the file is read."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise CheckpointError(f"{name}: no such checkpoint file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(min(size, 8 + _MAX_HEADER))
    except OSError as e:
        raise CheckpointError(f"{name}: cannot read checkpoint ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"{name}: checkpoint file is empty")
    if _looks_like_pickle(head):
        raise CheckpointError(
            f"{name}: this looks like a pickle or PyTorch .pt file; pickle is refused: portacnn only loads "
            "safetensors checkpoints (it never unpickles, which could run code) - save the weights with portacnn "
            "or safetensors"
        )
    if len(head) < 8:
        raise CheckpointError(f"{name}: truncated checkpoint ({len(head)} bytes)")
    (header_len,) = struct.unpack("<Q", head[:8])
    if header_len > size - 8:
        raise CheckpointError(f"{name}: not a safetensors checkpoint, or truncated (header of {header_len} bytes)")
    if head[8:9] != b"{":
        raise CheckpointError(f"{name}: corrupted checkpoint header (not valid safetensors JSON)")
    if header_len > _MAX_HEADER:
        raise CheckpointError(f"{name}: checkpoint header of {header_len} bytes exceeds the {_MAX_HEADER} bytes "
                              "a portacnn checkpoint needs")
    try:
        header = json.loads(head[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("bad metadata")
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError, TypeError, KeyError, IndexError):
        raise CheckpointError(f"{name}: corrupted checkpoint header (not valid safetensors JSON)") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{name}: a safetensors file, but not a portacnn checkpoint (no '{FORMAT}' metadata)")
    if len(header) - ("__metadata__" in header) > MAX_TENSORS:
        raise CheckpointError(f"{name}: the checkpoint holds {len(header) - 1} tensors, more than MAX_TENSORS = "
                              f"{MAX_TENSORS}")
    payload = max(ends, default=0)
    if 8 + header_len + payload != size:
        raise CheckpointError(f"{name}: corrupted or truncated checkpoint (its header describes {8 + header_len + payload}"
                              f" bytes; the file has {size})")
    try:
        layers = _in("unusable architecture in the checkpoint", _layers, _json(meta, "architecture"))
    except _Bad as e:
        raise CheckpointError(f"{name}: {e}") from None
    parameters = sum(math.prod(s) for s in _parameter_shapes(layers).values())
    parameters += sum(math.prod(s) for s in _buffer_shapes(layers).values())  # layer buffers, stored as weights
    if payload > 3 * 8 * parameters + 4096:  # weights and two optimizer buffers per parameter, in float64
        raise CheckpointError(f"{name}: the checkpoint's tensors take {payload} bytes, more than its architecture's "
                              f"{parameters} parameters (with an optimizer's buffers) can need")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{name}: cannot read checkpoint ({e.strerror or e})") from None
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for truncation and bad offsets
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{name}: corrupted or truncated checkpoint data ({first})") from None
    if "sha256" in meta and _digest(tensors, meta) != meta["sha256"]:
        raise CheckpointError(f"{name}: corrupted checkpoint (its content does not match the stored SHA-256 checksum)")
    return tensors, meta


def _known_input_shape(model, given) -> tuple[int, ...] | None:
    """The input shape :func:`save` records: the one given, else the model's declared ``input_shape``."""
    if given is None:
        given = getattr(model, "input_shape", None)
    if given is None:
        return None
    try:
        return _input_shape(given)
    except _Bad as e:
        raise ValueError(f"save: {e} (for images (N, C, H, W) pass x.shape[1:])") from None


def _describe_optimizer(model, optimizer, path) -> tuple[dict, dict]:
    """The optimizer's metadata and buffers, every parameter named by its index in ``model.parameters()`` (the
    optimizer's own order differs when its groups split the model, as split_decay's do)."""
    index = {id(p): j for j, p in enumerate(model.parameters())}
    state = optimizer.state_dict(model.backend.to_numpy)
    try:
        to_model = [index[id(p)] for g in optimizer.param_groups for p in g["params"]]
    except KeyError:
        raise CheckpointError(f"{path}: not saved: the optimizer updates parameters that are not this model's; save "
                              "each optimizer with the model it trains") from None
    steps = [0] * len(index)  # a parameter the optimizer lacks is refused below, as no group holds it
    for i, t in enumerate(state["steps"]):
        steps[to_model[i]] = t
    buffers = {}
    for key, value in state["state"].items():
        i, name = key.split(".", 1)
        buffers[f"optim.{to_model[int(i)]}.{name}"] = np.ascontiguousarray(value)
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [to_model[i] for i in g["params"]]}
              for g in state["param_groups"]]
    spec = {"type": type(optimizer).__name__.lower(), "steps": steps, **optimizer.hyperparameters(),
            "param_groups": groups}
    return spec, buffers


def save(model, path, optimizer=None, train_state: dict | None = None, extra: dict | None = None,
         input_shape=None) -> Path:
    """Write ``model`` (and optionally its optimizer and trainer state) to ``path`` atomically.

    ``input_shape`` is the (C, H, W) of the images the model reads (``x.shape[1:]``; (F,) for flat input); it
    is stored so that :func:`load` checks the model's cost for that input. Left out, it is the model's
    ``input_shape`` (set by the zoo's factories, by ``fit`` and by ``load``), or not stored (load infers it).
    Everything :func:`load` would refuse (a non-finite weight, a field out of its schema, an architecture
    over a limit) is refused here with a :class:`CheckpointError`, and nothing is written.
    """
    input_shape = _known_input_shape(model, input_shape)
    # integer buffers (a BatchNorm's num_batches_tracked) as float64: checkpoints hold float tensors, and
    # float64 holds every count up to 2**53 exactly (load turns it back into an int64)
    # (np.require, not np.ascontiguousarray, which turns a 0-d count into shape (1,))
    tensors = {k: np.require(v.astype(np.float64) if v.dtype.kind in "iub" else v, requirements="C")
               for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "portacnn_version": __version__,
        "architecture": json.dumps(model.architecture()),
        "dtype": model.dtype,
        "seed": json.dumps(model.seed),
    }
    if input_shape is not None:
        meta["input_shape"] = json.dumps(list(input_shape))
    if optimizer is not None:
        spec, buffers = _describe_optimizer(model, optimizer, path)
        tensors.update(buffers)
        meta["optimizer"] = json.dumps(spec)
    for key, value in (("train_state", train_state), ("extra", extra or None)):
        if value is not None:
            try:
                meta[key] = json.dumps(value)
            except (TypeError, ValueError) as e:  # e.g. a callback state that is not plain JSON
                raise CheckpointError(f"{path}: not saved: its {key} is not plain JSON ({e}); keep it to "
                                      "dicts, lists, strings and finite numbers") from None
    try:
        _validate(tensors, meta, None)  # exactly what load will check: what save writes, load loads
    except _Bad as e:
        raise CheckpointError(f"{path}: not saved, since portacnn.load would refuse it: {e}") from None
    meta["sha256"] = _digest(tensors, meta)
    atomic_write(path, st_save(tensors, metadata=meta))
    return Path(path)


def read(path, dtype=None, allow_unsigned: bool = False) -> dict:
    """Everything a checkpoint holds, checked as the module docstring says, before any model is built:
    ``{"architecture", "dtype", "seed", "weights", "input_shape", "info"}`` where ``info`` is what
    ``model.checkpoint`` carries (optimizer description and buffers, ``train_state``, run information
    ``extra``, ``input_shape``, the path). Every way the file can be unusable or hostile raises
    :class:`CheckpointError` naming the file. A file without a SHA-256 checksum (portacnn writes one in every
    checkpoint) is refused unless ``allow_unsigned=True``: use that only for a foreign file you trust, as
    nothing then tells a flipped bit in a weight. :func:`portacnn.load` builds the model from it."""
    name = str(path)
    if dtype is not None:
        dtype = float_dtype_name(dtype)
    tensors, meta = _read(path)
    try:
        fields = _validate(tensors, meta, dtype)
    except _Bad as e:
        raise CheckpointError(f"{name}: {e}") from None
    if "sha256" not in meta and not allow_unsigned:
        raise CheckpointError(
            f"{name}: checkpoint has no SHA-256 checksum, so a corrupted weight would load unnoticed (portacnn writes "
            "one in every checkpoint); if this is a foreign file you trust, load it with "
            "portacnn.load(path, allow_unsigned=True)")
    info = {
        "path": name,
        "optimizer": fields["optimizer"],
        "optimizer_state": fields["optimizer_state"],
        "train_state": fields["train_state"],
        "extra": fields["extra"],
        "input_shape": fields["input_shape"],
        "portacnn_version": meta.get("portacnn_version"),
    }
    return {"architecture": fields["architecture"], "dtype": dtype or fields["dtype"], "seed": fields["seed"],
            "weights": fields["weights"], "input_shape": fields["input_shape"], "info": info}


def _constructor_arguments(saved: dict) -> dict:
    """A saved group's (or description's) values as an optimizer takes them: betas a tuple, and a rate a
    schedule brought to exactly 0 (which no constructor accepts) as 1 for now; the caller puts the 0 back."""
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k != "params"}
    if out.get("lr") == 0:
        out["lr"] = 1.0
    return out


def optimizer_from_checkpoint(model, info: dict | None = None):
    """The optimizer described in ``model.checkpoint`` (type, hyper-parameters, parameter groups with the keys
    schedulers wrote, step counts, buffers), or None. A file written before groups were saved holds one group,
    of every parameter in the model's order."""
    info = info or getattr(model, "checkpoint", None) or {}
    spec = info.get("optimizer")
    if not spec:
        return None
    spec = dict(spec)
    kind, steps, groups = spec.pop("type", None), spec.pop("steps", 0), spec.pop("param_groups", None)
    if kind not in OPTIMIZERS:
        raise CheckpointError(f"{info.get('path')}: unknown optimizer {kind!r} in checkpoint")
    params = model.parameters()
    n = len(params)
    if groups is None:
        groups = [{**spec, "params": list(range(n))}]
    order = [j for g in groups for j in g["params"]]  # the optimizer's parameters, as model indices
    if sorted(order) != list(range(n)):
        raise CheckpointError(f"{info.get('path')}: the saved optimizer's parameter groups do not hold each of this "
                              f"model's {n} parameters once; load the optimizer with the model it was saved with")
    steps = list(steps) if isinstance(steps, list) else [steps] * n
    position = {j: i for i, j in enumerate(order)}
    try:
        opt = OPTIMIZERS[kind]([{"params": [params[j] for j in g["params"]], **_constructor_arguments(g)}
                                for g in groups], **_constructor_arguments(spec))
        for group, saved in zip(opt.param_groups, groups, strict=True):
            group["lr"] = float(saved["lr"])
        opt.defaults["lr"] = float(spec["lr"])
        state = {}
        for key, value in (info.get("optimizer_state") or {}).items():
            j, name = key.split(".", 1)
            state[f"{position[int(j)]}.{name}"] = value
        opt.load_state_dict({"steps": [steps[j] for j in order], "state": state},
                            lambda v, dtype: model.backend.asarray(v, dtype=dtype))
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{info.get('path')}: the saved optimizer state is unusable ({e})") from None
    return opt
