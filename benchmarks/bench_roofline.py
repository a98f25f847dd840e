"""The machine's limits and how close each framework gets to them.

Measures float32 matmul throughput (NumPy/OpenBLAS and PyTorch, 2048^3, best of several) and memory copy
bandwidth (NumPy copy of a 256 MiB array: bytes read + written per second), counts the FLOPs per image
of each network analytically (conv 2*O*C*kh*kw*Ho*Wo, dense 2*in*out; training = forward + backward,
backward ~ 2x forward, so 3x forward), and divides the achieved GFLOP/s (FLOPs/image x images/s, from
results/cpu_latest.json of bench_cpu.py, batch 128) by the measured matmul peak.

    python benchmarks/bench_roofline.py [--quick] [--smoke] [--threads 2] [--throughput results/cpu_latest.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import _common as C


def flops_per_image(net: str) -> dict:
    """Forward FLOPs per image by layer (multiply-add = 2), walking the model's architecture."""
    m = C.build_pc(net, "numpy")
    c, h, w = 1, 28, 28
    layers, total = [], 0
    for spec in m.architecture():
        t, f = spec["type"], 0
        if t == "Conv2D":
            (kh, kw), (sh, sw), (ph, pw) = spec["kernel_size"], spec["stride"], spec["padding"]
            ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            o = spec["out_channels"]
            f = 2 * o * c * kh * kw * ho * wo
            c, h, w = o, ho, wo
        elif t == "MaxPool2D":
            (kh, kw), (sh, sw), (ph, pw) = spec["kernel_size"], spec["stride"], spec["padding"]
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        elif t == "Flatten":
            c, h, w = c * h * w, 1, 1
        elif t == "Dense":
            f = 2 * spec["in_features"] * spec["out_features"]
            c = spec["out_features"]
        if f:
            layers.append({"layer": t, "flops": f})
        total += f
    return {"forward": total, "train": 3 * total, "layers": layers}


def child(args) -> dict:
    C.pin_threads_here(args.threads)
    import numpy as np
    import torch

    n = 512 if args.smoke else 2048
    reps = 2 if args.smoke else 5
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)

    def best(f):
        C.settle()  # the previous measurement's BLAS threads stop spinning first
        f()
        ts = []
        for _ in range(reps):
            t = C.now()
            f()
            ts.append(C.now() - t)
        return min(ts), ts

    t_np, ts_np = best(lambda: a @ b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    t_t, ts_t = best(lambda: ta @ tb)
    flop = 2.0 * n**3
    size = (8 if args.smoke else 256) * 2**20 // 4
    src = np.ones(size, dtype=np.float32)
    dst = np.empty_like(src)
    t_c, ts_c = best(lambda: np.copyto(dst, src))
    return {"threads": args.threads, "matmul_n": n,
            "matmul_gflops_numpy": flop / t_np / 1e9, "matmul_gflops_numpy_median": flop / sorted(ts_np)[len(ts_np) // 2] / 1e9,
            "matmul_gflops_torch": flop / t_t / 1e9, "matmul_gflops_torch_median": flop / sorted(ts_t)[len(ts_t) // 2] / 1e9,
            "copy_gbytes_per_s": 2 * src.nbytes / t_c / 1e9, "copy_bytes": src.nbytes}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--throughput", default=None, help="bench_cpu.py JSON to read images/s from (default results/cpu_latest.json)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        args.threads = args.child
        print(json.dumps(child(args)))
        return 0
    args.quick = args.quick or args.smoke
    threads = [int(t) for t in args.threads.split(",")]
    passthrough = ["--smoke"] if args.smoke else []
    limits = {t: C.run_child(C.HERE / "bench_roofline.py", [*passthrough, "--child", str(t)], t) for t in threads}
    nets = {n: flops_per_image(n) for n in C.NETS}
    result = C.header("roofline", args)
    result.update({"limits": {str(t): v for t, v in limits.items()}, "flops_per_image": nets})
    path = C.RESULTS / "cpu_latest.json" if args.throughput is None else C.Path(args.throughput)
    rows = []
    if path.exists():
        tp = json.loads(path.read_text())
        result["throughput_source"] = path.name  # the file name only: no machine paths in results
        for cell in tp.get("cells", []):
            if cell.get("note") or cell["batch"] != 128 or cell["threads"] not in limits:
                continue
            lim = limits[cell["threads"]]
            peak = max(lim["matmul_gflops_numpy"], lim["matmul_gflops_torch"])
            f = nets[cell["net"]]["train" if cell["mode"] == "train" else "forward"]
            for fw, v in cell["frameworks"].items():
                ips = v["images_per_s"]["median"]
                g = f * ips / 1e9
                rows.append({"net": cell["net"], "mode": cell["mode"], "threads": cell["threads"], "framework": fw,
                             "images_per_s": ips, "gflops": g, "fraction_of_matmul_peak": g / peak, "peak_gflops": peak})
    else:
        result["throughput_source"] = None
        result["note"] = f"{path} not found: run bench_cpu.py first for the fractions"
    result["achieved"] = rows
    stem = args.out or ("roofline_smoke" if args.smoke else "roofline_quick" if args.quick else "roofline_latest")
    C.write_json(C.RESULTS / f"{stem}.json", result)
    lines = [f"## Roofline ({result['date'][:10]})", "", "| threads | matmul GFLOP/s NumPy (best / median) | matmul GFLOP/s PyTorch (best / median) | copy GB/s |", "|---|---|---|---|"]
    for t, v in limits.items():
        lines.append(f"| {t} | {v['matmul_gflops_numpy']:.0f} / {v['matmul_gflops_numpy_median']:.0f} | {v['matmul_gflops_torch']:.0f} / {v['matmul_gflops_torch_median']:.0f} | {v['copy_gbytes_per_s']:.1f} |")
    lines += ["", "| net | forward MFLOP/image | train MFLOP/image (3x forward) |", "|---|---|---|"]
    for n, v in nets.items():
        lines.append(f"| {n} | {v['forward'] / 1e6:.2f} | {v['train'] / 1e6:.2f} |")
    if rows:
        lines += ["", "Achieved at batch 128 (images/s from " + str(path.name) + "), as a fraction of the best measured float32 matmul rate:", "",
                  "| net | mode | threads | framework | images/s | GFLOP/s | fraction of peak |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['net']} | {r['mode']} | {r['threads']} | {r['framework']} | {r['images_per_s']:.0f} | {r['gflops']:.1f} | {100 * r['fraction_of_matmul_peak']:.0f} % |")
    C.write_text(C.RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
