"""Data-parallel training over MPI (portacnn.distributed, fit(comm=...), mpiexec -n 2 portacnn train): two ranks
train to the weights, history and scores of one process (float64 to 1e-12, float32 to float rounding), only
rank 0 writes files and prints, errors and signals reach every rank, and what cannot be exact is refused.

The mpiexec runs are subprocesses (marked slow, as the other subprocess tests); each has a timeout, so that a
deadlock fails instead of hanging. They are skipped, visibly, without mpiexec or mpi4py
(pip install '.[mpi]'; the test extra has both)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clihelp import (
    REPO,
    assert_one_line_error,
    cli_cmd,
    cli_env,
    idx_folder,
    last_json,
    state_of,
)

import portacnn as pc
from portacnn import distributed

TESTS = Path(__file__).resolve().parent
TIMEOUT = 150  # seconds for one mpiexec run (each takes a few): a deadlock fails the test instead of hanging


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"  # the mpich wheel installs it next to the interpreter
    return str(here) if here.is_file() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def _need_mpi():
    if MPIEXEC is None:
        pytest.skip("mpiexec not found (pip install '.[mpi]' installs MPICH's)")
    if not HAVE_MPI4PY:
        pytest.skip("mpi4py is not installed (pip install '.[mpi]')")


def _mpirun(*args, ranks=2, cwd=None) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks ARGS`` with one BLAS/OpenMP thread per rank, output captured, under a timeout."""
    _need_mpi()
    return subprocess.run([MPIEXEC, "-n", str(ranks), *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=cwd or REPO, env=cli_env(OMP_NUM_THREADS="1"))


# -- no MPI needed ------------------------------------------------------------------------------------------
LAUNCHER_VARIABLES = distributed.SIZE_VARIABLES + distributed.RANK_VARIABLES


def test_auto_comm_is_none_outside_mpiexec(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_size() == 1 and distributed.launched_rank() == 0
    assert distributed.auto_comm() is None and distributed.auto_comm(strict=True) is None
    monkeypatch.setenv("PMI_SIZE", "1")  # mpiexec -n 1: one process, no MPI needed
    assert distributed.auto_comm(strict=True) is None


def test_auto_comm_without_mpi4py_under_a_launcher(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    assert distributed.auto_comm() is None
    with pytest.raises(ValueError, match=r"2 processes, but mpi4py is not installed; pip install 'portacnn\[mpi\]'"):
        distributed.auto_comm(strict=True)


class MixRows(pc.layers.ReLU):
    """A layer that says it mixes the rows of a batch (as a user's own layer might)."""

    row_separable = False


def test_one_process_helpers_and_what_cannot_train_over_mpi():
    assert distributed.rank() == 0 and distributed.size() == 1 and distributed.row_span(5) == (0, 5)
    L = pc.layers
    for layers in ([L.Flatten(), MixRows(), L.Dense(784, 10)],
                   [L.Residual([L.Conv2D(1, 1, 3, padding=1), MixRows()]), L.Flatten(), L.Dense(784, 10)]):
        with pytest.raises(ValueError) as e:
            distributed.check_trainable(pc.Sequential(layers))
        assert str(e.value) == ("MixRows layers mix the rows of a batch, and MPI training knows how to synchronise "
                                "only BatchNorm's; train this model in one process")
    for make in (pc.models.seed_cnn, pc.models.kannada_bn):  # row-separable, or BatchNorm (synchronised): fine
        distributed.check_trainable(make())
    assert distributed.has_batchnorm(pc.models.kannada_bn()) and not distributed.has_batchnorm(pc.models.seed_cnn())


def test_mpi4py_is_imported_only_inside_functions():
    from test_package_structure import _module_level_imports, _modules

    for name, path, _ in _modules():
        for node in _module_level_imports(path):
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [(node.module or "").split(".")[0]] if node.level == 0 else []
            assert "mpi4py" not in roots, f"{name} imports mpi4py at module level"


class TwoRanks:
    """What gradient_transport and NcclAllreduce ask of an MPI communicator, for rank 0 of two whose other rank
    answers ``other`` to allgather."""

    def __init__(self, other):
        self.other = other

    def Get_rank(self):  # noqa: N802 - mpi4py's names
        return 0

    def Get_size(self):  # noqa: N802
        return 2

    def allgather(self, value):
        return [value, self.other(value)]

    def bcast(self, value, root=0):
        return value


def test_how_the_gradient_transport_is_chosen(monkeypatch):
    from mpihelp import FakeNccl, host_seams

    from portacnn.backend import Backend
    from portacnn.backend.nccl import TRANSPORT_VAR, NcclAllreduce

    numpy_be = pc.get_backend("numpy")
    cupy_named = Backend("cupy", numpy_be.xp, "cpu")  # the choice reads the name only
    def other_gpu(v):  # what the other rank answers about its GPU (hostname, bus id): another GPU
        return (v[0], "0000:02:00.0") if len(v) == 2 else v

    both = TwoRanks(other_gpu)  # the other rank: the same settings, NCCL too
    other_lacks = TwoRanks(lambda v: other_gpu(v) if len(v) == 2 else (v[0], v[1], False))
    other_env = TwoRanks(lambda v: other_gpu(v) if len(v) == 2 else ("host", v[1], v[2]))
    monkeypatch.delenv(TRANSPORT_VAR, raising=False)
    assert distributed.transport_choice() == "auto"
    assert distributed.gradient_transport(both, numpy_be) is None  # NumPy: MPI on the host buffer
    fake = FakeNccl(reduce=lambda a: a.__imul__(2))
    made = distributed.gradient_transport(both, cupy_named, nccl=fake, **host_seams("0000:01:00.0"))
    assert isinstance(made, NcclAllreduce)
    assert distributed.gradient_transport(other_lacks, cupy_named, nccl=fake) is None  # auto falls back to host
    with pytest.raises(ValueError, match=r"the MPI ranks differ in PORTACNN_MPI_TRANSPORT and backend "
                                         r"\(auto/cupy, host/cupy\); start every rank with the same environment"):
        distributed.gradient_transport(other_env, cupy_named, nccl=fake)

    class NoId(FakeNccl):
        def get_unique_id(self):
            raise RuntimeError("NCCL error: unhandled system error")

    with pytest.raises(ValueError, match=r"NCCL could not start on MPI rank 0 \(RuntimeError: NCCL error: unhandled "
                                         r"system error\); set PORTACNN_MPI_TRANSPORT=host"):
        NcclAllreduce(both, nccl=NoId(), **host_seams("0000:01:00.0"))
    monkeypatch.setenv(TRANSPORT_VAR, "nccl")
    with pytest.raises(ValueError, match=r"=nccl, but the CuPy of MPI rank\(s\) \[1\] has no NCCL; .*=host"):
        distributed.gradient_transport(other_lacks, cupy_named, nccl=fake)
    with pytest.raises(ValueError, match=r"=nccl needs backend 'cupy' \(this is 'numpy'\)"):
        distributed.gradient_transport(both, numpy_be)
    monkeypatch.setenv(TRANSPORT_VAR, "HOST")
    assert distributed.gradient_transport(both, cupy_named, nccl=fake) is None  # host staging, as asked
    monkeypatch.setenv(TRANSPORT_VAR, "gloo")
    with pytest.raises(ValueError, match=r"variable PORTACNN_MPI_TRANSPORT='gloo' is not one of auto, nccl, host; unset it"):
        distributed.transport_choice()
    # without CuPy (as here) there is no NCCL to load, and asking for it says so
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert pc.backend.nccl.load_nccl() is None
    with pytest.raises(ValueError, match="NCCL is not available in this CuPy"):
        NcclAllreduce(both, **host_seams("0000:01:00.0"))


def test_gpu_identity_and_choice_with_a_stand_in_cupy(monkeypatch):
    """Without a GPU: a stand-in ``cupy`` module shows which GPU a rank takes (local rank % GPUs) and how a GPU
    is named for the one-GPU-per-rank check (its PCI bus id, which differs where every rank's GPU is number 0)."""
    import types

    from portacnn.backend import nccl

    used = []

    class Device:
        def __init__(self, i=0, bus="0000:3B:00.0"):
            self.id, self._bus = i, bus

        @property
        def pci_bus_id(self):
            if self._bus is None:
                raise AttributeError("pci_bus_id")
            return self._bus

        def use(self):
            used.append(self.id)

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=Device, runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 3)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert nccl._cupy_device() == "0000:3B:00.0"
    fake.cuda.Device = lambda i=0: Device(i, bus=None)
    assert nccl._cupy_device() == "device 0"

    class Node:
        def Get_rank(self):  # noqa: N802
            return 4

        def Free(self):  # noqa: N802
            used.append("freed")

    class Comm:
        def Split_type(self, kind):  # noqa: N802
            return Node()

    pytest.importorskip("mpi4py")
    assert nccl.use_local_gpu(Comm()) == 1 and used == ["freed", 1]  # local rank 4 of a node with 3 GPUs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_allreduce_gradients_through_a_transport(dtype):
    """The device-buffer path: gradients (a missing one as zeros) and extras joined into one buffer of the
    parameters' dtype, summed in place once (here: a stand-in doubling it, as two equal ranks would), and the
    gradients handed back as views of it."""
    from mpihelp import FakeNccl, host_seams

    from portacnn.backend.nccl import NcclAllreduce
    from portacnn.layers.base import Parameter

    fake = FakeNccl(reduce=lambda a: a.__imul__(2))
    transport = NcclAllreduce(TwoRanks(lambda v: (v[0], "0000:02:00.0")), nccl=fake, **host_seams("0000:01:00.0"))
    ps = [Parameter("a", np.zeros((2, 3), dtype)), Parameter("b", np.zeros(4, dtype))]
    ps[0].grad = np.arange(6, dtype=dtype).reshape(2, 3)
    extras = distributed.allreduce_gradients(None, ps, pc.get_backend("numpy"), weight=0.5, extras=[1.5, 7],
                                             transport=transport)
    np.testing.assert_array_equal(ps[0].grad, np.arange(6, dtype=dtype).reshape(2, 3))  # 2 * 0.5 * g
    np.testing.assert_array_equal(ps[1].grad, np.zeros(4, dtype))
    assert ps[0].grad.dtype == ps[1].grad.dtype == extras.dtype == np.dtype(dtype)
    assert extras.tolist() == [3.0, 14.0]
    kind = fake.NCCL_FLOAT32 if dtype == "float32" else fake.NCCL_FLOAT64
    assert fake.calls[-1] == ("allReduce", True, 12, kind, fake.NCCL_SUM, 0)
    with pytest.raises(ValueError, match="NCCL allreduce takes float32 or float64 buffers; got int32"):
        transport(np.zeros(3, np.int32))


# -- what the ranks compare before the first step (no MPI needed) ------------------------------------------------
class Counter(pc.training.Callback):
    """A user's own callback: compared by its type's name and its state."""

    def __init__(self, count=0):
        self.count = count

    def state_dict(self):
        return {"count": self.count}


def _one_augment(batch, rng):
    return batch


def _other_augment(batch, rng):
    return batch


def _callbacks(optimizer, patience=2, restore=False, min_delta=0.0, step_size=2, per="epoch", count=0):
    return [pc.callbacks.EarlyStopping(patience=patience, restore_best_weights=restore, min_delta=min_delta),
            pc.callbacks.LearningRateScheduler(pc.optim.lr_scheduler.StepLR(optimizer, step_size=step_size), per=per),
            Counter(count)]


def _setup(**change):
    """run_digests' arguments, made afresh (new objects, the same values) with ``change`` applied: a key of
    run_digests (a value, or a function of the model), or ``model_seed`` / ``model_width`` / ``model_dtype``."""
    from portacnn.train_state import TrainState

    L = pc.layers
    width = change.pop("model_width", 3)
    model = pc.Sequential([L.Conv2D(1, width, 3), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(width * 13 * 13, 10)],
                          dtype=change.pop("model_dtype", "float32"), seed=change.pop("model_seed", 1))
    rng = np.random.default_rng(0)
    x = rng.random((12, 1, 28, 28), dtype=np.float32)
    opt = model.optimizer = pc.optim.Adam(model.parameters(), lr=1e-3)  # as fit sets it
    base = dict(model=model, source=pc.inputs.Images(x, model.backend, model.dtype), labels=np.arange(12) % 10,
                validation=None, rows=None,
                settings={"epochs": 2, "batch_size": 4, "seed": 0, "shuffle": True, "validation_split": 0.0,
                          "label_smoothing": 0.0, "log_every": 20, "checkpointing": [True, 1]},
                augment=pc.augment.RandomAffine(degrees=10), optimizer=opt,
                callbacks=_callbacks(opt),
                position=TrainState(seed=0, batch_size=4).to_json(), checkpoint_extra={"model": "tiny", "lr": 1e-3})
    for key, value in change.items():
        base[key] = value(model) if callable(value) and key in ("optimizer", "callbacks", "source") else value
    return base


def _digests(**change):
    from portacnn.training import mpi_step

    return mpi_step.run_digests(**_setup(**change))


def _with_setting(key, value):
    settings = dict(_setup()["settings"])
    settings[key] = value
    return settings


def _pixel_changed():
    x = np.random.default_rng(0).random((12, 1, 28, 28), dtype=np.float32)
    x[7, 0, 5, 5] = np.nextafter(x[7, 0, 5, 5], np.float32(2))  # one pixel, one ulp
    return x


# (what changes, the parts whose digests must change with it: every other part keeps its digest)
DIGEST_CHANGES = [
    (dict(source=lambda m: pc.inputs.Images(_pixel_changed(), m.backend, m.dtype)), {"images"}),
    (dict(source=lambda m: np.random.default_rng(0).random((12, 1, 28, 28), dtype=np.float32).astype(np.float64)),
     {"images"}),  # the same values in another dtype
    (dict(labels=np.array([1] + [i % 10 for i in range(1, 12)])), {"labels"}),
    (dict(validation=(np.zeros((2, 1, 28, 28), np.float32), np.array([0, 1]))), {"validation"}),
    (dict(rows=np.arange(10)), {"validation"}),
    *[(dict(settings=_with_setting(k, v)), {k}) for k, v in [
        ("epochs", 3), ("batch_size", 5), ("seed", 1), ("shuffle", False), ("validation_split", 0.25),
        ("label_smoothing", 0.1), ("log_every", 1), ("checkpointing", [False, None]), ("checkpointing", [True, 2])]],
    (dict(augment=None), {"augment"}),
    (dict(augment=pc.augment.RandomAffine(degrees=11)), {"augment"}),
    (dict(augment=pc.augment.Compose([pc.augment.RandomAffine(degrees=10), pc.augment.RandomErasing()])), {"augment"}),
    (dict(augment=_one_augment), {"augment"}),
    (dict(optimizer=lambda m: pc.optim.Adam(m.parameters(), lr=2e-3)), {"optimizer"}),
    (dict(optimizer=lambda m: pc.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)), {"optimizer"}),  # its type
    (dict(optimizer=lambda m: pc.optim.Adam(pc.optim.split_decay(m, 0.0), lr=1e-3)), {"optimizer"}),  # its groups
    (dict(optimizer=lambda m: pc.optim.Adam(m.parameters()[::-1], lr=1e-3)), {"optimizer"}),  # which parameter is which
    *[(dict(callbacks=lambda m, k=k, v=v: _callbacks(m.optimizer, **{k: v})), {"callbacks"}) for k, v in [
        ("patience", 3), ("restore", True), ("min_delta", 0.5), ("step_size", 3), ("per", "step"), ("count", 1)]],
    (dict(callbacks=[]), {"callbacks"}),
    (dict(position={**_setup()["position"], "epoch": 1}), {"position"}),
    (dict(checkpoint_extra={"model": "tiny", "lr": 2e-3}), {"checkpoint_extra"}),
    (dict(checkpoint_extra=None), {"checkpoint_extra"}),
    (dict(model_seed=2), {"weights", "generator"}),
    (dict(model_width=4), {"architecture", "weights", "generator"}),  # more draws for more weights
    (dict(model_dtype="float64"), {"dtype", "weights"}),
]


def test_run_digests_equal_for_equal_setups_and_change_with_each_part():
    """run_digests: one SHA-256 per part of START_PARTS; a setup made again from scratch (new objects, the same
    values: callbacks whose states hold functions too) gives the same digests, and each change of one thing
    changes exactly the digests of the parts it belongs to."""
    from portacnn.training import mpi_step

    base = _digests()
    assert list(base) == list(mpi_step.START_PARTS) and all(len(d) == 32 for d in base.values())
    assert _digests() == base
    assert len(set(base.values())) == len(base)  # no two parts hashed alike by accident
    for change, parts in DIGEST_CHANGES:
        got = _digests(**change)
        assert {k for k in base if got[k] != base[k]} == parts, change
    # a plain function's callback (fit's on_epoch_end, which the command line gives rank 0 alone) is left out;
    # a function is named, never hashed by its address
    assert _digests(callbacks=lambda m: _callbacks(m.optimizer) + [pc.training.callbacks.LambdaCallback(print)]) == base
    assert _digests(augment=_one_augment) == _digests(augment=_one_augment) != _digests(augment=_other_augment)
    setup = _setup()
    setup["model"].rng.random()  # the dropout generator moved on
    assert {k for k, v in mpi_step.run_digests(**setup).items() if v != base[k]} == {"generator"}
    with pytest.raises(ValueError, match=r"run_digests needs the settings \['epochs', 'batch_size'"):
        _digests(settings={"epochs": 2})


def test_digest_hashes_values_not_objects():
    d = distributed.digest
    assert d(np.arange(4)) == d(np.arange(4).copy()) != d(np.arange(4).astype(np.int32))  # dtype counts
    assert d(np.zeros((2, 3))) != d(np.zeros((3, 2)))  # so does the shape
    big = np.random.default_rng(1).random((3000, 1, 28, 28))  # hashed in row chunks: the same as at once
    assert d(big) == d(np.ascontiguousarray(big)) and d(big[:, :, ::-1]) == d(big[:, :, ::-1].copy())
    assert len({d(1), d(1.0), d(True), d("1"), d([1]), d(None)}) == 6
    assert d({"a": 1, "b": 2}) == d({"b": 2, "a": 1}) != d({"a": 2, "b": 1})
    assert d(lambda: 0) == d(lambda: 1)  # a function by its name (no address, no code)
    assert d(object()) == d(object()) != d(Counter())


@pytest.mark.parametrize("library", ["array_api_strict", "torch", "dask.array"])
def test_digest_of_another_librarys_array_is_numpys(library):
    """Images on a device or in Dask are hashed a chunk of rows at a time (the last chunk's stop within the
    array: array_api_strict refuses one beyond it): the same digest as the same values in NumPy."""
    lib = pytest.importorskip(library)
    x = np.random.default_rng(2).random((3000, 1, 28, 28))  # more than one chunk
    made = lib.from_array(x, chunks=700) if library == "dask.array" else \
        lib.from_numpy(x) if library == "torch" else lib.asarray(x)
    assert distributed.digest(made) == distributed.digest(x)
    assert distributed.digest(made[:5, ...]) == distributed.digest(x[:5])  # less than one chunk


class DigestRanks:
    """Rank 0 of ``len(others) + 1`` ranks for compare_digests: rank r > 0 sends ``others[r - 1](table)``."""

    def __init__(self, *others):
        self.others, self.sent = others, []

    def Get_size(self):  # noqa: N802
        return len(self.others) + 1

    def Allgather(self, send, recv):  # noqa: N802
        self.sent.append((send.shape, send.dtype))
        recv[0] = send
        for r, other in enumerate(self.others, 1):
            recv[r] = other(send.copy())


def test_compare_digests_sends_a_fixed_size_table_and_names_the_first_rank_that_differs():
    from portacnn.training import mpi_step

    parts = {"a": distributed.digest(1), "b": distributed.digest(2), "c": distributed.digest(3)}

    def flip(slot):  # another rank whose part in ``slot`` (1 + its position) differs
        def other(table):
            table[slot, 0] ^= 1
            return table
        return other

    same = DigestRanks(lambda t: t, lambda t: t)
    assert distributed.compare_digests(same, parts) == []
    assert distributed.compare_digests(DigestRanks(lambda t: t, flip(2)), parts) == [("b", 2)]
    found = distributed.compare_digests(DigestRanks(flip(3), flip(1), flip(3)), parts)
    assert found == [("a", 2), ("c", 1)]
    one = DigestRanks(lambda t: t)
    distributed.compare_digests(one, {"x": distributed.digest(0)})
    assert same.sent[0] == one.sent[0] == ((distributed.DIGEST_SLOTS, 32), np.uint8)  # whatever is compared
    with pytest.raises(ValueError, match=r"the MPI ranks compare different things before training \(another "
                                         r"portacnn version on some rank\?\)"):
        distributed.compare_digests(DigestRanks(flip(0)), parts)
    # the one line every rank raises: the first part that differs in START_PARTS' order, then the others
    assert mpi_step.disagreement([("images", 1), ("checkpoint_extra", 1)]) == (
        "the MPI ranks' training data differ (rank 1's images differ from rank 0's; also: recorded recipe "
        "(checkpoint_extra)): give every rank the same data")
    assert mpi_step.disagreement([("augment", 3)]) == (
        "the MPI ranks' training setups differ (rank 3's augmentation differs from rank 0's): start every rank "
        "with the same arguments")
    assert mpi_step.disagreement([("weights", 1), ("generator", 1)]) == (
        "the MPI ranks' models differ (rank 1's weights differ from rank 0's; also: generator state): build every "
        "rank's model alike (the same seed), or resume every rank from the same checkpoint")


# -- one mpiexec run of the Python API, compared with the same calls in this process ---------------------------
SCRIPT = r'''
import json, os, signal, sys
import numpy as np
sys.path.insert(0, TESTS)
import portacnn as pc
import portacnn.augment
from portacnn import distributed, training
from portacnn.layers.base import Parameter
from clihelp import float_subset
from mpihelp import FakeNccl, host_seams
from portacnn.backend.nccl import NcclAllreduce

L = pc.layers
# 68 training rows after a 0.2 split of 85, in batches of 67: the last batch has one row, fewer than the ranks
CASES = {
    "adam64": dict(dtype="float64", n=85, batch_size=67, validation_split=0.2, augment=True, label_smoothing=0.1),
    "adam32": dict(dtype="float32", n=85, batch_size=67, validation_split=0.2, augment=True, label_smoothing=0.1),
    "sgd64": dict(dtype="float64", n=50, batch_size=16, sgd=True),  # batches 16, 16, 16, 2
    # compared with one process cutting each batch into the same two row shards (workers=2): bit for bit
    # BatchNorm (2D, inside a residual block too) with the whole batch's statistics; a last batch of one row
    # leaves rank 1 none (it joins the allreduces with a stand-in row); then BatchNorm1D, one row per rank
    "bn64": dict(dtype="float64", n=85, batch_size=67, validation_split=0.2, augment=True, model="bn"),
    # (the last step's BatchNorm1D over 2 rows, xhat = +-1, amplifies the earlier steps' rounding differences
    # a thousandfold: hence its looser tolerance below)
    "bn1d64": dict(dtype="float64", n=68, batch_size=33, model="bn1d"),  # batches 33, 33, 2
    "shards32": dict(dtype="float32", n=85, batch_size=67, validation_split=0.2, augment=True, label_smoothing=0.1,
                     one_process_workers=2),
}
if "array_api_strict" in pc.backend.available_backends():  # a backend other than NumPy: buffers staged on the host
    CASES["strict64"] = dict(dtype="float64", n=50, batch_size=16, backend="array_api_strict")


def small_model(dtype="float64", seed=1, backend="numpy", workers=1):
    return pc.Sequential([L.Conv2D(1, 4, 3), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dropout(0.3),
                          L.Dense(4 * 13 * 13, 10)], dtype=dtype, seed=seed, workers=workers, backend=backend)


def bn_model(dtype, bn1d=False):
    block = L.Residual([L.Conv2D(4, 4, 3, padding=1, bias=False), L.BatchNorm2D(4)])
    head = [L.Dense(4 * 13 * 13, 16), L.BatchNorm1D(16), L.ReLU(), L.Dense(16, 10)] if bn1d else \
        [L.Dropout(0.3), L.Dense(4 * 13 * 13, 10)]
    return pc.Sequential([L.Conv2D(1, 4, 3, bias=False), L.BatchNorm2D(4), L.ReLU(), block, L.ReLU(),
                          L.MaxPool2D(2), L.Flatten(), *head], dtype=dtype, seed=1)


class FailsOnRank1(L.ReLU):
    """Raises on rank 1 at its ``at_call``-th training forward (between two BatchNorm layers' sums)."""

    def __init__(self, r, at_call):
        self.r, self.at_call, self.calls = r, at_call, 0

    def forward(self, x, training=False):
        if training:
            self.calls += 1
            if self.r == 1 and self.calls == self.at_call:
                raise MemoryError("out of memory on rank 1 only")
        return super().forward(x, training)


def fails_between_batchnorms(r, at_call):
    return pc.Sequential([L.Conv2D(1, 4, 3, bias=False), L.BatchNorm2D(4), FailsOnRank1(r, at_call),
                          L.Conv2D(4, 4, 3, bias=False), L.BatchNorm2D(4), L.ReLU(), L.Flatten(),
                          L.Dense(4 * 24 * 24, 10)], dtype="float64", seed=1)


def train(case, comm=None, **kw):
    c = CASES[case]
    x, y = float_subset("train", c["n"])
    workers = c.get("one_process_workers", 1) if comm is None else 1
    if c.get("model"):
        model = bn_model(c["dtype"], bn1d=c["model"] == "bn1d")
    else:
        model = small_model(c["dtype"], backend=c.get("backend", "numpy"), workers=workers)
    opt = pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if c.get("sgd") else None
    aug = pc.augment.RandomAffine(degrees=10, translate=(0.1, 0.1)) if c.get("augment") else None
    h = model.fit(x, y, epochs=2, batch_size=c["batch_size"], optimizer=opt, seed=3, augment=aug, log_every=1,
                  validation_split=c.get("validation_split", 0.0), label_smoothing=c.get("label_smoothing", 0.0),
                  comm=comm, **{"verbose": 0, **kw})
    ev = training.evaluate(model, x, y, batch_size=7, comm=comm)
    return model, {"history": h.history, "evaluate": ev, "rng": str(model.rng.bit_generator.state)}


def main(out):
    comm = distributed.auto_comm()
    r = comm.Get_rank()
    res = {"size": comm.Get_size()}

    # (1) one flat allreduce: every rank gives rank + 1 (rank 1 gives no gradient for b: zeros)
    ps = [Parameter("a", np.zeros((2, 3))), Parameter("b", np.zeros(4))]
    ps[0].grad = np.full((2, 3), r + 1.0)
    ps[1].grad = None if r == 1 else np.full(4, r + 1.0)
    extras = distributed.allreduce_gradients(comm, ps, pc.backend.get_backend("numpy"), extras=[r + 1.0, 7.0])
    res["allreduce"] = {"a": ps[0].grad.tolist(), "b": ps[1].grad.tolist(), "extras": extras.tolist()}
    ps[0].grad = np.full((2, 3), r + 1.0)
    distributed.allreduce_gradients(comm, ps[:1], pc.backend.get_backend("numpy"), weight=0.5)
    res["weighted"] = ps[0].grad.tolist()

    # (2) training and evaluation; (3) with a checkpoint and a ModelCheckpoint, counting who writes
    writes = {"checkpoint": 0, "model": 0}
    loop_save, model_save = training.checkpointing.save, pc.Sequential.save
    def counted_save(*a, **k):
        writes["checkpoint"] += 1
        return loop_save(*a, **k)
    def counted_model_save(self, *a, **k):
        writes["model"] += 1
        return model_save(self, *a, **k)
    training.checkpointing.save, pc.Sequential.save = counted_save, counted_model_save
    for case in CASES:
        kw = {}
        if case == "adam64":
            kw = dict(checkpoint_path=f"{out}/ckpt.safetensors", verbose=2,
                      callbacks=[pc.callbacks.ModelCheckpoint(f"{out}/best.safetensors", save_best_only=False)])
        model, res[case] = train(case, comm, **kw)
        if r == 0:
            np.savez(f"{out}/{case}.npz", **model.state_dict())
    training.checkpointing.save, pc.Sequential.save = loop_save, model_save
    res["writes"] = writes

    # (2b) adam32 again through the NCCL transport (a stand-in NCCL summing host memory over MPI): the same sums
    fake = FakeNccl()
    real_transport = distributed.gradient_transport
    distributed.gradient_transport = lambda comm, backend: NcclAllreduce(comm, nccl=fake, **host_seams(r))
    model, res["nccl32"] = train("adam32", comm)
    res["nccl_calls"] = [list(c) for c in fake.calls]
    fake = FakeNccl()  # BatchNorm's statistics through NCCL too
    distributed.gradient_transport = lambda comm, backend: NcclAllreduce(comm, nccl=fake, **host_seams(r))
    bn_model_nccl, res["nccl_bn64"] = train("bn64", comm)
    res["nccl_bn_calls"] = [list(c) for c in fake.calls]
    distributed.gradient_transport = real_transport
    if r == 0:
        np.savez(f"{out}/nccl32.npz", **model.state_dict())
        np.savez(f"{out}/nccl_bn64.npz", **bn_model_nccl.state_dict())
    try:  # two ranks on one GPU: refused on both, before NCCL's set-up
        NcclAllreduce(comm, nccl=FakeNccl(), **host_seams(0))
        res["twins"] = None
    except ValueError as e:
        res["twins"] = str(e)

    # (4) refused: ranks that start apart; an error on one rank stops both (also before BatchNorm's allreduces)
    x, y = float_subset("train", 40)

    def fails_on_rank_1(batch, rng):
        if r == 1:
            raise RuntimeError("boom")
        return batch

    for name, make, kw in [("mismatch", lambda: small_model(seed=r), {}),
                           ("failure", small_model, {"augment": fails_on_rank_1}),
                           ("bn_failure", lambda: bn_model("float64"), {"augment": fails_on_rank_1}),
                           ("bn_pass_failure", lambda: fails_between_batchnorms(r, at_call=2), {})]:
        try:
            make().fit(x, y, epochs=1, batch_size=16, verbose=0, comm=comm, **kw)
            res[name] = None
        except Exception as e:
            res[name] = f"{type(e).__name__}: {e}"

    # (5) SIGINT reaching rank 1 alone, after step 0: both ranks stop after the same step, rank 0 saves
    class Kick(training.Callback):
        def on_train_batch_end(self, batch, logs):
            if r == 1 and batch == 0:
                os.kill(os.getpid(), signal.SIGINT)
    h = small_model().fit(x, y, epochs=1, batch_size=8, verbose=0, comm=comm, callbacks=[Kick()],
                          checkpoint_path=f"{out}/interrupted.safetensors")
    res["sigint"] = {"interrupted": h.interrupted, "signal": h.signal}
    with open(f"{out}/rank{r}.json", "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1])
'''


def _script(folder: Path) -> Path:
    path = folder / "mpi_api.py"
    path.write_text(f"TESTS = {str(TESTS)!r}\n" + SCRIPT)
    return path


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The script's main() under mpiexec -n 2 (its results per rank), and the script as a module here."""
    _need_mpi()
    out = tmp_path_factory.mktemp("mpi_api")
    script = _script(out)
    proc = _mpirun(sys.executable, script, out)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    spec = importlib.util.spec_from_file_location("mpi_api", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, proc, ranks, module


@pytest.mark.slow
def test_one_flat_allreduce_sums_every_ranks_gradients(api):
    _, _, ranks, _ = api
    for res in ranks:
        assert res["size"] == 2
        assert res["allreduce"]["a"] == [[3.0] * 3] * 2  # 1 + 2
        assert res["allreduce"]["b"] == [1.0] * 4  # rank 1 had no gradient: zeros
        assert res["allreduce"]["extras"] == [3.0, 14.0]
        assert res["weighted"] == [[1.5] * 3] * 2  # 0.5 * (1 + 2)


@pytest.mark.slow
@pytest.mark.parametrize("case, tol", [("adam64", 1e-12), ("sgd64", 1e-12), ("adam32", 2e-5), ("strict64", 1e-12),
                                       ("shards32", 0), ("bn64", 1e-12), ("bn1d64", 1e-8)])
def test_two_ranks_train_as_one_process(api, case, tol):
    """Adam and SGD, dropout, augmentation, label smoothing, a held-out split, a last batch of one row (fewer
    than the ranks), a backend other than NumPy and evaluate: weights, history, scores and the generator's state
    equal one process's; against one process computing each batch in the same two row shards, the weights are
    bit for bit the same (tol 0; the loss history, summed in another order, to float64 rounding)."""
    out, _, ranks, module = api
    if case not in module.CASES:
        pytest.skip(f"{case}: array_api_strict is not installed")
    model, one = module.train(case)  # the same calls in this process, without MPI
    two = np.load(out / f"{case}.npz")
    expected = model.state_dict()
    assert sorted(two.files) == sorted(expected)
    for key, value in expected.items():
        if tol == 0:
            np.testing.assert_array_equal(two[key], value, err_msg=f"{case} {key}")
            continue
        scale = max(1.0, float(np.max(np.abs(value))))
        np.testing.assert_allclose(two[key], value, rtol=0, atol=tol * scale, err_msg=f"{case} {key}")
    tol = tol or 1e-6  # the loss sums (history, evaluate) add the ranks' parts in another order
    for res in ranks:  # every rank holds the same history, scores and generator state
        got = res[case]
        assert got["rng"] == one["rng"]
        assert got["history"].keys() == one["history"].keys()
        for key, values in one["history"].items():
            if key.endswith("accuracy"):
                assert got["history"][key] == values, key
            else:
                np.testing.assert_allclose(got["history"][key], values, rtol=tol, err_msg=key)
        assert got["evaluate"]["accuracy"] == one["evaluate"]["accuracy"]
        assert got["evaluate"]["n"] == one["evaluate"]["n"]
        np.testing.assert_allclose(got["evaluate"]["loss"], one["evaluate"]["loss"], rtol=tol)


@pytest.mark.slow
def test_the_nccl_transport_sums_on_the_device_buffer(api):
    """Through NcclAllreduce (a stand-in NCCL on the CPU, summing host memory over MPI): one communicator from
    rank 0's unique id, one in-place float32 allreduce of the whole flat buffer (gradients and the five extras) per
    step, and the same weights and history, bit for bit, as the host transport; two ranks on one GPU refused."""
    out, _, ranks, module = api
    np.testing.assert_equal(dict(np.load(out / "nccl32.npz")), dict(np.load(out / "adam32.npz")))
    np.testing.assert_equal(dict(np.load(out / "nccl_bn64.npz")), dict(np.load(out / "bn64.npz")))
    n_params = sum(v.size for k, v in np.load(out / "adam32.npz").items() if not k.startswith("optim."))
    for r, res in enumerate(ranks):
        assert res["nccl32"] == res["adam32"] and res["nccl_bn64"] == res["bn64"]
        calls = res["nccl_calls"]
        start = ([["get_unique_id"]] if r == 0 else []) + [["init", 2, [123, 45], r]]  # rank 0's id for both
        assert calls[:len(start)] == start
        steps = calls[len(start):]
        assert len(steps) == 2 * 2  # 2 epochs of 68 rows in batches of 67
        assert all(c == ["allReduce", True, n_params + 5, 7, 0, 0] for c in steps)
        assert res["twins"].startswith("MPI ranks [0, 1] all use the GPU 0 of ")
        # with BatchNorm: per step, each of the 2 BatchNorm2D(4) layers' two sums forward (4 values each) and one
        # backward ([db, dw]: 8), then the gradients with the 5 extras; float64 throughout
        n_bn = sum(p.data.size for p in module.bn_model("float64").parameters())
        steps = res["nccl_bn_calls"][len(start):]
        assert [c[2] for c in steps] == [4, 4, 4, 4, 8, 8, n_bn + 5] * 4  # 2 epochs of batches 67 and 1
        assert all(c[1] is True and c[3] == 8 for c in steps)
        assert "call portacnn.distributed.use_local_gpu(comm) before building the model" in res["twins"]


@pytest.mark.slow
def test_only_rank_0_writes_files_and_prints(api):
    out, proc, ranks, _ = api
    assert ranks[0]["writes"]["checkpoint"] > 0 and ranks[0]["writes"]["model"] == 2  # ModelCheckpoint, 2 epochs
    assert ranks[1]["writes"] == {"checkpoint": 0, "model": 0}
    final = np.load(out / "adam64.npz")
    for name in ("ckpt.safetensors", "best.safetensors"):
        saved = pc.load(out / name).state_dict()
        assert all(np.array_equal(saved[k], final[k]) for k in final), name
    assert pc.load(out / "ckpt.safetensors").checkpoint["train_state"]["epoch"] == 2
    epoch_lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2, proc.stderr  # verbose=2 on both ranks: rank 0's two lines only


@pytest.mark.slow
def test_what_mpi_training_refuses_and_how_errors_reach_every_rank(api):
    _, _, ranks, _ = api
    for res in ranks:
        assert res["mismatch"] == ("ValueError: the MPI ranks' models differ (rank 1's weights differ from rank 0's; "
                                   "also: generator state): build every rank's model alike (the same seed), or "
                                   "resume every rank from the same checkpoint")
    for name in ("failure", "bn_failure"):
        assert ranks[1][name] == "RuntimeError: boom"
        assert ranks[0][name] == "RankFailed: MPI rank 1 failed (RuntimeError: boom); every rank stops"
    # failing in step 2 between two BatchNorm layers' sums: rank 1 makes the step's remaining sums with zeros
    # (their shapes learnt in step 1), so rank 0 is not left waiting in one, and the error reaches both
    assert ranks[1]["bn_pass_failure"] == "MemoryError: out of memory on rank 1 only"
    assert ranks[0]["bn_pass_failure"] == \
        "RankFailed: MPI rank 1 failed (MemoryError: out of memory on rank 1 only); every rank stops"


@pytest.mark.slow
def test_a_failure_inside_the_first_batchnorm_step_aborts_every_rank(api, tmp_path):
    """In the first step the rest of the step's sums are not known yet: the failing rank says so in one line and
    aborts the job (MPI_Abort) instead of leaving the other rank waiting: the job ends, non-zero, in time."""
    _, _, _, module = api
    script = tmp_path / "abort.py"
    script.write_text(f"TESTS = {str(TESTS)!r}\n" + SCRIPT.replace('if __name__ == "__main__":\n    main(sys.argv[1])', "")
                      + "\nx, y = float_subset('train', 32)\nr = distributed.auto_comm().Get_rank()\n"
                      "fails_between_batchnorms(r, at_call=1).fit(x, y, epochs=1, batch_size=16, verbose=0, "
                      "comm=distributed.auto_comm())\nprint('finished', r)\n")
    proc = _mpirun(sys.executable, script)
    assert proc.returncode != 0
    assert "finished" not in proc.stdout
    assert ("portacnn: MPI rank 1 failed inside BatchNorm's synchronised passes (MemoryError: out of memory on "
            "rank 1 only); aborting every rank") in proc.stderr


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_both_after_the_same_step(api):
    out, _, ranks, _ = api
    for res in ranks:
        assert res["sigint"] == {"interrupted": True, "signal": "SIGINT"}
    state = pc.load(out / "interrupted.safetensors").checkpoint["train_state"]
    assert state["epoch"] == 0 and state["step"] == 2  # rank 1's flag travelled with step 1's allreduce


# -- ranks that disagree: one mpiexec run of fit with one thing different on rank 1 per case --------------------
AGREE_SCRIPT = r"""
import json, sys
import numpy as np
sys.path.insert(0, TESTS)
import portacnn as pc
from portacnn import distributed
from clihelp import float_subset

L = pc.layers
comm = distributed.auto_comm()
r = comm.Get_rank()


class Count(pc.training.Callback):
    def __init__(self, count=0):
        self.count = count

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class FailsToBegin(pc.training.Callback):
    def on_train_begin(self):
        if r == 1:
            raise RuntimeError("cannot begin on rank 1")


def run(case):
    x, y = float_subset("train", 48)
    model = pc.Sequential([L.Conv2D(1, 3, 3), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dropout(0.2),
                           L.Dense(3 * 13 * 13, 10)], dtype="float64", seed=1)
    opt = pc.optim.SGD(model.parameters(), lr=0.05, momentum=0.8 if case == "optimizer" and r == 1 else 0.9)
    callbacks = [pc.callbacks.EarlyStopping(patience=0 if case == "callbacks" and r == 1 else 5, min_delta=10.0),
                 pc.callbacks.LearningRateScheduler(pc.optim.lr_scheduler.StepLR(opt, step_size=1), per="epoch"),
                 Count(1 if case == "user_callback" and r == 1 else 0)]
    if case == "failure_to_begin":
        callbacks.append(FailsToBegin())
    kw = dict(epochs=0 if case == "refused_on_one_rank" and r == 1 else 3, batch_size=16, seed=3, optimizer=opt,
              validation_split=0.25, callbacks=callbacks, verbose=0, comm=comm,
              augment=pc.augment.RandomAffine(degrees=11 if case == "augment" and r == 1 else 10),
              label_smoothing=0.1 if case == "recipe" and r == 1 else 0.0,
              on_epoch_end=(lambda e, logs: None) if r == 0 else None)  # as the command line: rank 0 alone
    if case == "data" and r == 1:
        x[5, 0, 3, 3] += 0.25  # one pixel of one image
    if case == "no_augment" and r == 1:
        kw["augment"] = None
    h = model.fit(x, y, **kw)
    return {"epochs": len(h.history["loss"]), "weights": str(distributed.digest(model.state_dict()).hex())}


CASES = ["agree", "data", "augment", "no_augment", "callbacks", "user_callback", "optimizer", "recipe",
         "refused_on_one_rank", "failure_to_begin", "agree"]
res = []
for case in CASES:
    try:
        res.append([case, run(case)])
    except Exception as e:
        res.append([case, f"{type(e).__name__}: {e}"])
with open(f"{sys.argv[1]}/agree{r}.json", "w") as f:
    json.dump(res, f)
"""


@pytest.fixture(scope="module")
def disagreeing(tmp_path_factory):
    """AGREE_SCRIPT under mpiexec -n 2: each rank's result of every case, in order."""
    _need_mpi()
    out = tmp_path_factory.mktemp("mpi_agree")
    script = out / "agree.py"
    script.write_text(f"TESTS = {str(TESTS)!r}\n" + AGREE_SCRIPT)
    proc = _mpirun(sys.executable, script, out)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "truncated" not in proc.stderr, proc.stderr
    return [json.loads((out / f"agree{r}.json").read_text()) for r in range(2)]


SETUP_ADVICE = "start every rank with the same arguments"
DISAGREEMENTS = {  # case -> the one line both ranks raise
    "data": "the MPI ranks' training data differ (rank 1's images differ from rank 0's): give every rank the same data",
    "augment": f"the MPI ranks' training setups differ (rank 1's augmentation differs from rank 0's): {SETUP_ADVICE}",
    "no_augment": f"the MPI ranks' training setups differ (rank 1's augmentation differs from rank 0's): "
                  f"{SETUP_ADVICE}",
    "callbacks": f"the MPI ranks' training setups differ (rank 1's callbacks differ from rank 0's): {SETUP_ADVICE}",
    "user_callback": f"the MPI ranks' training setups differ (rank 1's callbacks differ from rank 0's): {SETUP_ADVICE}",
    "optimizer": f"the MPI ranks' training setups differ (rank 1's optimizer differs from rank 0's): {SETUP_ADVICE}",
    "recipe": f"the MPI ranks' training setups differ (rank 1's label smoothing differs from rank 0's): {SETUP_ADVICE}",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(DISAGREEMENTS))
def test_ranks_that_disagree_all_refuse_before_the_first_step_with_one_line(disagreeing, case):
    """Different images (one pixel), augmentation (another parameter, or none), callbacks (another patience: the
    case that ended in MPICH's 'Message truncated' when one rank stopped early; a user's callback with another
    state), optimizer (another momentum) or recipe field (label smoothing) on rank 1: both ranks raise the same
    ValueError, naming it, before training (and go on to train the next case together)."""
    for ranks_results in disagreeing:
        results = dict((c, v) for c, v in ranks_results if c == case)
        assert results[case] == f"ValueError: {DISAGREEMENTS[case]}"


@pytest.mark.slow
def test_ranks_that_agree_train_and_a_failure_before_training_stops_every_rank(disagreeing):
    rank0, rank1 = disagreeing
    first, last = rank0[0][1], rank0[-1][1]
    assert rank0[0][0] == rank0[-1][0] == "agree" and isinstance(first, dict)
    assert first["epochs"] == 3 and first == last == rank1[0][1] == rank1[-1][1]  # on_epoch_end on rank 0 alone
    failures = {case: (a, b) for (case, a), (_, b) in zip(rank0, rank1)}
    assert failures["refused_on_one_rank"] == (
        "RankFailed: MPI rank 1 failed (ValueError: fit epochs must be a positive int; got 0); every rank stops",
        "ValueError: fit epochs must be a positive int; got 0")
    assert failures["failure_to_begin"] == (
        "RankFailed: MPI rank 1 failed (RuntimeError: cannot begin on rank 1); every rank stops",
        "RuntimeError: cannot begin on rank 1")


# -- the command line -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return idx_folder(tmp_path_factory.mktemp("mpi_data"), n_train=256, n_test=100)


CLI_ARGS = ["train", "--limit", 256, "--epochs", 1, "--json", "--no-plots", "--val-split", 0.1, "--augment", "affine"]


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), check=False, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO, env=cli_env())


@pytest.fixture(scope="module")
def one_process_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "one"
    proc = _cli(*CLI_ARGS, "--data", data_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _assert_same_run(a: Path, b: Path, rtol=2e-5):
    """Two run folders hold the same weights (to float32 rounding) and history (accuracies exactly)."""
    wa, wb = state_of(a / "model.safetensors"), state_of(b / "model.safetensors")
    for key in wa:
        np.testing.assert_allclose(wb[key], wa[key], rtol=0, atol=rtol * max(1.0, float(np.max(np.abs(wa[key])))),
                                   err_msg=key)
    ha = json.loads((a / "history.json").read_text())["history"]
    hb = json.loads((b / "history.json").read_text())["history"]
    assert ha["accuracy"] == hb["accuracy"] and ha["val_accuracy"] == hb["val_accuracy"]
    np.testing.assert_allclose(hb["loss"] + hb["val_loss"], ha["loss"] + ha["val_loss"], rtol=rtol)


def _mpmd(*per_rank, codes: Path) -> subprocess.CompletedProcess:
    """``mpiexec -n 1 CMD0 : -n 1 CMD1 ...``: one command line per rank (each rank's exit code written to
    ``codes/<rank>``), output captured, under a timeout."""
    _need_mpi()
    args = []
    for r, cmd in enumerate(per_rank):
        args += [":"] if r else []
        args += ["-n", "1", "sh", "-c", f'"$@"; c=$?; echo $c > {codes / str(r)}; exit $c', "sh", *map(str, cmd)]
    return subprocess.run([MPIEXEC, *args], check=False, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
                          env=cli_env())


@pytest.fixture(scope="module")
def other_data_dir(tmp_path_factory, data_dir):
    """data_dir's files with other training images (the same labels, shapes and test set)."""
    from clihelp import subset, write_idx

    other = tmp_path_factory.mktemp("mpi_other_data")
    for f in data_dir.iterdir():
        shutil.copy(f, other / f.name)
    write_idx(other / "train-images-idx3-ubyte", subset("train", 256, offset=1000)[0])
    return other


@pytest.mark.slow
@pytest.mark.parametrize("case", ["data", "augment", "early_stopping"])
def test_cli_ranks_that_disagree_exit_2_with_one_line(case, data_dir, other_data_dir, tmp_path):
    """mpiexec with another --data (other images), --augment or callback (--early-stopping: rank 0 stopped after
    one epoch and met rank 1's next step in MPICH's fatal 'Message truncated') on rank 1: every rank exits 2
    before training, rank 0 prints one line naming the difference, nothing else reaches stderr."""
    base = ["train", "--limit", 64, "--epochs", 3, "--batch-size", 32, "--no-plots", "--no-progress",
            "--val-split", 0.25, "--out", tmp_path / "run"]
    one, two = [*base, "--data", data_dir], [*base, "--data", data_dir]
    if case == "data":
        two[-1] = other_data_dir
        words = "the MPI ranks' training data differ (rank 1's images differ from rank 0's; also: validation data, " \
                "recorded recipe (checkpoint_extra)): give every rank the same data"  # a held-out share of them
    elif case == "augment":
        one += ["--augment", "affine"]
        words = "the MPI ranks' training setups differ (rank 1's augmentation differs from rank 0's; also: recorded " \
                "recipe (checkpoint_extra)): start every rank with the same arguments"
    else:
        one += ["--early-stopping", 1]
        words = "the MPI ranks' training setups differ (rank 1's callbacks differ from rank 0's; also: recorded " \
                "recipe (checkpoint_extra)): start every rank with the same arguments"
    proc = _mpmd(cli_cmd(*one), cli_cmd(*two), codes=tmp_path)
    assert [(tmp_path / str(r)).read_text().strip() for r in range(2)] == ["2", "2"], proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert assert_one_line_error(proc.stderr) == f"portacnn: error: {words}"
    assert "epoch 1/3" not in proc.stdout and "BAD TERMINATION" not in proc.stdout, proc.stdout
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["flag", "data"])
def test_cli_a_refusal_on_one_rank_before_training_stops_every_rank(case, data_dir, tmp_path):
    """A bad flag (--lr -1) or a missing --data folder on rank 1 alone: rank 1 refuses while parsing or preparing,
    and rank 0, which would otherwise wait for it for ever, stops too: every rank exits 2, one line, no folder."""
    base = ["train", "--limit", 64, "--epochs", 1, "--batch-size", 32, "--no-plots", "--no-progress",
            "--out", tmp_path / "run"]
    one, two = [*base, "--data", data_dir], [*base, "--data", data_dir]
    if case == "flag":
        two += ["--lr", "-1"]
        words = r"portacnn: error: MPI rank 1 failed \(UsageError: argument --lr: .*\); every rank stops"
    else:
        two[-1] = tmp_path / "missing"
        words = r"portacnn: error: MPI rank 1 failed \(.*missing.*\); every rank stops"
    proc = _mpmd(cli_cmd(*one), cli_cmd(*two), codes=tmp_path)
    assert [(tmp_path / str(r)).read_text().strip() for r in range(2)] == ["2", "2"], proc.stdout + proc.stderr
    assert re.fullmatch(words, assert_one_line_error(proc.stderr)), proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_under_mpiexec_trains_as_one_process(data_dir, one_process_run, tmp_path):
    _need_mpi()
    one, proc = one_process_run
    two = _mpirun(*cli_cmd(*CLI_ARGS, "--data", data_dir, "--out", tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    assert len([line for line in two.stdout.splitlines() if line.strip()]) == 1, two.stdout  # rank 0's JSON only
    a, b = last_json(proc.stdout), last_json(two.stdout)
    assert b["test_accuracy"] == a["test_accuracy"] and b["n_test"] == a["n_test"] == 100
    np.testing.assert_allclose(b["test_loss"], a["test_loss"], rtol=2e-5)
    _assert_same_run(one, tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["history.json", "model.safetensors"]


@pytest.mark.slow
def test_cli_under_mpiexec_equals_one_process_in_two_row_shards_bit_for_bit(data_dir, tmp_path):
    """mpiexec -n 2 portacnn train and portacnn train --workers 2 (one process, each batch in the same two row
    shards) end with the same weights, bit for bit, and the same test accuracy."""
    _need_mpi()
    args = [*CLI_ARGS, "--data", data_dir, "--batch-size", 91, "--epochs", 2]  # shards of 46 and 45 rows
    one = subprocess.run(cli_cmd(*args, "--out", tmp_path / "one", "--workers", 2), check=False, capture_output=True,
                         text=True, timeout=TIMEOUT, cwd=REPO, env=cli_env(OMP_NUM_THREADS="1"))
    assert one.returncode == 0, one.stderr
    two = _mpirun(*cli_cmd(*args, "--out", tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    wa, wb = state_of(tmp_path / "one" / "model.safetensors"), state_of(tmp_path / "two" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wb[key], wa[key], err_msg=key)
    assert last_json(two.stdout)["test_accuracy"] == last_json(one.stdout)["test_accuracy"]


@pytest.mark.slow
def test_cli_under_mpiexec_resumes_a_one_process_run(data_dir, one_process_run, tmp_path):
    _need_mpi()
    one, _ = one_process_run
    for name in ("alone", "mpi"):
        shutil.copytree(one, tmp_path / name)
    alone = _cli("train", "--resume", tmp_path / "alone" / "model.safetensors", "--epochs", 2, "--json",
                 "--no-plots", "--data", data_dir)
    assert alone.returncode == 0, alone.stderr
    mpi = _mpirun(*cli_cmd("train", "--resume", tmp_path / "mpi" / "model.safetensors", "--epochs", 2, "--json",
                           "--no-plots", "--data", data_dir))
    assert mpi.returncode == 0, mpi.stderr
    assert last_json(mpi.stdout)["test_accuracy"] == last_json(alone.stdout)["test_accuracy"]
    _assert_same_run(tmp_path / "alone", tmp_path / "mpi")
    assert len(json.loads((tmp_path / "mpi" / "history.json").read_text())["history"]["loss"]) == 2


@pytest.mark.slow
def test_cli_under_mpiexec_trains_kannada_bn_as_one_process(data_dir, tmp_path):
    """kannada_bn's recipe (BatchNorm, residual block, AdamW, one-cycle, augmentation, validation split) over two
    ranks: the whole batch's BatchNorm statistics, so the run is one process's to float rounding. In float64: in
    float32, Adam turns the rounding noise of the near-zero gradients of the convolutions before BatchNorm (whose
    loss does not change with their scale) into steps of +-lr either way."""
    args = ["train", "--model", "kannada_bn", "--limit", 96, "--batch-size", 40, "--epochs", 1, "--json",
            "--no-plots", "--data", data_dir, "--dtype", "float64"]
    one = _cli(*args, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = _mpirun(*cli_cmd(*args, "--out", tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    assert last_json(two.stdout)["test_accuracy"] == last_json(one.stdout)["test_accuracy"]
    _assert_same_run(tmp_path / "one", tmp_path / "two", rtol=1e-9)
