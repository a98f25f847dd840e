"""Scaling: time per epoch and peak memory (RSS) as the training set grows and as the batch grows.

Every configuration runs in a fresh subprocess (so its peak RSS is its own): it loads the images as
uint8 (the dataset's own footprint), converts one batch at a time to float32, trains one epoch with Adam
and reports the epoch time and VmHWM (peak RSS) before and after training. Expected: time grows linearly
with the number of images; the training increment of memory depends on the batch, not on the dataset.

    python benchmarks/bench_scaling.py [--net lenet5] [--quick] [--smoke] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys

import _common as C


def child(args):
    C.pin_threads_here(args.threads, torch=False)
    import numpy as np

    import portacnn as pc

    n, batch = args.child_n, args.child_batch
    xu8, y, source = C.load_images(n, seed=0, source=args.data, uint8=True)  # compact, as a loader keeps it
    rss_before = C.peak_rss_mib()  # imports + dataset: everything but training
    model = getattr(pc.models, args.net)(backend="numpy")
    opt = pc.optim.Adam(model.parameters())
    # warm-up on one batch, then measure from the current high-water mark
    _, d = pc.losses.softmax_cross_entropy(model.forward(xu8[:batch].astype(np.float32) / np.float32(255), training=True), y[:batch], check=False)
    model.backward(d, input_grad=False)
    opt.zero_grad()
    t0 = C.now()
    for i in range(0, n, batch):
        xb = xu8[i : i + batch].astype(np.float32) / np.float32(255)
        logits = model.forward(xb, training=True)
        _, d = pc.losses.softmax_cross_entropy(logits, y[i : i + batch], check=False)
        model.backward(d, input_grad=False)
        opt.step()
        opt.zero_grad()
    secs = C.now() - t0
    return {"net": args.net, "images": n, "batch": batch, "threads": args.threads, "epoch_seconds": secs,
            "images_per_s": n / secs, "peak_rss_mib_before_training": rss_before, "peak_rss_mib": C.peak_rss_mib(),
            "dataset_uint8_mib": xu8.nbytes / 2**20, "data": source}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="lenet5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--data", default="auto", choices=("auto", "real", "synthetic"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--child-n", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-batch", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_n is not None:
        print(json.dumps(child(args)))
        return 0
    args.quick = args.quick or args.smoke
    if args.smoke:
        sizes, batches, bsize = [256, 512], [32, 128], 256
    elif args.quick:
        sizes, batches, bsize = [2000, 6000], [32, 128, 512], 2000
    else:
        sizes, batches, bsize = [6000, 30000, 60000], [32, 128, 512, 2048], 6000
    result = C.header("scaling", args)
    base = ["--net", args.net, "--threads", str(args.threads), "--data", args.data]
    data_rows, batch_rows = [], []
    for n in sizes:
        r = C.run_child(C.HERE / "bench_scaling.py", [*base, "--child-n", str(n), "--child-batch", "128"], args.threads)
        data_rows.append(r)
        print(f"data  n={n:6d} b=128: {r['epoch_seconds']:.2f} s/epoch, {r['images_per_s']:.0f} img/s, peak RSS {r['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    for b in batches:
        r = C.run_child(C.HERE / "bench_scaling.py", [*base, "--child-n", str(bsize), "--child-batch", str(b)], args.threads)
        batch_rows.append(r)
        print(f"batch n={bsize:6d} b={b:4d}: {r['epoch_seconds']:.2f} s/epoch, {r['images_per_s']:.0f} img/s, peak RSS {r['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    # linearity: seconds per image at each size relative to the smallest
    per_img = [r["epoch_seconds"] / r["images"] for r in data_rows]
    result.update({"data": data_rows[0]["data"], "vs_dataset_size": data_rows, "vs_batch": batch_rows,
                   "seconds_per_image_relative_to_smallest": [p / per_img[0] for p in per_img],
                   "training_rss_increment_mib_vs_dataset": [r["peak_rss_mib"] - r["peak_rss_mib_before_training"] for r in data_rows],
                   "training_rss_increment_mib_vs_batch": [r["peak_rss_mib"] - r["peak_rss_mib_before_training"] for r in batch_rows]})
    stem = args.out or ("scaling_smoke" if args.smoke else "scaling_quick" if args.quick else "scaling_latest")
    C.write_json(C.RESULTS / f"{stem}.json", result)
    lines = [f"## Scaling, {args.net}, {args.threads} threads ({result['date'][:10]})", "",
             "| images | batch | s/epoch | images/s | s/image vs smallest | dataset uint8 MiB | peak RSS MiB (before training -> peak) |",
             "|---|---|---|---|---|---|---|"]
    for r, rel in zip(data_rows, result["seconds_per_image_relative_to_smallest"]):
        lines.append(f"| {r['images']} | {r['batch']} | {r['epoch_seconds']:.2f} | {r['images_per_s']:.0f} | {rel:.2f} | {r['dataset_uint8_mib']:.0f} | {r['peak_rss_mib_before_training']:.0f} -> {r['peak_rss_mib']:.0f} |")
    for r in batch_rows:
        lines.append(f"| {r['images']} | {r['batch']} | {r['epoch_seconds']:.2f} | {r['images_per_s']:.0f} |  | {r['dataset_uint8_mib']:.0f} | {r['peak_rss_mib_before_training']:.0f} -> {r['peak_rss_mib']:.0f} |")
    C.write_text(C.RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
