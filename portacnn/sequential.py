"""The Sequential model: an ordered list of layers on one backend, with PyTorch-compatible state."""

from __future__ import annotations

import numpy as np

from . import checkpoint, dask_inference, training
from .backend import float_dtype_name, get_backend, is_dask_array, numpy_dtype, to_host
from .layers import Layer, Parameter
from .layers.base import check_distinct
from .layers.fold import run_infer
from .layers.plan import check_input_shape, walk
from .layers.spec import layer_from_spec, layer_spec
from .parallel import DataParallel, check_workers

class Sequential:
    """Layers applied in order. ``backend`` is a name ("numpy", "cupy", ...) or a :class:`Backend`.

    Parameters are drawn from ``numpy.random.default_rng(seed)`` on the host, in layer order, so the same
    seed gives the same initial weights on every backend; the same generator later drives dropout masks.
    State keys follow ``torch.nn.Sequential``: "<layer index>.weight", "<layer index>.bias".

    ``workers`` cuts each batch into row shards computed on that many CPU threads (see
    :mod:`portacnn.parallel`): ``"auto"`` (default) does so on the NumPy backend when the batch is large
    enough to gain, with as many shards as NumPy's BLAS has threads; ``1`` never does. Results equal the
    single-thread ones up to float rounding (dropout masks are the same draws).
    """

    def __init__(self, layers, backend=None, dtype="float32", seed=0, workers="auto", input_shape=None):
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer; got an empty list")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequential item {i} is not a portacnn layer: {layer!r}")
        check_distinct(self.layers, "Sequential")
        self.dtype = float_dtype_name(dtype)
        self.backend = get_backend(backend)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        for i, layer in enumerate(self.layers):
            layer.initialize(self.rng, self.backend, self.backend.dtype(self.dtype))
            for local, p in layer.named_parameters().items():
                p.name = f"{i}.{local}"
        self.workers = workers
        self._parallel = DataParallel(self)  # runs forward/backward, in row shards when that pays
        self._output_shape = None  # of the last forward pass: what backward's gradient must look like
        self.optimizer = None  # the optimizer of the last fit() (what resumes and saves use)
        self.checkpoint = None  # what portacnn.load read besides the weights (optimizer, train_state, ...)
        self.input_shape = None if input_shape is None else self._fitting(input_shape)  # (C, H, W) it reads
        self._preprocessing = None
        self._class_names = None

    def _fitting(self, input_shape) -> tuple:
        """``input_shape`` checked: (C, H, W) or (F,) of positive ints that the layers take (run on shapes only)."""
        shape = check_input_shape(input_shape)
        try:
            walk(self.layers, shape)
        except ValueError as e:
            raise ValueError(f"input_shape {shape} does not fit the model: {e}") from None
        return shape

    @property
    def preprocessing(self):
        """How the model reads raw integer images (:class:`~portacnn.preprocessing.Preprocessing`): ``fit`` records
        one from raw training images, checkpoints keep it; None: plain scaling to [0, 1]. Setting one also sets
        ``input_shape`` when that is unknown (they must agree)."""
        return self._preprocessing

    @preprocessing.setter
    def preprocessing(self, value):
        from .preprocessing import Preprocessing

        if value is not None:
            if not isinstance(value, Preprocessing):
                raise ValueError(f"preprocessing must be a portacnn.preprocessing.Preprocessing or None; got {value!r}")
            if self.input_shape is None:
                self.input_shape = self._fitting(value.input_shape)
            elif tuple(self.input_shape) != value.input_shape:
                raise ValueError(f"preprocessing reads {value.input_shape} images but the model's input_shape is "
                                 f"{tuple(self.input_shape)}")
        self._preprocessing = value

    @property
    def class_names(self):
        """A name for each class (a list of strings, in class-id order), or None: the ids are the names."""
        return self._class_names

    @class_names.setter
    def class_names(self, value):
        from .labels import check_class_names

        self._class_names = check_class_names(value, self.num_classes())

    @property
    def workers(self):
        """``"auto"`` or the number of CPU threads a batch is split across (1: no splitting)."""
        return self._workers

    @workers.setter
    def workers(self, value):
        self._workers = check_workers(value, self.backend)

    def shards_for(self, batch_shape, training: bool = True) -> int:
        """How many row shards (threads) a batch of ``batch_shape`` (N, C, H, W) is computed in."""
        return self._parallel.shards(tuple(batch_shape), training)

    # -- computing -------------------------------------------------------------------------------------
    #: the per-image shape of the first batch a model without ``input_shape`` computed (forward or infer), which
    #: :meth:`summary` shows shapes for; never saved (``input_shape`` alone is a checkpoint's: what fit trains on)
    _first_batch_shape = None

    def _seen(self, x) -> None:
        """Remember the per-image shape of batch ``x`` when the model knows no shape yet (a tuple: no sync)."""
        if self.input_shape is None and self._first_batch_shape is None:
            self._first_batch_shape = tuple(x.shape[1:])

    def forward(self, x, training: bool = False):
        """Logits for a batch ``x`` (N, C, H, W) of real numbers: a NumPy array, a Python list, or an array of
        any library and device (torch, CuPy, array_api_strict, Dask); moved to the model's device and dtype."""
        x = self.backend.asarray(x, dtype=self.dtype, what="x")
        self._output_shape = None  # a failed pass leaves no stale caches to back-propagate through
        out = self._parallel.forward(x, training)
        self._output_shape = tuple(out.shape)
        self._seen(x)
        return out

    __call__ = forward

    def infer(self, x):
        """Logits for a batch ``x`` in inference, as :meth:`forward` with ``training=False`` gives them (to float
        rounding), computed the fast way: BatchNorm folded into the convolution before it
        (:mod:`portacnn.layers.fold`), nothing kept for backward. What predict, predict_proba and evaluate run."""
        x = self.backend.asarray(x, dtype=self.dtype, what="x")
        self._output_shape = None  # nothing to back-propagate through
        out = run_infer(self.layers, x)
        self._seen(x)
        return out

    def backward(self, grad, input_grad: bool = True):
        """Back-propagate ``grad`` (d loss / d output); fills every ``Parameter.grad``, returns d loss / d x.

        ``input_grad=False`` skips the gradient with respect to the input (returns None): a training step
        does not need it, and for a first convolution it is the costliest part of the backward pass.
        """
        if self._output_shape is None:
            raise RuntimeError("backward() needs a successful forward() first: it back-propagates through what "
                               "the last forward pass kept")
        grad = self.backend.asarray(grad, dtype=self.dtype, what="grad")
        if tuple(grad.shape) != self._output_shape:
            raise ValueError(f"backward() got a gradient of shape {tuple(grad.shape)}; the last forward pass "
                             f"returned shape {self._output_shape}")
        return self._parallel.backward(grad, input_grad)

    def __getstate__(self):
        """``pickle`` and ``copy.deepcopy`` keep layers, weights, generator, backend (by name) and settings;
        the data-parallel replicas and forward caches are made again when needed."""
        state = dict(vars(self))
        state.pop("_parallel", None)
        state["_output_shape"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update({"_preprocessing": None, "_class_names": None, **state})
        self._parallel = DataParallel(self)

    def release(self) -> None:
        """Drop every layer's forward caches (activations kept for backward); weights stay."""
        for layer in self.layers:
            layer.release()
        self._parallel = DataParallel(self)
        self._output_shape = None

    # -- parameters and state --------------------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def _buffer_slots(self) -> dict:
        """State-dict key ("<layer index>.<name>") -> (layer, name, array) for every layer buffer (running
        statistics), each set back with ``layer.set_buffer(name, ...)``."""
        return {f"{i}.{name}": (layer, name, value) for i, layer in enumerate(self.layers)
                for name, value in layer.buffers().items()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host (NumPy) copies of every parameter and buffer, keyed like ``torch.nn.Sequential.state_dict()``
        (buffers such as a BatchNorm's "<i>.running_mean" keep their dtype: "<i>.num_batches_tracked" is int64)."""
        state = {}

        def add(prefix, layer):  # torch's order: each (innermost) layer's parameters, then its buffers
            if layer.sublayers():
                for name, sub in layer.sublayers():
                    add(f"{prefix}.{name}", sub)
                return
            for p in layer.parameters():
                state[p.name] = np.array(self.backend.to_numpy(p.data), copy=True)
            for name, value in layer.buffers().items():
                host = np.array(self.backend.to_numpy(value), copy=True)
                # counts are int64 here whatever the backend holds them in (int32 on JAX without 64-bit arrays)
                state[f"{prefix}.{name}"] = host.astype(np.int64) if host.dtype.kind in "iu" else host

        for i, layer in enumerate(self.layers):
            add(str(i), layer)
        return state

    def load_state_dict(self, state) -> None:
        """Copy arrays into the parameters and buffers; keys and shapes must match exactly.

        Values may be NumPy arrays, nested lists, or arrays of any library (torch, CuPy, array_api_strict,
        Dask). They are always copied, as in torch: later training never writes into the caller's arrays.
        An integer buffer (a BatchNorm's num_batches_tracked) takes a non-negative whole number, integer or
        float (checkpoints store it as a float), and keeps it as an int64 count.
        """
        params = {p.name: p for p in self.parameters()}
        slots = self._buffer_slots()
        missing = sorted((set(params) | set(slots)) - set(state))
        unexpected = sorted(set(state) - set(params) - set(slots))
        if missing or unexpected:
            raise ValueError(f"state dict does not fit this model: missing keys {missing}, unexpected keys {unexpected}")
        new = {}
        targets = [(key, tuple(p.data.shape), False) for key, p in params.items()]
        targets += [(key, tuple(v.shape), numpy_dtype(v.dtype).kind in "iu")
                    for key, (_, _, v) in slots.items()]
        for key, shape, integer in targets:
            value = to_host(state[key], what=f"state dict entry {key!r}")
            if value.shape != shape:
                raise ValueError(f"state dict entry {key!r} has shape {value.shape}; the model needs {shape}")
            if value.dtype.kind not in "iuf":
                raise ValueError(f"state dict entry {key!r} has dtype {value.dtype}; expected a float array")
            if integer:  # a count: exact whole numbers only
                held = np.asarray(value, dtype=np.float64) if value.dtype.kind == "f" else value
                if (value.dtype.kind == "f" and not np.all(np.isfinite(held) & (held == np.floor(held))
                                                           & (np.abs(held) < 2.0**63))) or np.any(held < 0):
                    raise ValueError(f"state dict entry {key!r} must hold non-negative whole numbers (a count)")
                new[key] = np.array(value, dtype=np.int64, copy=True)
                continue
            with np.errstate(over="ignore"):  # a value too large for the dtype becomes inf: refused below
                new[key] = np.array(value, dtype=self.dtype, copy=True)  # never the caller's memory
            bad = int(new[key].size - np.count_nonzero(np.isfinite(new[key])))
            if bad:
                raise ValueError(f"state dict entry {key!r} holds {bad} NaN or infinite values "
                                 f"(or values too large for {self.dtype})")
        for key, p in params.items():  # only assign once everything has been checked
            p.data = self.backend.asarray(new[key], dtype=self.dtype)
            p.grad = None
        self._set_buffers(new)

    def _set_buffers(self, host: dict) -> None:
        """Put host arrays (key -> NumPy array) into the layers' buffers on the model's backend and dtype
        (integer buffers stay int64)."""
        for key, (layer, name, _) in self._buffer_slots().items():
            value = host[key]
            layer.set_buffer(name, self.backend.asarray(value, dtype=None if value.dtype.kind in "iu" else self.dtype,
                                                        what=f"state dict entry {key!r}"))

    def to(self, backend, dtype=None) -> "Sequential":
        """Move the parameters and buffers to another backend (and optionally dtype); returns ``self``.

        Create optimizers after moving: their state lives with the parameters they were given.
        """
        state = self.state_dict()
        new_dtype = self.dtype if dtype is None else float_dtype_name(dtype)  # checked before anything moves
        new_backend = get_backend(backend)
        new_backend.check_dtype(new_dtype)  # e.g. float64 on JAX without its 64-bit arrays
        self.backend = new_backend
        self.dtype = new_dtype
        self._output_shape = None
        for p in self.parameters():
            p.data = self.backend.asarray(state[p.name], dtype=self.dtype)
            p.grad = None
        self._set_buffers(state)
        return self

    # -- training and inference (loops live in training.py, files in checkpoint.py) -------------------------
    #: ``model.fit(x, y, ...)`` is :func:`portacnn.training.fit` with the model first: one signature, defaults
    #: and docstring, which ``help(model.fit)`` shows in full
    fit = training.fit

    def evaluate(self, x, y, batch_size=1000, comm=None) -> dict:
        """``{"loss": float, "accuracy": float, "n": int}`` over the whole of ``x``, ``y`` (``comm``: split across
        MPI ranks, see :func:`portacnn.training.evaluate`)."""
        return training.evaluate(self, x, y, batch_size=batch_size, comm=comm)

    def predict(self, x, batch_size=1000) -> np.ndarray:
        """Predicted class ids (N,), a host NumPy array; for a Dask array, a lazy Dask array computed chunk by
        chunk (see :mod:`portacnn.dask_inference`)."""
        if is_dask_array(x):
            return dask_inference.predict_dask(self, x, batch_size, probabilities=False)
        return training.predict(self, x, batch_size=batch_size)

    def predict_proba(self, x, batch_size=1000) -> np.ndarray:
        """Class probabilities (N, classes), a host NumPy array of the model's dtype; for a Dask array, a lazy Dask
        array."""
        if is_dask_array(x):
            return dask_inference.predict_dask(self, x, batch_size, probabilities=True)
        return training.predict_proba(self, x, batch_size=batch_size)

    def save(self, path, optimizer=None, **kwargs):
        """Write a safetensors checkpoint atomically (see :mod:`portacnn.checkpoint`)."""
        return checkpoint.save(self, path, optimizer=optimizer, **kwargs)

    # -- description -----------------------------------------------------------------------------------
    def architecture(self) -> list[dict]:
        """The layers as ``[{"type": "Conv2D", "in_channels": 1, ...}, ...]`` (JSON-ready)."""
        return [layer_spec(layer) for layer in self.layers]

    @classmethod
    def from_architecture(cls, arch, backend=None, dtype="float32", seed=0, workers="auto",
                          input_shape=None) -> "Sequential":
        """Rebuild a model from :meth:`architecture` output (unknown types or bad fields: ValueError)."""
        if not isinstance(arch, list) or not arch:
            raise ValueError("architecture must be a non-empty list of layer descriptions")
        layers = [layer_from_spec(spec, f"architecture item {i}") for i, spec in enumerate(arch)]
        return cls(layers, backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=input_shape)

    def summary(self, input_shape=None) -> str:
        """A table as Keras' ``model.summary()``: one row per layer (its :meth:`~portacnn.layers.Layer.short`
        description, a Residual's layers indented below it), its per-image output shape and parameter count, then
        the totals. Shapes follow ``input_shape`` (C, H, W) when given, else the model's own, else the shape of
        the first batch it computed; before any, they show as '?' and the last line says how to get them."""
        shape, source = input_shape, ""
        if shape is None:
            shape = self.input_shape
        if shape is None and self._first_batch_shape is not None:
            shape, source = self._first_batch_shape, " of the first batch"
        rows = [("#", "layer", "output shape", "parameters")]

        def add(key, layers, shape, depth):
            for i, layer in enumerate(layers):
                parts = layer.sublayers()
                given = shape
                shape = None if shape is None else layer.output_shape(tuple(shape))
                count = sum(int(np.prod(p.data.shape)) for p in layer.parameters())
                rows.append((f"{key}{i}", "  " * depth + layer.short(), "?" if shape is None else str(tuple(shape)),
                             f"{count:,}"))
                for branch in dict.fromkeys(name.split(".")[0] for name, _ in parts):  # "body", "shortcut"
                    add(f"{key}{i}.{branch}.", [sub for name, sub in parts if name.split(".")[0] == branch], given,
                        depth + 1)

        add("", self.layers, shape, 0)
        widths = [max(len(r[k]) for r in rows) for k in range(4)]
        lines = ["  ".join(r[k].ljust(widths[k]) if k < 3 else r[k].rjust(widths[k]) for k in range(4)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        read = ("input ?; for shapes pass input_shape=(C, H, W) or run a batch" if shape is None
                else f"input {tuple(shape)}{source}")
        lines.append(f"{self.num_parameters():,} parameters ({self.dtype}, backend {self.backend.name}, {read})")
        return "\n".join(lines)

    def input_channels(self) -> int | None:
        """The channel count the first layer that fixes one requires (None: any)."""
        return next((layer.input_channels for layer in self.layers if layer.input_channels is not None), None)

    def num_classes(self) -> int | None:
        """The features of the last layer that fixes them (the class count of a classifier; None: unknown)."""
        return checkpoint.architecture.num_classes(self.layers)

    def num_parameters(self) -> int:
        return int(sum(int(np.prod(p.data.shape)) for p in self.parameters()))

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index):
        """``model[i]`` is layer i (``model[-1]`` the last); a slice gives a list of layers (the same objects)."""
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        body = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(backend={self.backend.name!r}, dtype={self.dtype!r}, params={self.num_parameters()})[\n{body}\n]"


def load(path, backend=None, dtype=None, allow_unsigned: bool = False) -> Sequential:
    """Rebuild the model saved in ``path`` on ``backend`` (any backend, whatever it was saved from).

    Everything in the file is checked before the model is built (:func:`portacnn.checkpoint.read`; every
    problem is a :class:`~portacnn.checkpoint.CheckpointError` naming the file). The model carries
    ``model.checkpoint``: the saved optimizer description and buffers, the ``train_state`` (None when the file
    holds weights only) that ``fit(resume=...)`` continues from, the run information ``extra`` and the stored
    ``input_shape``. ``allow_unsigned=True`` opens a foreign file without a SHA-256 (portacnn writes one in
    every checkpoint). Unknown backend names raise ValueError, unusable backends BackendUnavailableError.
    """
    backend = get_backend(backend)  # a bad backend name is the caller's error, not the file's
    saved = checkpoint.read(path, dtype=dtype, allow_unsigned=allow_unsigned)
    try:
        model = Sequential.from_architecture(saved["architecture"], backend=backend, dtype=saved["dtype"],
                                             seed=saved["seed"], input_shape=saved["input_shape"])
        model.load_state_dict(saved["weights"])
    except (ValueError, TypeError, OverflowError) as e:  # not expected after read's checks
        raise checkpoint.CheckpointError(f"{path}: cannot rebuild the saved model: {e}") from None
    model.preprocessing = saved["preprocessing"]
    model.class_names = saved["class_names"]
    model.checkpoint = saved["info"]
    return model
