"""Loss functions. Each returns ``(loss, dlogits)``: the batch-mean loss as a 0-d array on the logits'
device (call ``float()`` only when you log it: on a GPU every conversion is a sync) and its gradient.

:data:`LOSSES` names them as ``fit(loss=...)`` takes them; :func:`get_loss` reads such a name.
"""

from __future__ import annotations

import numbers

from array_api_compat import array_namespace, device

from .backend import asarray_like, wide_dtypes
from .validation import _short


def softmax_cross_entropy(logits, labels, label_smoothing: float = 0.0, check: bool = True, batch_rows=None):
    """Mean cross-entropy of softmax(logits) against integer class ids, and its gradient.

    With z = logits (N, C), y = labels (N,), p = softmax(z), one-hot Y and eps = ``label_smoothing``
    (as ``torch.nn.functional.cross_entropy(z, y, label_smoothing=eps)``: the target is
    q = (1 - eps) * Y + eps / C)::

        log p    = z - max(z) - log(sum(exp(z - max(z))))
        loss     = (1 - eps) * (-(1/N) * sum_n log p[n, y_n]) + (eps / C) * (-(1/N) * sum_n sum_c log p[n, c])
        dloss/dz = (p - q) / N

    With eps = 0 the smoothing term is not computed at all (so a class with log p = -inf cannot turn it
    into 0 * inf); with eps > 0 such a class makes the loss +inf, as in torch, and its gradient stays finite.

    Non-finite values behave as in ``torch.nn.functional.cross_entropy``: a logit of -inf (or one whose
    distance to the row's max overflows) has p = 0 and gradient 0, and the loss stays finite unless it is the
    label's; a row with +inf or only -inf logits gives NaN. Labels may have any integer dtype.

    ``labels`` may be a host NumPy array (moved to the logits' device). ``check=False`` skips the
    label-range check, which costs a device-to-host sync (a training loop validates its labels once).
    ``label_smoothing`` must be a number in [0, 1).

    ``batch_rows`` (default N) is the N the formulas above divide by: ``logits`` are then some rows of a batch
    of that many, and the loss and gradient are those rows' terms of the batch's (what one MPI rank computes:
    its gradient rows are bit for bit the same rows of the whole batch's gradient).
    """
    xp = array_namespace(logits)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) or \
            not 0.0 <= label_smoothing < 1.0:  # NaN fails the comparison too
        raise ValueError(f"label_smoothing must be a number in [0, 1); got {label_smoothing!r}")
    eps = float(label_smoothing)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy expects logits of shape (N, C); got shape {tuple(logits.shape)}")
    n, c = logits.shape
    rows = n if batch_rows is None else batch_rows
    if batch_rows is not None and (isinstance(rows, bool) or not isinstance(rows, numbers.Integral)
                                   or rows < max(n, 1)):
        raise ValueError(f"batch_rows must be an integer of at least the {n} rows given; got {batch_rows!r}")
    labels = asarray_like(labels, logits, "labels")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match logits {tuple(logits.shape)}; got {tuple(labels.shape)}")
    if not xp.isdtype(labels.dtype, "integral"):
        raise ValueError(f"labels must be integer class ids; got dtype {labels.dtype}")
    index_dtype = wide_dtypes(xp)[0]  # int64 (int32 on JAX without 64-bit arrays)
    if labels.dtype != index_dtype:  # uint64 does not promote with int64, and torch has no min() for it
        labels = xp.astype(labels, index_dtype)  # a uint64 label >= 2**63 wraps negative: the check refuses it
    if check and n > 0:
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        if lo < 0 or hi >= c:
            raise ValueError(f"labels must lie in 0..{c - 1} for {c} classes; got values from {lo} to {hi}")
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    hit = xp.arange(c, device=device(logits))[None, :] == labels[:, None]
    # select log p[n, y_n] with where, not a one-hot product: a class with log p = -inf (logit -inf, or a
    # logit so far below the max that the shift overflows) would turn 0 * -inf into NaN
    zero = xp.zeros((), dtype=logits.dtype, device=device(logits))
    loss = -xp.sum(xp.where(hit, log_p, zero)) / rows
    target = xp.astype(hit, logits.dtype)
    if eps > 0:
        loss = (1 - eps) * loss + (eps / c) * (-xp.sum(log_p) / rows)
        target = target * (1 - eps) + eps / c
    return loss, (xp.exp(log_p) - target) / rows


#: loss name -> the function, as ``fit(loss=...)`` takes it. portacnn models end in logits and this loss applies
#: the softmax itself, so Keras' "sparse_categorical_crossentropy" (integer class ids) is the same loss as Keras
#: computes it with ``from_logits=True``, or on a model that ends in a softmax.
LOSSES = {"cross_entropy": softmax_cross_entropy, "sparse_categorical_crossentropy": softmax_cross_entropy}

#: names a Keras user may try that portacnn does not train with, and what to do instead
_REFUSED = {"categorical_crossentropy": "takes one-hot labels; portacnn trains on integer class ids: pass "
                                        "y.argmax(axis=1) as labels with loss='sparse_categorical_crossentropy'"}


def get_loss(loss):
    """The loss function ``loss`` names: a key of :data:`LOSSES` in any case, or
    :func:`softmax_cross_entropy` itself; a one-line ValueError otherwise (another function too: training runs
    portacnn's own loss)."""
    if loss is softmax_cross_entropy:
        return loss
    if isinstance(loss, str):
        key = loss.lower()
        if key in LOSSES:
            return LOSSES[key]
        if key in _REFUSED:
            raise ValueError(f"loss {loss!r} {_REFUSED[key]}")
    raise ValueError(f"unknown loss {_short(loss)}; known names: {', '.join(LOSSES)} (or the function "
                     "portacnn.losses.softmax_cross_entropy)")
