"""The checkpoint file: a safetensors file (a flat JSON header, then raw numbers: loading it never runs code)
whose metadata describes the model, written atomically with a SHA-256 over everything, read back with every field
checked before anything is built (the package docstring says what is checked)."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .._atomic import atomic_write
from .._version import __version__
from ..backend import DTYPES, float_dtype_name
from ..validation import _short
from . import architecture, limits
from .limits import FORMAT, FORMAT_VERSION, Bad, CheckpointError, checked
from ..labels import check_class_names
from ..optim import check_saved
from ..preprocessing import Preprocessing
from ..recipe import Recipe
from ..train_state import check_saved_train_state
from .optimizer import describe_optimizer


def _json(meta, key, default=None):
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError, RecursionError):
        raise Bad(f"checkpoint metadata field {key!r} is not valid JSON") from None


def _validate(tensors: dict, meta: dict, dtype: str | None) -> dict:
    """Everything :func:`read` checks before a model is built; returns the parsed fields."""
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise Bad(f"checkpoint format version {_short(meta['format_version'])} is not {FORMAT_VERSION} "
                   "(written by another portacnn version)")
    saved_dtype = meta.get("dtype", "float32")
    if saved_dtype not in DTYPES:
        raise Bad(f"checkpoint metadata field 'dtype' must be one of {', '.join(DTYPES)}; got {_short(saved_dtype)}")
    seed = _json(meta, "seed", 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 128):
        raise Bad(f"checkpoint metadata field 'seed' is not a non-negative integer: {_short(seed)}")
    for key in ("portacnn_version",):
        if key in meta and (len(meta[key]) > limits._MAX_NAME or not meta[key].isprintable()):
            raise Bad(f"checkpoint metadata field {key!r} is not a short printable string")
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    for key, value in tensors.items():
        if value.dtype.kind != "f":
            raise Bad(f"tensor {key!r} has dtype {value.dtype}; checkpoints hold float tensors")
        if key in weights and not np.all(np.isfinite(value)):
            raise Bad(f"tensor {key!r} holds NaN or infinite values")
    layers = checked("unusable architecture in the checkpoint", architecture.build, _json(meta, "architecture"))
    shapes = architecture.parameter_shapes(layers)
    expected = {**shapes, **architecture.buffer_shapes(layers)}  # parameters, then layer buffers (running statistics)
    # checked before anything is built, so a corrupted size never allocates a huge model
    stored, needed = sum(int(v.size) for v in weights.values()), sum(math.prod(s) for s in expected.values())
    if needed > stored:
        raise Bad(f"weights do not match the saved architecture: it needs {needed} parameters but the file holds {stored}")
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise Bad(f"weights do not match the saved architecture: missing keys {missing}, unexpected keys {unexpected}")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise Bad(f"weights do not match the saved architecture: tensor {key!r} has shape "
                       f"{tuple(weights[key].shape)}; the architecture needs {shape}")
    for key in architecture.buffer_shapes(layers):
        architecture.check_buffer(layers, key, weights[key])
    input_shape = _json(meta, "input_shape")
    if input_shape is not None:
        input_shape = checked("checkpoint metadata field 'input_shape'", architecture.check_input_shape, input_shape)
    preprocessing = _json(meta, "preprocessing")
    if preprocessing is not None:
        preprocessing = checked("unusable preprocessing in the checkpoint metadata", Preprocessing.from_config,
                                preprocessing)
        if input_shape is None:
            input_shape = preprocessing.input_shape
        elif tuple(input_shape) != preprocessing.input_shape:
            raise Bad(f"checkpoint metadata field 'preprocessing' reads {preprocessing.input_shape} images but "
                      f"'input_shape' is {tuple(input_shape)}")
    plan = checked("unsafe architecture in the checkpoint", architecture.plan, layers, input_shape, np.dtype(dtype or saved_dtype).itemsize)
    class_names = _json(meta, "class_names")
    if class_names is not None:
        class_names = checked("bad class names in the checkpoint metadata", check_class_names, class_names,
                              architecture.num_classes(layers))
    optimizer = _json(meta, "optimizer")
    buffers = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    if optimizer is not None:
        checked("unusable optimizer description in the checkpoint metadata", check_saved, optimizer,
                list(shapes.values()), {k: tuple(v.shape) for k, v in buffers.items()})
    elif buffers:
        raise Bad(f"the file holds optimizer buffers ({_short(sorted(buffers))}) but no optimizer description")
    train_state = _json(meta, "train_state")
    if train_state is not None:
        checked("corrupted training state in the checkpoint metadata", check_saved_train_state, train_state)
    extra = _json(meta, "extra")
    if extra is not None:
        checked("bad run information ('extra') in the checkpoint metadata", Recipe.check_stored, extra)
    return {"architecture": _json(meta, "architecture"), "dtype": saved_dtype, "seed": seed, "weights": weights,
            "optimizer": optimizer, "optimizer_state": buffers, "train_state": train_state, "extra": extra,
            "input_shape": input_shape, "plan": plan, "preprocessing": preprocessing, "class_names": class_names}


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

    Only the header (at most ``limits._MAX_HEADER`` bytes) is read first: the file's size must equal what the header
    declares, and the tensors must fit what the stored architecture can need (its parameters, plus an
    optimizer's buffers, in float64), before the rest of the file is read."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise CheckpointError(f"{name}: {what}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(min(size, 8 + limits._MAX_HEADER))
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
    if header_len > limits._MAX_HEADER:
        raise CheckpointError(f"{name}: checkpoint header of {header_len} bytes exceeds the {limits._MAX_HEADER} bytes "
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
    if len(header) - ("__metadata__" in header) > limits.MAX_TENSORS:
        raise CheckpointError(f"{name}: the checkpoint holds {len(header) - 1} tensors, more than MAX_TENSORS = "
                              f"{limits.MAX_TENSORS}")
    payload = max(ends, default=0)
    if 8 + header_len + payload != size:
        raise CheckpointError(f"{name}: corrupted or truncated checkpoint (its header describes {8 + header_len + payload}"
                              f" bytes; the file has {size})")
    try:
        layers = checked("unusable architecture in the checkpoint", architecture.build, _json(meta, "architecture"))
    except Bad as e:
        raise CheckpointError(f"{name}: {e}") from None
    parameters = sum(math.prod(s) for s in architecture.parameter_shapes(layers).values())
    parameters += sum(math.prod(s) for s in architecture.buffer_shapes(layers).values())  # layer buffers, stored as weights
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
        return architecture.check_input_shape(given)
    except Bad as e:
        raise ValueError(f"save: {e} (for images (N, C, H, W) pass x.shape[1:])") from None


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
    if getattr(model, "preprocessing", None) is not None:
        meta["preprocessing"] = json.dumps(model.preprocessing.to_config())
    if getattr(model, "class_names", None) is not None:
        meta["class_names"] = json.dumps(list(model.class_names))
    if optimizer is not None:
        spec, buffers = describe_optimizer(model, optimizer, path)
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
    except Bad as e:
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
    except Bad as e:
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
        "preprocessing": fields["preprocessing"],
        "class_names": fields["class_names"],
        "portacnn_version": meta.get("portacnn_version"),
    }
    return {"architecture": fields["architecture"], "dtype": dtype or fields["dtype"], "seed": fields["seed"],
            "weights": fields["weights"], "input_shape": fields["input_shape"], "preprocessing": fields["preprocessing"],
            "class_names": fields["class_names"], "info": info}


