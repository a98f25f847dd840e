"""Shared helpers for the portacnn benchmarks: data, a PyTorch mirror of a portacnn model, timing, and
machine/version facts. Every script in this folder imports it (run them as ``python benchmarks/<x>.py``).

Nothing here is part of the library; the benchmarks only use portacnn's public API.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# where results go; the smoke tests point this at a temporary folder so the published files stay untouched
RESULTS = Path(os.environ.get("PORTACNN_BENCH_RESULTS") or HERE / "results")
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")  # fmt: skip
NETS = ("seed_cnn", "lenet5", "kannada_cnn", "kannada_bn")
DATA_SOURCES = ("auto", "real", "synthetic")


# -- threads ------------------------------------------------------------------------------------------
def thread_env(threads: int) -> dict:
    """A copy of os.environ that pins every BLAS/OpenMP pool to ``threads`` (for a fresh subprocess)."""
    env = dict(os.environ)
    for k in THREAD_ENV:
        env[k] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def pin_threads_here(threads: int, torch: bool = True) -> None:
    """Pin thread pools of the current process (env before numpy is imported; torch explicitly)."""
    for k in THREAD_ENV:
        os.environ[k] = str(threads)
    if not torch:
        return
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def run_child(script: Path, args: list[str], threads: int, timeout: float | None = None) -> dict:
    """Run ``python script args --child`` with ``threads`` pinned; it prints one JSON object last."""
    cmd = [sys.executable, str(script), *args]
    proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    if proc.stderr.strip():
        sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- data ---------------------------------------------------------------------------------------------
def load_images(n: int, seed: int = 0, source: str = "auto", uint8: bool = False):
    """``n`` float32 images (n, 1, 28, 28) in [0, 1] and int64 labels.

    ``source``: "real" (the Kannada-MNIST training set shipped inside the package, read with
    :func:`portacnn.data.load_kannada_mnist`; a missing copy is an error, never a silent substitute),
    "auto" (the same: the real data always ship with portacnn) or "synthetic" (seeded uniform noise,
    labels uniform; only when asked for). Returns (x, y, source_used). Real data repeats cyclically if
    ``n`` exceeds 60k. ``uint8=True``: pixels 0..255 as uint8 (a quarter of the memory; convert per batch).
    """
    import numpy as np

    from portacnn import data

    if source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {', '.join(DATA_SOURCES)}")
    rng = np.random.default_rng(seed)
    if source in ("auto", "real"):
        xs, ys = data.load_kannada_mnist("train")  # DataError (a ValueError) if the embedded copy is missing
        idx = rng.permutation(np.resize(np.arange(len(xs)), max(n, 1)))[:n] if n <= len(xs) else np.resize(rng.permutation(len(xs)), n)
        x = xs[idx][:, None, :, :]
        del xs
        if not uint8:
            x = x.astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray(x), ys[idx], "kannada_mnist (the training set shipped in portacnn/data)"
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    if uint8:
        x = (x * 255).astype(np.uint8)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    return x, y, "synthetic (seeded uniform)"


# -- models -------------------------------------------------------------------------------------------
def build_pc(net: str, backend: str, dtype: str = "float32", seed: int = 0):
    import portacnn as pc

    return getattr(pc.models, net)(backend=backend, dtype=dtype, seed=seed)


def torch_mirror(pc_model, device: str = "cpu", dtype: str = "float32"):
    """The same network as a ``torch.nn.Sequential`` with the same weights and buffers (``pc.to_torch``: every
    layer type, BatchNorm and Residual blocks included), on ``device`` in ``dtype``."""
    import torch

    import portacnn as pc

    return pc.to_torch(pc_model).to(device=device, dtype=getattr(torch, dtype))


# -- timing -------------------------------------------------------------------------------------------
def summarize(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples),
            "samples": [round(s, 3) for s in samples]}


def now() -> float:
    return time.perf_counter()


#: OpenBLAS keeps its worker threads spinning for ~0.1 s after a multi-threaded call (OpenMP runtimes for
#: a shorter while), so a pass timed right after the other framework's pass shares a core with those
#: spinning threads. Measured on 2 cores: PyTorch's seed_cnn training pass ran at 26-32k images/s straight
#: after a NumPy pass and at 39-44k after a 0.2 s pause. Every timed pass is preceded by this pause.
SETTLE_S = 0.3


def settle() -> None:
    """Idle long enough for the worker threads of whatever ran before to stop spinning."""
    time.sleep(SETTLE_S)


# -- facts about this run -----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM from /proc, else getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "array_api_compat", "array_api_strict", "portacnn", "cupy"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:
            out[mod] = None
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        pass
    return out


def machine() -> dict:
    """The CPU, and the load average when the run started (a figure measured under load is void)."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "hostname_hash": hash(platform.node()) & 0xFFFF, "load_average_1_5_15min": load}


def git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "portacnn"], capture_output=True, text=True)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else None
    except OSError:
        return None


def header(kind: str, args) -> dict:
    return {"benchmark": kind, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git": git_rev(), "versions": versions(), "machine": machine(),
            "argv": sys.argv[1:], "options": {k: v for k, v in vars(args).items() if not k.startswith("_")}}


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def have_matplotlib() -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    return matplotlib is not None
