"""NCCL on CuPy for data-parallel training: one allreduce of the flat gradient buffer without leaving the GPU.

NCCL needs a communicator that every rank creates together from one unique id; MPI carries that id (rank 0
draws it, ``comm.bcast`` hands it out: the bootstrap ChainerMN and Horovod use). Then each step's flat buffer,
a contiguous CuPy array, is summed in place on the current stream::

    nccl_comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, NCCL_FLOAT32 | NCCL_FLOAT64, NCCL_SUM, stream.ptr)

Each rank must use its own GPU: :func:`use_local_gpu` picks device ``local rank % devices`` (the local rank from
an MPI split of the ranks sharing a node) before the model is built; :class:`NcclAllreduce` refuses, in one
line, two ranks of one node on one GPU (NCCL would fail or hang).

``cupy.cuda.nccl`` is imported only inside these functions, and the NCCL module, the device pointer and the
stream are parameters, so the logic here is tested on the CPU with a stand-in NCCL that sums host memory over
MPI (``tests/test_distributed.py``); a real NCCL run needs a GPU per rank.
"""

from __future__ import annotations

import os
import socket

import numpy as np

#: how the transport for MPI training's gradients is chosen: auto (NCCL on CuPy when every rank has it, else
#: host staging), nccl (NCCL or a one-line error), host (always through host memory)
TRANSPORT_VAR = "PORTACNN_MPI_TRANSPORT"
TRANSPORTS = ("auto", "nccl", "host")


def transport_choice() -> str:
    """``$PORTACNN_MPI_TRANSPORT`` (default ``auto``), or a ValueError naming the values it may take."""
    choice = os.environ.get(TRANSPORT_VAR, "auto").strip().lower() or "auto"
    if choice not in TRANSPORTS:
        raise ValueError(f"environment variable {TRANSPORT_VAR}={os.environ[TRANSPORT_VAR]!r} is not one of "
                         f"{', '.join(TRANSPORTS)}; unset it or pick one")
    return choice


def load_nccl():
    """``cupy.cuda.nccl`` when CuPy was built with NCCL, else None."""
    try:
        from cupy.cuda import nccl
    except Exception:  # noqa: BLE001 - CuPy missing or built without NCCL: the caller falls back
        return None
    return nccl if getattr(nccl, "available", True) else None


def _cupy_pointer(buf) -> int:
    return int(buf.data.ptr)


def _cupy_stream() -> int:
    import cupy

    return int(cupy.cuda.get_current_stream().ptr)


def _cupy_device() -> str:
    """The current GPU as its PCI bus id: unlike the device number, it tells GPUs apart when each rank sees only
    its own (``CUDA_VISIBLE_DEVICES`` per rank, where every rank's GPU is number 0)."""
    import cupy

    device = cupy.cuda.Device()
    try:
        return str(device.pci_bus_id)
    except Exception:  # noqa: BLE001 - a CuPy without it: the number, the best left
        return f"device {int(device.id)}"


def local_rank(comm) -> int:
    """This rank's index among the ranks of ``comm`` on its node (an MPI split by shared memory)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return int(node.Get_rank())
    finally:
        node.Free()


def use_local_gpu(comm) -> int:
    """Make GPU ``local rank % device count`` current for this rank (call it before building the model, as
    ``mpiexec -n K portacnn train --backend cupy`` does); returns the device id."""
    import cupy

    device = local_rank(comm) % max(1, cupy.cuda.runtime.getDeviceCount())
    cupy.cuda.Device(device).use()
    return device


class NcclAllreduce:
    """A NCCL communicator over the ranks of the MPI communicator ``comm``; :meth:`__call__` sums a contiguous
    float32/float64 device array over the ranks, in place. Creating one is collective (every rank at once)."""

    def __init__(self, comm, nccl=None, pointer=_cupy_pointer, stream=_cupy_stream, device=_cupy_device):
        self.nccl = nccl if nccl is not None else load_nccl()
        if self.nccl is None:
            raise ValueError(f"NCCL is not available in this CuPy; unset {TRANSPORT_VAR} or set it to 'host'")
        self.pointer, self.stream = pointer, stream
        places = comm.allgather((socket.gethostname(), device()))
        for place in places:  # every rank sees the same list, so every rank raises (none waits in NCCL's set-up)
            twins = [r for r, other in enumerate(places) if other == place]
            if len(twins) > 1:
                raise ValueError(f"MPI ranks {twins} all use the GPU {place[1]} of {place[0]}; call "
                                 "portacnn.distributed.use_local_gpu(comm) before building the model, or start one "
                                 "rank per GPU")
        uid = None
        if comm.Get_rank() == 0:
            try:
                uid = ("id", self.nccl.get_unique_id())
            except Exception as e:  # noqa: BLE001 - every rank must learn of it, not wait for an id
                uid = ("error", f"{type(e).__name__}: {e}")
        kind, uid = comm.bcast(uid, root=0)
        if kind == "error":
            raise ValueError(f"NCCL could not start on MPI rank 0 ({uid}); set {TRANSPORT_VAR}=host to train without it")
        # a rank whose NCCL fails here leaves the others inside NCCL's own set-up, which only mpiexec can end
        self.comm = self.nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())
        self.types = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64}

    def __call__(self, buf):
        kind = self.types.get(np.dtype(buf.dtype))
        if kind is None:
            raise ValueError(f"NCCL allreduce takes float32 or float64 buffers; got {buf.dtype}")
        ptr = self.pointer(buf)
        self.comm.allReduce(ptr, ptr, int(buf.size), kind, self.nccl.NCCL_SUM, self.stream())
        return buf
