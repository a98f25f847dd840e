"""The accuracy study's plumbing (benchmarks/accuracy/study.py --smoke): every run trains through the real
``portacnn train`` command, a finished run is reused rather than retrained, and the tables add up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portacnn as pc
from clihelp import idx_folder
from portacnn import data

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

    # a second call reuses the finished runs (nothing retrained), trains only the new seed, and scores every
    # subset of the seeds as an ensemble
    out, again = _study(tmp_path, "--seeds", "0", "1", "2", "--only", "recipe")
    assert "training recipe seed 2" in out
    assert "training recipe seed 0" not in out and "training recipe seed 1" not in out
    assert [r["reused"] for r in again["runs"]] == [True, True, False]
    assert [r["test"] for r in again["runs"][:2]] == [runs[("recipe", 0)]["test"], runs[("recipe", 1)]["test"]]
    assert [e["seeds"] for e in again["ensembles"]] == [[0, 1, 2], [0, 1], [0, 2], [1, 2]]
    sizes = again["ensemble_sizes"]
    assert [(z["members"], z["subsets"]) for z in sizes] == [(1, 3), (2, 3), (3, 1)]
    single = [r["test"]["accuracy"] for r in again["runs"]]
    assert (sizes[0]["min"], sizes[0]["max"]) == (min(single), max(single))
    pairs = [e["test"]["accuracy"] for e in again["ensembles"][1:]]
    assert sizes[1]["mean"] == pytest.approx(sum(pairs) / 3) and sizes[2]["min"] == again["ensembles"][0]["test"]["accuracy"]

    # each subset is scored as `portacnn evaluate A B ...` scores it: through pc.Ensemble of those checkpoints
    _, (x_test, y_test), _, _ = data.train_test(str(tmp_path / "data"), seed=0)
    folders = {r["seed"]: Path(r["folder"]) / "model.safetensors" for r in again["runs"]}
    for e in again["ensembles"]:
        ens = pc.Ensemble([pc.load(folders[s]) for s in e["seeds"]]).evaluate(x_test, np.asarray(y_test))
        assert e["test"]["accuracy"] == pytest.approx(ens["accuracy"], abs=1e-12)
        assert e["test"]["loss"] == pytest.approx(ens["loss"], rel=1e-9)
    md = (tmp_path / "results" / "results.md").read_text()
    assert "ensemble of the recipe's seeds 0+1+2" in md and "| 3 | 1 |" in md
