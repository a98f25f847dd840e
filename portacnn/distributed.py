"""Data-parallel training over MPI: ``mpiexec -n K portacnn train ...`` or ``fit(..., comm=MPI.COMM_WORLD)``.

Every rank holds the whole model, the whole data set and the same seed, so every rank draws the same epoch
order. Each global batch of B rows is cut into K contiguous row spans (:func:`portacnn.parallel.shard_spans`);
rank r computes the forward and backward pass of its n_r rows only, with the loss divided by B, not n_r
(``softmax_cross_entropy(..., batch_rows=B)``), so its gradient holds exactly its rows' terms of the gradient of
the batch's mean loss. One allreduce (SUM) of a flat buffer then adds them::

    grad = sum_r grad_r          (grad_r: rank r's rows' part of the gradient of the batch's mean loss)

so the optimizer, whose state is the same everywhere, takes the same step on every rank. Rank r's grad_r is
bit for bit what one process computes for its row shard r when it cuts each batch into K shards itself
(``workers=K``: :mod:`portacnn.parallel`; models without BatchNorm, which one process never shards, and the
same BLAS threading), and a sum of two terms has one rounding whatever the order: two ranks train to exactly
the weights of one process with ``workers=2`` (tested, and ``portacnn train --workers 2`` against
``mpiexec -n 2 portacnn train``). With more ranks the MPI library may add in another order than the
shards' left to right, and against an unsharded process (one BLAS call over all B rows) the sums differ in
float rounding, which grows over training as between any two BLAS libraries. The same buffer
carries five more numbers: the step's loss sum and correct count (the history equals one process's, to float
rounding), how many ranks caught SIGINT and SIGTERM (so that all stop after the same step) and how many
failed (so that an error on one rank ends every rank instead of leaving the others waiting).

Dropout masks are those of one process: every rank draws the whole batch's mask from the model's generator
and keeps its rows (the stand-in generators of :mod:`portacnn.parallel`), so the generators stay in lockstep;
a rank without rows in a short last batch still makes the draws. BatchNorm layers, which mix the rows of a
batch, compute the whole batch's statistics (:func:`synced_batchnorm`: two small allreduces per layer forward,
one backward, as torch's SyncBatchNorm), so a BatchNorm model trains as in one process, to float rounding;
other layers that mix rows are refused. A rank that fails before such a step's passes tells the others first
(one more small allreduce per step), so that none waits alone in a BatchNorm allreduce.

On CuPy the buffer stays on the GPU and NCCL sums it (:mod:`portacnn.backend.nccl`: the communicator
bootstrapped over MPI, one GPU per rank, :func:`use_local_gpu`) when every rank's CuPy has NCCL; otherwise, and on
the other non-NumPy backends, the buffer is staged through host memory (one copy each way per step).
``$PORTACNN_MPI_TRANSPORT`` = ``auto`` (that choice), ``nccl`` (NCCL or a one-line error) or ``host`` (always
staged) overrides it (:func:`gradient_transport`).

Before the first step the ranks compare their data and whole training setup (:func:`digest` of each part,
:func:`compare_digests`: one allgather of a fixed number of 32-byte SHA-256 digests, whatever they hold; see
:func:`portacnn.training.mpi_step.start`): ranks that differ in their images, augmentation, callbacks,
optimizer, arguments, weights or resume position all raise the same one-line ValueError naming the difference,
instead of training on different data or meeting in collectives of different sizes; a failure on one rank while
``fit`` prepares (a refused argument, unusable data or checkpoint) stops every rank (:func:`agree`).

Only rank 0 writes checkpoints and ModelCheckpoint files and shows progress; other callbacks run on every
rank (a callback writing files should check :func:`rank`). A signal stops every rank after the same step, rank 0
saving the checkpoint (``mpiexec`` forwards Ctrl-C and SIGTERM to all ranks); a second Ctrl-C makes ``mpiexec``
abort the job. A rank killed outright (SIGKILL, a crash in native code) leaves the others waiting in the next
allreduce until ``mpiexec`` ends them.

``mpi4py`` is imported only inside these functions (``pip install 'portacnn[mpi]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time

import numpy as np

from .backend import numpy_dtype, to_host
from .backend.nccl import TRANSPORT_VAR, NcclAllreduce, load_nccl, transport_choice, use_local_gpu  # noqa: F401 (API)
from .layers.batchnorm import _BatchNorm
from .parallel import _BatchDraws, _ShardGenerator, shard_spans

#: environment variables that MPI launchers set to the job's size and to each process's rank
#: (MPICH / Intel MPI / MVAPICH hydra and PMI, Open MPI, MVAPICH)
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")

class RankFailed(RuntimeError):
    """Another MPI rank failed; this one stops too (the message names that rank's error)."""


def _env_int(names, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                continue
    return default


def launched_size() -> int:
    """How many processes the MPI launcher started (from its environment variables; 1 outside a launcher)."""
    return max(1, _env_int(SIZE_VARIABLES, 1))


def launched_rank() -> int:
    """This process's rank as the MPI launcher set it (0 outside a launcher); no MPI library is loaded."""
    return max(0, _env_int(RANK_VARIABLES, 0))


def auto_comm(strict: bool = False):
    """``mpi4py.MPI.COMM_WORLD`` when this process was started by ``mpiexec -n K`` with K > 1 and mpi4py is
    installed; otherwise None (one process). ``strict=True`` raises a ValueError instead of returning None when
    the launcher started several processes but mpi4py is missing (each would otherwise train alone)."""
    size = launched_size()
    if size <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if strict:
            raise ValueError(f"started by an MPI launcher with {size} processes, but mpi4py is not installed; "
                             "pip install 'portacnn[mpi]', or run without mpiexec") from None
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def rank(comm=None) -> int:
    """This process's rank in ``comm`` (0 without one)."""
    return 0 if comm is None else int(comm.Get_rank())


def size(comm=None) -> int:
    """How many processes ``comm`` holds (1 without one)."""
    return 1 if comm is None else int(comm.Get_size())


def row_span(n: int, comm=None) -> tuple[int, int]:
    """This rank's contiguous rows ``(lo, hi)`` of a batch of ``n`` rows (``lo == hi`` when it has none)."""
    return shard_spans(n, size(comm))[rank(comm)]


def _leaves(layers):
    """Every layer of ``layers`` that holds no others, blocks' insides included, in order."""
    for layer in layers:
        subs = [sub for _, sub in layer.sublayers()]
        yield from _leaves(subs) if subs else [layer]


def _synced(layer) -> bool:
    return isinstance(layer, _BatchNorm)


def has_batchnorm(model) -> bool:
    """Whether ``model`` holds a BatchNorm layer (blocks' insides too): MPI steps then synchronise statistics."""
    return any(_synced(layer) for layer in _leaves(model.layers))


def check_trainable(model) -> None:
    """Refuse, with one line, a model that MPI training cannot train as one process would: a layer that mixes
    the rows of a batch, other than BatchNorm (whose statistics :func:`synced_batchnorm` sums over the ranks)."""
    for layer in _leaves(model.layers):
        if not layer.row_separable and not _synced(layer):
            raise ValueError(f"{type(layer).__name__} layers mix the rows of a batch, and MPI training knows how to "
                             "synchronise only BatchNorm's; train this model in one process")


class _BatchSums:
    """BatchNorm's ``sync`` for MPI training: sums per-channel partial sums over the ranks, one allreduce each, a
    rank without rows (running one stand-in row) adding zeros. Set :meth:`step` before each step's passes.

    It remembers the shapes of the sums a whole step makes (the same every step), so that a rank whose passes
    fail can still make the rest of them (:meth:`finish`, with zeros) and no other rank waits alone in one; the
    error then travels with the step's gradient allreduce, as any other."""

    def __init__(self, comm, backend, transport):
        self.comm, self.backend, self.transport = comm, backend, transport
        self.plan = None  # the shapes of one whole step's sums, once a step has completed
        self.made = []

    def step(self, n, lo, hi):
        self.n, self.rows, self.made = n, hi - lo, []

    def completed(self):
        self.plan = list(self.made)

    def _sum(self, partial):
        xp = self.backend.xp
        self.made.append((tuple(partial.shape), partial.dtype))
        if self.transport is not None:
            buf = xp.reshape(partial, (-1,))  # a fresh sum the layer does not use again: summed in place
            self.transport(buf)
            return xp.reshape(buf, tuple(partial.shape))
        host = np.array(to_host(partial), copy=True).reshape(-1)
        allreduce_sum(self.comm, host)
        summed = host if self.backend.name == "numpy" else self.backend.asarray(host)
        return xp.reshape(summed, tuple(partial.shape))

    def __call__(self, partial, m):
        if not self.rows:
            partial = self.backend.xp.zeros_like(partial)
        return self._sum(partial), (m // max(self.rows, 1)) * self.n

    def finish(self, error) -> None:
        """After ``error`` in this rank's passes: make the step's remaining sums, with zeros. Before any step has
        completed, their shapes are unknown: the job is aborted (``MPI_Abort``, after one line on stderr) rather
        than left hanging."""
        done = len(self.made)
        if self.plan is None or self.plan[:done] != self.made:
            text = (f"{type(error).__name__}: {error}".splitlines() or [""])[0]
            print(f"portacnn: MPI rank {rank(self.comm)} failed inside BatchNorm's synchronised passes ({text}); "
                  "aborting every rank", file=sys.stderr, flush=True)
            time.sleep(1.0)  # let the launcher forward that line before MPI_Abort kills the job's output
            self.comm.Abort(1)
            os._exit(1)  # MPI_Abort may return before the launcher's kill arrives
        xp = self.backend.xp
        for shape, dtype in self.plan[done:]:
            self._sum(xp.zeros(shape, dtype=dtype, device=self.backend.device))


def batch_sums(comm, model, transport=None):
    """The BatchNorm ``sync`` of MPI training for ``model`` (None when it has no BatchNorm): one per ``fit``, as
    it learns the shapes of a step's sums (see :class:`_BatchSums`)."""
    return _BatchSums(comm, model.backend, transport) if has_batchnorm(model) else None


@contextlib.contextmanager
def synced_batchnorm(model, sums, n: int, lo: int, hi: int):
    """While inside, every BatchNorm layer of ``model`` (blocks' insides too) computes the whole batch's
    statistics through ``sums`` (:func:`batch_sums`), this rank holding rows ``lo:hi`` of ``n``. Every rank must
    run the same forward and backward passes inside (a rank without rows: one stand-in row); after an error in
    them, ``sums.finish(error)``."""
    layers = [layer for layer in _leaves(model.layers) if _synced(layer)] if sums is not None else []
    if sums is not None:
        sums.step(n, lo, hi)
    try:
        for layer in layers:
            layer.sync = sums
        yield
    finally:
        for layer in layers:
            layer.sync = None


# -- collectives -------------------------------------------------------------------------------------------
def _mpi():
    from mpi4py import MPI

    return MPI


def allreduce_sum(comm, host: np.ndarray) -> np.ndarray:
    """Sum a contiguous host NumPy array over the ranks of ``comm``, in place; returns it."""
    comm.Allreduce(_mpi().IN_PLACE, host, op=_mpi().SUM)
    return host


def gradient_transport(comm, backend, nccl=None, **seams):
    """How MPI training sums its flat buffer: a :class:`~portacnn.backend.nccl.NcclAllreduce` on the GPU (CuPy,
    every rank's CuPy with NCCL: ``nccl`` defaults to ``cupy.cuda.nccl``), or None: host memory and MPI. Every
    rank must call it at once (it is collective); every rank gets the same kind, or the same one-line error.
    ``seams`` go to :class:`~portacnn.backend.nccl.NcclAllreduce` (the tests' stand-in for a GPU)."""
    choice = transport_choice()
    if backend.name == "cupy" and choice != "host":
        nccl = nccl or load_nccl()
    every = comm.allgather((choice, backend.name, nccl is not None))  # one collective, whatever each rank has
    if len({(c, b) for c, b, _ in every}) > 1:
        raise ValueError(f"the MPI ranks differ in {TRANSPORT_VAR} and backend ({', '.join(f'{c}/{b}' for c, b, _ in every)}); "
                         "start every rank with the same environment and arguments")
    if choice == "host":
        return None
    if backend.name != "cupy":
        if choice == "nccl":
            raise ValueError(f"{TRANSPORT_VAR}=nccl needs backend 'cupy' (this is '{backend.name}'); unset it")
        return None
    missing = [r for r, (_, _, have) in enumerate(every) if not have]
    if missing:
        if choice == "nccl":
            raise ValueError(f"{TRANSPORT_VAR}=nccl, but the CuPy of MPI rank(s) {missing} has no NCCL; install "
                             f"CuPy with NCCL there, or set {TRANSPORT_VAR}=host")
        return None
    return NcclAllreduce(comm, nccl=nccl, **seams)


def allreduce_gradients(comm, params, backend, weight: float = 1.0, extras=(), transport=None) -> np.ndarray:
    """ONE allreduce (SUM) over ``comm`` of a flat buffer holding ``weight * p.grad`` of every parameter (zeros
    for a parameter without a gradient) followed by ``extras``; sets every ``p.grad`` to its summed part and
    returns the summed extras (a host array of the parameters' dtype).

    Without ``transport`` the buffer is a host NumPy array summed by MPI: on NumPy it is filled from the
    gradients directly; on other backends the gradients are joined on their device, copied to the host, summed
    and copied back (host staging). With one (:func:`gradient_transport`: NCCL) the buffer is joined on the
    device, extras included, summed there in place, and the gradients become views of it."""
    params = list(params)
    if not params:
        raise ValueError("allreduce_gradients needs at least one parameter")
    dtype = numpy_dtype(params[0].data.dtype)
    sizes = [int(np.prod(tuple(p.data.shape), dtype=np.int64)) for p in params]
    total = sum(sizes)
    xp = backend.xp
    if transport is not None:
        parts = [xp.reshape(xp.zeros_like(p.data) if p.grad is None else p.grad, (-1,)) for p in params]
        parts.append(backend.asarray(np.asarray(extras, dtype=dtype).reshape(-1)))
        buf = xp.concat(parts)
        if weight != 1.0:
            buf[:total] *= weight
        transport(buf)
        off = 0
        for p, k in zip(params, sizes):
            p.grad = xp.reshape(buf[off:off + k], tuple(p.data.shape))
            off += k
        return np.array(to_host(buf[total:]), dtype=dtype)
    host = np.empty(total + len(extras), dtype=dtype)
    if backend.name == "numpy":
        off = 0
        for p, k in zip(params, sizes):
            host[off:off + k] = 0 if p.grad is None else np.reshape(p.grad, (-1,))
            off += k
    else:
        flat = xp.concat([xp.reshape(xp.zeros_like(p.data) if p.grad is None else p.grad, (-1,)) for p in params])
        host[:total] = to_host(flat)
    if weight != 1.0:
        host[:total] *= dtype.type(weight)
    host[total:] = extras
    allreduce_sum(comm, host)
    grads = host[:total] if backend.name == "numpy" else backend.asarray(host[:total])
    off = 0
    for p, k in zip(params, sizes):
        p.grad = xp.reshape(grads[off:off + k], tuple(p.data.shape))
        off += k
    return host[total:].copy()


def gather_failures(comm, error: BaseException | None) -> None:
    """After a collective said some rank failed: every rank learns which (one small allgather) and raises, the
    failed rank its own error, the others :class:`RankFailed` naming the first failed rank's error."""
    text = None if error is None else (f"{type(error).__name__}: {error}".splitlines() or [""])[0]
    texts = comm.allgather(text)
    if error is not None:
        raise error
    first = next((r, t) for r, t in enumerate(texts) if t is not None)
    raise RankFailed(f"MPI rank {first[0]} failed ({first[1]}); every rank stops")


def agree(comm, fn):
    """Run ``fn()`` on every rank; if it raised on any rank, raise on every rank (see :func:`gather_failures`),
    so that no rank goes on to wait for one that stopped. ``fn`` must hold no collective of its own."""
    error, result = None, None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - every failure must reach the other ranks
        error = e
    failed = np.array([0.0 if error is None else 1.0])
    if allreduce_sum(comm, failed)[0]:
        gather_failures(comm, error)
    return result


def on_rank0(comm, fn):
    """``fn()`` on rank 0 only (writing a file), its failure raised on every rank."""
    return agree(comm, lambda: fn() if rank(comm) == 0 else None)


# -- digests the ranks compare ---------------------------------------------------------------------------------
#: bytes of one digest (SHA-256), and how many one comparison exchanges: every rank sends DIGEST_SLOTS of them
#: whatever it compares, so that ranks that disagree (even on what they compare) never send collectives of
#: different sizes (MPI's "Message truncated")
DIGEST_SIZE, DIGEST_SLOTS = 32, 48
#: rows of an array hashed at a time (from a device or a Dask array: one host copy of that many at once)
_HASH_ROWS_BYTES = 16 << 20


def qualified_name(obj) -> str:
    """``module.QualName`` of a class or function (never its ``repr``, which may hold an address)."""
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (np.generic, type))


def _feed_array(h, value) -> None:
    """An array's dtype, shape and bytes, in row chunks (any library's array; a device's or Dask's copied to the
    host a chunk at a time, a NumPy array's contiguous chunks hashed without a copy)."""
    shape = tuple(int(d) for d in value.shape)
    dtype = numpy_dtype(value.dtype)
    h.update(b"array" + json.dumps([dtype.str, shape]).encode())
    if dtype.kind == "O":  # pointers: hashed by the objects they point to
        _feed(h, to_host(value).tolist())
        return
    if not shape:
        h.update(np.ascontiguousarray(to_host(value)).tobytes())
        return
    row = max(1, dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, _HASH_ROWS_BYTES // row)
    for lo in range(0, shape[0], step):
        h.update(np.ascontiguousarray(to_host(value[lo:min(lo + step, shape[0]), ...])).reshape(-1).view(np.uint8))


def _feed(h, value) -> None:
    """Hash ``value`` by what it holds, the same in every process: arrays (any library's) by dtype, shape and
    bytes; dicts, lists and tuples by their items; None, bools, numbers and strings typed (1, 1.0 and True
    differ); a class, a function or any other object by its type's module and qualified name only."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        h.update(json.dumps([type(value).__name__, value]).encode())
    elif isinstance(value, bytes):
        h.update(b"bytes%d:" % len(value) + value)
    elif isinstance(value, os.PathLike):
        _feed(h, ["path", os.fspath(value)])
    elif isinstance(value, (set, frozenset)):
        _feed(h, ["set", sorted(value, key=repr)])
    elif _is_array(value):
        _feed_array(h, value)
    elif isinstance(value, dict):
        h.update(b"{%d" % len(value))
        for key in sorted(value, key=str):
            _feed(h, str(key))
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[%d" % len(value))
        for v in value:
            _feed(h, v)
        h.update(b"]")
    else:  # no stable description: what it is (a class or a function: itself; another object: its type)
        named = isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__"))
        h.update(b"object" + json.dumps(qualified_name(value if named else type(value))).encode())


def digest(*values) -> bytes:
    """The SHA-256 (32 bytes) of ``values`` as :func:`_feed` hashes them: equal in every process for equal
    values (arrays of any library by their bytes, dtype and shape; JSON-like structures by their items;
    other objects by their type's name)."""
    h = hashlib.sha256()
    _feed(h, list(values))
    return h.digest()


def compare_digests(comm, parts: dict) -> list[tuple[str, int]]:
    """Every rank's ``parts`` (name -> :func:`digest`) against rank 0's, in ONE fixed-size collective (an
    allgather of ``DIGEST_SLOTS`` digests per rank, whatever ``parts`` holds). Returns ``(name, rank)`` for each
    part, in order, that differs between the ranks (``rank``: the first whose digest is not rank 0's); the
    same list on every rank. Ranks comparing different parts (another portacnn) get one ValueError each."""
    names = list(parts)
    if len(names) >= DIGEST_SLOTS:
        raise ValueError(f"compare_digests compares at most {DIGEST_SLOTS - 1} parts; got {len(names)}")
    table = np.zeros((DIGEST_SLOTS, DIGEST_SIZE), np.uint8)
    table[0] = np.frombuffer(digest(names), np.uint8)
    for slot, name in enumerate(names, 1):
        value = parts[name]
        if not isinstance(value, bytes) or len(value) != DIGEST_SIZE:
            raise ValueError(f"compare_digests: part {name!r} is not a {DIGEST_SIZE}-byte digest")
        table[slot] = np.frombuffer(value, np.uint8)
    every = np.empty((size(comm), DIGEST_SLOTS, DIGEST_SIZE), np.uint8)
    comm.Allgather(table, every)
    if (every[:, 0] != every[0, 0]).any():
        raise ValueError("the MPI ranks compare different things before training (another portacnn version on "
                         "some rank?); install the same portacnn for every rank")
    found = []
    for slot, name in enumerate(names, 1):
        odd = [r for r in range(1, len(every)) if not np.array_equal(every[r, slot], every[0, slot])]
        if odd:
            found.append((name, odd[0]))
    return found


# -- dropout draws for one rank's rows -----------------------------------------------------------------------
@contextlib.contextmanager
def rank_draws(model, n: int, lo: int, hi: int):
    """While inside, the layers that draw random numbers take rows ``lo:hi`` of whole-batch draws (a batch of
    ``n`` rows) from their generators, exactly as one process drawing for the whole batch: the stand-ins of
    :mod:`portacnn.parallel` (which the thread shards of this rank's rows then nest inside)."""
    drawing = [layer for layer in model.layers if layer.draws_random]
    saved = [(layer, layer.rng) for layer in drawing]
    stand_ins = {}
    try:
        for layer, rng in saved:  # layers sharing a generator share its stand-in (one sequence of draws)
            layer.rng = stand_ins.setdefault(id(rng), _ShardGenerator(_BatchDraws(rng, n), lo, hi))
        yield
    finally:
        for layer, rng in saved:
            layer.rng = rng


class NoSave:
    """The model as a callback on a rank other than 0 sees it: everything but :meth:`save`, which does nothing
    (only rank 0 writes files)."""

    def __init__(self, model):
        object.__setattr__(self, "_model", model)

    def save(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)
