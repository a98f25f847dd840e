"""The historical baseline: the original tutorial's approach, per-pixel Python loops.

The seed network (conv 2@5x5 -> ReLU -> maxpool 2 -> dense 288->60 -> ReLU -> dense 60->10) written from
scratch in the spirit of the tutorial: every convolution, pooling and dense forward and backward step is
an explicit Python loop over pixels/units (NumPy only for storage and tiny dot products inside the loop),
trained one image at a time with SGD. Reports images/s over a few hundred images, next to portacnn's
vectorised seed_cnn on the same images (batch 128, Adam) for scale.

    python benchmarks/tutorial_baseline.py [--images 300] [--quick] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import sys

import _common as C
import numpy as np


class LoopNet:
    def __init__(self, rng):
        self.k = rng.uniform(-0.2, 0.2, size=(2, 5, 5))
        self.kb = np.zeros(2)
        self.w1 = rng.uniform(-1 / math.sqrt(288), 1 / math.sqrt(288), size=(60, 288))
        self.b1 = np.zeros(60)
        self.w2 = rng.uniform(-1 / math.sqrt(60), 1 / math.sqrt(60), size=(10, 60))
        self.b2 = np.zeros(10)

    def step(self, img, label, lr=0.01):
        # conv 5x5, 2 filters, valid: 24x24, then ReLU
        conv = np.zeros((2, 24, 24))
        for f in range(2):
            for r in range(24):
                for c in range(24):
                    s = self.kb[f]
                    for i in range(5):
                        for j in range(5):
                            s += img[r + i, c + j] * self.k[f, i, j]
                    conv[f, r, c] = s if s > 0 else 0.0
        # max-pool 2x2 -> 12x12, remember argmax
        pool = np.zeros((2, 12, 12))
        arg = np.zeros((2, 12, 12, 2), dtype=int)
        for f in range(2):
            for r in range(12):
                for c in range(12):
                    best, bi, bj = -1e30, 0, 0
                    for i in range(2):
                        for j in range(2):
                            v = conv[f, 2 * r + i, 2 * c + j]
                            if v > best:
                                best, bi, bj = v, i, j
                    pool[f, r, c] = best
                    arg[f, r, c] = (bi, bj)
        flat = pool.reshape(-1)
        # dense 288 -> 60, ReLU, dense 60 -> 10
        h = np.zeros(60)
        for u in range(60):
            s = self.b1[u]
            for v in range(288):
                s += self.w1[u, v] * flat[v]
            h[u] = s if s > 0 else 0.0
        z = np.zeros(10)
        for u in range(10):
            s = self.b2[u]
            for v in range(60):
                s += self.w2[u, v] * h[v]
            z[u] = s
        m = max(z)
        e = [math.exp(zz - m) for zz in z]
        tot = sum(e)
        loss = -math.log(e[label] / tot)
        dz = [ee / tot for ee in e]
        dz[label] -= 1.0
        # backward, dense 2
        dh = np.zeros(60)
        for u in range(10):
            for v in range(60):
                dh[v] += self.w2[u, v] * dz[u]
                self.w2[u, v] -= lr * dz[u] * h[v]
            self.b2[u] -= lr * dz[u]
        dflat = np.zeros(288)
        for u in range(60):
            g = dh[u] if h[u] > 0 else 0.0
            if g == 0.0:
                continue
            for v in range(288):
                dflat[v] += self.w1[u, v] * g
                self.w1[u, v] -= lr * g * flat[v]
            self.b1[u] -= lr * g
        dpool = dflat.reshape(2, 12, 12)
        dconv = np.zeros((2, 24, 24))
        for f in range(2):
            for r in range(12):
                for c in range(12):
                    bi, bj = arg[f, r, c]
                    if conv[f, 2 * r + bi, 2 * c + bj] > 0:
                        dconv[f, 2 * r + bi, 2 * c + bj] = dpool[f, r, c]
        for f in range(2):
            for i in range(5):
                for j in range(5):
                    g = 0.0
                    for r in range(24):
                        for c in range(24):
                            g += dconv[f, r, c] * img[r + i, c + j]
                    self.k[f, i, j] -= lr * g
            gb = 0.0
            for r in range(24):
                for c in range(24):
                    gb += dconv[f, r, c]
            self.kb[f] -= lr * gb
        return loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="images to train on (default 300; quick 60; smoke 8)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--data", default="auto", choices=("auto", "real", "synthetic"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.quick = args.quick or args.smoke
    n = args.images or (8 if args.smoke else 60 if args.quick else 300)
    x, y, source = C.load_images(max(n, 1024), seed=1, source=args.data)
    net = LoopNet(np.random.default_rng(0))
    t0 = C.now()
    losses = [net.step(x[i, 0].astype(np.float64), int(y[i])) for i in range(n)]
    loop_s = C.now() - t0
    loop_ips = n / loop_s
    # portacnn's vectorised seed_cnn on 1024 images of the same data, for scale
    import portacnn as pc

    m = pc.models.seed_cnn(backend="numpy")
    opt = pc.optim.Adam(m.parameters())

    def epoch():
        t = C.now()
        for i in range(0, 1024, 128):
            _, d = pc.losses.softmax_cross_entropy(m.forward(x[i : i + 128], training=True), y[i : i + 128], check=False)
            m.backward(d, input_grad=False)
            opt.step()
            opt.zero_grad()
        return 1024 / (C.now() - t)

    epoch()
    vec = [epoch() for _ in range(3)]
    result = C.header("tutorial_baseline", args)
    result.update({"data": source, "images": n, "loop_seconds": round(loop_s, 3),
                   "loop_images_per_s": loop_ips, "loop_mean_loss": float(np.mean(losses)),
                   "portacnn_numpy_seed_cnn_train_images_per_s": C.summarize(vec),
                   "speedup_vs_loops": C.summarize(vec)["median"] / loop_ips})
    stem = args.out or ("tutorial_smoke" if args.smoke else "tutorial_quick" if args.quick else "tutorial_latest")
    C.write_json(C.RESULTS / f"{stem}.json", result)
    md = (f"## Tutorial baseline ({result['date'][:10]})\n\nPer-pixel Python loops (seed net, SGD, one image at a time): "
          f"**{loop_ips:.0f} images/s** over {n} images. portacnn numpy seed_cnn (batch 128, Adam): "
          f"**{result['portacnn_numpy_seed_cnn_train_images_per_s']['median']:.0f} images/s** "
          f"(x{result['speedup_vs_loops']:.0f}).\n")
    C.write_text(C.RESULTS / f"{stem}.md", md)
    print(md, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
