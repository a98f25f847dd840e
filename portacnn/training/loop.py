"""The training, evaluation and prediction loops for :class:`~portacnn.Sequential`.

Determinism: epoch ``e`` visits the samples in ``numpy.random.default_rng([seed, e]).permutation(N)``,
drawn on the host, and dropout draws from the model's own generator. The trainer's position (epoch,
step within the epoch, running sums, generator state, history) is plain JSON saved in checkpoints, so a
run resumed from any checkpoint finishes with exactly the weights of an uninterrupted run.

Host syncs: the loss and the number of correct predictions accumulate on the device; they are read back
(one transfer of two numbers) only every ``log_every`` steps and at the end of an epoch.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import distributed
from ..backend import to_host
from ..checkpoint import check_architecture, optimizer_from_checkpoint, save
from ..inputs import Images, images
from ..losses import softmax_cross_entropy
from ..optim import Adam
from ..train_state import TrainState
from .callbacks import Callback, LearningRateScheduler, ModelCheckpoint, as_callbacks
from .signals import Interrupt


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the weights in memory are no longer usable."""


@dataclass
class History:
    """Per-epoch metrics, like Keras' ``History``: ``history["loss"][e]`` is epoch e's mean training loss."""

    history: dict = field(default_factory=lambda: {"loss": [], "accuracy": []})
    epoch_times: list = field(default_factory=list)
    interrupted: bool = False
    signal: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the run

    def to_dict(self) -> dict:
        return {"history": self.history, "epoch_times": self.epoch_times, "interrupted": self.interrupted,
                "signal": self.signal}


# -- argument checks ----------------------------------------------------------------------------------
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


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")
    return int(value)


# -- the loops ----------------------------------------------------------------------------------------
def _batches(n, batch_size):
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _metric(key, value) -> str:
    return f"{value:.4g}" if key == "lr" else f"{value:.4f}"


def _callback_states(callbacks) -> list[dict]:
    """What checkpoints keep of the callbacks: ``{"type": class name, "state": ...}`` of each with state, in order."""
    return [{"type": type(c).__name__, "state": s} for c in callbacks if (s := c.state_dict()) is not None]


def _restore_callbacks(callbacks, saved) -> None:
    """Give the callbacks with state what the checkpoint kept of them (nothing from a checkpoint without the record)."""
    if saved is None:
        return
    live = [c for c in callbacks if c.state_dict() is not None]
    want, have = [e["type"] for e in saved], [type(c).__name__ for c in live]
    if want != have:
        raise ValueError(f"resume: the checkpoint's run had the callbacks with state {want or '(none)'} and this fit has "
                         f"{have or '(none)'}; pass the same callbacks, in the same order, to continue that run")
    for callback, entry in zip(live, saved):
        try:
            callback.load_state_dict(entry["state"])
        except ValueError as e:
            raise ValueError(f"resume: {e}") from None


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget bar); IPython is never imported here."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _progress_bar(total, epoch, epochs, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="img", leave=True, dynamic_ncols=True)


#: the last word of the seed of each step's augmentation generator ([seed, epoch, step, AUGMENT_STREAM]), apart
#: from the epoch orders ([seed, epoch]) and the validation split ([seed, 2**32 - 1])
AUGMENT_STREAM = 0x61756720


def _epoch_end(callbacks, epoch, logs) -> None:
    for callback in callbacks:
        callback.on_epoch_end(epoch, logs)


class _Agreed:
    """The signals every MPI rank has seen through the steps' allreduces (what the ranks stop on together)."""

    hit, signum = False, None


def _rank_step(comm, model, source, y_host, idx, augment, where, label_smoothing, interrupt, agreed, transport=None,
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
            if augment is None:
                xb = source.rows(idx[lo_:hi_])
            else:  # the whole batch, as in one process (its draws depend on it), then this rank's rows
                seed, epoch, step = where
                xb = augment(source.rows(idx), np.random.default_rng([seed, epoch, step, AUGMENT_STREAM]))[lo_:hi_, ...]
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
                sums = to_host(xp.stack([xp.astype(loss, xp.float64) * n,
                                         xp.astype(xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, xp.int64)),
                                                   xp.float64)]))
                loss_sum, correct = float(sums[0]), float(sums[1])
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


def held_out(n: int, validation_split) -> int:
    """How many of ``n`` training images ``fit(validation_split=...)`` holds out (at least 1; 0 for a split of 0)."""
    if not validation_split:
        return 0
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
            or not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be a fraction between 0 and 1; got {validation_split!r}")
    count = max(1, int(round(n * validation_split)))
    if count >= n:
        raise ValueError(f"validation_split={validation_split} leaves no training images out of {n}")
    return count


def fit(model, x, y, epochs=10, batch_size=128, optimizer=None, validation_data=None, shuffle=True, seed=0,
        progress=True, log_every=20, resume=None, checkpoint_path=None, checkpoint_every=1,
        checkpoint_extra=None, on_epoch_end=None, callbacks=None, validation_split=0.0,
        label_smoothing=0.0, augment=None, verbose=None, comm=None) -> History:
    """Train ``model`` on images ``x`` (N, C, H, W floats, host or device) and labels ``y`` (N,).

    ``optimizer`` defaults to Adam(lr=1e-3). ``resume`` is a model loaded with :func:`portacnn.load` (or its
    ``.checkpoint`` dict): training continues from the saved position with the saved optimizer state.
    ``checkpoint_path`` writes a resumable checkpoint every ``checkpoint_every`` epochs, at the end and on
    Ctrl-C or SIGTERM (which then stop training after the current step and mark the history ``interrupted``,
    with ``history.signal`` naming the signal; a second signal raises :class:`Stopped` at once);
    ``checkpoint_extra`` is a JSON-able dict stored with it. ``callbacks`` (see
    :mod:`portacnn.training.callbacks`: hooks before the run, around every epoch and after every step) and
    ``on_epoch_end(epoch, logs)`` run after every epoch; checkpoints keep the callbacks' states (a resumed run
    needs callbacks of the same types, in the same order), written again after the callbacks of an epoch when
    they changed them (EarlyStopping, ModelCheckpoint). With a :class:`LearningRateScheduler`, the history has
    ``lr`` (the first group's rate at each epoch's end).
    ``validation_split`` (0 < f < 1) holds out that fraction of ``x``/``y`` for validation, drawn once from
    ``seed`` (the same images on a resume), instead of ``validation_data``. ``label_smoothing`` (0 <= eps < 1)
    trains on smoothed targets (:func:`portacnn.losses.softmax_cross_entropy`; the logged training loss is that
    loss, validation losses are plain cross-entropy). ``augment`` (a :mod:`portacnn.augment` transform, or any
    ``f(batch, rng)``) changes every training batch on its device before the forward pass, drawing from a
    generator seeded by (seed, epoch, step): the same draws on every backend and after a resume (pass the same
    ``augment`` again); validation and test images are never augmented. ``verbose`` (as Keras): 1 shows a
    tqdm bar on a terminal or in a Jupyter notebook and one line per epoch on stderr elsewhere (logs, CI),
    2 one line per epoch, 0 nothing; left out, it is 1, or 0 with ``progress=False``.
    ``comm`` (an mpi4py communicator of K > 1 processes, e.g. ``MPI.COMM_WORLD`` under ``mpiexec -n K``; see
    :mod:`portacnn.distributed`) trains data-parallel: every rank passes the same data, model, seed and
    arguments, computes its rows of each batch (BatchNorm with the whole batch's statistics), and the ranks add
    their gradients in one allreduce per step, so weights and history equal one process's to float rounding on
    every rank (for two ranks and a model without BatchNorm, bit for bit one process's with ``workers=2``). Only rank 0 writes checkpoints
    (and ModelCheckpoint files) and shows progress; other callbacks run on every rank. Left out, training runs
    in this process alone (the command line uses :func:`portacnn.distributed.auto_comm`).
    A NaN/inf loss raises :class:`TrainingDiverged` without overwriting the last good checkpoint.
    """
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    log_every = _positive_int(log_every, "log_every")
    if checkpoint_every is not None:
        checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1); got {label_smoothing!r}")
    if verbose is None:
        verbose = 1 if progress else 0
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar on a terminal, else a line per epoch) or 2 "
                         f"(a line per epoch); got {verbose!r}")
    if augment is not None and not callable(augment):
        raise ValueError(f"augment must be a portacnn.augment transform (or a function f(batch, rng)); got {augment!r}")
    if comm is not None and distributed.size(comm) == 1:
        comm = None  # one process: the ordinary loop
    if comm is not None:
        distributed.check_trainable(model)
        if distributed.rank(comm) != 0:
            verbose = 0  # only rank 0 shows progress
    source = images(x, model, "x", materialize_dask=True)
    n = source.shape[0]
    if checkpoint_path is not None:  # refuse before the first epoch what save would refuse after it
        check_architecture(model.architecture(), source.shape[1:], model.dtype)
    y_host = check_labels(model, y, n)
    rows = None  # the training rows when part of x is held out
    if validation_split:
        if validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        count = held_out(n, validation_split)
        drawn = np.random.default_rng([seed, 2**32 - 1]).permutation(n)  # apart from every epoch's order
        held, rows = np.sort(drawn[:count]), np.sort(drawn[count:])
        validation_data = (source.rows(held), y_host[held])
    if validation_data is not None:
        x_val, y_val = validation_data
        x_val = images(x_val, model, "validation images")
        y_val = check_labels(model, y_val, x_val.shape[0], "validation labels")

    backend, xp, dtype = model.backend, model.backend.xp, model.dtype
    callbacks = as_callbacks(callbacks, on_epoch_end)
    for callback in callbacks:  # only rank 0 saves ModelCheckpoint files
        quiet = comm is not None and distributed.rank(comm) != 0 and isinstance(callback, ModelCheckpoint)
        callback.set_model(distributed.NoSave(model) if quiet else model)
    # the per-step hook is called only on the callbacks that define it: no cost per step otherwise
    batch_callbacks = [c for c in callbacks if type(c).on_train_batch_end is not Callback.on_train_batch_end]
    track_lr = any(isinstance(c, LearningRateScheduler) for c in callbacks)
    state = TrainState(seed=seed, batch_size=batch_size)
    history = History()
    if validation_data is not None:
        history.history.update(val_loss=[], val_accuracy=[])
    if track_lr:
        history.history["lr"] = []
    if resume is not None:
        info = resume if isinstance(resume, dict) else getattr(resume, "checkpoint", None)
        saved = (info or {}).get("train_state")
        if not saved:
            raise ValueError("resume: the checkpoint holds no training state (it was saved without a trainer)")
        if resume is not model and not isinstance(resume, dict):
            model.load_state_dict(resume.state_dict())
        if saved["batch_size"] != batch_size or saved["seed"] != seed:
            raise ValueError(f"resume: the checkpoint was trained with batch_size={saved['batch_size']}, seed={saved['seed']}; "
                             "use the same values to continue the run")
        state = TrainState.from_json(saved)
        history.history = state.history
        if validation_data is not None:  # resumed with validation data the first run did not have
            history.history.setdefault("val_loss", [])
            history.history.setdefault("val_accuracy", [])
        if track_lr:
            history.history.setdefault("lr", [])
        history.epoch_times = state.epoch_times
        model.rng.bit_generator.state = state.rng
        _restore_callbacks(callbacks, state.callbacks)
        if optimizer is None:
            optimizer = optimizer_from_checkpoint(model, info)
    if optimizer is None:
        optimizer = Adam(model.parameters(), lr=1e-3)
    model.optimizer = optimizer  # what the callbacks see (self.model.optimizer)
    if comm is not None:  # the same start on every rank, or one clear error on each
        distributed.check_same(comm, distributed.fingerprint(
            weights=model.state_dict(), generator=model.rng.bit_generator.state, labels=y_host,
            images=[list(source.shape), str(model.dtype)], optimizer=optimizer.state_dict(model.backend.to_numpy),
            settings=[epochs, batch_size, seed, shuffle, log_every, label_smoothing, validation_split,
                      rows, state.to_json()]),
            "start every rank with the same data, seed, arguments and checkpoint")
        distributed.agree(comm, distributed.transport_choice)  # a bad $PORTACNN_MPI_TRANSPORT stops every rank
        transport = distributed.gradient_transport(comm, model.backend)  # NCCL on CuPy, else None (host)
        batch_sums = distributed.batch_sums(comm, model, transport)  # BatchNorm's statistics over the ranks
    for callback in callbacks:
        callback.on_train_begin()
    # a run a callback stopped (early stopping) is over: resuming it trains nothing more
    stopped = resume is not None and any(callback.stop_training for callback in callbacks)

    state.history, state.epoch_times = history.history, history.epoch_times  # one record, shared

    def snapshot():
        state.rng = model.rng.bit_generator.state
        state.callbacks = _callback_states(callbacks)
        return state.to_json()

    # the checkpoint a divergence message may name: only one this run wrote, or the one it resumed from
    last_good = {"path": None}
    resumed_from = (info or {}).get("path") if resume is not None else None
    if checkpoint_path is not None and resumed_from and _same_file(resumed_from, checkpoint_path):
        last_good["path"] = checkpoint_path

    def good_checkpoint_note():
        return f"; the last good checkpoint is {last_good['path']}" if last_good["path"] else ""

    def write_checkpoint():
        if checkpoint_path is None:
            return
        # the last update can overflow the weights even when the loss it followed was finite: never let
        # such weights replace the last good checkpoint (one host sync per checkpoint)
        bad = to_host(sum(xp.sum(xp.astype(~xp.isfinite(p.data), xp.int64)) for p in model.parameters()))
        if int(bad):
            raise TrainingDiverged(
                f"training diverged: {int(bad)} weights became NaN or infinite; "
                "lower the learning rate" + good_checkpoint_note())
        train_state = snapshot()  # on every rank: state.callbacks decides later writes

        def write():
            save(model, checkpoint_path, optimizer=optimizer, train_state=train_state, extra=checkpoint_extra,
                 input_shape=source.shape[1:])

        if comm is None:
            write()
        else:  # rank 0 writes; a failure there stops every rank
            distributed.on_rank0(comm, write)
        last_good["path"] = checkpoint_path

    show = verbose == 1 and (sys.stderr.isatty() or _in_notebook())
    with Interrupt() as interrupt:
        # under MPI the ranks stop on the signals they agreed on in a step's allreduce, never on their own
        stop = interrupt if comm is None else _Agreed()
        while state.epoch < epochs and not stopped:
            epoch = state.epoch
            n_train = n if rows is None else rows.size
            order = np.random.default_rng([seed, epoch]).permutation(n_train) if shuffle else np.arange(n_train)
            if rows is not None:
                order = rows[order]
            spans = _batches(n_train, batch_size)
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            bar = _progress_bar(n_train, epoch, epochs, show)
            if bar is not None:
                bar.update(state.seen)
            start_time = time.perf_counter()
            # device-side running sums, seeded from the host values (non-zero after a resume)
            loss_sum = xp.asarray(state.loss_sum, dtype=backend.dtype(dtype), device=backend.device)
            correct = xp.asarray(state.correct, dtype=xp.int64, device=backend.device)
            sums_mpi = [state.loss_sum, state.correct]  # under MPI: the reduced sums, on the host
            last_logged = state.step
            while state.step < len(spans):
                lo, hi = spans[state.step]
                idx = order[lo:hi]
                if comm is not None:  # this rank's rows; the gradients and sums of all ranks in one allreduce
                    step_sums = _rank_step(comm, model, source, y_host, idx, augment, (seed, epoch, state.step),
                                           label_smoothing, interrupt, stop, transport, batch_sums)
                    optimizer.step()
                    optimizer.zero_grad()
                    sums_mpi[0] += step_sums[0]
                    sums_mpi[1] += step_sums[1]
                else:
                    xb = source.rows(idx)
                    if augment is not None:  # its own stream per step: resumes and shards see the same draws
                        xb = augment(xb, np.random.default_rng([seed, epoch, state.step, AUGMENT_STREAM]))
                    yb = backend.asarray(y_host[idx])
                    logits = model.forward(xb, training=True)
                    loss, dlogits = softmax_cross_entropy(logits, yb, label_smoothing=label_smoothing, check=False)
                    model.backward(dlogits, input_grad=False)
                    optimizer.step()
                    optimizer.zero_grad()
                    loss_sum = loss_sum + loss * (hi - lo)
                    correct = correct + xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, xp.int64))
                state.step += 1
                state.seen += hi - lo
                for callback in batch_callbacks:  # host values only: no wait for the device
                    callback.on_train_batch_end(state.step - 1, {"epoch": epoch, "size": hi - lo})
                end_of_epoch = state.step == len(spans)
                if end_of_epoch or state.step - last_logged >= log_every or stop.hit:
                    if comm is None:
                        sums = to_host(xp.stack([xp.astype(loss_sum, xp.float64), xp.astype(correct, xp.float64)]))
                        state.loss_sum, state.correct = float(sums[0]), int(sums[1])
                    else:
                        state.loss_sum, state.correct = sums_mpi
                    if not math.isfinite(state.loss_sum):
                        if bar is not None:
                            bar.close()
                        raise TrainingDiverged(
                            f"training diverged: the loss became {state.loss_sum} in epoch {epoch + 1} "
                            f"(step {state.step}); lower the learning rate"
                            + good_checkpoint_note()
                        )
                    if bar is not None:
                        bar.update(state.seen - bar.n)
                        bar.set_postfix(loss=f"{state.loss_sum / state.seen:.4f}",
                                        acc=f"{state.correct / state.seen:.4f}", refresh=False)
                    last_logged = state.step
                if stop.hit:
                    break
            if stop.hit and state.step < len(spans):
                if bar is not None:
                    bar.close()
                history.interrupted = True
                history.signal = signal.Signals(stop.signum).name
                write_checkpoint()
                return history
            history.history["loss"].append(state.loss_sum / state.seen)
            history.history["accuracy"].append(state.correct / state.seen)
            if validation_data is not None:
                val = evaluate(model, x_val, y_val, batch_size=max(batch_size, 1000), comm=comm)
                history.history["val_loss"].append(val["loss"])
                history.history["val_accuracy"].append(val["accuracy"])
            if track_lr:
                history.history["lr"].append(float(optimizer.param_groups[0]["lr"]))
            history.epoch_times.append(time.perf_counter() - start_time)
            if bar is not None:
                bar.set_postfix({k: _metric(k, v[-1]) for k, v in history.history.items() if v}, refresh=True)
                bar.close()
            if verbose and not show:  # one line per epoch (no terminal, or verbose=2): a long fit is never silent
                print(f"epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k} {_metric(k, v[-1])}" for k, v in history.history.items()
                                                                  if v)
                      + f"  ({history.epoch_times[-1]:.1f} s)", file=sys.stderr, flush=True)
            state.next_epoch()
            saved_now = checkpoint_every is not None and (state.epoch % checkpoint_every == 0 or state.epoch == epochs)
            if saved_now:
                write_checkpoint()
            logs = {k: v[-1] for k, v in history.history.items()}
            if comm is None:
                _epoch_end(callbacks, epoch, logs)
            else:  # a callback failing on one rank (a ModelCheckpoint file on rank 0) stops every rank
                distributed.agree(comm, functools.partial(_epoch_end, callbacks, epoch, logs))
                distributed.check_same(comm, distributed.fingerprint(weights=model.state_dict()),
                                       "their allreduce results differed (report this, with the MPI library used)")
            finished = any(callback.stop_training for callback in callbacks)
            if finished and not saved_now:
                write_checkpoint()  # the run ends here: its checkpoint must hold this epoch
            elif saved_now and checkpoint_path is not None and _callback_states(callbacks) != state.callbacks:
                write_checkpoint()  # the callbacks' states after this epoch, so that a resumed run has them
            if finished:
                break
            if stop.hit:
                history.interrupted = state.epoch < epochs
                if history.interrupted:
                    history.signal = signal.Signals(stop.signum).name
                    write_checkpoint()
                break
    if checkpoint_path is not None and last_good["path"] is None and not history.interrupted:
        write_checkpoint()  # e.g. a finished run resumed into a new folder: checkpoint_path must hold it
    if interrupt.hit and history.signal is None:  # it came after the last step: the run is complete, but the
        history.signal = signal.Signals(interrupt.signum).name  # caller must still learn it was asked to stop
    model.optimizer = optimizer
    return history


def _forward_batches(model, x, batch_size):
    """Yield (start, stop, logits) over ``x`` in chunks, so memory depends on the batch, not on N."""
    batch_size = _positive_int(batch_size, "batch_size")
    source = x if isinstance(x, Images) else images(x, model)
    for lo, hi, xb in source.batches(batch_size):
        yield lo, hi, model.infer(xb)


def evaluate(model, x, y, batch_size=1000, comm=None) -> dict:
    """Mean loss and accuracy over ``x``, ``y`` (one host sync at the end); ``x`` and ``y`` may come from any
    array library (see :mod:`portacnn.inputs`). With ``comm`` (an mpi4py communicator), every rank passes the
    same ``x`` and ``y``, scores its contiguous share of the rows, and the sums are added in one allreduce: every
    rank returns the result for all of ``x``."""
    xp, backend = model.backend.xp, model.backend
    _positive_int(batch_size, "batch_size")
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
    correct = xp.asarray(0, dtype=xp.int64, device=backend.device)
    error = None
    try:
        for lo, hi, xb in parts:
            logits = model.infer(xb)
            yb = backend.asarray(y_host[lo:hi])
            loss, _ = softmax_cross_entropy(logits, yb, check=False)
            loss_sum = loss_sum + loss * (hi - lo)
            correct = correct + xp.sum(xp.astype(xp.argmax(logits, axis=1) == yb, xp.int64))
        sums = to_host(xp.stack([xp.astype(loss_sum, xp.float64), xp.astype(correct, xp.float64)]))
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
