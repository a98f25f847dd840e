"""Each compiled NumPy kernel against its portable twin, at the sizes of a kannada_bn, LeNet-5 and tutorial-net
training step (batch 128); kannada_bn's 3x3 convolutions after the first run by Winograd's F(2x2, 3x3).

For every layer kind the step uses, one forward (training) and one backward pass of a single layer are timed
with the compiled kernels on and with ``PORTACNN_COMPILED=0`` (the layers' portable math, or for convolutions
the generic layout kernel that NumPy ran before), alternating with a pause before each pass (OpenBLAS's threads
spin for ~0.1 s after a call), median of ``--repeats``; activations come in
the channels-last memory order the network produces. Also reported: the one-time compile cost (numba, first
call of every kernel in a fresh process, with an empty cache) and the time to load them from the disk cache
in a second process.

    python benchmarks/bench_kernels.py            # -> results/kernels_latest.{json,md}
    python benchmarks/bench_kernels.py --smoke    # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import _common as C

#: passes timed back to back in one sample (a single pass after the pause pays for waking threads and caches)
PASSES = 5
CASES = [  # (name, layer factory source, input shape (N, C, H, W) at batch 128); a first conv takes no input grad
    ("conv 1->32 3x3 @28 (first layer)", "Conv2D(1, 32, 3, padding=1, bias=False)", (128, 1, 28, 28)),
    ("conv 32->32 3x3 @28 (Winograd)", "Conv2D(32, 32, 3, padding=1, bias=False)", (128, 32, 28, 28)),
    ("conv 32->64 3x3 @14 (Winograd)", "Conv2D(32, 64, 3, padding=1, bias=False)", (128, 32, 14, 14)),
    ("conv 64->64 3x3 @14 (Winograd)", "Conv2D(64, 64, 3, padding=1, bias=False)", (128, 64, 14, 14)),
    ("conv 64->128 3x3 @7 (Winograd)", "Conv2D(64, 128, 3, padding=1, bias=False)", (128, 64, 7, 7)),
    ("conv 32->64 1x1 @14", "Conv2D(32, 64, 1, bias=False)", (128, 32, 14, 14)),
    ("batchnorm 32 @28", "BatchNorm2D(32)", (128, 32, 28, 28)),
    ("batchnorm 32 @28 + relu (fused)", "fused", (128, 32, 28, 28)),
    ("relu 32 @28", "ReLU()", (128, 32, 28, 28)),
    ("maxpool 2 on 32 @28", "MaxPool2D(2)", (128, 32, 28, 28)),
    ("relu + maxpool 2 on 32 @28 (fused)", "relu_pool", (128, 32, 28, 28)),
    ("conv 1->6 5x5 pad 2 @28 (LeNet-5, first layer)", "Conv2D(1, 6, 5, padding=2)", (128, 1, 28, 28)),
    ("conv 6->16 5x5 @14 (LeNet-5)", "Conv2D(6, 16, 5)", (128, 6, 14, 14)),
    ("conv 1->2 5x5 @28 (tutorial net, first layer)", "Conv2D(1, 2, 5)", (128, 1, 28, 28)),
]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--smoke", action="store_true", help="batch 4, 1 repeat (test suite)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", choices=("time", "compile"), default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _layers(spec):
    from portacnn.layers import BatchNorm2D, Conv2D, MaxPool2D, ReLU  # noqa: F401 (used by eval)

    if spec == "fused":
        return [BatchNorm2D(32), ReLU()]
    if spec == "relu_pool":
        return [ReLU(), MaxPool2D(2)]
    return [eval(spec)]


def time_cases(repeats, smoke) -> list[dict]:
    import numpy as np

    import portacnn as pc

    rows = []
    for name, spec, shape in CASES:
        shape = (4,) + shape[1:] if smoke else shape
        rng = np.random.default_rng(0)
        x = np.ascontiguousarray(rng.standard_normal((shape[0], shape[2], shape[3], shape[1]), dtype=np.float32))
        x = x.transpose(0, 3, 1, 2)  # channels-last memory, as the network's activations are
        model = pc.Sequential(_layers(spec), seed=0, workers=1)
        y = model.forward(x, training=True)
        dy = np.ascontiguousarray(rng.standard_normal((y.shape[0], y.shape[2], y.shape[3], y.shape[1]),
                                                      dtype=np.float32)).transpose(0, 3, 1, 2)
        times = {"compiled": [], "portable": []}
        for rep in range(repeats + 1):
            for mode in ("compiled", "portable") if rep % 2 == 0 else ("portable", "compiled"):
                os.environ["PORTACNN_COMPILED"] = "1" if mode == "compiled" else "0"
                C.settle()  # the other mode's BLAS threads stop spinning first
                t0 = C.now()
                for _ in range(PASSES):
                    model.forward(x, training=True)
                    model.backward(dy, input_grad=shape[1] != 1)
                if rep:  # the first round warms up (compilation, allocations)
                    times[mode].append((C.now() - t0) / PASSES)
        os.environ.pop("PORTACNN_COMPILED", None)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append({"kernel": name, "input": list(shape), "compiled_ms": round(med["compiled"] * 1e3, 2),
                     "portable_ms": round(med["portable"] * 1e3, 2),
                     "speedup": round(med["portable"] / med["compiled"], 2)})
        print(f"{name:34s} compiled {rows[-1]['compiled_ms']:7.2f} ms  portable {rows[-1]['portable_ms']:7.2f} ms  "
              f"x{rows[-1]['speedup']:.2f}", file=sys.stderr, flush=True)
    return rows


COMPILE_CHILD = ("import time; t0 = time.perf_counter()\n"
                 "import numpy as np, portacnn as pc\n"
                 "m = pc.models.kannada_bn(seed=0, workers=1)\n"
                 "x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)\n"
                 "t1 = time.perf_counter()\n"
                 "m.fit(x, np.arange(8) % 10, epochs=1, batch_size=8, verbose=0)\n"
                 "m.infer(x)\n"
                 "m = pc.models.lenet5(seed=0, workers=1)\n"
                 "m.fit(x, np.arange(8) % 10, epochs=1, batch_size=8, verbose=0)\n"
                 "m.infer(x)\n"
                 "print(time.perf_counter() - t1)\n")


def compile_cost() -> dict:
    """Seconds of the first kannada_bn and LeNet-5 training step + inference in a fresh process: with an empty numba cache
    (compiling every kernel it uses), then again in a second process (loading them from the cache), and with
    the compiled kernels off (the work itself)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        run = lambda e: float(subprocess.run([sys.executable, "-c", COMPILE_CHILD], env=e, capture_output=True,  # noqa: E731
                                             text=True, check=True).stdout.split()[-1])
        first, second = run(env), run(env)
        off = run({**env, "PORTACNN_COMPILED": "0"})
    return {"first_process_s": round(first, 2), "second_process_s": round(second, 2), "portable_s": round(off, 2)}


def main(argv=None):
    args = parse(argv)
    repeats = 1 if args.smoke else args.repeats
    result = C.header("kernels", args)
    result["cases"] = time_cases(repeats, args.smoke)
    result["compile"] = compile_cost()
    print(f"compile: {result['compile']}", file=sys.stderr)
    stem = args.out or ("kernels_smoke" if args.smoke else "kernels_latest")
    C.write_json(C.RESULTS / f"{stem}.json", result)
    lines = [f"## Compiled kernels vs portable ({result['date'][:10]})", "",
             "One layer's training forward + backward (input gradient included, but for a first layer), batch "
             f"{4 if args.smoke else 128}, float32, channels-last activations; median of {repeats}, alternating.", "",
             "| kernel | compiled ms | portable ms | speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['compiled_ms']} | {r['portable_ms']} | **x{r['speedup']}** |" for r in result["cases"]]
    c = result["compile"]
    lines += ["", f"First kannada_bn and LeNet-5 step + inference in a fresh process: {c['first_process_s']} s with an empty numba "
              f"cache (compiling), {c['second_process_s']} s in the next process (cache loaded), {c['portable_s']} s "
              "with the compiled kernels off.", ""]
    C.write_text(C.RESULTS / f"{stem}.md", "\n".join(lines))
    print(f"wrote {C.RESULTS / (stem + '.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
