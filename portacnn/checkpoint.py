"""Checkpoints: safetensors files that rebuild a model (and its training state) on any backend.

A checkpoint holds the parameters under their state-dict keys ("0.weight", ...), optimizer buffers under
"optim.<param index>.<name>", and JSON metadata: the architecture, dtype, seed, portacnn version and, when
saved during training, the optimizer's type and hyper-parameters and the trainer's position (epoch, step,
history, random generator state). safetensors is a flat header plus raw numbers: loading it can never
run code, unlike pickle-based formats.

Files are written atomically: to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the target, so a crash at any moment leaves either the previous complete file or the new one.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from ._atomic import atomic_write

FORMAT = "portacnn-checkpoint"
FORMAT_VERSION = "1"
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A file that is not a usable portacnn checkpoint; the message names the file and the problem."""




def save(model, path, optimizer=None, train_state: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (and optionally its optimizer and trainer state) to ``path`` atomically."""
    from safetensors.numpy import save as st_save

    from . import __version__

    tensors = {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "portacnn_version": __version__,
        "architecture": json.dumps(model.architecture()),
        "dtype": model.dtype,
        "seed": json.dumps(model.seed),
    }
    if optimizer is not None:
        state = optimizer.state_dict(model.backend.to_numpy)
        tensors.update({f"optim.{k}": np.ascontiguousarray(v) for k, v in state["state"].items()})
        meta["optimizer"] = json.dumps(
            {"type": type(optimizer).__name__.lower(), "steps": state["steps"], **optimizer.hyperparameters()}
        )
    if train_state is not None:
        meta["train_state"] = json.dumps(train_state)
    if extra:
        meta["extra"] = json.dumps(extra)
    meta["sha256"] = _digest(tensors, meta)
    atomic_write(path, st_save(tensors, metadata=meta))
    return Path(path)


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
    """(tensors, metadata) of a checkpoint file, with every way it can be broken turned into CheckpointError."""
    from safetensors.numpy import load as st_load

    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise CheckpointError(f"{name}: no such checkpoint file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{name}: cannot read checkpoint ({e.strerror or e})") from None
    if not data:
        raise CheckpointError(f"{name}: checkpoint file is empty")
    if _looks_like_pickle(data):
        raise CheckpointError(
            f"{name}: this looks like a pickle or PyTorch .pt file; pickle is refused: portacnn only loads "
            "safetensors checkpoints (it never unpickles, which could run code) - save the weights with portacnn "
            "or safetensors"
        )
    if len(data) < 8:
        raise CheckpointError(f"{name}: truncated checkpoint ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise CheckpointError(f"{name}: not a safetensors checkpoint, or truncated (header of {header_len} bytes)")
    if data[8:9] != b"{":
        raise CheckpointError(f"{name}: corrupted checkpoint header (not valid safetensors JSON)")
    try:
        header = json.loads(data[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("bad metadata")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        raise CheckpointError(f"{name}: corrupted checkpoint header (not valid safetensors JSON)") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{name}: a safetensors file, but not a portacnn checkpoint (no '{FORMAT}' metadata)")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for truncation and bad offsets
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{name}: corrupted or truncated checkpoint data ({first})") from None
    if "sha256" in meta and _digest(tensors, meta) != meta["sha256"]:
        raise CheckpointError(f"{name}: corrupted checkpoint (its content does not match the stored SHA-256 checksum)")
    return tensors, meta


def _json_field(meta, key, name, default=None):
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError):
        raise CheckpointError(f"{name}: checkpoint metadata field {key!r} is not valid JSON") from None


def _expected_parameter_count(arch) -> int:
    """Parameters the architecture's Conv2D/Dense layers need (0 where a field is unreadable)."""
    total = 0
    for spec in arch if isinstance(arch, list) else []:
        if not isinstance(spec, dict):
            continue
        try:
            if spec.get("type") == "Conv2D":
                k = spec.get("kernel_size")
                kh, kw = (k, k) if isinstance(k, int) else tuple(k)
                out = int(spec["out_channels"])
                total += int(spec["in_channels"]) * out * int(kh) * int(kw) + (out if spec.get("bias", True) else 0)
            elif spec.get("type") == "Dense":
                out = int(spec["out_features"])
                total += int(spec["in_features"]) * out + (out if spec.get("bias", True) else 0)
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
    return total


_TRAIN_STATE_FIELDS = {"epoch": int, "step": int, "loss_sum": (int, float), "correct": int, "seen": int,
                       "seed": int, "batch_size": int, "rng": dict, "history": dict}


def _check_train_state(state, name):
    if state is None:
        return None
    problem = None
    if not isinstance(state, dict):
        problem = "is not an object"
    else:
        for key, kind in _TRAIN_STATE_FIELDS.items():
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, kind):
                problem = f"field {key!r} is missing or has the wrong type"
                break
            if kind is int and value < 0:
                problem = f"field {key!r} is negative"
                break
        if problem is None and not all(isinstance(v, list) for v in state["history"].values()):
            problem = "field 'history' is not a dict of lists"
        if problem is None:
            try:
                np.random.PCG64().state = state["rng"]
            except (TypeError, ValueError, KeyError, OverflowError):
                problem = "field 'rng' is not a valid generator state"
    if problem:
        raise CheckpointError(f"{name}: corrupted training state in the checkpoint metadata ({problem})")
    return state


def load(path, backend=None, dtype=None):
    """Rebuild the model saved in ``path`` on ``backend`` (any backend, whatever it was saved from).

    The returned model carries ``model.checkpoint``: a dict with the saved ``optimizer`` description and
    tensors and the ``train_state`` (None when the file holds weights only), which ``fit(resume=...)`` uses.
    Every way the file can be unusable (truncated, corrupted, not safetensors, a pickle, tensors that do
    not fit the stored architecture, non-float tensors) raises :class:`CheckpointError` naming the file.
    Unknown backend names raise ValueError, unusable backends BackendUnavailableError.
    """
    from .backend import get_backend
    from .model import Sequential, float_dtype_name

    name = str(path)
    backend = get_backend(backend)  # a bad backend name is the caller's error, not the file's
    if dtype is not None:
        dtype = float_dtype_name(dtype)
    tensors, meta = _read(path)
    arch = _json_field(meta, "architecture", name)
    saved_dtype = meta.get("dtype", "float32")
    seed = _json_field(meta, "seed", name, 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise CheckpointError(f"{name}: checkpoint metadata field 'seed' is not a non-negative integer: {seed!r}")
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    for key, value in tensors.items():
        if value.dtype.kind != "f":
            raise CheckpointError(f"{name}: tensor {key!r} has dtype {value.dtype}; checkpoints hold float tensors")
        if key in weights and not np.all(np.isfinite(value)):
            raise CheckpointError(f"{name}: tensor {key!r} holds NaN or infinite values")
    stored = sum(int(v.size) for v in weights.values())
    needed = _expected_parameter_count(arch)
    if needed > stored:  # checked before building, so a corrupted size never allocates a huge model
        raise CheckpointError(f"{name}: weights do not match the saved architecture: it needs {needed} parameters "
                              f"but the file holds {stored}")
    try:
        model = Sequential.from_architecture(arch, backend=backend, dtype=dtype or saved_dtype, seed=seed)
    except (ValueError, TypeError, OverflowError) as e:
        raise CheckpointError(f"{name}: cannot rebuild the saved architecture: {e}") from None
    try:
        model.load_state_dict(weights)
    except ValueError as e:
        raise CheckpointError(f"{name}: weights do not match the saved architecture: {e}") from None
    optimizer = _json_field(meta, "optimizer", name)
    if optimizer is not None and not (isinstance(optimizer, dict) and isinstance(optimizer.get("type"), str)):
        raise CheckpointError(f"{name}: checkpoint metadata field 'optimizer' is not an optimizer description")
    extra = _json_field(meta, "extra", name)
    model.checkpoint = {
        "path": name,
        "optimizer": optimizer,
        "optimizer_state": {k[len("optim.") :]: v for k, v in tensors.items() if k.startswith("optim.")},
        "train_state": _check_train_state(_json_field(meta, "train_state", name), name),
        "extra": extra if isinstance(extra, dict) else None,
        "portacnn_version": meta.get("portacnn_version"),
    }
    return model


def optimizer_from_checkpoint(model, info: dict | None = None):
    """The optimizer described in ``model.checkpoint`` (type, hyper-parameters, buffers), or None."""
    from .optim import OPTIMIZERS

    info = info or getattr(model, "checkpoint", None) or {}
    spec = info.get("optimizer")
    if not spec:
        return None
    spec = dict(spec)
    kind, steps = spec.pop("type", None), spec.pop("steps", 0)
    if kind not in OPTIMIZERS:
        raise CheckpointError(f"{info.get('path')}: unknown optimizer {kind!r} in checkpoint")
    if "betas" in spec:
        spec["betas"] = tuple(spec["betas"])
    try:
        opt = OPTIMIZERS[kind](model.parameters(), **spec)
        opt.load_state_dict({"steps": steps, "state": info.get("optimizer_state", {})},
                            lambda v, dtype: model.backend.asarray(v, dtype=dtype))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{info.get('path')}: the saved optimizer state is unusable ({e})") from None
    return opt
