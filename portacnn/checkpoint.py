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

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

FORMAT = "portacnn-checkpoint"
FORMAT_VERSION = "1"
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A file that is not a usable portacnn checkpoint; the message names the file and the problem."""


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


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
    atomic_write(path, st_save(tensors, metadata=meta))
    return Path(path)


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
    if data[:1] == b"\x80" or data[:2] == b"PK":
        raise CheckpointError(
            f"{name}: this looks like a pickle or PyTorch .pt file; portacnn only loads safetensors checkpoints "
            "(it never unpickles, which could run code) - save the weights with portacnn or safetensors"
        )
    if len(data) < 8:
        raise CheckpointError(f"{name}: truncated checkpoint ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER, len(data) - 8):
        raise CheckpointError(f"{name}: not a safetensors checkpoint, or truncated (header of {header_len} bytes)")
    try:
        header = json.loads(data[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("bad metadata")
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise CheckpointError(f"{name}: corrupted checkpoint header (not valid safetensors JSON)") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{name}: a safetensors file, but not a portacnn checkpoint (no '{FORMAT}' metadata)")
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for truncation and bad offsets
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{name}: corrupted or truncated checkpoint data ({first})") from None
    return tensors, meta


def _json_field(meta, key, name, default=None):
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except (TypeError, ValueError):
        raise CheckpointError(f"{name}: checkpoint metadata field {key!r} is not valid JSON") from None


def load(path, backend=None, dtype=None):
    """Rebuild the model saved in ``path`` on ``backend`` (any backend, whatever it was saved from).

    The returned model carries ``model.checkpoint``: a dict with the saved ``optimizer`` description and
    tensors and the ``train_state`` (None when the file holds weights only), which ``fit(resume=...)`` uses.
    """
    from .model import Sequential

    name = str(path)
    tensors, meta = _read(path)
    arch = _json_field(meta, "architecture", name)
    saved_dtype = meta.get("dtype", "float32")
    try:
        model = Sequential.from_architecture(arch, backend=backend, dtype=dtype or saved_dtype, seed=_json_field(meta, "seed", name, 0))
    except ValueError as e:
        raise CheckpointError(f"{name}: cannot rebuild the saved architecture: {e}") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    for key, value in weights.items():
        if value.dtype.kind != "f":
            raise CheckpointError(f"{name}: tensor {key!r} has dtype {value.dtype}; checkpoints hold float tensors")
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{name}: tensor {key!r} holds NaN or infinite values")
    try:
        model.load_state_dict(weights)
    except ValueError as e:
        raise CheckpointError(f"{name}: weights do not match the saved architecture: {e}") from None
    model.checkpoint = {
        "path": name,
        "optimizer": _json_field(meta, "optimizer", name),
        "optimizer_state": {k[len("optim.") :]: v for k, v in tensors.items() if k.startswith("optim.")},
        "train_state": _json_field(meta, "train_state", name),
        "extra": _json_field(meta, "extra", name),
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
    opt = OPTIMIZERS[kind](model.parameters(), **spec)
    opt.load_state_dict({"steps": steps, "state": info.get("optimizer_state", {})},
                        lambda v, dtype: model.backend.asarray(v, dtype=dtype))
    return opt
