"""Data-parallel shards on the CPU: one batch cut into row shards, each run on its own thread.

NumPy runs element-wise ops, copies and reductions on one core; only BLAS uses more. So a batch of N
images is cut into S contiguous row shards, and shard s runs the ordinary layer-by-layer forward and
backward of a *replica* of the model (each layer's declared :meth:`~portacnn.layers.Layer.replica`, whose
Parameters share the model's arrays) on its own thread::

    forward:   logits = concat_s( forward_s(x[lo_s:hi_s]) )
    backward:  dW = sum_s dW_s     dx = concat_s( dx_s )      (shard s receives rows lo_s:hi_s of dlogits)

Layers declare whether they are row-separable (an image's output depends on that image only); a model with
one that is not is never sharded. With a mean loss's 1/N already inside dlogits, the shards' results are the
sums of the unsharded pass added in another order: equal up to float rounding. Dropout masks come from the same draws as an unsharded step: the k-th draw of the layer's
generator is made once for the whole batch (N, ...) and shard s takes rows lo_s:hi_s, so the masks, and
the generator's state afterwards, are exactly those of a single-thread step.

NumPy releases the GIL inside its loops and BLAS calls, so the shards really run side by side; BLAS is
held at one thread per call meanwhile (:func:`portacnn.backend.one_blas_thread`), since S shards times S
BLAS threads would fight over S cores.

``workers="auto"`` (the default) shards only on the NumPy backend, with as many shards as NumPy's BLAS
has threads, and only when each shard keeps enough work to repay the threads: at least
:data:`MIN_SHARD_IMAGES` images and :data:`MIN_SHARD_ACTIVATIONS` activation values (images times the
sum of every layer's output size; an inference pass needs 2.5x as many, having less element-wise work
per value). Below those sizes the thread hand-offs cost more than the work they split, so ``auto`` does
not shard there (the measurements behind the thresholds are in benchmarks/README.md).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .backend import blas_threads, one_blas_thread
from .backend.cpu import thread_pool
from .layers.base import Parameter, run_backward, run_forward

#: fewest images per shard for ``workers="auto"``
MIN_SHARD_IMAGES = 64
#: fewest activation values (images x sum of layer output sizes) per shard for ``workers="auto"``, for a
#: training pass and for an inference pass (which does a third of the element-wise work per activation)
MIN_SHARD_ACTIVATIONS = {True: 2_000_000, False: 5_000_000}


def check_workers(workers, backend=None):
    """``"auto"`` or a positive int (more than 1 only on a CPU ``backend``); otherwise a ValueError saying so."""
    if workers == "auto":
        return workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise ValueError(f"workers must be 'auto' or a positive integer; got {workers!r}")
    if workers > 1 and backend is not None and not backend.is_cpu:
        raise ValueError(f"workers={workers} splits batches across CPU threads, but backend '{backend.name}' "
                         f"computes on {backend.device}; use workers=1")
    return int(workers)


def shard_spans(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous row ranges covering 0..n, sizes differing by at most one (larger first)."""
    base, extra = divmod(n, shards)
    spans, lo = [], 0
    for s in range(shards):
        hi = lo + base + (s < extra)
        spans.append((lo, hi))
        lo = hi
    return spans


def _run_all(calls: list):
    """Run ``calls[0]`` here and the rest on the pool; wait for all, then re-raise the first error."""
    futures = [thread_pool("shard", len(calls) - 1).submit(c) for c in calls[1:]]
    results, errors = [], []
    try:
        results.append(calls[0]())
    except BaseException as e:  # still wait for the other shards: they use the same replicas next time
        results.append(None)
        errors.append(e)
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as e:
            results.append(None)
            errors.append(e)
    if errors:
        raise errors[0]
    return results


# -- dropout draws shared by the shards ----------------------------------------------------------------
class _BatchDraws:
    """The draws a generator makes for one whole-batch step, made lazily in order by whichever shard asks
    first. Every shard asks for the same sequence (same layers), so the generator is called exactly as an
    unsharded step calls it."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng, self.n = rng, n
        self.lock = threading.Lock()
        self.draws: list[np.ndarray] = []


class _ShardGenerator:
    """Stands in for a layer's ``numpy.random.Generator`` inside one shard: ``random(size, dtype)`` returns
    rows lo:hi of the matching whole-batch draw."""

    def __init__(self, batch: _BatchDraws, lo: int, hi: int):
        self._batch, self._lo, self._hi, self._k = batch, lo, hi, 0

    def random(self, size=None, dtype=np.float64):
        size = () if size is None else tuple(np.atleast_1d(size).tolist())
        if not size or size[0] != self._hi - self._lo:
            raise RuntimeError(f"a layer drew random numbers of shape {size} in a shard of {self._hi - self._lo} "
                               "images; data-parallel shards need draws with the batch as first axis: use workers=1")
        b = self._batch
        with b.lock:
            if self._k == len(b.draws):
                b.draws.append(b.rng.random((b.n,) + size[1:], dtype=dtype))
            full = b.draws[self._k]
        self._k += 1
        if full.shape[1:] != size[1:] or full.dtype != np.dtype(dtype):
            raise RuntimeError("the shards drew different random numbers; use workers=1 for this model")
        return full[self._lo : self._hi]

    def __getattr__(self, name):
        raise AttributeError(f"a layer called Generator.{name}() inside a data-parallel shard, where only "
                             "random() is supported; use workers=1 for this model")


# -- replicas ---------------------------------------------------------------------------------------------
class _Replica:
    """The model's layers as their :meth:`~portacnn.layers.Layer.replica` copies: Parameter objects of their
    own (each shard writes its own ``grad``) whose ``data`` is the model's array, re-pointed before every pass;
    layers that declare ``draws_random`` get a shard generator before each training pass."""

    def __init__(self, layers):
        self.layers = [layer.replica() for layer in layers]
        self.params: list[tuple[Parameter, Parameter]] = []  # (replica's, model's)
        self.generators: list[tuple] = []  # (replica layer, model layer)
        for twin, layer in zip(self.layers, layers):
            self.params += list(zip(twin.parameters(), layer.parameters()))
            if layer.draws_random:
                self.generators.append((twin, layer))

    def refresh(self):
        for mine, master in self.params:
            mine.data, mine.grad = master.data, None


class DataParallel:
    """The shards of one :class:`~portacnn.Sequential` (kept on it as ``model._parallel``)."""

    def __init__(self, model):
        self.model = model
        self.replicas: list[_Replica] = []
        self._key = None
        self._activations: dict[tuple, int] = {}
        self.spans: list[tuple[int, int]] | None = None  # of the last forward when sharded, for backward

    def _replicas_for(self, shards: int) -> list[_Replica]:
        m = self.model
        key = (m.backend, m.dtype, tuple(id(layer) for layer in m.layers))
        if key != self._key:
            self.replicas, self._activations, self._key = [], {}, key
        while len(self.replicas) < shards:
            self.replicas.append(_Replica(m.layers))
        for r in self.replicas[:shards]:
            r.refresh()
        return self.replicas[:shards]

    def activations_per_image(self, image_shape: tuple) -> int:
        """Sum of every layer's output size for one image of ``image_shape`` (C, H, W), from the layers'
        declared :meth:`~portacnn.layers.Layer.output_shape` (cached per shape)."""
        if image_shape not in self._activations:
            shape, total = tuple(image_shape), 0
            for layer in self.model.layers:
                shape = layer.output_shape(shape)
                total += math.prod(shape)
            self._activations[image_shape] = total
        return self._activations[image_shape]

    def shards(self, batch_shape, training: bool = True) -> int:
        """How many shards a batch of ``batch_shape`` is cut into under the model's ``workers`` setting."""
        m, n = self.model, int(batch_shape[0])
        if not all(layer.row_separable for layer in m.layers):
            return 1  # a layer that mixes rows (batch statistics) runs on the whole batch, never sharded
        if m.workers != "auto":
            check_workers(m.workers, m.backend)  # the model may have moved to a GPU since it was set
            return max(1, min(m.workers, n))
        if m.backend.name != "numpy" or n < 2 * MIN_SHARD_IMAGES or len(batch_shape) < 2:
            return 1
        threads = blas_threads()
        if threads < 2:
            return 1
        per_image = self.activations_per_image(tuple(batch_shape[1:]))
        return max(1, min(threads, n // MIN_SHARD_IMAGES, n * per_image // MIN_SHARD_ACTIVATIONS[bool(training)]))

    def forward(self, x, training: bool):
        """The model's forward pass over ``x``: in shards when :meth:`shards` says so, else in this thread."""
        self.spans = None
        shards = self.shards(tuple(x.shape), training)
        if shards == 1:
            return run_forward(self.model.layers, x, training)
        n = int(x.shape[0])
        spans = shard_spans(n, shards)
        replicas = self._replicas_for(shards)
        if training:
            batches = {}
            for r, (lo, hi) in zip(replicas, spans):
                mine = {}  # layers sharing a generator share its stand-in (one sequence of draws)
                for twin, layer in r.generators:
                    rng = layer.rng  # the model layer's generator now (a resume may have set its state)
                    b = batches.setdefault(id(rng), _BatchDraws(rng, n))
                    twin.rng = mine.setdefault(id(rng), _ShardGenerator(b, lo, hi))
        calls = [lambda r=r, lo=lo, hi=hi: run_forward(r.layers, x[lo:hi, ...], training)
                 for r, (lo, hi) in zip(replicas, spans)]
        with one_blas_thread():
            outs = _run_all(calls)
        self.spans = spans
        xp = self.model.backend.xp
        return xp.concat(outs, axis=0)

    def backward(self, grad, input_grad: bool):
        """The backward pass matching the last forward: in the same shards, or in this thread."""
        spans = self.spans
        if spans is None:
            return run_backward(self.model.layers, grad, input_grad)
        if int(grad.shape[0]) != spans[-1][1]:
            raise ValueError(f"backward got a gradient for {int(grad.shape[0])} rows; the last forward had {spans[-1][1]}")
        replicas = self.replicas[: len(spans)]
        calls = [lambda r=r, lo=lo, hi=hi: run_backward(r.layers, grad[lo:hi, ...], input_grad)
                 for r, (lo, hi) in zip(replicas, spans)]
        with one_blas_thread():
            dxs = _run_all(calls)
        for j, (_, master) in enumerate(replicas[0].params):
            total = None
            for r in replicas:  # fixed order: the same run gives the same bits every time
                g = r.params[j][0].grad
                total = g if total is None else total + g
            master.grad = total
        return self.model.backend.xp.concat(dxs, axis=0) if input_grad else None
