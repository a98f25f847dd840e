"""Training and inference throughput of portacnn vs the same network in PyTorch, measured in one run.

For each network (seed_cnn, lenet5, kannada_cnn, kannada_bn on 28x28 greyscale images, resnet20 on 32x32 colour
ones), batch size and mode (train / infer), every portacnn backend and the PyTorch reference (torch.nn +
torch.optim.Adam, same initial weights via the state dict, same batches, same thread count) run one full pass over
the same images, alternating, ``--repeats`` times after a warm-up. Reported: images/s (median, min, max) and the ratio portacnn / PyTorch (median of
the per-repeat ratios, each from back-to-back passes, so a noisy machine affects both sides alike). Before
every timed pass the process idles 0.3 s: OpenBLAS's worker threads spin for ~0.1 s after a call and, timed
straight after a NumPy pass, PyTorch lost up to a third of its speed to them (the results before
2026-11-24's second run flattered portacnn by that much for the unsharded small nets).

The digit networks read the embedded Kannada-MNIST; resnet20 reads seeded uniform 3x32x32 images (no colour
data ships with portacnn; throughput does not depend on the pixels), recorded as each cell's ``data``.

A training step is forward(training=True) + softmax_cross_entropy(check=False) + backward(input_grad=False) + Adam step +
zero_grad; PyTorch's is forward + F.cross_entropy + loss.backward() + Adam step + zero_grad().

Each thread count runs in a fresh subprocess with OMP/OpenBLAS/MKL_NUM_THREADS pinned before NumPy is
imported and torch.set_num_threads(t). portacnn's default ``workers="auto"`` then splits large enough
batches into t row shards on t threads (BLAS at one thread each meanwhile), so both sides use t cores;
the shards each cell used are recorded (``--workers 1`` measures the unsharded path).

    python benchmarks/bench_cpu.py                  # full run (~10 min on 2 cores): results/cpu_latest.*
    python benchmarks/bench_cpu.py --quick          # < 2 min smoke run: results/cpu_quick.*
    python benchmarks/bench_cpu.py --backend cupy   # GPU: torch reference on CUDA, TF32 off -> gpu_latest.*
"""

from __future__ import annotations

import argparse
import sys
import time

import _common as C

NETS = (*C.NETS, "resnet20")  # the shared list, and ResNet-20 on 32x32 colour images
PASS_IMAGES = {"seed_cnn": 6144, "lenet5": 3072, "kannada_cnn": 1024, "kannada_bn": 1024,
               "resnet20": 512}  # full mode, multiples of 512
QUICK_IMAGES = {"seed_cnn": 1024, "lenet5": 1024, "kannada_cnn": 512, "kannada_bn": 512, "resnet20": 256}
SMOKE_IMAGES = {"seed_cnn": 64, "lenet5": 64, "kannada_cnn": 32, "kannada_bn": 32, "resnet20": 32}
#: the images of the networks that do not read 28x28 greyscale digits
OTHER_SHAPES = {"resnet20": (3, 32, 32)}
GPU_BACKENDS = ("cupy",)
STRICT_IMAGES = 64  # the array_api_strict sanity cell's pass
STRICT_NOTE = "array_api_strict is a correctness backend (pure-Python checks on every op): one tiny sanity cell only"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="small passes, batch 128 only, 1-2 repeats (< 2 min)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for the test-suite (< 20 s); implies --quick")
    ap.add_argument("--threads", default=None, help="comma list of thread counts (default: 2,1; quick: 2)")
    ap.add_argument("--backend", default=None, help="comma list of portacnn backends (default: every available CPU backend but array_api_strict and jax)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--batches", default=None, help="comma list (default 32,128,512; quick: 128)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per cell (default 3; quick 2; smoke 1)")
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--workers", default="auto", help="portacnn's workers setting (default auto; 1 = no shards)")
    ap.add_argument("--data", default="auto", choices=("auto", "real", "synthetic"))
    ap.add_argument("--out", default=None, help="output stem in benchmarks/results (default cpu_latest / cpu_quick / gpu_latest)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.threads is None:
        args.threads = "2" if args.quick else "2,1"
    if args.batches is None:
        args.batches = "32" if args.smoke else "128" if args.quick else "32,128,512"
    if args.repeats is None:
        args.repeats = 1 if args.smoke else 2 if args.quick else 3
    return args


def images_for(net, x, y, n, seed=0):
    """(x, y, source) of ``n`` images for ``net``: the loaded digits, or for a network of :data:`OTHER_SHAPES`
    seeded uniform float32 images of its shape in [0, 1] with uniform labels."""
    if net not in OTHER_SHAPES:
        return x, y, None
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = OTHER_SHAPES[net]
    return (rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, size=n, dtype=np.int64),
            f"synthetic (seeded uniform {'x'.join(map(str, shape))})")


#: not in the default run: array_api_strict (a correctness backend: one sanity cell) and jax (eager JAX on a CPU runs
#: op by op, several times slower than NumPy; measured only when asked for, ``--backend jax``)
NOT_BY_DEFAULT = ("array_api_strict", "jax")


def default_backends() -> list[str]:
    import portacnn as pc

    return [b for b in pc.available_backends() if b not in GPU_BACKENDS and b not in NOT_BY_DEFAULT]


# -- one thread count, in its own process ------------------------------------------------------------
class Runner:
    """Prepared closures for one (net, batch): each call runs one full pass and returns seconds."""

    def __init__(self, net, batch, n_images, x, y, backend, gpu, workers="auto"):
        import portacnn as pc

        self.net, self.batch, self.n = net, batch, n_images
        self.model = C.build_pc(net, backend)
        self.model.workers = workers
        shape = (batch,) + tuple(x.shape[1:])
        self.shards = {mode: self.model.shards_for(shape, training=mode == "train") for mode in ("train", "infer")}
        self.opt = pc.optim.Adam(self.model.parameters(), lr=1e-3)
        be = self.model.backend
        self.sync = be.synchronize
        self.xb = [be.asarray(x[i : i + batch], dtype="float32") for i in range(0, n_images, batch)]
        self.yb = [be.asarray(y[i : i + batch]) for i in range(0, n_images, batch)]
        self.loss = pc.losses.softmax_cross_entropy

    def train(self, nbatches=None):
        m, opt, loss = self.model, self.opt, self.loss
        t0 = C.now()
        for xb, yb in list(zip(self.xb, self.yb))[:nbatches]:
            logits = m.forward(xb, training=True)
            _, d = loss(logits, yb, check=False)
            m.backward(d, input_grad=False)  # like PyTorch, whose input does not require grad
            opt.step()
            opt.zero_grad()
        self.sync()
        return C.now() - t0

    def infer(self, nbatches=None):
        m = self.model
        t0 = C.now()
        run = getattr(m, "infer", None) or (lambda xb: m.forward(xb, training=False))  # (portacnn before infer)
        for xb in self.xb[:nbatches]:
            run(xb)  # what predict / predict_proba / evaluate run per batch (BatchNorm folded)
        self.sync()
        return C.now() - t0


class TorchRunner:
    def __init__(self, pc_model, batch, n_images, x, y, device):
        import torch

        self.torch = torch
        self.model = C.torch_mirror(pc_model, device=device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.xb = [torch.from_numpy(x[i : i + batch]).to(device) for i in range(0, n_images, batch)]
        self.yb = [torch.from_numpy(y[i : i + batch]).to(device) for i in range(0, n_images, batch)]
        self.sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)

    def train(self, nbatches=None):
        F, m, opt = self.torch.nn.functional, self.model, self.opt
        m.train()
        t0 = C.now()
        for xb, yb in list(zip(self.xb, self.yb))[:nbatches]:
            loss = F.cross_entropy(m(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.sync()
        return C.now() - t0

    def infer(self, nbatches=None):
        m = self.model
        m.eval()
        t0 = C.now()
        with self.torch.inference_mode():
            for xb in self.xb[:nbatches]:
                m(xb)
        self.sync()
        return C.now() - t0


def child(args) -> dict:
    threads = args.child
    C.pin_threads_here(threads)
    import torch

    backends = args.backend.split(",") if args.backend else default_backends()
    gpu = any(b in GPU_BACKENDS for b in backends)
    device = "cuda" if gpu else "cpu"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    images = SMOKE_IMAGES if args.smoke else QUICK_IMAGES if args.quick else PASS_IMAGES
    nets = args.nets.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    modes = args.modes.split(",")
    digits = max([STRICT_IMAGES] + [images[n] for n in nets if n not in OTHER_SHAPES])  # the strict cell's too
    x_digits, y_digits, source = C.load_images(digits, seed=0, source=args.data)
    cells = []
    for net in nets:
        x, y, own = images_for(net, x_digits, y_digits, max(max(batches), images[net]))
        for batch in batches:
            n = max(batch, images[net] // batch * batch)
            workers = args.workers if args.workers == "auto" else int(args.workers)
            runners = {b: Runner(net, batch, n, x, y, b, gpu, workers) for b in backends}
            first = next(iter(runners.values())).model
            runners["pytorch"] = TorchRunner(first, batch, n, x, y, device)
            for mode in modes:
                for r in runners.values():  # warm-up: two batches each (allocations, caches, lazy init)
                    getattr(r, mode)(2)
                secs = {k: [] for k in runners}
                order = list(runners)
                for rep in range(args.repeats):
                    for k in order if rep % 2 == 0 else reversed(order):  # alternate who goes first
                        C.settle()  # the other side's BLAS/OpenMP threads stop spinning first
                        secs[k].append(getattr(runners[k], mode)())
                cell = {"net": net, "batch": batch, "mode": mode, "threads": threads, "images_per_pass": n,
                        "data": own or source, "frameworks": {}}
                for k, s in secs.items():
                    ips = [n / t for t in s]
                    cell["frameworks"][k] = {"images_per_s": C.summarize(ips), "seconds": [round(t, 4) for t in s]}
                for k in backends:
                    cell["frameworks"][k]["shards"] = runners[k].shards[mode]
                    ratios = [tp / tk for tk, tp in zip(secs[k], secs["pytorch"])]  # time_torch / time_pc = speed ratio
                    cell["frameworks"][k]["ratio_vs_pytorch"] = C.summarize(ratios)
                cells.append(cell)
                print(fmt_cell(cell), file=sys.stderr, flush=True)
            del runners
    if "array_api_strict" not in backends and not gpu and "array_api_strict" in __import__("portacnn").available_backends():
        cells.append(strict_sanity(x_digits, y_digits))
    return {"threads": threads, "torch_threads": torch.get_num_threads(), "data": source, "backends": backends,
            "device": device, "cells": cells}


def strict_sanity(x, y) -> dict:
    """One tiny timed cell on array_api_strict (seed_cnn, batch 32, 2 train steps): it runs, it is slow."""
    r = Runner("seed_cnn", 32, STRICT_IMAGES, x, y, "array_api_strict", False)
    r.train(1)
    t = r.train()
    return {"net": "seed_cnn", "batch": 32, "mode": "train", "threads": None, "images_per_pass": STRICT_IMAGES,
            "frameworks": {"array_api_strict": {"images_per_s": C.summarize([STRICT_IMAGES / t])}}, "note": STRICT_NOTE}


def fmt_cell(cell) -> str:
    parts = []
    for k, v in cell["frameworks"].items():
        s = f"{k}={v['images_per_s']['median']:.0f}/s"
        if "ratio_vs_pytorch" in v:
            s += f" (x{v['ratio_vs_pytorch']['median']:.2f})"
        parts.append(s)
    return f"{cell['net']:12s} {cell['mode']:5s} b={cell['batch']:<4d} t={cell['threads']}: " + "  ".join(parts)


# -- report --------------------------------------------------------------------------------------------
TARGETS = {("train", "seed_cnn"): 1.5, ("train", "lenet5"): 1.2, ("train", "kannada_cnn"): 1.0,
           ("train", "kannada_bn"): 0.9, ("infer", "kannada_bn"): 1.0}  # fmt: skip (issue 24's goals)


def markdown(result) -> str:
    h = result
    other = sorted({f"{c['net']}: {c['data']}" for c in h["cells"] if c.get("data") not in (None, h["data"])})
    data = h["data"] + "".join(f"; {o}" for o in other)
    lines = [f"## CPU throughput ({h['date'][:10]})", "",
             f"Machine: {h['machine']['cpu_model']}, {h['machine']['logical_cpus']} logical CPUs. "
             f"NumPy {h['versions'].get('numpy')} ({h['versions'].get('numpy_blas')}), PyTorch {h['versions'].get('torch')}, "
             f"portacnn {h['versions'].get('portacnn')} (git {h['git']}), kernels: {h.get('kernels')}. Data: {data}. "
             f"float32. Load average at the start (1/5/15 min): {h['machine'].get('load_average_1_5_15min')}.", "",
             "Images/s (median of the repeats; a full pass over the same images each), and the ratio "
             "portacnn / PyTorch (median of per-repeat ratios of back-to-back passes; > 1 means portacnn is faster). "
             "Target = the issue's goal for that ratio at batch 128. Shards = the threads portacnn split each "
             "batch across (workers='auto': as many as the thread count when each shard keeps enough work).", ""]
    backends = h["backends"]
    head = "| net | mode | batch | threads | shards | " + " | ".join(f"{b} img/s" for b in backends) + " | PyTorch img/s | " + " | ".join(f"ratio {b}" for b in backends) + " | target |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for cell in h["cells"]:
        if cell.get("note"):
            continue
        fw = cell["frameworks"]
        tgt = TARGETS.get((cell["mode"], cell["net"])) if cell["batch"] == 128 else None
        row = [cell["net"], cell["mode"], str(cell["batch"]), str(cell["threads"]),
               str(fw[backends[0]].get("shards", "")) if backends else ""]
        row += [f"{fw[b]['images_per_s']['median']:.0f}" for b in backends]
        row += [f"{fw['pytorch']['images_per_s']['median']:.0f}"]
        for b in backends:
            r = fw[b]["ratio_vs_pytorch"]
            row.append(f"**{r['median']:.2f}** ({r['min']:.2f}-{r['max']:.2f})")
        if tgt is None:
            row.append("")
        else:
            ok = fw[backends[0]]["ratio_vs_pytorch"]["median"] >= tgt
            row.append(f">= {tgt} {'met' if ok else 'MISSED'}")
        lines.append("| " + " | ".join(row) + " |")
    for cell in h["cells"]:
        if cell.get("note"):
            fw = next(iter(cell["frameworks"].items()))
            lines += ["", f"Sanity cell: {fw[0]} {cell['net']} batch {cell['batch']} train: {fw[1]['images_per_s']['median']:.0f} images/s ({cell['note']})."]
    lines += ["", "Ratios of the target cells use the first backend listed (" + backends[0] + ")." if backends else "", ""]
    return "\n".join(lines)


def chart(result, path) -> bool:
    if not C.have_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in result["cells"] if not c.get("note") and c["batch"] == (128 if any(c2["batch"] == 128 for c2 in result["cells"]) else c["batch"])]
    backends = result["backends"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, mode in zip(axes, ("train", "infer")):
        sel = [c for c in cells if c["mode"] == mode]
        labels = [f"{c['net']}\n{c['threads']} thr" for c in sel]
        width = 0.8 / max(1, len(backends))
        for k, b in enumerate(backends):
            vals = [c["frameworks"][b]["ratio_vs_pytorch"]["median"] for c in sel]
            lo = [v - c["frameworks"][b]["ratio_vs_pytorch"]["min"] for v, c in zip(vals, sel)]
            hi = [c["frameworks"][b]["ratio_vs_pytorch"]["max"] - v for v, c in zip(vals, sel)]
            ax.bar([i + k * width for i in range(len(sel))], vals, width, yerr=[lo, hi], label=f"portacnn[{b}]")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(sel))], labels, fontsize=8)
        ax.set_title(f"{mode}, batch 128: speed relative to PyTorch")
    axes[0].set_ylabel("portacnn / PyTorch (images/s ratio)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    args = parse(argv)
    if args.child is not None:
        import json

        print(json.dumps(child(args)))
        return 0
    stem = args.out or ("gpu_latest" if args.backend and any(b in GPU_BACKENDS for b in args.backend.split(",")) else
                        "cpu_smoke" if args.smoke else "cpu_quick" if args.quick else "cpu_latest")
    t0 = time.time()
    result = C.header("throughput", args)
    import portacnn.kernels

    result["kernels"] = getattr(portacnn.kernels, "status", lambda: "portable (a portacnn before the kernels' status)")()
    runs = []
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for t in [int(s) for s in args.threads.split(",")]:
        print(f"-- {t} thread(s)", file=sys.stderr, flush=True)
        runs.append(C.run_child(C.HERE / "bench_cpu.py", [*passthrough, "--child", str(t)], t))
    result.update({"data": runs[0]["data"], "backends": runs[0]["backends"], "device": runs[0]["device"],
                   "threads": [r["threads"] for r in runs], "torch_threads": {r["threads"]: r["torch_threads"] for r in runs},
                   "cells": [c for r in runs for c in r["cells"]], "wall_seconds": round(time.time() - t0, 1)})
    summary = {}
    for c in result["cells"]:
        if c.get("note"):
            continue
        for b in result["backends"]:
            summary[f"{c['net']}/{c['mode']}/b{c['batch']}/t{c['threads']}/{b}"] = round(c["frameworks"][b]["ratio_vs_pytorch"]["median"], 3)
    result["ratios"] = summary
    out = C.RESULTS / f"{stem}.json"
    C.write_json(out, result)
    C.write_text(C.RESULTS / f"{stem}.md", markdown(result))
    if chart(result, C.RESULTS / f"{stem}.png"):
        result["chart"] = str(C.RESULTS / f"{stem}.png")
    print(f"wrote {out} (+ .md{', .png' if 'chart' in result else ''}) in {result['wall_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
