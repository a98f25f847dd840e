"""Batch inference over Dask arrays: ``model.predict(dask_images)`` returns a Dask array.

Each chunk of image rows becomes one task that rebuilds the model from a small payload (its architecture,
weights, backend name and dtype), then predicts that chunk in batches. Nothing is computed until the caller
asks (``.compute()``, ``.to_zarr()``, ...), and no task ever holds more than one chunk of images, so the data
can be larger than any one machine's memory when a ``dask.distributed`` cluster runs the tasks::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")          # or Client(LocalCluster(...))
    images = dask.array.from_zarr("images.zarr")     # (N, 1, 28, 28) float32, chunked along N
    labels = model.predict(images).compute()          # or .to_zarr("labels.zarr")

The payload is shipped once per computation (a ``dask.delayed`` key the tasks share) and each worker thread
keeps the model it rebuilt (weights only: activations are dropped after every chunk), so a computation
costs one model build per worker thread, not per task. The workers compute
on the model's backend (NumPy by default; CuPy if the workers have GPUs) with ``workers=1``: Dask already
runs one task per worker thread. Dask is imported only here, when a Dask array arrives
(``pip install "portacnn[dask]"``).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np

from .backend import numpy_dtype
from .inputs import images


@dataclass(frozen=True)
class ModelPayload:
    """What a worker needs to rebuild a model: plain JSON, NumPy arrays and names (picklable anywhere)."""

    architecture: list
    state: dict = field(repr=False)
    backend: str
    dtype: str
    token: str  # content hash: identifies the rebuilt model in a worker's cache
    model_class: type  # pickled by reference (module and name): the workers import it
    preprocessing: dict | None = None  # how raw integer images are read (Preprocessing.to_config), None: floats

    @classmethod
    def of(cls, model, preprocessing=None) -> "ModelPayload":
        state = model.state_dict()
        config = None if preprocessing is None else preprocessing.to_config()
        h = hashlib.sha256(repr((model.architecture(), model.backend.name, model.dtype, config)).encode())
        for key in sorted(state):
            h.update(key.encode())
            h.update(np.ascontiguousarray(state[key]).tobytes())
        return cls(model.architecture(), state, model.backend.name, model.dtype, h.hexdigest(), type(model), config)


_LOCAL = threading.local()  # per worker thread: token -> rebuilt model (layers keep per-call state)
_CACHE_SIZE = 4


def _model_for(payload: ModelPayload):
    cache = _LOCAL.__dict__.setdefault("models", {})
    model = cache.get(payload.token)
    if model is None:
        model = payload.model_class.from_architecture(payload.architecture, backend=payload.backend,
                                                      dtype=payload.dtype, workers=1)
        model.load_state_dict(payload.state)
        if payload.preprocessing is not None:
            from .preprocessing import Preprocessing

            model.preprocessing = Preprocessing.from_config(payload.preprocessing)
        while len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[payload.token] = model
    return model


def _check_block(chunk, declared_dtype: str, block_info) -> None:
    """The computed ``chunk`` has the shape and dtype its Dask array declared for it (``block_info[0]``: where the
    block lies in ``x``). A function building ``x`` that returns fewer (or more) rows than its chunks say would
    otherwise give a shorter (or longer) result, row i no longer image i."""
    if block_info is None:  # called outside map_blocks (Dask passes it to a function that names it)
        return
    info = block_info[0]
    block = info["chunk-location"][0]
    rows = "rows {}:{}".format(*info["array-location"][0])
    declared = tuple(int(stop - start) for start, stop in info["array-location"])
    shape = tuple(int(d) for d in getattr(chunk, "shape", ()))
    if shape != declared:
        raise ValueError(f"x's Dask block {block} ({rows}) computed to shape {shape}, not the "
                         f"{declared} its chunks declare; fix the code that builds x (its chunks= or the function "
                         "that makes each block)")
    try:
        dtype = numpy_dtype(chunk.dtype)
    except (AttributeError, ValueError):
        dtype = None
    if dtype != np.dtype(declared_dtype):
        raise ValueError(f"x's Dask block {block} ({rows}) computed to dtype "
                         f"{getattr(chunk, 'dtype', type(chunk).__name__)}, not the {declared_dtype} x declares; fix "
                         "the code that builds x (its dtype= or the function that makes each block)")


def _predict_chunk(chunk, payload: ModelPayload, batch_size: int, probabilities: bool, declared_dtype: str,
                   block_info=None):
    """One Dask task: class ids or probabilities for one chunk of images (host NumPy in and out), after checking
    the chunk is the block its array declared (:func:`_check_block`)."""
    _check_block(chunk, declared_dtype, block_info)
    model = _model_for(payload)
    if chunk.shape[0] == 0:
        shape = (0, _num_classes(model)) if probabilities else (0,)
        return np.empty(shape, np.dtype(payload.dtype) if probabilities else np.int64)
    try:
        if probabilities:
            return model.predict_proba(chunk, batch_size=batch_size)
        return model.predict(chunk, batch_size=batch_size)
    finally:
        model.release()  # a cached model keeps its weights, not the last batch's activations


def _num_classes(model) -> int:
    classes = model.num_classes()
    if classes is None:
        raise ValueError("Dask inference needs a model that ends in a Dense layer (it gives the class count)")
    return int(classes)


def predict_dask(model, x, batch_size: int, probabilities: bool):
    """``model``'s class ids (N,) or probabilities (N, classes) for the Dask array ``x`` (N, C, H, W) (or raw
    integer images in any layout, read as the model reads them), as a lazy Dask array chunked like ``x``'s rows.
    Shape, channels and dtype are checked now (from metadata);
    when each chunk is computed, that it is the shape and dtype ``x`` declared for it, and holds no NaN or
    infinite value."""
    import dask  # optional: imported only when a Dask array arrives

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    source = images(x, model)  # metadata only for Dask; raw integer images (any layout) read by a Preprocessing
    classes = _num_classes(model)
    axes = list(range(1, x.ndim))  # raw greyscale images are (N, H, W)
    x = x.rechunk({axis: -1 for axis in axes})  # one task = whole images
    payload = dask.delayed(ModelPayload.of(model, None if source.raw is None else source.raw[1]), pure=True)
    declared = str(numpy_dtype(x.dtype))
    if probabilities:
        dtype = np.dtype(model.dtype)
        return x.map_blocks(_predict_chunk, payload, int(batch_size), True, declared, drop_axis=axes[1:],
                            chunks=(x.chunks[0], (classes,)), dtype=dtype, meta=np.empty((0, 0), dtype))
    return x.map_blocks(_predict_chunk, payload, int(batch_size), False, declared, drop_axis=axes,
                        chunks=(x.chunks[0],), dtype=np.int64, meta=np.empty((0,), np.int64))
