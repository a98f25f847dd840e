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

The backward pass uses the same algorithm: the input gradient is the stride-1 convolution of dy with the kernel
flipped and its channel axes swapped (:func:`forward` on dy), and the weight gradient is the adjoint of the three
steps above (:func:`weight_grad`: V again, dy's tiles carried to 4x4 by A, 16 products summed over the tiles,
and G^T . G back to 3x3).

Blocks of images (of :data:`.numpy_compiled.CONV_BLOCK_BYTES` of ``V`` and ``M``) are transformed, multiplied
and transformed back while they sit in one core's cache, one block per task on every core
(:func:`portacnn.backend.cpu.run_tasks`); the block size does not depend on the thread count, so results repeat
bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import compiled

#: the transforms' matrices (module docstring)
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

#: convolutions with fewer input channels run as im2col GEMMs: a (tiles x C) @ (C x O) product is too thin to
#: pay for the transforms' passes over memory
MIN_CHANNELS = 16


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


#: floats added to each of the 16 positions' rows of a block's V, M and dU: with a whole number of 4 KiB
#: pages between them, a transform's 16 streams of stores map to the same cache sets and run 9x slower
#: (measured on kannada_bn's 128-channel gradient at 7x7: 91 -> 10 microseconds an image)
POSITION_PAD = 16


def _positions(buf, start, count, width):
    """``(rows, matrices, stop)``: buf from ``start`` as 16 rows (C-contiguous, what the compiled transforms
    take), each holding one position's contiguous (count, width) matrix and :data:`POSITION_PAD` floats more;
    ``matrices`` the (16, count, width) view of them (what matmul takes); ``stop``: where the next may start."""
    step = count * width + POSITION_PAD
    rows = buf[start : start + 16 * step].reshape(16, step)
    return rows, rows[:, : count * width].reshape(16, count, width), start + 16 * step


def forward(xl, w, b, geo, relu, pool=False, blocks_for=None):
    """y (N, Ho, Wo, O) channels-last = conv(xl) (+ b, then max(., 0) when ``relu``) for channels-last xl
    (N, H, W, C) and w (O, C, 3, 3); ``blocks_for(bytes_per_image)`` cuts the batch into blocks of images
    (default: the compiled convolutions' cache-sized blocks, :func:`.numpy_compiled._image_blocks`).
    ``pool``: relu(conv(xl) + b) max-pooled 2x2 with stride 2 instead, y (N, Ho // 2, Wo // 2, O): each pooling
    window is one tile, pooled as it is made."""
    from ..backend.cpu import run_tasks
    from .numpy_compiled import _image_blocks, _scratch

    k = compiled.kernels()
    n, _, _, c = xl.shape
    o = w.shape[0]
    th, tw = tiles(geo)
    pt, pl = geo[6], geo[7]
    u = transform_weights(w, xl.dtype)
    bias = np.zeros(o, dtype=xl.dtype) if b is None else np.ascontiguousarray(b, dtype=xl.dtype)
    y = np.empty((n, geo[8] // 2, geo[9] // 2, o) if pool else (n, geo[8], geo[9], o), dtype=xl.dtype)
    per_image = th * tw
    blocks = (blocks_for or (lambda size: _image_blocks(n, size)))(16 * per_image * (c + o) * xl.itemsize)

    def task(t):
        a, e = blocks[t]
        count = (e - a) * per_image
        buf = _scratch((16 * (count * (c + o) + 2 * POSITION_PAD) + 16 * c + 4 * o,), xl.dtype)
        v_rows, v, at = _positions(buf, 0, count, c)
        m_rows, m, at = _positions(buf, at, count, o)
        d = buf[at : at + 16 * c].reshape(4, 4, c)
        q = buf[at + 16 * c : at + 16 * c + 4 * o].reshape(4, o)
        k.winograd_input_block(xl, a, e, pt, pl, th, tw, d, v_rows)
        np.matmul(v, u, out=m)
        if pool:
            k.winograd_output_pool_block(m_rows, a, e, th, tw, bias, q, y)
        else:
            k.winograd_output_block(m_rows, a, e, th, tw, bias, relu, q, y)

    run_tasks(task, len(blocks), work=n * per_image * 16 * c * o // 16)
    return y


#: the weight gradient's blocks are gathered into at most this many groups of consecutive images, each summing
#: its blocks' products into one (16, C, O) partial (a fixed split: the same bits whatever the thread count)
GRAD_GROUPS = 8


def weight_grad(xl, dy, geo, biased, blocks_for=None):
    """(dw (O, C, 3, 3), db (O,) or None) of the convolution :func:`forward` computes, for channels-last xl
    (N, H, W, C) and dy (N, Ho, Wo, O): the adjoint of its three steps,

        dU[p] (C, O) = sum over tiles of V[p]^T @ (A e A^T)[p]    (e: a tile's 2x2 block of dy)
        dw[o, c]     = G^T dU[:, c, o] G                           (in float64)

    the batch cut into blocks (``blocks_for`` as in :func:`forward`) gathered into :data:`GRAD_GROUPS` groups, each
    summing its blocks' 16 products in block order, the groups then added in group order (as are the bias's
    sums)."""
    from ..backend.cpu import run_tasks
    from .numpy_compiled import _image_blocks, _scratch

    k = compiled.kernels()
    n, _, _, c = xl.shape
    o = dy.shape[3]
    th, tw = tiles(geo)
    pt, pl = geo[6], geo[7]
    per_image = th * tw
    blocks = (blocks_for or (lambda size: _image_blocks(n, size)))(16 * per_image * (c + o) * xl.itemsize)
    per_group = -(-len(blocks) // GRAD_GROUPS)
    groups = [blocks[g : g + per_group] for g in range(0, len(blocks), per_group)]
    parts = np.empty((len(groups), 16, c, o), dtype=dy.dtype)
    bias_parts = np.zeros((len(groups), o), dtype=dy.dtype)
    dyl = dy.reshape(-1, o)
    rows = geo[8] * geo[9]

    def task(g):
        for b, (a, e) in enumerate(groups[g]):
            count = (e - a) * per_image
            buf = _scratch((16 * (count * (c + o) + c * o + 3 * POSITION_PAD) + 16 * c,), xl.dtype)
            v_rows, v, at = _positions(buf, 0, count, c)
            z_rows, z, at = _positions(buf, at, count, o)
            _, more, at = _positions(buf, at, c, o)
            d = buf[at : at + 16 * c].reshape(4, 4, c)
            k.winograd_input_block(xl, a, e, pt, pl, th, tw, d, v_rows)
            k.winograd_dy_block(dy, a, e, th, tw, z_rows)
            if b == 0:
                np.matmul(v.transpose(0, 2, 1), z, out=parts[g])
            else:
                np.matmul(v.transpose(0, 2, 1), z, out=more)
                parts[g] += more
            if biased:
                bias_parts[g] += np.sum(dyl[a * rows : e * rows], axis=0)

    run_tasks(task, len(groups), work=n * per_image * 16 * c * o // 16)
    ug, db = parts[0], bias_parts[0] if biased else None
    for g in range(1, len(groups)):
        ug = ug + parts[g]
        if biased:
            db = db + bias_parts[g]
    dw = k.winograd_weights_grad(ug, np.empty((o, c, 3, 3), dtype=dy.dtype))
    return dw, db
