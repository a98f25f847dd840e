"""Helpers shared by test_training/test_checkpoint/test_cli/test_robustness (not a test module).

Small data only: the embedded Kannada-MNIST is read once and cut into tiny class-balanced subsets, which
are written as IDX/CSV/PNG files under ``tmp_path`` for the command line tests.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

import portacnn as pc

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def kannada(split: str):
    """(uint8 images, int64 labels) of the embedded set, read once per test session."""
    x, y = pc.data.load_kannada_mnist(split)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def subset(split: str, n: int, offset: int = 0):
    """The first ``n`` images of a split after ``offset`` (the embedded files cycle through the classes)."""
    x, y = kannada(split)
    return np.array(x[offset : offset + n]), np.array(y[offset : offset + n])


def float_subset(split: str, n: int, offset: int = 0):
    x, y = subset(split, n, offset)
    return pc.data.preprocess(x), y


def write_idx(path, array, magic=None, dims=None) -> Path:
    """An uncompressed IDX file of ``array`` (uint8); ``magic``/``dims`` override the header for bad files."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    dims = a.shape if dims is None else dims
    magic = bytes([0, 0, 8, len(dims)]) if magic is None else magic
    path = Path(path)
    path.write_bytes(magic + b"".join(struct.pack(">I", d) for d in dims) + a.tobytes())
    return path


def idx_folder(folder, n_train=256, n_test=100, prefix=("train", "t10k"), gz=False) -> Path:
    """A folder with train/test IDX pairs named like the MNIST files (``prefix`` picks the split names)."""
    import gzip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, name, n in (("train", prefix[0], n_train), ("test", prefix[1], n_test)):
        if n is None:
            continue
        x, y = subset(split, n)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            p = write_idx(folder / f"{name}-{kind}-ubyte", arr)
            if gz:
                p.with_name(p.name + ".gz").write_bytes(gzip.compress(p.read_bytes()))
                p.unlink()
    return folder


def write_csv(path, images, labels=None, crlf=False, blank_lines=False) -> Path:
    flat = np.asarray(images).reshape(len(images), -1)
    first = "label" if labels is not None else "id"
    col0 = labels if labels is not None else np.arange(len(images))
    nl = "\r\n" if crlf else "\n"
    rows = [",".join([first] + [f"pixel{i}" for i in range(flat.shape[1])])]
    for i, (c, row) in enumerate(zip(col0, flat)):
        rows.append(",".join([str(int(c))] + [str(int(v)) for v in row]))
        if blank_lines and i % 3 == 0:
            rows.append("")
    Path(path).write_text(nl.join(rows) + nl, newline="")
    return Path(path)


def tiny_model(seed=0, **kw):
    return pc.models.seed_cnn(seed=seed, **kw)


def trained_checkpoint(path, n=256, epochs=1, seed=0) -> Path:
    """A seed_cnn trained briefly in-process and saved with its optimizer (a few seconds at most)."""
    x, y = float_subset("train", n)
    model = tiny_model(seed)
    model.fit(x, y, epochs=epochs, batch_size=32, seed=seed, progress=False)
    model.save(path, optimizer=model.optimizer)
    return Path(path)


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PORTACNN_BACKEND", None)
    env.pop("JAX_ENABLE_X64", None)  # the subprocess runs with JAX's default (no 64-bit arrays), as a user's does
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # the machine is shared; also keeps CLI runs comparable
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def cli_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "portacnn", *map(str, args)]


def run_cli(*args, timeout=180, cwd=None) -> subprocess.CompletedProcess:
    """``python -m portacnn ARGS`` in a subprocess; text output captured."""
    return subprocess.run(cli_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO,
                          env=cli_env())


def last_json(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


def assert_one_line_error(stderr: str, *fragments):
    """stderr holds exactly one non-empty line, no traceback, and that line names every fragment."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    for f in fragments:
        assert str(f).lower() in lines[0].lower(), f"{f!r} not in {lines[0]!r}"
    return lines[0]


def assert_usage_error(proc: subprocess.CompletedProcess, *fragments, code=2):
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return assert_one_line_error(proc.stderr, *fragments)


def state_of(path, backend="numpy") -> dict:
    return pc.load(path, backend=backend).state_dict()


def assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"{k} differs (max |diff| {np.max(np.abs(a[k] - b[k]))})"
