"""Print the largest observed differences between portacnn and its oracles, per backend and dtype.

Not a test (pytest does not collect it): run ``python tools/oracle_diffs.py`` from the repository root.
Each figure is max |portacnn - oracle| / max |oracle| over the compared tensor(s) -- the quantity the
tests bound with rtol (float32 1e-5, float64 1e-10; finite differences 1e-6; trajectories 1e-4 / 1e-9).

The issue-15 rows (:func:`issue15_diffs`) compare with PyTorch as the tests do: layers and the Residual network
against their ``oracles.torch_mirror`` twin in the same dtype; the smoothed loss, the optimizers (parameters after
5 steps on the same dtype-rounded gradients) and clip_grad_norm against torch in float64 on the same (rounded)
inputs. The learning-rate rows ("|diff|") are max |portacnn - torch| over whole schedules, in absolute terms
(the tests ask for bitwise equality: 0 expected).
"""

import os
import sys

import numpy as np

_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
sys.path.insert(0, _TESTS)  # oracles, conftest
sys.path[1:1] = [os.path.join(_TESTS, "layers"), os.path.join(_TESTS, "optim")]  # test_residual, optimhelp, ...

import oracles  # noqa: E402
import portacnn as pc  # noqa: E402
from conftest import max_rel_diff, single, to_numpy  # noqa: E402
from portacnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, GlobalAvgPool2D, LeakyReLU,  # noqa: E402
                             MaxPool2D, Sigmoid, Tanh)

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


# ---------------------------------------------------------------------------------------------------------------
# issue 15: dilated / "same" convs, BatchNorm, AvgPool2D, GlobalAvgPool2D, LeakyReLU / Sigmoid / Tanh, Residual,
# label smoothing, AdamW / RMSprop / SGD-nesterov, clip_grad_norm, learning-rate schedules -- against PyTorch

# N, C, H, W, out_channels, kernel_size, dilation (stride 1, padding "same"; even windows pad one more after)
SAME_DILATED = {
    "narrow": [(2, 2, 8, 7, 3, 3, 2), (1, 2, 7, 8, 2, (2, 4), (3, 2)), (2, 3, 9, 9, 4, (3, 2), (1, 3))],
    "wide": [(2, 1, 7, 8, 32, (3, 2), 2), (1, 2, 9, 8, 33, 3, (2, 3)), (1, 2, 10, 9, 32, 4, 2)],
}
BN_CASES = {  # as tests/layers/test_batchnorm.py: (input shape, kwargs)
    "BatchNorm2D": (BatchNorm2D, [((4, 3, 5, 6), {}), ((2, 2, 3, 3), dict(eps=1e-3, momentum=0.3)),
                                  ((3, 4, 2, 5), dict(affine=False))]),
    "BatchNorm1D": (BatchNorm1D, [((6, 5), {}), ((4, 3), dict(momentum=1.0, affine=False))]),
}
ELEMENTWISE = {  # row name: (layer factories, input shapes)
    "AvgPool2D (padded)": ([lambda: AvgPool2D(3, stride=2, padding=1), lambda: AvgPool2D((2, 3), stride=(2, 1), padding=1),
                            lambda: AvgPool2D(3, stride=3, padding=1)], [(2, 2, 7, 7), (1, 2, 7, 8), (2, 2, 6, 6)]),
    "GlobalAvgPool2D": ([GlobalAvgPool2D], [(2, 3, 5, 6), (3, 2, 1, 4)]),
    "LeakyReLU": ([LeakyReLU, lambda: LeakyReLU(0.2), lambda: LeakyReLU(-0.5)], [(3, 2, 4, 5), (4, 7)]),
    "Sigmoid": ([Sigmoid], [(3, 2, 4, 5), (4, 7)]),
    "Tanh": ([Tanh], [(3, 2, 4, 5), (4, 7)]),
}
OPTIMIZERS = {  # row name: (class name, hyper-parameters), as tests/optim
    "AdamW": ("AdamW", dict()),
    "AdamW lr/betas/eps/decay": ("AdamW", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "RMSprop momentum": ("RMSprop", dict(lr=1e-2, momentum=0.9)),
    "RMSprop centered": ("RMSprop", dict(lr=1e-2, centered=True)),
    "RMSprop centered+momentum+decay": ("RMSprop", dict(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.05,
                                                        momentum=0.8, centered=True)),
    "SGD nesterov": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    "SGD nesterov+decay": ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.05, nesterov=True)),
}


def _worst(out, key, value):
    out[key] = max(out.get(key, 0.0), value)


def _torch_run(tmodel, x, g, dtype):
    """Output, input gradient and {parameter name: gradient} of ``tmodel`` for dL/dy = g."""
    import torch

    xt = torch.tensor(x, requires_grad=True)
    for q in tmodel.parameters():
        q.grad = None
    y = tmodel(xt)
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), xt.grad.numpy(), {k: q.grad.numpy() for k, q in tmodel.named_parameters()}


def _pc_run(model, be, x, g, dtype, training=True):
    y = model.forward(be.asarray(x, dtype=dtype), training=training)
    dx = model.backward(be.asarray(g, dtype=dtype))
    return to_numpy(be, y), to_numpy(be, dx), {q.name: to_numpy(be, q.grad) for q in model.parameters()}


def conv_same_dilated_diffs(be, dtype, out):
    import warnings

    rng = np.random.default_rng(2)
    for width, cases in SAME_DILATED.items():
        for n, c, h, w, o, k, d in cases:
            kh, kw = k if isinstance(k, tuple) else (k, k)
            x = rng.standard_normal((n, c, h, w)).astype(dtype)
            wt = (rng.standard_normal((o, c, kh, kw)) * 0.5).astype(dtype)
            b = rng.standard_normal(o).astype(dtype)
            model = single(Conv2D(c, o, k, padding="same", dilation=d), be, dtype, {"weight": wt, "bias": b})
            g = rng.standard_normal((n, o, h, w)).astype(dtype)
            y, dx, grads = _pc_run(model, be, x, g, dtype)
            with warnings.catch_warnings():  # torch pads a copy for even windows and says so
                warnings.simplefilter("ignore", UserWarning)
                ty, tdx, tgrads = _torch_run(oracles.torch_mirror(model, dtype), x, g, dtype)
            label = f"conv same+dilation {width} (O{'>=' if width == 'wide' else '<'}32)"
            _worst(out, f"{label} fwd", max_rel_diff(y, ty))
            _worst(out, f"{label} dx", max_rel_diff(dx, tdx))
            _worst(out, f"{label} dweight", max_rel_diff(grads["0.weight"], tgrads["0.weight"]))
            _worst(out, f"{label} dbias", max_rel_diff(grads["0.bias"], tgrads["0.bias"]))


def batchnorm_diffs(be, dtype, out):
    rng = np.random.default_rng(3)
    for name, (cls, cases) in BN_CASES.items():
        for shape, kw in cases:
            c = shape[1]
            # training: 3 steps, each compared; then the running statistics
            model = single(cls(c, **kw), be, dtype)
            state = model.state_dict()
            if model.layers[0].affine:
                state.update({"0.weight": rng.uniform(0.5, 1.5, c).astype(dtype),
                              "0.bias": rng.standard_normal(c).astype(dtype)})
                model.load_state_dict(state)
            tmodel = oracles.torch_mirror(model, dtype)  # training mode
            for step in range(3):
                x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
                g = rng.standard_normal(shape).astype(dtype)
                y, dx, grads = _pc_run(model, be, x, g, dtype)
                ty, tdx, tgrads = _torch_run(tmodel, x, g, dtype)
                _worst(out, f"{name} train fwd", max_rel_diff(y, ty))
                _worst(out, f"{name} train dx", max_rel_diff(dx, tdx))
                if grads:
                    _worst(out, f"{name} train dweight", max_rel_diff(grads["0.weight"], tgrads["0.weight"]))
                    _worst(out, f"{name} train dbias", max_rel_diff(grads["0.bias"], tgrads["0.bias"]))
            tstate = tmodel.state_dict()
            got = model.state_dict()
            for buf in ("running_mean", "running_var"):
                _worst(out, f"{name} {buf} after x3", max_rel_diff(got[f"0.{buf}"], tstate[f"0.{buf}"].numpy()))
            assert int(got["0.num_batches_tracked"]) == int(tstate["0.num_batches_tracked"]) == 3
            # inference, with the running statistics of some earlier training
            state = model.state_dict()
            state.update({"0.running_mean": rng.standard_normal(c).astype(dtype),
                          "0.running_var": rng.uniform(0.2, 3.0, c).astype(dtype),
                          "0.num_batches_tracked": np.int64(7)})
            model.load_state_dict(state)
            tmodel = oracles.torch_mirror(model, dtype).eval()
            x, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
            y, dx, grads = _pc_run(model, be, x, g, dtype, training=False)
            ty, tdx, tgrads = _torch_run(tmodel, x, g, dtype)
            _worst(out, f"{name} eval fwd", max_rel_diff(y, ty))
            _worst(out, f"{name} eval dx", max_rel_diff(dx, tdx))
            if grads:
                _worst(out, f"{name} eval dweight/dbias", max(max_rel_diff(grads[k], tgrads[k]) for k in grads))
            after = model.state_dict()
            assert all(np.array_equal(after[k], state[k]) for k in state)  # inference leaves the buffers alone


def elementwise_diffs(be, dtype, out):
    rng = np.random.default_rng(4)
    for name, (makers, shapes) in ELEMENTWISE.items():
        for make in makers:
            for shape in shapes:
                x = (3 * rng.standard_normal(shape)).astype(dtype)
                x.flat[:3] = 0.0  # exact zeros: LeakyReLU's kink
                model = single(make(), be, dtype)
                y = model.forward(be.asarray(x, dtype=dtype), training=True)
                g = rng.standard_normal(tuple(y.shape)).astype(dtype)
                y, dx = to_numpy(be, y), to_numpy(be, model.backward(be.asarray(g, dtype=dtype)))
                ty, tdx, _ = _torch_run(oracles.torch_mirror(model, dtype), x, g, dtype)
                _worst(out, f"{name} fwd", max_rel_diff(y, ty))
                _worst(out, f"{name} dx", max_rel_diff(dx, tdx))


def residual_diffs(be, dtype, out):
    """tests/layers/test_residual.py's small ResNet (basic blocks with BatchNorm, a strided block with a 1x1
    conv + BatchNorm projection shortcut, a nested identity block): 3 SGD-momentum training steps against its
    torch twin, then inference."""
    import test_residual as R
    import torch

    rng = np.random.default_rng(5)
    model = R.resnet(be, dtype)
    R._randomise(model, rng)
    net = oracles.torch_mirror(model, dtype)
    opt = pc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        x = rng.standard_normal((4, 2, 8, 8)).astype(dtype)
        g = rng.standard_normal((4, 3)).astype(dtype)
        y, dx, grads = _pc_run(model, be, x, g, dtype)
        ty, tdx, tgrads = _torch_run(net, x, g, dtype)
        _worst(out, "Residual net train fwd (x3)", max_rel_diff(y, ty))
        _worst(out, "Residual net train dx", max_rel_diff(dx, tdx))
        _worst(out, "Residual net every param grad", max(max_rel_diff(grads[k], tgrads[k]) for k in grads))
        opt.step()
        opt.zero_grad()
        topt.step()
    tstate = {k: v.numpy() for k, v in net.state_dict().items()}
    state = model.state_dict()
    params = {q.name for q in model.parameters()}
    _worst(out, "Residual net params after x3 SGD", max(max_rel_diff(state[k], tstate[k]) for k in params))
    _worst(out, "Residual net BN buffers after x3 SGD",
           max(max_rel_diff(state[k], tstate[k]) for k in state if k not in params))
    net.eval()
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    _worst(out, "Residual net eval fwd after x3", max_rel_diff(to_numpy(be, model.forward(be.asarray(x, dtype=dtype))),
                                                                expected))


def label_smoothing_diffs(be, dtype, out):
    import torch

    rng = np.random.default_rng(6)
    for n, c, scale in ((8, 10, 3.0), (7, 5, 4.0), (1, 2, 1.0)):
        z = (rng.standard_normal((n, c)) * scale).astype(dtype)
        y = rng.integers(0, c, size=n)
        loss, d = pc.losses.softmax_cross_entropy(be.asarray(z, dtype=dtype), be.asarray(y), label_smoothing=0.1)
        zt = torch.tensor(z.astype(np.float64), requires_grad=True)
        tl = torch.nn.functional.cross_entropy(zt, torch.from_numpy(y), label_smoothing=0.1)
        tl.backward()
        _worst(out, "loss label_smoothing=0.1", max_rel_diff(to_numpy(be, loss), tl.item()))
        _worst(out, "dlogits label_smoothing=0.1", max_rel_diff(to_numpy(be, d), zt.grad.numpy()))


def optimizer_diffs(be, dtype, out):
    import test_adamw_rmsprop as A
    import torch
    from optimhelp import small_model

    for row, (name, hp) in OPTIMIZERS.items():
        _, got, want = A.run_both(be, dtype, name, hp)  # 5 steps, dtype-rounded gradients, torch in float64
        _worst(out, f"{row} x{A.STEPS} params", max(max_rel_diff(a, b) for a, b in zip(got[-1], want[-1])))
    rng = np.random.default_rng(0)
    for max_norm in (0.5, 3.0, 1e3):
        params = small_model(be, dtype).parameters()
        grads = [(0.3 * rng.standard_normal(tuple(p.data.shape))).astype(dtype) for p in params]
        for p, g in zip(params, grads):
            p.grad = be.asarray(g, dtype=dtype)
        tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g.astype(np.float64))
        want = float(torch.nn.utils.clip_grad_norm_(tparams, max_norm))
        total = pc.optim.clip_grad_norm(params, max_norm)
        _worst(out, "clip_grad_norm total norm", max_rel_diff(to_numpy(be, total), want))
        _worst(out, "clip_grad_norm clipped grads",
               max(max_rel_diff(to_numpy(be, p.grad), tp.grad.numpy()) for p, tp in zip(params, tparams)))


def lr_schedule_diffs(be, dtype, out):
    """Whole schedules against torch.optim.lr_scheduler (tests/optim/test_lr_scheduler.py's cases), two parameter
    groups, the portacnn optimizer on ``be`` in ``dtype``: max |lr difference| (and momentum / beta1 for
    OneCycleLR) over every step and group."""
    import warnings

    import test_lr_scheduler as L
    import torch

    from portacnn.optim import lr_scheduler as ls

    def pc_opt(opt_name, lrs=(0.1, 0.01)):
        params = pc.Sequential([pc.layers.Dense(3, 2)], backend=be, dtype=dtype, seed=0, workers=1).parameters()
        return getattr(pc.optim, opt_name)([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])

    def t_opt(opt_name, lrs=(0.1, 0.01)):
        groups = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
        return getattr(torch.optim, opt_name)(groups, lr=lrs[0])

    def trace(opt, sched, steps):
        seq = [(sched.get_last_lr(), L.momenta(opt))]
        for _ in range(steps):
            opt.step()
            sched.step()
            seq.append((sched.get_last_lr(), L.momenta(opt)))
        return seq

    def diff(got, want, which):
        assert len(got) == len(want)
        return max(float(np.max(np.abs(np.subtract(g[which], w[which])))) for g, w in zip(got, want))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for case in L.CASES:
            name, kw = case.values
            steps = kw.get("total_steps", L.STEPS)
            for opt_name in L.MOMENTUM_OPTIMIZERS:
                o, to = pc_opt(opt_name), t_opt(opt_name)
                got = trace(o, getattr(ls, name)(o, **kw), steps)
                want = trace(to, getattr(torch.optim.lr_scheduler, name)(to, **kw), steps)
                _worst(out, f"{name} lr sequence |diff|", diff(got, want, 0))
        for case in L.ONE_CYCLE:
            (kw,) = case.values
            for opt_name in L.MOMENTUM_OPTIMIZERS:
                o, to = pc_opt(opt_name), t_opt(opt_name)
                got = trace(o, ls.OneCycleLR(o, **kw), kw["total_steps"])
                want = trace(to, torch.optim.lr_scheduler.OneCycleLR(to, **kw), kw["total_steps"])
                _worst(out, "OneCycleLR lr sequence |diff|", diff(got, want, 0))
                _worst(out, "OneCycleLR momentum/beta1 sequence |diff|", diff(got, want, 1))
        for case in L.SEQUENTIAL:
            make, milestones = case.values
            for opt_name in ("SGD", "Adam"):
                o, to = pc_opt(opt_name), t_opt(opt_name)
                got = trace(o, ls.SequentialLR(o, make(ls, o), milestones), L.STEPS)
                want = trace(to, torch.optim.lr_scheduler.SequentialLR(to, make(torch.optim.lr_scheduler, to),
                                                                       milestones), L.STEPS)
                _worst(out, "SequentialLR lr sequence |diff|", diff(got, want, 0))


def issue15_diffs(be, dtype):
    out = {}
    conv_same_dilated_diffs(be, dtype, out)
    batchnorm_diffs(be, dtype, out)
    elementwise_diffs(be, dtype, out)
    residual_diffs(be, dtype, out)
    label_smoothing_diffs(be, dtype, out)
    optimizer_diffs(be, dtype, out)
    lr_schedule_diffs(be, dtype, out)
    return out


def main():
    if "torch" in pc.available_backends():
        import torch

        torch.set_num_threads(1)  # tiny tensors: as the test suite (tests/conftest.py), and kind to a shared machine
    rows = {}
    for name in BACKENDS:
        be = backend_of(name)
        for dtype in ("float32", "float64"):
            d = layer_diffs(be, dtype)
            if "torch" in pc.available_backends():
                d.update(torch_diffs(be, dtype))
            d.update(parity_diffs(be, dtype))
            if "torch" in pc.available_backends():
                d.update(issue15_diffs(be, dtype))
            for k, v in d.items():
                rows.setdefault(k, {})[(name, dtype)] = v
    cols = [(b, t) for b in BACKENDS for t in ("float32", "float64")]
    print(f"{'quantity':48s}" + "".join(f"{b[:6] + '/' + t[-2:]:>12s}" for b, t in cols))
    for k, vals in rows.items():
        print(f"{k:48s}" + "".join(f"{vals[c]:12.1e}" for c in cols))


if __name__ == "__main__":
    main()
