"""The accuracy study's plumbing (benchmarks/accuracy/study.py --smoke): every run trains through the real
``portacnn train`` command, a finished run is reused rather than retrained, and the tables add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clihelp import idx_folder

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "accuracy" / "study.py"
pytestmark = pytest.mark.slow


def _study(tmp_path, *args):
    env = {**os.environ, "PORTACNN_BENCH_RESULTS": str(tmp_path / "results")}
    cmd = [sys.executable, str(STUDY), "--smoke", "--runs", str(tmp_path / "runs"), "--data", str(tmp_path / "data"),
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads((tmp_path / "results" / "results.json").read_text())


def test_study_trains_every_ablation_and_scores_the_ensembles(tmp_path):
    idx_folder(tmp_path / "data", n_train=200, n_test=60)
    out, res = _study(tmp_path, "--seeds", "0", "1")
    runs = {(r["run"], r["seed"]): r for r in res["runs"]}
    assert set(runs) == {("recipe", 0), ("recipe", 1), ("no_augment", 0), ("no_batchnorm", 0), ("no_schedule", 0),
                         ("no_smoothing", 0)}
    assert runs[("no_batchnorm", 0)]["network"] == "kannada_nobn"
    assert runs[("no_augment", 0)]["flags"] == ["--augment", "none"]
    for r in res["runs"]:
        assert not r["reused"] and r["epochs"] == 1 and r["train_seconds"] > 0
        t = r["test"]
        assert t["errors"] == sum(t["errors_per_class"]) == round((1 - t["accuracy"]) * res["n_test"])
        ckpt = json.loads((Path(r["folder"]) / "history.json").read_text())
        assert not ckpt["interrupted"]
    assert res["n_test"] == 60
    assert [e["seeds"] for e in res["ensembles"]] == [[0, 1]]
    md = (tmp_path / "results" / "results.md").read_text()
    assert "no BatchNorm" in md and "ensemble of the recipe's seeds 0+1" in md and "mean nothing" in md

    # a second call reuses the finished runs (nothing retrained) and scores them the same way
    out, again = _study(tmp_path, "--seeds", "0", "1", "--only", "recipe")
    assert "training" not in out
    assert [r["reused"] for r in again["runs"]] == [True, True]
    assert [r["test"] for r in again["runs"]] == [runs[("recipe", 0)]["test"], runs[("recipe", 1)]["test"]]
