"""Export a :class:`~portacnn.Sequential` to ONNX, for ONNX Runtime, TensorRT, OpenVINO, browsers and the rest.

``onnx`` is an optional extra (``pip install "portacnn[onnx]"``, which brings ``onnxruntime`` too); it is
imported only when a model is exported. The graph is built node by node with ``onnx.helper``:

* input ``"images"`` (N, C, H, W) (or (N, F) for a model that reads flat vectors) in the model's dtype, N a
  dynamic dimension named ``"N"`` (``dynamic_batch=False`` fixes it at 1). C, H and W are the model's
  ``input_shape`` (the zoo's networks and every loaded checkpoint that stored one have it); without one,
  H and W are dynamic dimensions ``"H"`` and ``"W"`` and C is the first convolution's (or BatchNorm's).
* output ``"logits"`` (N, classes), or ``"probabilities"`` with ``softmax=True`` (a Softmax over axis 1,
  what :meth:`~portacnn.Sequential.predict_proba` computes).
* one node (or two) per layer, named after the layer's state-dict prefix ("3.Conv", "4.body.1.Relu"):
  Conv2D -> Conv (pads [top, left, bottom, right]: "same" pads the odd row and column at the bottom and
  right, as portacnn and torch), MaxPool2D -> MaxPool (padding never wins, as portacnn's -inf padding),
  AvgPool2D -> AveragePool with count_include_pad=1, GlobalAvgPool2D -> GlobalAveragePool + Flatten,
  BatchNorm2D/1D -> BatchNormalization in inference form (running statistics), ReLU/LeakyReLU/Sigmoid/Tanh
  -> Relu/LeakyRelu/Sigmoid/Tanh, Flatten -> Flatten(axis=1), Dense -> Gemm(transB=1), Dropout -> nothing
  (the identity at inference), Residual -> both branches and an Add (the block's input itself when it has
  no shortcut).
* metadata (``metadata_props``): ``class_names`` (a JSON list, the name of each output index) and
  ``portacnn_preprocessing`` (JSON: the size, channels, scaling and normalisation that turn raw 0..255 pixels
  into the graph's input, :class:`~portacnn.preprocessing.Preprocessing`) when the model has them.
* the weights and running statistics as initializers named by their state-dict keys ("0.weight",
  "3.body.1.running_var"), in the model's dtype (``dtype=`` casts them, e.g. a float64 model to float32).

float64: the export keeps the model's dtype, so a float64 model gives a float64 graph that every ONNX
operator and ``onnx.reference`` run exactly; ONNX Runtime's CPU provider, however, has no float64 Conv,
AveragePool or GlobalAveragePool, so for it export such a model with ``dtype="float32"``. The attributes
ONNX stores as float32 (LeakyReLU's slope, BatchNorm's epsilon) are rounded to float32 in every export:
exact for float32 models; for float64 ones a relative change of at most 3e-8 in a slope such as 0.01.

The model's IR version is the lowest that the opset needs (8 for opset 17), which every current runtime
reads; opsets from :data:`MIN_OPSET` to the installed onnx's newest are accepted. The file is checked with
``onnx.checker.check_model`` (shape inference included) and written atomically: readers see the previous
file or the complete new one, and a failed export leaves no file (nor a temporary one). The output path is
checked before any work (its folder must exist and be writable: :class:`ExportPathError`, naming the path and
the folder), and so are the weights: a NaN or infinite one (which ``save`` refuses too), or one too large for
the export dtype, is a ValueError naming the tensor. Graphs over 2 GB (protobuf's limit) are not supported.
"""

from __future__ import annotations

import json

import math
import os
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._version import __version__
from .backend import float_dtype_name
from .kernels.windows import out_size
from .layers.plan import check_input_shape
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Tanh)

__all__ = ["MIN_OPSET", "ExportPathError", "OnnxUnavailable", "export_checkpoint", "onnx_model", "to_onnx"]

#: the oldest opset the export writes (Softmax with an axis over one dimension, Gemm without C: opset 13)
MIN_OPSET = 13
_MISSING = 'onnx is not installed; pip install "portacnn[onnx]" to export ONNX models'
_DTYPES = {"float32": np.float32, "float64": np.float64}


class OnnxUnavailable(ImportError):
    """Raised when an export is asked for but the ``onnx`` package cannot be imported."""


class ExportPathError(ValueError, OSError):
    """The output path cannot be written: its folder is missing, not a folder, or not writable (catchable as
    ValueError and as OSError). Raised before any work, naming the user's path and the folder."""


def _output_path(path, what: str) -> Path:
    """``path`` as a Path, once it is known a file can be written there: a str or os.PathLike whose folder exists,
    is a folder and is writable, and which is not itself a folder. Checked before any work, so no export runs
    for nothing and no message names a temporary file."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{what} path must be a file name (str or pathlib.Path); got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():  # what atomic_write says, said before the export rather than after it
        raise IsADirectoryError(21, "is a folder; give a file name inside it", str(path))
    folder = path.parent
    if not folder.exists():
        raise ExportPathError(f"{path}: folder {folder} does not exist; create it first (mkdir -p {folder})")
    if not folder.is_dir():
        raise ExportPathError(f"{path}: {folder} is not a folder; give a path inside a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportPathError(f"{path}: folder {folder} is not writable; choose a folder you can write to")
    return path


def _write(path: Path, data: bytes) -> None:
    """``atomic_write``, its errors naming ``path`` (never the hidden temporary file beside it); a failed write
    leaves neither the file nor the temporary one."""
    try:
        atomic_write(path, data)
    except OSError as e:
        if e.filename is None or Path(e.filename) == path:
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from None


def _export_state(model, dtype_name: str) -> dict:
    """The model's state dict with every float entry in the export dtype, refusing a NaN or infinite value (a
    diverged model; ``save`` refuses it too) and a finite one the export dtype cannot hold (1e300 in float32)."""
    state = {}
    for key, value in model.state_dict().items():
        if value.dtype.kind == "f":
            with np.errstate(over="ignore"):
                cast = np.asarray(value, dtype=_DTYPES[dtype_name])
            bad = int(cast.size - np.count_nonzero(np.isfinite(cast)))
            if bad:
                source = int(value.size - np.count_nonzero(np.isfinite(value)))
                if source:
                    raise ValueError(f"to_onnx: weight {key!r} holds {source} NaN or infinite values; export a model "
                                     "with finite weights (load a good checkpoint, or retrain)")
                raise ValueError(f"to_onnx: weight {key!r} holds {bad} values too large for {dtype_name}; export "
                                 f"in the model's own dtype ({model.dtype})")
            value = cast
        state[key] = value
    return state


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise OnnxUnavailable(_MISSING) from e
    return onnx


def _check_opset(opset) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise ValueError(f"opset must be an int (ONNX operator set version, {MIN_OPSET} or later); got {opset!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is not supported: portacnn exports opset {MIN_OPSET} or later (default 17)")
    return int(opset)


def _show(shape) -> str:
    return "(N, " + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class _Graph:
    """The nodes and initializers of the graph being built, and the shape (per image) checks along the way."""

    def __init__(self, onnx, state, dtype):
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.state, self.dtype = state, dtype
        self.nodes, self.inits = [], []

    def weight(self, key):
        """The initializer holding the state-dict entry ``key``, in the export dtype."""
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(self.state[key], dtype=self.dtype), key))
        return key

    def const(self, name, array):
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(array, dtype=self.dtype), name))
        return name

    def node(self, op, inputs, key, **attrs):
        name = f"{key}.{op}"
        self.nodes.append(self.helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    # -- per-image shape checks (dimensions may be None: dynamic) -------------------------------------
    @staticmethod
    def fail(key, layer, wants, shape):
        raise ValueError(f"to_onnx: layer {key} ({layer!r}) takes {wants} but gets {_show(shape)}; pass the "
                         "input_shape=(C, H, W) the model reads")

    def image(self, key, layer, shape, channels=None):
        if len(shape) != 3 or (channels is not None and shape[0] not in (None, channels)):
            self.fail(key, layer, f"(N, {'C' if channels is None else channels}, H, W)", shape)

    def windowed(self, key, layer, shape, channels, kernel, stride, sides, dilation=(1, 1)):
        """The output shape of a convolution or pool, refusing windows larger than a known input."""
        out = [channels]
        for n, k, s, p, d in zip(shape[1:], kernel, stride, sides, dilation):
            o = None if n is None else out_size(n, k, s, p, d)
            if o is not None and o <= 0:
                raise ValueError(f"to_onnx: layer {key} ({layer!r}) gets {_show(shape)}, smaller than its window; "
                                 "pass the input_shape=(C, H, W) the model reads")
            out.append(o)
        return tuple(out)


def _emit(g, layers, x, shape, prefix):
    for j, layer in enumerate(layers):
        key = f"{prefix}{j}"
        emit = _EMITTERS.get(type(layer))
        if emit is None:
            raise ValueError(f"to_onnx: layer {key} ({layer!r}) has no ONNX mapping (portacnn's own layers only)")
        x, shape = emit(g, layer, x, tuple(shape), key)
    return x, shape


def _conv(g, layer, x, shape, key):
    g.image(key, layer, shape, layer.in_channels)
    (pt, pb), (pl, pr) = layer.padding_sides()
    out = g.windowed(key, layer, shape, layer.out_channels, layer.kernel_size, layer.stride, ((pt, pb), (pl, pr)),
                     layer.dilation)
    inputs = [x, g.weight(f"{key}.weight")] + ([g.weight(f"{key}.bias")] if layer.use_bias else [])
    return g.node("Conv", inputs, key, kernel_shape=list(layer.kernel_size), pads=[pt, pl, pb, pr],
                  strides=list(layer.stride), dilations=list(layer.dilation), group=1), out


def _pool(op, **extra):
    def emit(g, layer, x, shape, key):
        g.image(key, layer, shape)
        ph, pw = layer.padding
        out = g.windowed(key, layer, shape, shape[0], layer.kernel_size, layer.stride, (ph, pw))
        return g.node(op, [x], key, kernel_shape=list(layer.kernel_size), pads=[ph, pw, ph, pw],
                      strides=list(layer.stride), ceil_mode=0, **extra), out
    return emit


def _global_avgpool(g, layer, x, shape, key):
    g.image(key, layer, shape)
    pooled = g.node("GlobalAveragePool", [x], key)
    return g.node("Flatten", [pooled], key, axis=1), (shape[0],)


def _batchnorm(g, layer, x, shape, key):
    c = layer.num_features
    if layer.input_rank == 3:
        g.image(key, layer, shape, c)
    elif len(shape) != 1 or shape[0] not in (None, c):
        g.fail(key, layer, f"(N, {c})", shape)
    if layer.affine:
        scale, shift = g.weight(f"{key}.weight"), g.weight(f"{key}.bias")
    else:
        scale, shift = g.const(f"{key}.scale", np.ones(c)), g.const(f"{key}.shift", np.zeros(c))
    inputs = [x, scale, shift, g.weight(f"{key}.running_mean"), g.weight(f"{key}.running_var")]
    # ONNX's momentum weighs the running value (torch's and portacnn's weigh the batch); unused at inference
    return g.node("BatchNormalization", inputs, key, epsilon=layer.eps, momentum=1.0 - layer.momentum), shape


def _dense(g, layer, x, shape, key):
    if len(shape) != 1 or shape[0] not in (None, layer.in_features):
        g.fail(key, layer, f"(N, {layer.in_features})", shape)
    inputs = [x, g.weight(f"{key}.weight")] + ([g.weight(f"{key}.bias")] if layer.use_bias else [])
    return g.node("Gemm", inputs, key, transB=1), (layer.out_features,)


def _flatten(g, layer, x, shape, key):
    size = None if None in shape else math.prod(shape)
    return g.node("Flatten", [x], key, axis=1), (size,)


def _elementwise(op, **attrs):
    def emit(g, layer, x, shape, key):
        values = {name: float(getattr(layer, field)) for name, field in attrs.items()}
        return g.node(op, [x], key, **values), shape
    return emit


def _dropout(g, layer, x, shape, key):
    return x, shape  # the identity at inference


def _residual(g, layer, x, shape, key):
    main, main_shape = _emit(g, layer.body, x, shape, f"{key}.body.")
    side, side_shape = (x, shape) if layer.shortcut is None else _emit(g, layer.shortcut, x, shape, f"{key}.shortcut.")
    if len(main_shape) != len(side_shape) or any(a is not None and b is not None and a != b
                                                 for a, b in zip(main_shape, side_shape)):
        raise ValueError(f"to_onnx: Residual {key} gives {_show(main_shape)} from its layers but {_show(side_shape)} "
                         "from its shortcut; pass the input_shape=(C, H, W) the model reads")
    return g.node("Add", [main, side], key), tuple(a if a is not None else b for a, b in zip(main_shape, side_shape))


_EMITTERS = {
    Conv2D: _conv, MaxPool2D: _pool("MaxPool"), AvgPool2D: _pool("AveragePool", count_include_pad=1),
    GlobalAvgPool2D: _global_avgpool, BatchNorm2D: _batchnorm, BatchNorm1D: _batchnorm, Dense: _dense,
    Flatten: _flatten, ReLU: _elementwise("Relu"), LeakyReLU: _elementwise("LeakyRelu", alpha="negative_slope"),
    Sigmoid: _elementwise("Sigmoid"), Tanh: _elementwise("Tanh"), Dropout: _dropout, Residual: _residual,
}


def _first_input(layers):
    """(rank, channels or features) of the input the first layers fix, from what they declare: 4 and C for
    images, 2 and F for flat vectors, (4, None) when nothing says (element-wise layers) or a layer flattens images."""
    for layer in layers:
        if layer.input_rank == 3:
            return 4, layer.input_channels
        if layer.input_rank == 1:
            return 2, layer.input_features
        if len(layer.output_shape((1, 2, 2))) != 3:  # a Flatten: it reads images
            return 4, None
    return 4, None


def onnx_model(model, opset=17, softmax=False, dynamic_batch=True, input_shape=None, dtype=None):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring), checked, not written anywhere.

    ``input_shape`` (C, H, W) (or (F,)) overrides the model's own; ``dtype`` ("float32" or "float64")
    casts the weights and the graph's input and output (default: the model's dtype).
    """
    from .sequential import Sequential  # imported here, as export_checkpoint's load: the module stays light to import

    if not isinstance(model, Sequential):
        raise ValueError(f"to_onnx takes a portacnn Sequential model; got {type(model).__name__}")
    opset = _check_opset(opset)
    for name, flag in (("softmax", softmax), ("dynamic_batch", dynamic_batch)):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False; got {flag!r}")
    given = input_shape if input_shape is not None else model.input_shape
    shape = None if given is None else check_input_shape(given)
    dtype_name = model.dtype if dtype is None else float_dtype_name(dtype)
    state = _export_state(model, dtype_name)
    onnx = _onnx()
    helper = onnx.helper
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"opset {opset} is newer than the installed onnx {onnx.__version__} knows ({newest}); "
                         "pass a lower opset or upgrade onnx")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype_name))
    batch = "N" if dynamic_batch else 1
    if shape is None:
        rank, width = _first_input(model.layers)
        shape = (width,) if rank == 2 else (width, "H", "W")
    graph = _Graph(onnx, state, _DTYPES[dtype_name])
    per_image = tuple(d if isinstance(d, int) else None for d in shape)
    out, out_shape = _emit(graph, model.layers, "images", per_image, "")
    name = "probabilities" if softmax else "logits"
    if softmax:
        if len(out_shape) != 1:
            raise ValueError(f"to_onnx softmax=True needs a model giving (N, classes); this one gives {_show(out_shape)}")
        graph.nodes.append(helper.make_node("Softmax", [out], [name], name="softmax", axis=1))
    elif out == "images":  # nothing but Dropout: the graph still needs a node
        graph.nodes.append(helper.make_node("Identity", [out], [name], name="identity"))
    else:  # the last node writes the graph's output directly
        graph.nodes[-1].output[0] = name  # the node that wrote ``out``: nothing reads the last value
    inp = helper.make_tensor_value_info("images", elem, [batch, *(d if d is not None else "C" for d in shape)])
    res = helper.make_tensor_value_info(name, elem, [batch, *out_shape])
    g = helper.make_graph(graph.nodes, "portacnn", [inp], [res], graph.inits)
    ops = [helper.make_opsetid("", opset)]
    proto = helper.make_model(g, opset_imports=ops, ir_version=helper.find_min_ir_version_for(ops),
                              producer_name="portacnn", producer_version=__version__,
                              doc_string=f"portacnn Sequential ({len(model.layers)} layers, {dtype_name})")
    props = {}
    if model.class_names is not None:  # what a deployment shows for each output index
        props["class_names"] = json.dumps(model.class_names)
    if model.preprocessing is not None:  # how raw pixels become the graph's input
        props["portacnn_preprocessing"] = json.dumps(model.preprocessing.to_config())
    helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:  # not expected: every layer's shapes were checked above
        raise ValueError(f"to_onnx: the exported graph fails onnx's checker: {str(e).splitlines()[0]}") from None
    return proto


def to_onnx(model, path, opset=17, softmax=False, dynamic_batch=True, input_shape=None, dtype=None) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically); returns the path.

    ``opset``: the ONNX operator set (:data:`MIN_OPSET` or later, default 17); ``softmax=True`` adds a
    Softmax so the graph gives ``"probabilities"`` rather than ``"logits"``; ``dynamic_batch=False`` fixes
    the batch at 1; ``input_shape`` (C, H, W) overrides the model's own; ``dtype="float32"`` exports a
    float64 model as float32 (what ONNX Runtime's CPU provider runs). Run the file with
    ``onnxruntime.InferenceSession(path).run(None, {"images": x})``. See the module docstring.
    """
    path = _output_path(path, "to_onnx")  # before any work
    proto = onnx_model(model, opset=opset, softmax=softmax, dynamic_batch=dynamic_batch, input_shape=input_shape,
                       dtype=dtype)
    _write(path, proto.SerializeToString())
    return path


def export_checkpoint(path_in, path_out, opset=17, softmax=False, allow_unsigned=False, dtype=None) -> Path:
    """Load the checkpoint ``path_in`` (:func:`portacnn.load`, on NumPy) and write it as ONNX to ``path_out``.

    The graph's C, H and W are the checkpoint's stored ``input_shape`` (dynamic H and W when it stored
    none); the batch is dynamic. Returns the path written. What ``portacnn export`` runs.
    """
    from .sequential import load

    _check_opset(opset)  # before the (possibly long) load
    path_out = _output_path(path_out, "export_checkpoint")
    if path_out.resolve() == Path(path_in).resolve():
        raise ValueError(f"{path_out}: the ONNX file would overwrite the checkpoint it is made from; give another name")
    model = load(path_in, backend="numpy", dtype=dtype, allow_unsigned=allow_unsigned)
    return to_onnx(model, path_out, opset=opset, softmax=softmax)
