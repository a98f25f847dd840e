"""Images from any array library, handed to the training and inference loops one batch at a time.

``fit``, ``evaluate``, ``predict`` and ``predict_proba`` accept images (N, C, H, W) as

- NumPy arrays, and anything NumPy reads (Python lists, memory maps, CPU torch tensors): read once on the
  host, each batch's rows cut there and moved to the model's device;
- arrays of the model's own backend and device: rows are taken on the device, nothing crosses;
- arrays of another library or device (CuPy on a NumPy model, array_api_strict on another device, CUDA
  torch tensors): rows are taken in their own library, then each batch crosses once;
- Dask arrays: computed one chunk of rows at a time (evaluate, predict), so the whole array is never in
  memory; ``fit`` visits rows in a new random order every epoch, so it reads a Dask array into host memory
  once. ``predict``/``predict_proba`` of a Dask array return a Dask array (see :mod:`portacnn.dask_inference`).

Float images are model input, used as they are. Integer images are raw pixels (0..255, e.g. uint8), in any
layout (N, H, W), (N, C, H, W) or (N, H, W, C): the model's :class:`~portacnn.preprocessing.Preprocessing` reads
them (scaled, normalised, made channels-first on the batch's device), and ``fit`` records one from its raw
training images when the model has none. Every batch arrives in the model's backend and dtype; the dtype, shape
and finiteness checks say which input is wrong and how to fix it.
"""

from __future__ import annotations

import numpy as np

from array_api_compat import array_namespace, device

from .backend import is_dask_array, namespace_name, numpy_dtype, on_host, to_host, wide_dtypes
from .preprocessing import BORDER_SAMPLE, Preprocessing, channels_first_axes, check_raw_values, raw_shape


class Images:
    """One input of images, whatever library holds it; ``rows(idx)`` gives a batch on the model's backend."""

    def __init__(self, x, backend, dtype: str, what: str = "x"):
        self.backend, self.dtype, self.what = backend, dtype, what
        name = namespace_name(x)
        if is_dask_array(x):
            self.kind = "dask"
        elif name == backend.name and (name == "numpy" or x.device == backend.device):
            self.kind = "device" if name != "numpy" else "host"
        elif on_host(x):
            x = to_host(x, what)  # lists, CPU tensors (no copy), anything NumPy reads
            self.kind = "host"
        else:
            self.kind = "foreign"
        self.x = x
        if any(d != d for d in x.shape):  # NaN: a Dask array whose chunk sizes are not known yet
            raise ValueError(f"{what} has unknown chunk sizes {tuple(x.shape)}; call x.compute_chunk_sizes() first")
        self.shape = self.stored_shape = tuple(int(d) for d in x.shape)  # stored: the source's own layout
        try:
            self.source_dtype = numpy_dtype(x.dtype)
        except ValueError:
            raise ValueError(f"{what} has dtype {x.dtype}, which portacnn cannot read") from None
        self.raw = None  # (channels-first axes or None for (N, H, W), Preprocessing) for raw integer images
        if self.source_dtype.kind in "iu":
            self.shape = raw_shape(self.shape)

    def read_raw(self, preprocessing: Preprocessing) -> None:
        """Take these integer images as raw pixels read by ``preprocessing``: their shape checked against it, their
        values against 0..255, and their border questioned (an :class:`~portacnn.preprocessing.InputWarning`)."""
        preprocessing.check_shape(self.shape, self.what)
        if self.kind != "dask":
            check_raw_values(self.x, self.what)
            head = min(BORDER_SAMPLE, self.shape[0])  # in bounds and with every axis: array_api_strict's rules
            sample = self.x if self.kind == "host" else to_host(self.x[:head, ...], self.what)
            preprocessing.warn_about(sample, self.what)
        self.raw = (channels_first_axes(self.x.shape), preprocessing)

    def check(self, channels: int | None) -> None:
        """Rank 4, ``channels`` wide, not empty, float values, all finite (one reduction in the array's own
        library; Dask arrays are checked chunk by chunk as they are computed)."""
        shape, what = self.shape, self.what
        if self.source_dtype.kind != "f" and self.raw is None:  # first: a bool array's shape is not its problem
            raise ValueError(f"{what} has dtype {self.source_dtype}; expected float images in [0, 1] or raw integer "
                             "pixels 0..255 (e.g. uint8)")
        if len(shape) != 4 or (channels is not None and shape[1] != channels):
            hint = " (scale uint8 (N, H, W) images with portacnn.data.preprocess)" if len(shape) == 3 else ""
            raise ValueError(f"{what} must have shape (N, {channels or 'C'}, H, W); got {shape}{hint}")
        if shape[0] == 0:
            raise ValueError(f"{what} is empty (0 samples)")
        if self.kind != "dask" and self.raw is None:
            self._check_finite(self.x)

    def _computed(self, array, lo: int, hi: int):
        """A Dask array's rows ``lo:hi`` as computed, checked against what its chunks declare (a block that computes
        to other rows or another dtype would otherwise give a silently shorter or misaligned result)."""
        want, what = (hi - lo, *self.stored_shape[1:]), self.what
        fix = f"fix the code that builds {what} (its chunks= or the function that makes each block)"
        if tuple(array.shape) != want:
            raise ValueError(f"{what}'s Dask rows {lo}:{hi} computed to shape {tuple(array.shape)}, not the {want} its "
                             f"chunks declare; {fix}")
        if numpy_dtype(array.dtype) != self.source_dtype:
            raise ValueError(f"{what}'s Dask rows {lo}:{hi} computed to dtype {array.dtype}, not the "
                             f"{self.source_dtype} {what} declares; {fix}")
        if self.raw is None:
            self._check_finite(array)
        else:
            check_raw_values(array, what)
        return array

    def _model_input(self, batch):
        """A batch of the source's rows on the model's backend and dtype (raw images preprocessed there)."""
        be = self.backend
        if self.raw is None:
            return be.asarray(batch, dtype=self.dtype, what=self.what)
        axes, preprocessing = self.raw
        xp = array_namespace(batch)
        batch = xp.expand_dims(batch, axis=1) if axes is None else xp.permute_dims(batch, axes)
        batch = be.asarray(batch, dtype=self.dtype, what=self.what)
        return preprocessing.apply(batch, be.xp, be.dtype(self.dtype))

    def _check_finite(self, x) -> None:
        xp = array_namespace(x)
        if bool(xp.all(xp.isfinite(x))):
            return
        bad = int(xp.sum(xp.astype(~xp.isfinite(x), wide_dtypes(xp)[0])))
        raise ValueError(f"{self.what} holds {bad} NaN or infinite values; clean the input first")

    def rows(self, idx):
        """Rows ``idx`` (a slice, or a host int array) as one batch of the model's backend and dtype."""
        x, be = self.x, self.backend
        if self.kind == "host":
            batch = x[idx]
        elif isinstance(idx, slice):
            batch = x[idx, ...]
        elif self.kind == "dask":
            batch = x[idx]
        else:  # on a device: take the rows there, so only the batch crosses
            xp = array_namespace(x)
            batch = xp.take(x, xp.asarray(idx, device=device(x)), axis=0)
        if self.kind == "dask":
            if isinstance(idx, slice):
                lo, hi, _ = idx.indices(self.shape[0])
                batch = self._computed(to_host(batch, self.what), lo, hi)
            else:
                batch = to_host(batch, self.what)
                if self.raw is None:
                    self._check_finite(batch)
        return self._model_input(batch)

    def batches(self, batch_size: int):
        """Yield ``(lo, hi, batch)`` over every image in order (a Dask chunk is computed once)."""
        if self.kind != "dask":
            for lo in range(0, self.shape[0], batch_size):
                hi = min(lo + batch_size, self.shape[0])
                yield lo, hi, self.rows(slice(lo, hi))
            return
        start = 0
        for size in self.x.chunks[0]:
            chunk = self._computed(to_host(self.x[start : start + size], self.what), start, start + size)
            for lo in range(0, size, batch_size):
                hi = min(lo + batch_size, size)
                yield start + lo, start + hi, self._model_input(chunk[lo:hi])
            start += size


def _preprocessing(model, source: Images, learn: bool) -> Preprocessing:
    """What reads raw ``source``: the model's preprocessing; else, with ``learn`` (fit), one recorded from these
    images on the model; else scaling alone, for the model's input shape (or the images' own)."""
    if model.preprocessing is not None:
        return model.preprocessing
    if learn:
        if model.input_shape is not None and len(model.input_shape) == 3:  # said as predict says it, not as a
            Preprocessing.for_shape(model.input_shape).check_shape(source.shape, source.what)  # clash of settings
        model.preprocessing = Preprocessing.from_images(to_host(source.x, source.what))
        return model.preprocessing
    shape = model.input_shape if model.input_shape is not None and len(model.input_shape) == 3 else source.shape[1:]
    return Preprocessing.for_shape(shape)


def images(x, model, what: str = "x", materialize_dask: bool = False, learn: bool = False) -> Images:
    """``x`` wrapped for ``model``'s loops and checked (shape, channels, dtype, finiteness).

    ``materialize_dask`` reads a Dask array into host memory first (what ``fit`` needs for random order).
    Raw integer images are read by the model's preprocessing; ``learn`` (what ``fit`` passes for its training
    images) records one from them when the model has none.
    """
    if isinstance(x, Images):
        return x
    if materialize_dask and is_dask_array(x) and any(d != d for d in x.shape):  # chunk sizes unknown: read it all
        x = to_host(x, what)
    elif materialize_dask and is_dask_array(x):  # block by block, each checked against its declared rows
        declared = Images(x, model.backend, model.dtype, what)
        starts = np.cumsum((0,) + tuple(x.chunks[0]))
        x = np.concatenate([declared._computed(to_host(x[a:b], what), int(a), int(b))
                            for a, b in zip(starts[:-1], starts[1:])])
    source = Images(x, model.backend, model.dtype, what)
    if source.source_dtype.kind in "iu":
        source.read_raw(_preprocessing(model, source, learn))
    source.check(model.input_channels())
    return source
