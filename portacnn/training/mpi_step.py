"""``fit`` under MPI: one data-parallel step (:func:`rank_step`), and what the ranks do together besides it (the
same start, the callbacks of an epoch, the weights compared after it).

Every rank passes ``fit`` the same data, model, seed and arguments and computes its rows of each batch; one
allreduce per step adds the gradients, the step's loss and correct counts, the signals the ranks have seen and
their failures, so that the ranks stop together (on the signals they agreed on, :class:`Agreed`) and an error
on any rank is raised on every rank.
"""

from __future__ import annotations

import signal

import numpy as np

from .. import distributed
from ..backend import to_host
from ..losses import softmax_cross_entropy
from .steps import augment_rng


class Agreed:
    """The signals every MPI rank has seen through the steps' allreduces (what the ranks stop on together)."""

    hit, signum = False, None


def start(comm, model, source, labels, optimizer, settings: list):
    """Before the first step: the same weights, generator, labels, optimizer and ``settings`` on every rank (or
    one clear error on each), a transport choice every rank can make. Returns the gradient transport (NCCL on
    CuPy, else None: the host) and BatchNorm's sums over the ranks."""
    distributed.check_same(comm, distributed.fingerprint(
        weights=model.state_dict(), generator=model.rng.bit_generator.state, labels=labels,
        images=[list(source.shape), str(model.dtype)], optimizer=optimizer.state_dict(model.backend.to_numpy),
        settings=settings), "start every rank with the same data, seed, arguments and checkpoint")
    distributed.agree(comm, distributed.transport_choice)  # a bad $PORTACNN_MPI_TRANSPORT stops every rank
    transport = distributed.gradient_transport(comm, model.backend)
    return transport, distributed.batch_sums(comm, model, transport)


def end_epoch(comm, model, callbacks, epoch: int, logs: dict) -> None:
    """The callbacks' ``on_epoch_end`` on every rank (one failing on one rank, a ModelCheckpoint file on rank 0,
    stops every rank), then the weights compared: the ranks must hold the same."""
    def run():
        for callback in callbacks:
            callback.on_epoch_end(epoch, logs)

    distributed.agree(comm, run)
    distributed.check_same(comm, distributed.fingerprint(weights=model.state_dict()),
                           "their allreduce results differed (report this, with the MPI library used)")


def _rows(source, idx, lo, hi, augment, where):
    """This rank's rows ``lo:hi`` of the batch ``idx``; augmented, the whole batch first, as in one process (its
    draws depend on it)."""
    if augment is None:
        return source.rows(idx[lo:hi])
    return augment(source.rows(idx), augment_rng(*where))[lo:hi, ...]


def rank_step(comm, model, source, y_host, idx, augment, where, label_smoothing, interrupt, agreed, transport=None,
              sums=None):
    """One data-parallel step under MPI: this rank's rows of the global batch ``idx`` forward and backward (with
    BatchNorm, ``sums`` adds its statistics over the ranks: a failure check before the passes and small
    allreduces in them), then ONE allreduce of every gradient (each rank's of its rows' terms of the batch's mean
    loss, so that the sum is the gradient of the batch's mean loss) and of the step's loss sum, correct count,
    signals and failures. Returns the batch's (loss sum, correct count); ``agreed`` learns the signals; an error on
    any rank is raised on every rank."""
    backend, xp = model.backend, model.backend.xp
    n = idx.size
    lo, hi = distributed.row_span(n, comm)
    mine = hi - lo
    synced = sums is not None
    loss_sum, correct, error = 0.0, 0, None
    # a rank without rows (a last batch smaller than the ranks) still draws the batch's dropout masks, and joins
    # BatchNorm's allreduces, through passes of one stand-in row, so that every rank stays in lockstep
    lo_, hi_ = (lo, hi) if mine else (0, 1)
    runs = bool(mine) or synced or any(layer.draws_random for layer in model.layers)
    try:
        if runs:
            xb = _rows(source, idx, lo_, hi_, augment, where)
    except Exception as e:  # noqa: BLE001 - the other ranks must learn of it (below, or in this step's allreduce)
        error = e
    if synced and distributed.allreduce_sum(comm, np.array([float(error is not None)]))[0]:
        distributed.gather_failures(comm, error)  # before any rank waits in a BatchNorm allreduce
    passes = False
    try:
        if runs and error is None:
            passes = True
            with distributed.rank_draws(model, n, lo_, hi_), distributed.synced_batchnorm(model, sums, n, lo, hi):
                logits = model.forward(xb, training=True)
                if mine:
                    yb = backend.asarray(y_host[idx[lo:hi]])
                    # divided by the batch's n, not by this rank's rows: each gradient row is bit for bit that
                    # row of one process's, so two ranks add up to one process's two row shards exactly
                    loss, dlogits = softmax_cross_entropy(logits, yb, label_smoothing=label_smoothing, check=False,
                                                          batch_rows=n)
                    model.backward(dlogits, input_grad=False)
                elif synced:  # BatchNorm's backward sums too: join in with a zero gradient
                    model.backward(xp.zeros_like(logits), input_grad=False)
            passes = False
            if synced:
                sums.completed()
            if mine:
                host = to_host(xp.stack([xp.astype(loss, xp.float64) * n,
                                         xp.astype(xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, xp.int64)),
                                                   xp.float64)]))
                loss_sum, correct = float(host[0]), float(host[1])
    except Exception as e:  # noqa: BLE001 - the other ranks must learn of it in this step's allreduce
        error = e
        if passes and synced:  # the other ranks may be waiting in a BatchNorm sum: make the rest of them
            sums.finish(e)
    if not mine or error is not None:
        for p in model.parameters():
            p.grad = None  # zeros in the buffer
    signum = interrupt.signum if interrupt.hit else None
    extras = [loss_sum, correct, signum == signal.SIGINT, signum == signal.SIGTERM, error is not None]
    total = distributed.allreduce_gradients(comm, model.parameters(), backend, extras=extras, transport=transport)
    if total[4]:
        distributed.gather_failures(comm, error)
    if total[2] or total[3]:
        agreed.hit, agreed.signum = True, signal.SIGTERM if total[3] else signal.SIGINT
    return float(total[0]), round(float(total[1]))
