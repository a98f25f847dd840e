"""Independent, deliberately naive float64 reference implementations used as test oracles.

Nothing here imports portacnn. Loops over output positions keep the math obvious; the sizes used
in the tests are small.
"""

from __future__ import annotations

import numpy as np


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def out_size(size: int, k: int, s: int, p: int) -> int:
    """floor((size + 2p - k) / s) + 1, PyTorch's (ceil_mode=False) output length."""
    return (size + 2 * p - k) // s + 1


def conv_padding(padding, kernel_size, dilation=1):
    """((top, bottom), (left, right)) for a conv's ``padding``, as torch.nn.Conv2d reads it: an int or (ph, pw)
    pads both sides; "valid" nothing; "same" dilation*(k-1) in all per axis, the larger half after."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(_pair(dilation), _pair(kernel_size))]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = _pair(padding)
    return (ph, ph), (pw, pw)


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1):
    """Cross-correlation y[n,o,i,j] = b[o] + sum_{c,u,v} xpad[n,c,i*sh+u*dh,j*sw+v*dw] * w[o,c,u,v], ``xpad``
    padded as :func:`conv_padding` says (so "same" and "valid" as well as ints and pairs)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    assert c == c2
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (top, bottom), (left, right) = conv_padding(padding, (kh, kw), (dh, dw))
    xp = np.zeros((n, c, top + h + bottom, left + wd + right))
    xp[:, :, top : top + h, left : left + wd] = x
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # the rows and columns a dilated window spans
    oh, ow = (xp.shape[2] - eh) // sh + 1, (xp.shape[3] - ew) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for oi in range(o):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[ni, :, i * sh : i * sh + eh : dh, j * sw : j * sw + ew : dw]
                    y[ni, oi, i, j] = np.sum(patch * w[oi])
            if b is not None:
                y[ni, oi] += float(b[oi])
    return y


def _pool_windows(x, kernel_size, stride=None, padding=0):
    x = np.asarray(x, dtype=np.float64)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), -np.inf)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    return xp, (kh, kw), (sh, sw), (ph, pw), (oh, ow)


def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """y[n,c,i,j] = max over the (padded with -inf) window starting at (i*sh, j*sw)."""
    xp, (kh, kw), (sh, sw), _, (oh, ow) = _pool_windows(x, kernel_size, stride, padding)
    n, c = xp.shape[:2]
    y = np.zeros((n, c, oh, ow))
    for ni in range(n):
        for ci in range(c):
            for i in range(oh):
                for j in range(ow):
                    y[ni, ci, i, j] = np.max(xp[ni, ci, i * sh : i * sh + kh, j * sw : j * sw + kw])
    return y


def maxpool2d_backward(x, grad_out, kernel_size, stride=None, padding=0, nan="none"):
    """Each window's gradient goes to its FIRST maximum among the REAL (unpadded) inputs, in row-major window
    order, as PyTorch's scan ``if val > maxval or isnan(val): take it`` does; overlapping windows accumulate.

    ``nan`` says where the gradient of a window holding NaN goes: "last" (PyTorch's CPU kernel: the last NaN)
    or "none" (portacnn: nowhere, its documented difference)."""
    xp, (kh, kw), (sh, sw), (ph, pw), (oh, ow) = _pool_windows(x, kernel_size, stride, padding)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    n, c = xp.shape[:2]
    h, w = np.asarray(x).shape[2:]
    gp = np.zeros_like(xp)
    for ni in range(n):
        for ci in range(c):
            for i in range(oh):
                for j in range(ow):
                    best, where = None, None
                    for u in range(kh):
                        for v in range(kw):
                            r, q = i * sh + u, j * sw + v
                            if not (ph <= r < ph + h and pw <= q < pw + w):
                                continue  # padding never takes the gradient
                            val = xp[ni, ci, r, q]
                            if best is None or val > best or np.isnan(val):
                                best, where = val, (r, q)
                    if np.isnan(best) and nan == "none":
                        continue
                    gp[ni, ci, where[0], where[1]] += grad_out[ni, ci, i, j]
    return gp[:, :, ph : ph + h, pw : pw + w]


def softmax_cross_entropy(logits, labels):
    """Mean over the batch of -log softmax(logits)[label], and its gradient, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    n = z.shape[0]
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.sum(np.exp(z - m), axis=1))
    loss = float(np.mean(lse - z[np.arange(n), y]))
    p = np.exp(z - lse[:, None])
    p[np.arange(n), y] -= 1.0
    return loss, p / n


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences (float64) of a scalar function ``f`` at array ``x``:
    g[i] = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)."""
    x = np.array(x, dtype=np.float64, copy=True)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f(x))
        flat[i] = old - eps
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2.0 * eps)
    return g


# Reference optimizer steps (torch.optim semantics, dampening=0), float64, one parameter array.


def sgd_step(p, g, state, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * p if weight_decay else g
    if momentum:
        buf = state.get("buf")
        buf = g.copy() if buf is None else momentum * buf + g
        state["buf"] = buf
        g = g + momentum * buf if nesterov else buf
    return p - lr * g


def adam_step(p, g, state, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    g = g + weight_decay * p if weight_decay else g
    t = state.get("t", 0) + 1
    m = b1 * state.get("m", np.zeros_like(p)) + (1 - b1) * g
    v = b2 * state.get("v", np.zeros_like(p)) + (1 - b2) * g * g
    state.update(t=t, m=m, v=v)
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def torch_mirror(model, dtype="float64"):
    """The same network as a ``torch.nn.Sequential`` in ``dtype``, built from ``model.architecture()`` and
    loaded with its state dict (keys match by construction; BatchNorm buffers included). Dropout is mirrored as
    ``nn.Dropout``; the mirror is in training mode, as every new torch module (call ``.eval()`` for inference)."""
    import torch
    from torch import nn

    net = _torch_sequential(model.architecture()).to(dtype=getattr(torch, dtype))
    net.load_state_dict({k: torch.from_numpy(v if v.dtype.kind in "iu" else v.astype(dtype))  # counts stay int64
                         for k, v in model.state_dict().items()})
    return net


def _torch_sequential(specs):
    """``torch.nn.Sequential`` of the layers ``specs`` describe (portacnn's architecture entries)."""
    from torch import nn

    class TorchResidual(nn.Module):  # state keys "body.<j>..." and "shortcut.<j>...", as portacnn's Residual
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    mods = []
    for spec in specs:
        kind = spec["type"]
        if kind == "Residual":
            mods.append(TorchResidual(_torch_sequential(spec["layers"]),
                                      None if spec["shortcut"] is None else _torch_sequential(spec["shortcut"])))
            continue
        if kind == "Conv2D":
            pad = spec["padding"]  # "same" / "valid" pass through as torch's own strings
            mods.append(nn.Conv2d(spec["in_channels"], spec["out_channels"], tuple(spec["kernel_size"]),
                                  stride=tuple(spec["stride"]), padding=pad if isinstance(pad, str) else tuple(pad),
                                  dilation=tuple(spec.get("dilation", (1, 1))), bias=spec["bias"]))
        elif kind == "Dense":
            mods.append(nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"]))
        elif kind == "MaxPool2D":
            mods.append(nn.MaxPool2d(tuple(spec["kernel_size"]), stride=tuple(spec["stride"]),
                                     padding=tuple(spec["padding"])))
        elif kind in ("ReLU", "Flatten", "Sigmoid", "Tanh"):
            mods.append(getattr(nn, kind)())
        elif kind == "LeakyReLU":
            mods.append(nn.LeakyReLU(spec["negative_slope"]))
        elif kind == "AvgPool2D":
            mods.append(nn.AvgPool2d(tuple(spec["kernel_size"]), stride=tuple(spec["stride"]),
                                     padding=tuple(spec["padding"])))  # count_include_pad=True: the default
        elif kind == "GlobalAvgPool2D":  # one module, so the state-dict indices stay aligned
            mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif kind == "Dropout":
            mods.append(nn.Dropout(spec["p"]))
        elif kind in ("BatchNorm2D", "BatchNorm1D"):  # state keys and buffers as torch's: loaded below
            mods.append(getattr(nn, kind[:-1] + "d")(spec["num_features"], eps=spec["eps"], momentum=spec["momentum"],
                                                     affine=spec["affine"]))
        else:
            raise ValueError(f"no torch mirror for layer type {kind}")
    return nn.Sequential(*mods)
