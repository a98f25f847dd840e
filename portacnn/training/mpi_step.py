"""``fit`` under MPI: one data-parallel step (:func:`rank_step`), and what the ranks do together besides it (the
same start, the callbacks of an epoch, the weights compared after it).

Every rank passes ``fit`` the same data, model, seed and arguments and computes its rows of each batch; one
allreduce per step adds the gradients, the step's loss and correct counts, the signals the ranks have seen and
their failures, so that the ranks stop together (on the signals they agreed on, :class:`Agreed`) and an error
on any rank is raised on every rank.

Before the first step (:func:`start`) the ranks make sure that they do hold the same: each digests its data and
its whole setup, part by part (:func:`run_digests`: the images' and labels' bytes, the settings, the
augmentation's and callbacks' configurations, the optimizer, the model, the resume position), and the ranks
exchange the digests in one collective of a fixed size (so that ranks that disagree never meet in collectives
of different sizes). Where any part differs, every rank raises the same one-line ValueError naming it
(:func:`disagreement`), e.g. "the MPI ranks' training setups differ (rank 1's augmentation differs from rank
0's): start every rank with the same arguments", and the command line exits 2 with it.
"""

from __future__ import annotations

import signal

import numpy as np

from .. import distributed
from ..backend import to_host, wide_dtypes
from ..inputs import Images
from ..losses import softmax_cross_entropy
from .steps import augment_rng


class Agreed:
    """The signals every MPI rank has seen through the steps' allreduces (what the ranks stop on together)."""

    hit, signum = False, None


#: what the ranks compare before the first step, in the order a difference is reported: key -> (what it is
#: part of, its words, their verb). Each is one SHA-256 (:func:`run_digests`), exchanged in one fixed-size
#: collective (:func:`portacnn.distributed.compare_digests`)
START_PARTS = {
    "images": ("data", "images", "differ"),
    "labels": ("data", "labels", "differ"),
    "validation": ("data", "validation data", "differ"),
    "epochs": ("setup", "epochs", "differ"),
    "batch_size": ("setup", "batch size", "differs"),
    "seed": ("setup", "seed", "differs"),
    "shuffle": ("setup", "shuffle", "differs"),
    "validation_split": ("setup", "validation split", "differs"),
    "label_smoothing": ("setup", "label smoothing", "differs"),
    "dtype": ("setup", "dtype", "differs"),
    "log_every": ("setup", "log_every", "differs"),
    "checkpointing": ("setup", "checkpointing (checkpoint_path given, checkpoint_every)", "differs"),
    "augment": ("setup", "augmentation", "differs"),
    "optimizer": ("setup", "optimizer", "differs"),
    "callbacks": ("setup", "callbacks", "differ"),
    "checkpoint_extra": ("setup", "recorded recipe (checkpoint_extra)", "differs"),
    "backend": ("model", "array backend", "differs"),
    "architecture": ("model", "architecture", "differs"),
    "weights": ("model", "weights", "differ"),
    "generator": ("model", "generator state", "differs"),
    "position": ("model", "resume position", "differs"),
}
#: the words and the advice of each kind of part
START_GROUPS = {
    "data": ("training data", "give every rank the same data"),
    "setup": ("training setups", "start every rank with the same arguments"),
    "model": ("models",
              "build every rank's model alike (the same seed), or resume every rank from the same checkpoint"),
}
#: the fit() settings among START_PARTS (what :func:`run_digests` takes as ``settings``)
SETTINGS = ("epochs", "batch_size", "seed", "shuffle", "validation_split", "label_smoothing", "log_every",
            "checkpointing")


def _array(x):
    """The array an :class:`~portacnn.inputs.Images` wraps (or ``x``)."""
    return x.x if isinstance(x, Images) else x


def augment_config(augment):
    """What the ranks compare of an augmentation: a :mod:`portacnn.augment` transform's ``config()`` (its type
    and every parameter); a function or another callable without one, its module and qualified name."""
    config = getattr(augment, "config", None)
    return {"config": config()} if callable(config) else {"callable": distributed.qualified_name(
        augment if hasattr(augment, "__qualname__") else type(augment))}


def callback_config(callback) -> dict:
    """What the ranks compare of a callback: its type's module and qualified name, its arguments where portacnn
    knows them (its own callbacks), its ``state_dict()`` (a user's own class: its state only) and
    ``stop_training``."""
    from .callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint

    known = ((EarlyStopping, ("monitor", "sign", "min_delta", "patience", "restore_best_weights")),
             (ModelCheckpoint, ("monitor", "sign", "min_delta", "save_best_only")),  # its path: rank 0's alone
             (LearningRateScheduler, ("per",)))  # its scheduler, arguments included: in its state
    fields = next((names for cls, names in known if isinstance(callback, cls)), ())
    return {"type": distributed.qualified_name(type(callback)), "arguments": {k: getattr(callback, k) for k in fields},
            "state": callback.state_dict(), "stop_training": bool(callback.stop_training)}


def optimizer_config(model, optimizer) -> dict:
    """What the ranks compare of an optimizer: its type, defaults, parameter groups (hyper-parameters and
    members, as positions in ``model.parameters()``), step counts and buffers."""
    where = {id(p): i for i, p in enumerate(model.parameters())}
    return {"type": distributed.qualified_name(type(optimizer)), "defaults": dict(optimizer.defaults),
            "params": [where.get(id(p), -1) for p in optimizer.params],
            "state": optimizer.state_dict(model.backend.to_numpy)}


def run_digests(model, source, labels, validation, rows, settings: dict, augment, optimizer, callbacks, position,
                checkpoint_extra) -> dict[str, bytes]:
    """One SHA-256 per key of :data:`START_PARTS`: the training images and labels (bytes, dtype, shape), the
    validation data (and the training rows a split leaves), each of ``settings`` (:data:`SETTINGS`), the
    augmentation (:func:`augment_config`), the optimizer (:func:`optimizer_config`), the callbacks
    (:func:`callback_config`; not the :class:`~portacnn.training.callbacks.LambdaCallback` of a plain function,
    such as fit's ``on_epoch_end``, which the command line gives rank 0 alone), the checkpoint's ``extra``, the
    model's backend, dtype, architecture, weights (and buffers) and generator state, and the resume position
    (``position``: the run's TrainState as JSON). Equal inputs give equal digests in every process."""
    from .callbacks import LambdaCallback

    if set(settings) != set(SETTINGS):
        raise ValueError(f"run_digests needs the settings {list(SETTINGS)}; got {sorted(settings)}")
    val = None if validation is None else [_array(validation[0]), validation[1]]
    parts = {"images": _array(source), "labels": labels, "validation": [val, rows],
             **{key: settings[key] for key in SETTINGS}, "dtype": str(model.dtype),
             "augment": None if augment is None else augment_config(augment),
             "optimizer": optimizer_config(model, optimizer),
             "callbacks": [callback_config(c) for c in callbacks if not isinstance(c, LambdaCallback)],
             "checkpoint_extra": checkpoint_extra, "backend": model.backend.name,
             "architecture": model.architecture(), "weights": model.state_dict(),
             "generator": model.rng.bit_generator.state, "position": position}
    return {key: distributed.digest(key, parts[key]) for key in START_PARTS}


def disagreement(found: list[tuple[str, int]]) -> str:
    """The one line every rank raises for :func:`portacnn.distributed.compare_digests`' ``found`` (non-empty):
    the first part that differs (in :data:`START_PARTS`' order), the first rank whose part is not rank 0's, the
    other parts that differ, and what to do."""
    key, rank = found[0]
    group, words, verb = START_PARTS[key]
    what, advice = START_GROUPS[group]
    also = [START_PARTS[k][1] for k, _ in found[1:]]
    more = f"; also: {', '.join(also)}" if also else ""
    return f"the MPI ranks' {what} differ (rank {rank}'s {words} {verb} from rank 0's{more}): {advice}"


def start(comm, model, **what):
    """Before the first step: every rank's data and whole training setup (``what``: :func:`run_digests`'
    arguments but the model) digested and compared with one fixed-size collective; where they differ, every rank
    raises the same one-line ValueError (:func:`disagreement`). Then a transport choice every rank can make.
    Returns the gradient transport (NCCL on CuPy, else None: the host) and BatchNorm's sums over the ranks."""
    digests = distributed.agree(comm, lambda: run_digests(model, **what))  # a failure here stops every rank
    found = distributed.compare_digests(comm, digests)
    if found:
        raise ValueError(disagreement(found))
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
    if distributed.compare_digests(comm, {"weights": distributed.digest(model.state_dict())}):
        raise ValueError(f"the MPI ranks' weights differ after epoch {epoch + 1}: their allreduce results differed "
                         "(report this, with the MPI library used)")


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
                count_dtype, sum_dtype = wide_dtypes(xp)
                host = to_host(xp.stack([xp.astype(loss, sum_dtype) * n,
                                         xp.astype(xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, count_dtype)),
                                                   sum_dtype)]))
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
