"""Correctness guard for performance work: portacnn vs PyTorch in float64, on every CPU backend.

For seed_cnn, lenet5, kannada_cnn (dropout disabled by evaluating the mirror in the same mode) and a
strided/padded Conv2D(3,4,3,stride=2,padding=1)+MaxPool2D(3,stride=2,padding=1) net, compares forward
logits, every parameter gradient and the input gradient against torch.autograd (max abs error <= tol).
Also compares the result on float32 inputs whose memory layout is channels-last (a permuted view).

    python benchmarks/check_parity.py [--backends numpy,torch,array_api_strict] [--tol 1e-10]
"""

from __future__ import annotations

import argparse
import sys

import _common as C  # noqa: F401  (puts the checkout on sys.path)
import numpy as np


def extra_net(backend, dtype):
    import portacnn as pc
    from portacnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

    layers = [Conv2D(3, 4, 3, stride=2, padding=1), ReLU(), MaxPool2D(3, stride=2, padding=1), Conv2D(4, 5, (3, 2), padding=(1, 0)),
              Flatten(), Dense(5 * 4 * 3, 7)]  # fmt: skip
    return pc.Sequential(layers, backend=backend, dtype=dtype, seed=3)


def check(model, x_np, y_np, tol):
    import torch

    import portacnn as pc

    be = model.backend
    ref = C.torch_mirror(model, dtype=model.dtype).eval()  # eval: dropout off on both sides
    xt = torch.from_numpy(x_np).requires_grad_(True)
    lt = ref(xt)
    loss_t = torch.nn.functional.cross_entropy(lt, torch.from_numpy(y_np))
    loss_t.backward()
    logits = model.forward(be.asarray(x_np), training=False)
    loss, dlogits = pc.losses.softmax_cross_entropy(logits, be.asarray(y_np))
    dx = model.backward(dlogits)
    errs = {"logits": np.abs(be.to_numpy(logits) - lt.detach().numpy()).max(),
            "loss": abs(float(loss) - loss_t.item()),
            "dx": np.abs(be.to_numpy(dx) - xt.grad.numpy()).max()}
    tparams = dict(ref.named_parameters())
    for p in model.parameters():
        errs[p.name] = np.abs(be.to_numpy(p.grad) - tparams[p.name].grad.numpy()).max()
    worst = max(errs, key=errs.get)
    return errs[worst], worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="numpy,torch,array_api_strict")
    ap.add_argument("--tol", type=float, default=1e-10)
    args = ap.parse_args(argv)
    import portacnn as pc

    rng = np.random.default_rng(1)
    failed = 0
    for backend in args.backends.split(","):
        if pc.backend.unusable_reason(backend):
            print(f"skip {backend}: {pc.backend.unusable_reason(backend)}")
            continue
        cases = [(getattr(pc.models, n)(backend=backend, dtype="float64", seed=5), (6, 1, 28, 28), 10) for n in C.NETS]
        cases.append((extra_net(backend, "float64"), (5, 3, 15, 13), 7))
        for model, shape, k in cases:
            x = rng.standard_normal(shape)
            y = rng.integers(0, k, size=shape[0])
            err, where = check(model, x, y, args.tol)
            # the same input as a channels-last view (layout must not matter)
            xcl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            err2, where2 = check(model, xcl, y, args.tol)
            ok = err <= args.tol and err2 <= args.tol
            failed += not ok
            name = [l.__class__.__name__ for l in model.layers]
            print(f"{'ok  ' if ok else 'FAIL'} {backend:17s} {len(name):2d} layers {shape}: max err {err:.2e} ({where}); channels-last {err2:.2e} ({where2})")
    # float32 sanity: numpy vs torch reference
    print("FAILED" if failed else "all ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
