"""Compiled CPU loops (numba) for the NumPy backend: imported only through :func:`.compiled.kernels`.

Each function is one pass over memory doing what the portable code does in several; the NumPy wrappers in
:mod:`.numpy_compiled` choose the memory layout and allocate, and the tests compare every one with its
portable twin. Arrays arrive C-contiguous in one of two views of an activation:

* rows ``(R, C)``: channels-last memory (N, H, W, C) seen as R = N*H*W rows of C channels;
* planes ``(A, C, B)``: channel-first memory, NCHW as (N, C, H*W) or batch-last CHWN as (1, C, H*W*N).

Every loop here is serial. The element-wise passes and reductions are bound by memory bandwidth, which one
core saturates on the machines measured (a kernel split over two threads ran no faster, and paid a thread
hand-off each call); the convolutions, which are bound by arithmetic, get their threads from the caller
(:func:`portacnn.backend.cpu.run_tasks` runs blocks of images side by side, each through these serial
loops). Reductions accumulate in float64, in memory order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = dict(nogil=True, cache=True, fastmath=False, error_model="numpy")


@njit(**_OPTS)
def tap_source(pos, offset, stride, count):
    """The output index whose window tap at ``offset`` reads padded position ``pos`` along one axis
    (``index * stride + offset == pos``), or -1 when none of the ``count`` outputs does."""
    d = pos - offset
    if stride == 1:  # no integer division (the common case, and the costly part of the general one)
        return d if 0 <= d < count else -1
    if d < 0 or d % stride != 0 or d // stride >= count:
        return -1
    return d // stride


@njit(**_OPTS)
def tap_range(start, step, count, first, stop):
    """(lo, hi): the taps k in 0..count whose position ``start + k * step`` lies in first..stop (hi <= lo: none)."""
    lo = max(0, -((start - first) // step))  # ceil((first - start) / step)
    hi = min(count, -((start - stop) // step))  # ceil((stop - start) / step)
    return lo, max(lo, hi)


# -- BatchNorm -------------------------------------------------------------------------------------------
@njit(**_OPTS)
def affine_rows(x, scale, shift, relu, out):
    """``out = x * scale + shift`` per channel of rows (R, C); then ``max(., 0)`` when ``relu``."""
    r, c = x.shape
    for i in range(r):
        for j in range(c):
            v = x[i, j] * scale[j] + shift[j]
            out[i, j] = v if not (relu and v <= 0) else 0
    return out


@njit(**_OPTS)
def affine_planes(x, scale, shift, relu, out):
    na, c, nb = x.shape
    for t in range(na * c):
        i, j = t // c, t % c
        s, h = scale[j], shift[j]
        for k in range(nb):
            v = x[i, j, k] * s + h
            out[i, j, k] = v if not (relu and v <= 0) else 0
    return out


@njit(**_OPTS)
def sums_rows(dy, x, relu, scale, shift):
    """Per channel of rows (R, C): ``(sum g, sum g*x)`` in float64, rows in order. g = dy, or when ``relu`` (a ReLU
    fused after the BatchNorm) ``dy * [not y <= 0]`` with its output y = x * scale + shift recomputed exactly as
    the forward pass computed it (cheaper than reading y back). The forward statistics are ``sums(x, x)``."""
    r, c = x.shape
    s1 = np.zeros(c, dtype=np.float64)
    s2 = np.zeros(c, dtype=np.float64)
    for i in range(r):
        for j in range(c):
            g = dy[i, j]
            if relu:
                g = g * (0 if x[i, j] * scale[j] + shift[j] <= 0 else 1)
            g64 = np.float64(g)
            s1[j] += g64
            s2[j] += g64 * np.float64(x[i, j])
    return s1, s2


@njit(**_OPTS)
def sums_planes(dy, x, relu, scale, shift):
    """The same per channel of planes (A, C, B), channel by channel."""
    na, c, nb = x.shape
    s1 = np.zeros(c, dtype=np.float64)
    s2 = np.zeros(c, dtype=np.float64)
    for j in range(c):
        t1 = 0.0
        t2 = 0.0
        sj, hj = scale[j], shift[j]
        for i in range(na):
            for k in range(nb):
                g = dy[i, j, k]
                if relu:
                    g = g * (0 if x[i, j, k] * sj + hj <= 0 else 1)
                g64 = np.float64(g)
                t1 += g64
                t2 += g64 * np.float64(x[i, j, k])
        s1[j] = t1
        s2[j] = t2
    return s1, s2


@njit(**_OPTS)
def bn_dx_rows(dy, x, relu, scale, shift, a, mdb, mean, k, out):
    """BatchNorm's training input gradient per channel of rows: ``a * (g - mdb - (x - mean) * k)``, g as in
    :func:`sums_rows`."""
    r, c = x.shape
    for i in range(r):
        for j in range(c):
            g = dy[i, j]
            if relu:
                g = g * (0 if x[i, j] * scale[j] + shift[j] <= 0 else 1)
            out[i, j] = a[j] * (g - mdb[j] - (x[i, j] - mean[j]) * k[j])
    return out


@njit(**_OPTS)
def bn_dx_planes(dy, x, relu, scale, shift, a, mdb, mean, k, out):
    na, c, nb = x.shape
    for t in range(na * c):
        i, j = t // c, t % c
        aj, mj, mu, kj, sj, hj = a[j], mdb[j], mean[j], k[j], scale[j], shift[j]
        for q in range(nb):
            g = dy[i, j, q]
            if relu:
                g = g * (0 if x[i, j, q] * sj + hj <= 0 else 1)
            out[i, j, q] = aj * (g - mj - (x[i, j, q] - mu) * kj)
    return out


# -- ReLU ------------------------------------------------------------------------------------------------
@njit(**_OPTS)
def relu(x, out):
    """``out = max(x, 0)`` on flat arrays; NaN stays NaN, -inf gives 0 (as ``maximum(x, 0)``)."""
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v if not v <= 0 else 0
    return out


@njit(**_OPTS)
def relu_backward(y, dy, out):
    """``out = dy * [not y <= 0]`` on flat arrays (a multiply, as the portable code: 0 * inf is NaN)."""
    for i in range(y.shape[0]):
        out[i] = dy[i] * (0 if y[i] <= 0 else 1)
    return out


# -- max pooling on channels-last (N, H, W, C) ---------------------------------------------------------------
@njit(**_OPTS)
def maxpool_nhwc(x, kh, kw, sh, sw, ph, pw, relu, y, arg):
    """y[n, r, s, c] = max over the window's real cells (NaN wins, as ``maximum``); ``arg`` the window offset
    i*kw + j of the FIRST cell equal to it in row-major order (-1 when none is: a NaN maximum). With ``relu``,
    each cell is read as max(cell, 0) (``relu``'s rule): the pooling of a ReLU's output that is never made."""
    n, h, w, c = x.shape
    zero = x.dtype.type(0)
    ho, wo = y.shape[1], y.shape[2]
    for t in range(n * ho):
        b, r = t // ho, t % ho
        for s in range(wo):
            for ch in range(c):
                y[b, r, s, ch] = -np.inf
                arg[b, r, s, ch] = -1
            for i in range(kh):  # one scan, channels innermost (contiguous)
                hh = r * sh + i - ph
                if hh < 0 or hh >= h:
                    continue
                for j in range(kw):
                    ww = s * sw + j - pw
                    if ww < 0 or ww >= w:
                        continue
                    for ch in range(c):
                        v = x[b, hh, ww, ch]
                        if relu and v <= 0:
                            v = zero
                        m = y[b, r, s, ch]
                        # a strictly larger value, the first real cell, or the first NaN takes the window
                        if v > m or arg[b, r, s, ch] == -1 or (v != v and m == m):
                            y[b, r, s, ch] = v
                            arg[b, r, s, ch] = i * kw + j
            for ch in range(c):  # a NaN maximum equals no cell: its gradient reaches none (the portable rule)
                if y[b, r, s, ch] != y[b, r, s, ch]:
                    arg[b, r, s, ch] = -1
    return y


@njit(**_OPTS)
def maxpool_backward_nhwc(dy, arg, y, kh, kw, sh, sw, ph, pw, relu, dx):
    """dx (zeros on entry) += dy at each output's ``arg`` cell; with ``relu`` (a pooled ReLU, :func:`maxpool_nhwc`),
    times the ReLU's mask there, [not y <= 0] of the output y, which is the ReLU's output at that cell (``relu_backward``'s
    rule)."""
    n, ho, wo, c = dy.shape
    for b in range(n):
        for r in range(ho):
            for s in range(wo):
                for ch in range(c):
                    a = arg[b, r, s, ch]
                    if a >= 0:
                        g = dy[b, r, s, ch]
                        if relu:
                            g = g * (0 if y[b, r, s, ch] <= 0 else 1)
                        dx[b, r * sh + a // kw - ph, s * sw + a % kw - pw, ch] += g
    return dx


@njit(**_OPTS)
def maxpool_backward_tiled_nhwc(dy, arg, y, kh, kw, relu, dx):
    """The same for windows that tile the input (stride = kernel, no padding) as one gather pass: each input cell
    takes its window's gradient (times the ReLU's mask with ``relu``) when it is that window's ``arg`` cell, else
    0 (no zero-fill pass first)."""
    n, h, w, c = dx.shape
    ho, wo = dy.shape[1], dy.shape[2]
    for b in range(n):
        for hh in range(h):
            r, i = hh // kh, hh % kh
            for ww in range(w):
                s, j = ww // kw, ww % kw
                if r >= ho or s >= wo:
                    for ch in range(c):
                        dx[b, hh, ww, ch] = 0
                    continue
                a = i * kw + j
                for ch in range(c):
                    g = dy[b, r, s, ch]
                    if relu:
                        g = g * (0 if y[b, r, s, ch] <= 0 else 1)
                    dx[b, hh, ww, ch] = g if arg[b, r, s, ch] == a else 0
    return dx


# -- convolution blocks (serial: each call is one task of a thread pool) ---------------------------------
@njit(**_OPTS)
def im2col_block(x, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, cols):
    """cols ((n1-n0)*Ho*Wo, kh*kw*C) for images n0..n1 of channels-last x (N, H, W, C), padding read as 0:
    row (n, r, s) holds the window of output pixel (n, r, s), column (i*kw + j)*C + c."""
    _, h, w, c = x.shape
    row = 0
    for b in range(n0, n1):
        for r in range(ho):
            for s in range(wo):
                for i in range(kh):
                    hh = r * sh + i * dh - pt
                    for j in range(kw):
                        ww = s * sw + j * dw - pl
                        base = (i * kw + j) * c
                        if hh < 0 or hh >= h or ww < 0 or ww >= w:
                            for ch in range(c):
                                cols[row, base + ch] = 0
                        else:
                            for ch in range(c):
                                cols[row, base + ch] = x[b, hh, ww, ch]
                row += 1
    return cols


@njit(**_OPTS)
def col2im_block(cols, n0, n1, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, dx):
    """Adjoint of :func:`im2col_block` as a gather: dx[n, h, w, :] (images n0..n1 of (N, H, W, C)) is the sum of
    the columns of every (output pixel, offset) that read input cell (h, w), offsets in (i, j) order."""
    _, h, w, c = dx.shape
    for b in range(n0, n1):
        for hh in range(h):
            for ww in range(w):
                for ch in range(c):
                    dx[b, hh, ww, ch] = 0
                for i in range(kh):
                    r = tap_source(hh + pt, i * dh, sh, ho)
                    if r < 0:
                        continue
                    for j in range(kw):
                        s = tap_source(ww + pl, j * dw, sw, wo)
                        if s < 0:
                            continue
                        row = ((b - n0) * ho + r) * wo + s
                        base = (i * kw + j) * c
                        for ch in range(c):
                            dx[b, hh, ww, ch] += cols[row, base + ch]
    return dx


@njit(**_OPTS)
def bias_relu_rows(out, b, relu):
    """The conv epilogue on rows (R, O) in place: ``out += b`` (b of length 0: no bias), then ``max(., 0)`` when
    ``relu``."""
    r, o = out.shape
    biased = b.shape[0] == o
    for i in range(r):
        for j in range(o):
            v = out[i, j]
            if biased:
                v = v + b[j]
            out[i, j] = v if not (relu and v <= 0) else 0
    return out


# -- optimizer -------------------------------------------------------------------------------------------
@njit(**_OPTS)
def adam_update(w, g, m, v, b1, omb1, b2, omb2, c2, eps, step, wd, mode):
    """One Adam/AdamW step over flat arrays, in one pass, with the operations of the portable update in its
    order and in the arrays' dtype (the scalars arrive cast to it): mode 1 adds ``wd * w`` to the gradient
    (Adam's L2), mode 2 first scales ``w`` by ``wd`` (AdamW's decoupled factor 1 - lr * weight_decay)."""
    for i in range(w.shape[0]):
        gi = g[i]
        if mode == 1:
            gi = gi + wd * w[i]
        elif mode == 2:
            w[i] = w[i] * wd
        mi = m[i] * b1
        mi = mi + omb1 * gi
        g2 = gi * gi
        g2 = g2 * omb2
        vi = v[i] * b2
        vi = vi + g2
        m[i] = mi
        v[i] = vi
        d = np.sqrt(vi)
        d = d / c2
        d = d + eps
        u = mi / d
        u = u * step
        w[i] = w[i] - u


# -- narrow convolutions on batch-last arrays, vectorised over the batch ---------------------------------------
@njit(**_OPTS)
def conv_chwn(x, w, b, sh, sw, dh, dw, rows, cols, relu, t0, t1, y):
    """Output rows t0..t1 of y (O, Ho, Wo, N): ``b[o]`` plus, in (c, i, j) order, ``w[o, c, i, j]`` times the padded
    batch-last input x (C, Hp, Wp, N) at the tap; then max(., 0) when ``relu``. Taps that read outside the rows
    ``rows`` = (first, stop) and columns ``cols`` of x are skipped (the input gradient's padding: only zeros
    there); the forward pass gives x's whole extent, so its padding is multiplied as the portable code does.
    The innermost loops run over the N images. Each output pixel's sums build up in an (O, N) accumulator that
    stays in the L1 cache; one pass over it adds up to four taps of a kernel row for two outputs at a time (the
    accumulator plus each product in turn: the same sums, rounded the same way, as one tap per pass)."""
    c_in, n = x.shape[0], x.shape[3]
    o_n, _, kh, kw = w.shape
    wo = y.shape[2]
    acc = np.empty((o_n, n), dtype=y.dtype)
    for r in range(t0, t1):
        i0, i1 = tap_range(r * sh, dh, kh, rows[0], rows[1])
        for s in range(wo):
            j0, j1 = tap_range(s * sw, dw, kw, cols[0], cols[1])
            for o in range(o_n):
                bo = b[o]
                for q in range(n):
                    acc[o, q] = bo
            for c in range(c_in):
                for i in range(i0, i1):
                    row = x[c, r * sh + i * dh]
                    j = j0
                    while j < j1:
                        col = s * sw + j * dw
                        if j + 4 <= j1:
                            x0, x1, x2, x3 = row[col], row[col + dw], row[col + 2 * dw], row[col + 3 * dw]
                            o = 0
                            while o < o_n:
                                a0, a1, a2, a3 = w[o, c, i, j], w[o, c, i, j + 1], w[o, c, i, j + 2], w[o, c, i, j + 3]
                                ar = acc[o]
                                if o + 1 < o_n:
                                    b0, b1 = w[o + 1, c, i, j], w[o + 1, c, i, j + 1]
                                    b2, b3 = w[o + 1, c, i, j + 2], w[o + 1, c, i, j + 3]
                                    br = acc[o + 1]
                                    for q in range(n):
                                        v0, v1, v2, v3 = x0[q], x1[q], x2[q], x3[q]
                                        ar[q] = (((ar[q] + a0 * v0) + a1 * v1) + a2 * v2) + a3 * v3
                                        br[q] = (((br[q] + b0 * v0) + b1 * v1) + b2 * v2) + b3 * v3
                                    o += 2
                                else:
                                    for q in range(n):
                                        ar[q] = (((ar[q] + a0 * x0[q]) + a1 * x1[q]) + a2 * x2[q]) + a3 * x3[q]
                                    o += 1
                            j += 4
                        elif j + 2 <= j1:
                            x0, x1 = row[col], row[col + dw]
                            for o in range(o_n):
                                a0, a1 = w[o, c, i, j], w[o, c, i, j + 1]
                                ar = acc[o]
                                for q in range(n):
                                    ar[q] = (ar[q] + a0 * x0[q]) + a1 * x1[q]
                            j += 2
                        else:
                            x0 = row[col]
                            for o in range(o_n):
                                a0 = w[o, c, i, j]
                                ar = acc[o]
                                for q in range(n):
                                    ar[q] += a0 * x0[q]
                            j += 1
            for o in range(o_n):
                for q in range(n):
                    v = acc[o, q]
                    y[o, r, s, q] = v if not (relu and v <= 0) else 0
    return y


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def conv_chwn_dw(x, dy, dh, dw, t0, t1, out):
    """out[o, c, i, j] (float64) of a stride-1 conv for the tasks t in t0..t1, task t = p*C + c covering outputs
    2p and 2p + 1 (when there is one) and input channel c: the sum over output pixels and images of dy
    (O, Ho, Wo, N) times the padded batch-last input x (C, Hp, Wp, N) at the tap. With stride 1 an output row's
    Wo*N values of dy meet Wo*N consecutive values of an input row, so each row's share of a tap is one dot
    product over contiguous memory, summed in x's dtype (a vectorised reduction: ``reassoc`` lets the compiler
    keep vector partial sums, in an order fixed by the compiled code); the rows' shares are added in float64,
    row by row. The two outputs' rows of dy are read for every tap while in the L1 cache, and one pass over
    them takes up to four taps of a kernel row."""
    c_in, wp, n = x.shape[0], x.shape[2], x.shape[3]
    o_n, ho, wo, _ = dy.shape
    kh, kw = out.shape[2], out.shape[3]
    m, step = wo * n, dw * n
    zero = x.dtype.type(0)
    total = np.empty((2, kh, kw), dtype=np.float64)
    for t in range(t0, t1):
        o, c = 2 * (t // c_in), t % c_in
        two = o + 1 < o_n
        total[:, :, :] = 0.0
        for r in range(ho):
            d = dy[o, r].reshape(m)
            d2 = dy[o + 1, r].reshape(m) if two else d  # one output left: its row twice, the copy unused
            for i in range(kh):
                row = x[c, r + i * dh].reshape(wp * n)
                j = 0
                while j < kw:
                    e0 = j * step
                    if j + 4 <= kw:
                        x0, x1 = row[e0 : e0 + m], row[e0 + step : e0 + step + m]
                        x2, x3 = row[e0 + 2 * step : e0 + 2 * step + m], row[e0 + 3 * step : e0 + 3 * step + m]
                        p0 = p1 = p2 = p3 = q0 = q1 = q2 = q3 = zero
                        for e in range(m):
                            u, v = d[e], d2[e]
                            a0, a1, a2, a3 = x0[e], x1[e], x2[e], x3[e]
                            p0 += u * a0
                            p1 += u * a1
                            p2 += u * a2
                            p3 += u * a3
                            q0 += v * a0
                            q1 += v * a1
                            q2 += v * a2
                            q3 += v * a3
                        total[0, i, j] += p0
                        total[0, i, j + 1] += p1
                        total[0, i, j + 2] += p2
                        total[0, i, j + 3] += p3
                        total[1, i, j] += q0
                        total[1, i, j + 1] += q1
                        total[1, i, j + 2] += q2
                        total[1, i, j + 3] += q3
                        j += 4
                    elif j + 2 <= kw:
                        x0, x1 = row[e0 : e0 + m], row[e0 + step : e0 + step + m]
                        p0 = p1 = q0 = q1 = zero
                        for e in range(m):
                            u, v = d[e], d2[e]
                            a0, a1 = x0[e], x1[e]
                            p0 += u * a0
                            p1 += u * a1
                            q0 += v * a0
                            q1 += v * a1
                        total[0, i, j] += p0
                        total[0, i, j + 1] += p1
                        total[1, i, j] += q0
                        total[1, i, j + 1] += q1
                        j += 2
                    else:
                        x0 = row[e0 : e0 + m]
                        p0 = q0 = zero
                        for e in range(m):
                            a0 = x0[e]
                            p0 += d[e] * a0
                            q0 += d2[e] * a0
                        total[0, i, j] += p0
                        total[1, i, j] += q0
                        j += 1
        for k in range(2 if two else 1):
            for i in range(kh):
                for j in range(kw):
                    out[o + k, c, i, j] = total[k, i, j]
    return out


# -- Winograd F(2x2, 3x3) tile transforms (the math: :mod:`.winograd`) -----------------------------------
@njit(**_OPTS)
def winograd_weights(w, u):
    """u (16, C, O) = G w[o, c] G^T (4x4, row-major) for w (O, C, 3, 3), computed in float64 and rounded once."""
    o, c = w.shape[:2]
    g = np.empty((4, 3))
    h = np.empty((16, c))
    for k in range(o):
        for ch in range(c):
            for j in range(3):  # G w: rows w0, (w0 + w1 + w2) / 2, (w0 - w1 + w2) / 2, w2 of each column
                w0, w1, w2 = np.float64(w[k, ch, 0, j]), np.float64(w[k, ch, 1, j]), np.float64(w[k, ch, 2, j])
                g[0, j] = w0
                g[1, j] = (w0 + w1 + w2) * 0.5
                g[2, j] = (w0 - w1 + w2) * 0.5
                g[3, j] = w2
            for i in range(4):  # (G w) G^T: the same along each row
                h[4 * i, ch] = g[i, 0]
                h[4 * i + 1, ch] = (g[i, 0] + g[i, 1] + g[i, 2]) * 0.5
                h[4 * i + 2, ch] = (g[i, 0] - g[i, 1] + g[i, 2]) * 0.5
                h[4 * i + 3, ch] = g[i, 2]
        for p in range(16):
            for ch in range(c):
                u[p, ch, k] = h[p, ch]
    return u


@njit(**_OPTS)
def winograd_input_block(x, n0, n1, pt, pl, th, tw, d, v):
    """v[p, t*C : (t+1)*C] = (B^T d B)[p] for the 4x4 input tile d of every 2x2 output tile t of images n0..n1
    of channels-last x (N, H, W, C), padding read as 0; tile (n, ty, tx) starts at input (2*ty - pt, 2*tx - pl).
    v (16, >= tiles*C): position p's (tiles, C) matrix at the start of row p. ``d`` (4, 4, C) is scratch."""
    _, h, w, c = x.shape
    t = 0
    for b in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                for i in range(4):
                    hh = 2 * ty + i - pt
                    for j in range(4):
                        ww = 2 * tx + j - pl
                        if hh < 0 or hh >= h or ww < 0 or ww >= w:
                            for ch in range(c):
                                d[i, j, ch] = 0
                        else:
                            for ch in range(c):
                                d[i, j, ch] = x[b, hh, ww, ch]
                for j in range(4):  # B^T d: along the rows, one column at a time (in place)
                    for ch in range(c):
                        d0, d1, d2, d3 = d[0, j, ch], d[1, j, ch], d[2, j, ch], d[3, j, ch]
                        d[0, j, ch] = d0 - d2
                        d[1, j, ch] = d1 + d2
                        d[2, j, ch] = d2 - d1
                        d[3, j, ch] = d1 - d3
                base = t * c
                for i in range(4):  # (B^T d) B: along the columns
                    for ch in range(c):
                        u0, u1, u2, u3 = d[i, 0, ch], d[i, 1, ch], d[i, 2, ch], d[i, 3, ch]
                        v[4 * i, base + ch] = u0 - u2
                        v[4 * i + 1, base + ch] = u1 + u2
                        v[4 * i + 2, base + ch] = u2 - u1
                        v[4 * i + 3, base + ch] = u1 - u3
                t += 1
    return v


@njit(**_OPTS)
def _a_row(z, i, col, f0, f1):
    """Row i of (A e) A^T: A^T's columns applied to the row (f0, f1) of A e."""
    z[4 * i, col] = f0
    z[4 * i + 1, col] = f0 + f1
    z[4 * i + 2, col] = f0 - f1
    z[4 * i + 3, col] = -f1


@njit(**_OPTS)
def winograd_dy_block(dy, n0, n1, th, tw, z):
    """z[p, t*O : (t+1)*O] = (A e A^T)[p] for the 2x2 tile e of dy (N, Ho, Wo, O) channels-last of every tile t
    of images n0..n1 (the adjoint of :func:`winograd_output_block`; the row and column past dy's edge read as
    0); z laid out as :func:`winograd_input_block`'s v."""
    _, ho, wo, o = dy.shape
    zero = np.zeros(1, dtype=dy.dtype)[0]
    t = 0
    for n in range(n0, n1):
        for ty in range(th):
            r = 2 * ty
            low = r + 1 < ho
            for tx in range(tw):
                s = 2 * tx
                right = s + 1 < wo
                r1, s1 = min(r + 1, ho - 1), min(s + 1, wo - 1)  # read in bounds, then replaced by 0 outside
                base = t * o
                for ch in range(o):
                    e00 = dy[n, r, s, ch]
                    e01 = dy[n, r, s1, ch] if right else zero
                    e10 = dy[n, r1, s, ch] if low else zero
                    e11 = dy[n, r1, s1, ch] if low and right else zero
                    # A e: rows e0, e0 + e1, e0 - e1, -e1 (e0, e1 the tile's rows); then (A e) A^T along each row
                    _a_row(z, 0, base + ch, e00, e01)
                    _a_row(z, 1, base + ch, e00 + e10, e01 + e11)
                    _a_row(z, 2, base + ch, e00 - e10, e01 - e11)
                    _a_row(z, 3, base + ch, -e10, -e11)
                t += 1
    return z


@njit(**_OPTS)
def winograd_weights_grad(ug, dw):
    """dw (O, C, 3, 3) = G^T ug[:, c, o] G (ug (16, C, O) the gradient of the transformed weights, 4x4 row-major;
    the adjoint of :func:`winograd_weights`), in float64, rounded once."""
    _, c, o = ug.shape
    h = np.empty((4, 3))
    for ch in range(c):
        for k in range(o):
            for i in range(4):  # (ug G) along each row: columns u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3
                u0, u1, u2, u3 = (np.float64(ug[4 * i, ch, k]), np.float64(ug[4 * i + 1, ch, k]),
                                  np.float64(ug[4 * i + 2, ch, k]), np.float64(ug[4 * i + 3, ch, k]))
                h[i, 0] = u0 + (u1 + u2) * 0.5
                h[i, 1] = (u1 - u2) * 0.5
                h[i, 2] = (u1 + u2) * 0.5 + u3
            for j in range(3):  # G^T (ug G): the same down each column
                dw[k, ch, 0, j] = h[0, j] + (h[1, j] + h[2, j]) * 0.5
                dw[k, ch, 1, j] = (h[1, j] - h[2, j]) * 0.5
                dw[k, ch, 2, j] = (h[1, j] + h[2, j]) * 0.5 + h[3, j]
    return dw


@njit(**_OPTS)
def _output_tile(m, base, b, q):
    """q (4, O) = A^T m A + b for the tile whose 16 positions are m[:, base : base + O] (row-major 2x2)."""
    o = q.shape[1]
    for ch in range(o):
        # A^T m: rows 0 + 1 + 2 and 1 - 2 - 3 of the 4x4 tile, column by column
        a0 = m[0, base + ch] + m[4, base + ch] + m[8, base + ch]
        a1 = m[1, base + ch] + m[5, base + ch] + m[9, base + ch]
        a2 = m[2, base + ch] + m[6, base + ch] + m[10, base + ch]
        a3 = m[3, base + ch] + m[7, base + ch] + m[11, base + ch]
        c0 = m[4, base + ch] - m[8, base + ch] - m[12, base + ch]
        c1 = m[5, base + ch] - m[9, base + ch] - m[13, base + ch]
        c2 = m[6, base + ch] - m[10, base + ch] - m[14, base + ch]
        c3 = m[7, base + ch] - m[11, base + ch] - m[15, base + ch]
        # (A^T m) A: columns 0 + 1 + 2 and 1 - 2 - 3, then the bias
        q[0, ch] = (a0 + a1 + a2) + b[ch]
        q[1, ch] = (a1 - a2 - a3) + b[ch]
        q[2, ch] = (c0 + c1 + c2) + b[ch]
        q[3, ch] = (c1 - c2 - c3) + b[ch]


@njit(**_OPTS)
def winograd_output_block(m, n0, n1, th, tw, b, relu, q, y):
    """y[n, 2*ty:2*ty+2, 2*tx:2*tx+2, :] = A^T m A + b (then max(., 0) when ``relu``) of every tile of images
    n0..n1, m (16, >= tiles*O) laid out as :func:`winograd_input_block`'s v; y (N, Ho, Wo, O) channels-last, the
    row and column past its edge dropped. ``q`` (4, O) is scratch."""
    _, ho, wo, o = y.shape
    t = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                _output_tile(m, t * o, b, q)
                for p in range(4):
                    r, s = 2 * ty + p // 2, 2 * tx + p % 2
                    if r >= ho or s >= wo:
                        continue
                    if relu:
                        for ch in range(o):
                            v = q[p, ch]
                            y[n, r, s, ch] = v if not v <= 0 else 0
                    else:
                        for ch in range(o):
                            y[n, r, s, ch] = q[p, ch]
                t += 1
    return y


@njit(**_OPTS)
def winograd_output_pool_block(m, n0, n1, th, tw, b, q, y):
    """y[n, ty, tx, :] = the maximum of max(tile + b, 0) over each tile's four outputs (NaN wins, as in
    :func:`maxpool_nhwc`): relu(conv) pooled 2x2 with stride 2, the conv's output never made. y (N, Ho // 2,
    Wo // 2, O) channels-last; a half tile past the last full one (odd Ho or Wo) is dropped, as the pool does."""
    _, hp, wp, o = y.shape
    zero = np.zeros(1, dtype=y.dtype)[0]
    t = 0
    for n in range(n0, n1):
        for ty in range(th):
            for tx in range(tw):
                if ty < hp and tx < wp:
                    _output_tile(m, t * o, b, q)
                    for ch in range(o):
                        best = q[0, ch] if not q[0, ch] <= 0 else zero
                        for p in range(1, 4):
                            v = q[p, ch] if not q[p, ch] <= 0 else zero
                            if best == best and (v > best or v != v):  # a NaN stays; a NaN or a larger value wins
                                best = v
                        y[n, ty, tx, ch] = best
                t += 1
    return y
