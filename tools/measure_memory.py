"""Peak resident memory of evaluate/predict on a million images (run by hand; not part of the test suite).

    python tools/measure_memory.py [N] [--model seed|linear]

Writes N random 28x28 uint8 images as a plain IDX pair into a temporary folder, then measures in fresh
subprocesses (ru_maxrss of the child): (1) ``portacnn evaluate`` on that folder, (2) ``model.predict`` on
the images memory-mapped as uint8 and scaled chunk by chunk (3) the same reading chunks with
``numpy.fromfile`` and (4) a 1,000-image baseline of (1). A float32
copy of the images would need N*784*4 bytes on its own. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # clihelp

from clihelp import cli_cmd, cli_env, write_idx  # noqa: E402

import portacnn as pc  # noqa: E402
from portacnn.layers import Dense, Flatten  # noqa: E402

PEAK = r"""
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""

PREDICT = r"""
import sys, numpy as np, portacnn as pc
images = np.memmap(sys.argv[2], dtype=np.uint8, mode="r", offset=16).reshape(-1, 28, 28)
model = pc.load(sys.argv[1])
chunk, counts = 16384, np.zeros(10, np.int64)
for lo in range(0, len(images), chunk):
    counts += np.bincount(model.predict(pc.data.preprocess(images[lo:lo + chunk])), minlength=10)
assert counts.sum() == len(images)
"""


PREDICT_READS = r"""
import sys, numpy as np, portacnn as pc
model = pc.load(sys.argv[1])
chunk, counts, n = 16384, np.zeros(10, np.int64), 0
with open(sys.argv[2], "rb") as f:
    f.seek(16)
    while True:
        images = np.fromfile(f, dtype=np.uint8, count=chunk * 784).reshape(-1, 28, 28)
        if not len(images):
            break
        counts += np.bincount(model.predict(pc.data.preprocess(images)), minlength=10)
        n += len(images)
assert counts.sum() == n
"""


def peak(cmd) -> tuple[int, float]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], capture_output=True, text=True, env=cli_env(), cwd=REPO,
                         check=True)
    return int(out.stdout.split()[-1]), time.perf_counter() - t


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1_000_000
    kind = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "seed"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = pc.models.seed_cnn() if kind == "seed" else pc.Sequential([Flatten(), Dense(784, 10)])
        model.save(tmp / "model.safetensors")
        rng = np.random.default_rng(0)
        for name, count in (("small", 1000), ("large", n)):
            (tmp / name).mkdir()
            images = np.empty((count, 28, 28), np.uint8)
            for lo in range(0, count, 100_000):
                images[lo : lo + 100_000] = rng.integers(0, 256, images[lo : lo + 100_000].shape, dtype=np.uint8)
            write_idx(tmp / name / "t10k-images-idx3-ubyte", images)
            write_idx(tmp / name / "t10k-labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8))
            del images
        ck = tmp / "model.safetensors"
        base, t_base = peak(cli_cmd("evaluate", ck, "--data", tmp / "small"))
        ev, t_ev = peak(cli_cmd("evaluate", ck, "--data", tmp / "large"))
        pr, t_pr = peak([sys.executable, "-c", PREDICT, str(ck), str(tmp / "large" / "t10k-images-idx3-ubyte")])
        pr2, t_pr2 = peak([sys.executable, "-c", PREDICT_READS, str(ck), str(tmp / "large" / "t10k-images-idx3-ubyte")])
    mib = 2**20
    print(json.dumps({
        "images": n, "model": kind, "uint8_MiB": round(n * 784 / mib), "float32_copy_MiB": round(n * 784 * 4 / mib),
        "cli_evaluate_1k_peak_MiB": round(base / mib), "cli_evaluate_peak_MiB": round(ev / mib),
        "api_predict_memmap_chunks_peak_MiB": round(pr / mib),  # touched file pages count as resident
        "api_predict_file_read_chunks_peak_MiB": round(pr2 / mib),
        "seconds": {"evaluate_1k": round(t_base, 1), "evaluate": round(t_ev, 1), "predict": round(t_pr, 1),
                    "predict_reads": round(t_pr2, 1)},
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
