"""Evaluation and prediction: passes over a dataset in inference, a batch at a time, with one host sync.

``x`` and ``y`` may come from any array library (see :mod:`portacnn.inputs`); the memory used depends on the
batch, not on N. :func:`evaluate` also runs under MPI (each rank scores its share of the rows).
"""

from __future__ import annotations

import numpy as np

from .. import distributed
from ..backend import to_host, wide_dtypes
from ..inputs import Images, images
from ..losses import softmax_cross_entropy
from ..validation import Integer, check



def read_loss_and_count(xp, loss_sum, count) -> tuple[float, int]:
    """A loss sum and a count of correct predictions, 0-d arrays on the device, read back in ONE transfer: stacked in
    float64 (exact for counts below 2**53); where the backend has no 64-bit floats (JAX without 64-bit arrays) in
    float32 with the count as two halves, count // 4096 and count % 4096, each exact in float32."""
    count_dtype, sum_dtype = wide_dtypes(xp)
    if sum_dtype == xp.float64:
        host = to_host(xp.stack([xp.astype(loss_sum, sum_dtype), xp.astype(count, sum_dtype)]))
        return float(host[0]), int(host[1])
    high = count // 4096
    host = to_host(xp.stack([xp.astype(loss_sum, sum_dtype), xp.astype(high, sum_dtype),
                             xp.astype(count - high * 4096, sum_dtype)]))
    return float(host[0]), int(host[1]) * 4096 + int(host[2])

def check_labels(model, y, n, what="y") -> np.ndarray:
    """Labels (any array library, or a list) as a host int64 array of length ``n``, each a valid class id."""
    y = to_host(y, what)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},) to match the images; got {tuple(y.shape)}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer class ids; got dtype {y.dtype}")
    classes = model.num_classes()
    if n and (y.min() < 0 or (classes is not None and y.max() >= classes)):
        raise ValueError(f"{what} must lie in 0..{(classes or 0) - 1}; got values from {y.min()} to {y.max()}")
    return y.astype(np.int64, copy=False)


def _forward_batches(model, x, batch_size):
    """Yield (start, stop, logits) over ``x`` in chunks, so memory depends on the batch, not on N."""
    batch_size = check(batch_size, Integer(1), "batch_size")
    source = x if isinstance(x, Images) else images(x, model)
    for lo, hi, xb in source.batches(batch_size):
        yield lo, hi, model.infer(xb)


def evaluate(model, x, y, batch_size=1000, comm=None) -> dict:
    """Mean loss and accuracy over ``x``, ``y`` (one host sync at the end); ``x`` and ``y`` may come from any
    array library (see :mod:`portacnn.inputs`). With ``comm`` (an mpi4py communicator), every rank passes the
    same ``x`` and ``y``, scores its contiguous share of the rows, and the sums are added in one allreduce: every
    rank returns the result for all of ``x``."""
    xp, backend = model.backend.xp, model.backend
    check(batch_size, Integer(1), "batch_size")
    x = images(x, model)
    y_host = check_labels(model, y, x.shape[0])
    n = x.shape[0]
    if comm is not None and distributed.size(comm) > 1:
        first, last = distributed.row_span(n, comm)
        parts = ((lo, min(lo + batch_size, last), x.rows(slice(lo, min(lo + batch_size, last))))
                 for lo in range(first, last, batch_size))
    else:
        comm, parts = None, x.batches(batch_size)
    loss_sum = xp.asarray(0.0, dtype=xp.float64 if model.dtype == "float64" else xp.float32, device=backend.device)
    count_dtype = wide_dtypes(xp)[0]
    correct = xp.asarray(0, dtype=count_dtype, device=backend.device)
    error = None
    try:
        for lo, hi, xb in parts:
            logits = model.infer(xb)
            yb = backend.asarray(y_host[lo:hi])
            loss, _ = softmax_cross_entropy(logits, yb, check=False)
            loss_sum = loss_sum + loss * (hi - lo)
            correct = correct + xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, count_dtype))
        sums = read_loss_and_count(xp, loss_sum, correct)
    except Exception as e:  # under MPI the other ranks must learn of it
        if comm is None:
            raise
        error, sums = e, np.zeros(2)
    if comm is not None:  # the ranks' sums, and whether any rank failed, in one allreduce
        sums = distributed.allreduce_sum(comm, np.array([sums[0], sums[1], error is not None], dtype=np.float64))
        if sums[2]:
            distributed.gather_failures(comm, error)
    return {"loss": float(sums[0]) / n, "accuracy": float(sums[1]) / n, "n": n}


def predict_proba(model, x, batch_size=1000):
    """Class probabilities (N, classes) as a host NumPy array of the model's dtype."""
    xp = model.backend.xp
    out = []
    for _, _, logits in _forward_batches(model, x, batch_size):
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        e = xp.exp(shifted)
        out.append(model.backend.to_numpy(e / xp.sum(e, axis=1, keepdims=True)))
    return np.concatenate(out, axis=0)


def predict_log_proba(model, x, batch_size=1000):
    """Log-probabilities (N, classes), log-softmax of the logits, as a host NumPy array of the model's dtype
    (finite where probabilities would underflow to 0)."""
    xp = model.backend.xp
    out = []
    for _, _, logits in _forward_batches(model, x, batch_size):
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        out.append(model.backend.to_numpy(shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))))
    return np.concatenate(out, axis=0)


def predict(model, x, batch_size=1000):
    """Predicted class ids (N,) as a host int64 NumPy array."""
    xp = model.backend.xp
    out = [model.backend.to_numpy(xp.argmax(logits, axis=1)) for _, _, logits in _forward_batches(model, x, batch_size)]
    return np.concatenate(out).astype(np.int64, copy=False)
