"""A stand-in for ``cupy.cuda.nccl`` on the CPU, so that the NCCL transport of MPI training
(portacnn.backend.nccl) runs without a GPU: its communicator sums the host memory at the pointers it is
given, through MPI (or any ``reduce`` function), and records every call."""

from __future__ import annotations

import ctypes

import numpy as np


def mpi_sum(arr):
    from mpi4py import MPI

    MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, arr, op=MPI.SUM)


class FakeNccl:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
    available = True

    def __init__(self, reduce=mpi_sum):
        self.reduce, self.calls = reduce, []

    def get_unique_id(self):
        self.calls.append(("get_unique_id",))
        return (123, 45)

    def NcclCommunicator(self, ndev, uid, rank):  # noqa: N802 - cupy.cuda.nccl's name
        self.calls.append(("init", ndev, uid, rank))
        fake = self

        class Communicator:
            def allReduce(self, send, recv, count, datatype, op, stream):  # noqa: N802
                fake.calls.append(("allReduce", send == recv, count, datatype, op, stream))
                ctype = {fake.NCCL_FLOAT32: ctypes.c_float, fake.NCCL_FLOAT64: ctypes.c_double}[datatype]
                fake.reduce(np.ctypeslib.as_array((ctype * count).from_address(recv)))

        return Communicator()


def host_seams(device):
    """NcclAllreduce's seams for NumPy buffers: their address, stream 0, the given device id."""
    return {"pointer": lambda a: a.ctypes.data, "stream": lambda: 0, "device": lambda: device}
