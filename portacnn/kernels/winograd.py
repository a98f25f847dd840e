"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2015), on the NumPy
backend's compiled path.

Each 2x2 block of outputs (a *tile*) of one output channel reads a 4x4 patch ``d`` of each input channel. With

    B^T = [[1, 0, -1, 0],      G = [[1,    0,   0 ],      A^T = [[1, 1,  1,  0],
           [0, 1,  1, 0],           [1/2,  1/2, 1/2],             [0, 1, -1, -1]]
           [0, -1, 1, 0],           [1/2, -1/2, 1/2],
           [0, 1,  0, -1]]          [0,    0,   1 ]]

the tile is ``A^T [ sum over c of (G g[o, c] G^T) * (B^T d[c] B) ] A`` (``*`` element by element): the 3x3 kernel
and the patch are both carried to 4x4, where the 36 multiply-adds per input channel of the direct 2x2 tile become
16, and the sum over input channels is, for each of the 16 positions, one (tiles x C) @ (C x O) product:

    V[p] (T, C)  = B^T d B at position p of every tile          (input transform, a pass over the input)
    U[p] (C, O)  = G g G^T at position p of every kernel         (weight transform, once per call, in float64)
    M[p] (T, O)  = V[p] @ U[p]                                   (16 GEMMs: 2.25x fewer multiply-adds than im2col)
    y tile       = A^T M A, plus the bias, then the ReLU          (output transform, the conv's epilogue)

B and A hold only 0 and +-1, and G halves, so the transforms add and subtract: the result equals the direct
convolution to float rounding (a few units in the last place more than im2col, checked against float64 loops
and the portable path in tests/kernels/test_compiled.py). Deployment libraries (cuDNN, oneDNN, NNPACK) run 3x3
convolutions this way.

Blocks of images are transformed, multiplied and transformed back while their ``V`` and ``M`` sit in one
core's cache, one block per task on every core (:func:`portacnn.backend.cpu.run_tasks`); the block size does
not depend on the thread count, so results repeat bit for bit.
"""

from __future__ import annotations

import threading

import numpy as np

from . import compiled

#: the transforms' matrices (module docstring)
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

#: convolutions with fewer input channels run as im2col GEMMs: a (tiles x C) @ (C x O) product is too thin to
#: pay for the transforms' passes over memory
MIN_CHANNELS = 16

#: bytes of V and M (module docstring) one task transforms and multiplies at once, to stay in its core's cache
BLOCK_BYTES = 1 << 20

_SCRATCH = threading.local()


def applies(c: int, geo) -> bool:
    """Whether the conv of ``c`` input channels with geometry ``geo`` (kh, kw, sh, sw, dh, dw, pt, pl, ho, wo)
    runs here: a 3x3 kernel, stride 1, no dilation, at least :data:`MIN_CHANNELS` inputs."""
    return tuple(geo[:6]) == (3, 3, 1, 1, 1, 1) and c >= MIN_CHANNELS


def tiles(geo) -> tuple[int, int]:
    """(rows, columns) of 2x2 output tiles covering the output (the last row or column half outside when odd)."""
    return -(-geo[8] // 2), -(-geo[9] // 2)


def transform_weights(w, dtype):
    """U (16, C, O) = G w[o, c] G^T at each of the 16 positions (row-major over the 4x4 tile), computed in
    float64 and rounded once to ``dtype``."""
    o, c = w.shape[:2]
    return compiled.kernels().winograd_weights(np.ascontiguousarray(w), np.empty((16, c, o), dtype=dtype))


def _scratch(size, dtype):
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = _SCRATCH.buf = np.empty(size, dtype=dtype)
    return buf[:size]


def forward(xl, w, b, geo, relu, blocks_for):
    """y (N, Ho, Wo, O) channels-last = conv(xl) (+ b, then max(., 0) when ``relu``) for channels-last xl
    (N, H, W, C) and w (O, C, 3, 3); ``blocks_for(bytes_per_image)`` cuts the batch into blocks of images."""
    from ..backend.cpu import run_tasks

    k = compiled.kernels()
    n, _, _, c = xl.shape
    o = w.shape[0]
    th, tw = tiles(geo)
    pt, pl = geo[6], geo[7]
    u = transform_weights(w, xl.dtype)
    bias = np.zeros(o, dtype=xl.dtype) if b is None else np.ascontiguousarray(b, dtype=xl.dtype)
    y = np.empty((n, geo[8], geo[9], o), dtype=xl.dtype)
    per_image = th * tw
    blocks = blocks_for(16 * per_image * (c + o) * xl.itemsize)

    def task(t):
        a, e = blocks[t]
        count = (e - a) * per_image
        buf = _scratch(16 * count * (c + o) + 16 * c + 4 * o, xl.dtype)
        v = buf[: 16 * count * c].reshape(16, count, c)
        m = buf[16 * count * c : 16 * count * (c + o)].reshape(16, count, o)
        d = buf[16 * count * (c + o) : 16 * count * (c + o) + 16 * c].reshape(4, 4, c)
        q = buf[16 * count * (c + o) + 16 * c :].reshape(4, o)
        k.winograd_input_block(xl, a, e, pt, pl, th, tw, d, v)
        np.matmul(v, u, out=m)
        k.winograd_output_block(m, a, e, th, tw, bias, relu, q, y)

    run_tasks(task, len(blocks), work=n * per_image * 16 * c * o // 16)
    return y

