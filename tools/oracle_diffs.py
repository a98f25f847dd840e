"""Print the largest observed differences between portacnn and its oracles, per backend and dtype.

Not a test (pytest does not collect it): run ``python tools/oracle_diffs.py`` from the repository root.
Each figure is max |portacnn - oracle| / max |oracle| over the compared tensor(s) -- the quantity the
tests bound with rtol (float32 1e-5, float64 1e-10; finite differences 1e-6; trajectories 1e-4 / 1e-9).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # oracles, conftest

import oracles  # noqa: E402
import portacnn as pc  # noqa: E402
from conftest import max_rel_diff, single, to_numpy  # noqa: E402
from portacnn.layers import Conv2D, MaxPool2D  # noqa: E402

BACKENDS = ["numpy", "array_api_strict"] + [b for b in ("torch", "cupy") if b in pc.available_backends()]


def backend_of(name):
    if name == "array_api_strict":
        import array_api_strict

        return pc.get_backend(name, device=array_api_strict.Device("device1"))
    return pc.get_backend(name)


CONV = [(2, 3, 7, 7, 4, 3, 1, 0), (2, 3, 7, 7, 4, 3, 2, 1), (1, 2, 8, 7, 3, (3, 2), (2, 1), (1, 0)),
        (2, 1, 8, 8, 2, 5, 1, 2), (1, 2, 7, 6, 33, 3, 2, 1)]  # fmt: skip
POOL = [(2, 2, 7, 7, 3, 2, 1), (2, 2, 7, 7, 3, 2, 0), (2, 2, 6, 6, 2, None, 0)]


def layer_diffs(be, dtype):
    rng = np.random.default_rng(0)
    worst = {"conv fwd": 0.0, "conv dx/dw/db (closed form via FD-free adjoint)": 0.0, "pool fwd": 0.0, "pool bwd": 0.0}
    for n, c, h, w, o, k, s, p in CONV:
        kh, kw = k if isinstance(k, tuple) else (k, k)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = (rng.standard_normal((o, c, kh, kw)) * 0.5).astype(dtype)
        b = rng.standard_normal(o).astype(dtype)
        m = single(Conv2D(c, o, k, stride=s, padding=p), be, dtype, {"weight": wt, "bias": b})
        y = m.forward(be.asarray(x, dtype=dtype), training=True)
        worst["conv fwd"] = max(worst["conv fwd"], max_rel_diff(to_numpy(be, y), oracles.conv2d_forward(x, wt, b, s, p)))
        # adjoint check: <dy, conv(x)> identities give exact float64 references for dx, dw, db
        g = rng.standard_normal(tuple(y.shape)).astype(dtype)
        dx = to_numpy(be, m.backward(be.asarray(g, dtype=dtype)))
        grads = {q.name: to_numpy(be, q.grad) for q in m.parameters()}
        ref_dx = oracles.numeric_grad(lambda v: np.sum(oracles.conv2d_forward(v, wt, b, s, p) * g), x, eps=0.5)
        ref_dw = oracles.numeric_grad(lambda v: np.sum(oracles.conv2d_forward(x, v, b, s, p) * g), wt, eps=0.5)
        ref_db = g.astype(np.float64).sum(axis=(0, 2, 3))
        # (central differences of a function linear in the perturbed argument are exact for any eps)
        for got, ref in ((dx, ref_dx), (grads["0.weight"], ref_dw), (grads["0.bias"], ref_db)):
            worst["conv dx/dw/db (closed form via FD-free adjoint)"] = max(
                worst["conv dx/dw/db (closed form via FD-free adjoint)"], max_rel_diff(got, ref))
    for n, c, h, w, k, s, p in POOL:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        m = single(MaxPool2D(k, stride=s, padding=p), be, dtype)
        y = m.forward(be.asarray(x, dtype=dtype), training=True)
        worst["pool fwd"] = max(worst["pool fwd"], max_rel_diff(to_numpy(be, y), oracles.maxpool2d_forward(x, k, s, p)))
        g = rng.standard_normal(tuple(y.shape)).astype(dtype)
        dx = to_numpy(be, m.backward(be.asarray(g, dtype=dtype)))
        worst["pool bwd"] = max(worst["pool bwd"], max_rel_diff(dx, oracles.maxpool2d_backward(x, g, k, s, p)))
    z = (rng.standard_normal((8, 10)) * 3).astype(dtype)
    y = rng.integers(0, 10, size=8)
    loss, d = pc.losses.softmax_cross_entropy(be.asarray(z, dtype=dtype), be.asarray(y))
    rl, rd = oracles.softmax_cross_entropy(z, y)
    worst["loss"] = max_rel_diff(to_numpy(be, loss), rl)
    worst["dlogits"] = max_rel_diff(to_numpy(be, d), rd)
    return worst


def torch_diffs(be, dtype):
    import test_torch_oracle as T

    out = {}
    for net in T.NET_IDS + ["kannada_cnn"]:
        rng = np.random.default_rng(0)
        if net == "kannada_cnn":
            model = pc.models.kannada_cnn(backend=be, dtype=dtype, seed=0)
            tmodel = oracles.torch_mirror(model, dtype).eval()
            x, yl = T.batch(rng, (1, 28, 28), n=2, dtype=dtype)
            training = False
        else:
            model, tmodel, chw = T.make_pair(net, be, dtype)
            x, yl = T.batch(rng, chw, dtype=dtype)
            training = True
        logits, loss, _, dx = T.pc_step_grads(model, be, x, yl, training=training)
        tl, tloss, xt = T.torch_step_grads(tmodel, x, yl, dtype)
        tp = dict(tmodel.named_parameters())
        out[f"{net} logits"] = max_rel_diff(to_numpy(be, logits), tl.detach().numpy())
        out[f"{net} dx"] = max_rel_diff(to_numpy(be, dx), xt.grad.numpy())
        out[f"{net} param grads"] = max(max_rel_diff(to_numpy(be, q.grad), tp[q.name].grad.numpy()) for q in model.parameters())
        if net == "kannada_cnn":
            continue
        for opt_name, hp in (("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=1e-3))):
            rng = np.random.default_rng(1)
            model, tmodel, chw = T.make_pair(net, be, dtype)
            opt = getattr(pc.optim, opt_name)(model.parameters(), **hp)
            topt = getattr(T.torch.optim, opt_name)(tmodel.parameters(), **hp)
            worst = 0.0
            for _ in range(T.STEPS):
                x, yl = T.batch(rng, chw, dtype=dtype)
                opt.zero_grad()
                topt.zero_grad()
                T.pc_step_grads(model, be, x, yl)
                T.torch_step_grads(tmodel, x, yl, dtype)
                opt.step()
                topt.step()
                tp = dict(tmodel.named_parameters())
                worst = max(worst, max(max_rel_diff(to_numpy(be, q.data), tp[q.name].detach().numpy())
                                       for q in model.parameters()))  # fmt: skip
            out[f"{net} {opt_name} x{T.STEPS} params"] = worst
    return out


def parity_diffs(be, dtype):
    import test_parity as P

    ref_losses, ref_state = P.train("numpy", dtype)
    losses, state = P.train(be, dtype)
    return {
        "parity losses": max_rel_diff(losses, ref_losses),
        "parity weights": max(max_rel_diff(state[k], ref_state[k]) for k in ref_state),
    }


def main():
    rows = {}
    for name in BACKENDS:
        be = backend_of(name)
        for dtype in ("float32", "float64"):
            d = layer_diffs(be, dtype)
            if "torch" in pc.available_backends():
                d.update(torch_diffs(be, dtype))
            d.update(parity_diffs(be, dtype))
            for k, v in d.items():
                rows.setdefault(k, {})[(name, dtype)] = v
    cols = [(b, t) for b in BACKENDS for t in ("float32", "float64")]
    print(f"{'quantity':48s}" + "".join(f"{b[:6] + '/' + t[-2:]:>12s}" for b, t in cols))
    for k, vals in rows.items():
        print(f"{k:48s}" + "".join(f"{vals[c]:12.1e}" for c in cols))


if __name__ == "__main__":
    main()
