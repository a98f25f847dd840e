"""Smoke tests of the benchmark scripts: each runs its --smoke mode in a subprocess and writes JSON
with the expected keys. No timing assertions (the numbers from tiny runs mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def run(script, *args, tmp_path):
    stem = f"test_{script.split('.')[0]}"
    cmd = [sys.executable, str(BENCH / script), "--smoke", "--out", stem, *args]
    env = {**os.environ, "PORTACNN_BENCH_RESULTS": str(tmp_path)}  # keep the published results untouched
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / f"{stem}.json"
    data = json.loads(out.read_text())
    md = out.with_suffix(".md")
    assert md.exists() and md.read_text().strip()
    for key in ("benchmark", "date", "versions", "machine", "options"):
        assert key in data
    assert data["machine"]["cpu_model"]
    assert data["versions"]["numpy"]
    return data


def test_bench_cpu_smoke(tmp_path):
    d = run("bench_cpu.py", "--threads", "1", tmp_path=tmp_path)
    assert d["threads"] == [1]
    assert "numpy" in d["backends"]
    cells = [c for c in d["cells"] if not c.get("note")]
    assert {c["net"] for c in cells} == {"seed_cnn", "lenet5", "kannada_cnn", "kannada_bn", "resnet20"}
    assert {c["data"] for c in cells if c["net"] == "resnet20"} == {"synthetic (seeded uniform 3x32x32)"}
    assert {c["mode"] for c in cells} == {"train", "infer"}
    for c in cells:
        assert "pytorch" in c["frameworks"]
        for b in d["backends"]:
            fw = c["frameworks"][b]
            assert fw["images_per_s"]["median"] > 0
            assert fw["ratio_vs_pytorch"]["median"] > 0
    assert d["ratios"]


def test_bench_scaling_smoke(tmp_path):
    d = run("bench_scaling.py", "--threads", "1", tmp_path=tmp_path)
    assert len(d["vs_dataset_size"]) >= 2 and len(d["vs_batch"]) >= 2
    for r in d["vs_dataset_size"] + d["vs_batch"]:
        assert r["epoch_seconds"] > 0 and r["peak_rss_mib"] > 0
    assert "seconds_per_image_relative_to_smallest" in d


def test_bench_roofline_smoke(tmp_path):
    d = run("bench_roofline.py", "--threads", "1", tmp_path=tmp_path)
    lim = d["limits"]["1"]
    assert lim["matmul_gflops_numpy"] > 0 and lim["copy_gbytes_per_s"] > 0
    assert d["flops_per_image"]["kannada_cnn"]["train"] == 3 * d["flops_per_image"]["kannada_cnn"]["forward"]
    assert "achieved" in d


def test_tutorial_baseline_smoke(tmp_path):
    d = run("tutorial_baseline.py", tmp_path=tmp_path)
    assert d["loop_images_per_s"] > 0
    assert d["portacnn_numpy_seed_cnn_train_images_per_s"]["median"] > 0


def test_bench_kernels_smoke(tmp_path):
    d = run("bench_kernels.py", tmp_path=tmp_path)
    want = {"conv 32->32 3x3 @28 (Winograd)", "batchnorm 32 @28", "maxpool 2 on 32 @28"}
    assert {c["kernel"] for c in d["cases"]} >= want
    for c in d["cases"]:
        assert c["compiled_ms"] > 0 and c["portable_ms"] > 0
    assert set(d["compile"]) == {"first_process_s", "second_process_s", "portable_s"}
