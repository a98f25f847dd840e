"""The ``portacnn`` command through ``python -m portacnn`` subprocesses: train, evaluate, predict, info,
exact resume, and usage errors (one line on stderr, exit 2, no traceback). Tiny IDX folders under tmp."""

from __future__ import annotations

import json

import numpy as np
import pytest
from clihelp import (assert_one_line_error, assert_same_state, assert_usage_error, float_subset, idx_folder,
                     last_json, run_cli, state_of, subset, write_csv, write_idx)  # fmt: skip

import portacnn as pc
from portacnn import cli

pytestmark = pytest.mark.slow  # the command line in subprocesses, with real training runs: run by .ci/run, not by a plain pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return idx_folder(tmp_path_factory.mktemp("data"), n_train=256, n_test=100)


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """One real training run (2 epochs, with plots), shared by the tests that need a trained model."""
    out = tmp_path_factory.mktemp("run") / "out"
    proc = run_cli("train", "--data", data_dir, "--epochs", 2, "--batch-size", 32, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_train_writes_model_history_plots_and_json(run, data_dir):
    out, proc = run
    result = last_json(proc.stdout)
    assert {"test_accuracy", "test_loss", "epochs", "model"} <= set(result)
    assert result["epochs"] == 2 and result["n_train"] == 256 and result["n_test"] == 100
    assert result["model"] == str(out / "model.safetensors")
    history = json.loads((out / "history.json").read_text())
    assert len(history["history"]["loss"]) == 2 and len(history["history"]["val_accuracy"]) == 2
    for name in ("curves.png", "confusion.png", "filters.png", "samples.png", "mistakes.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    # the reported test accuracy is what the saved model scores on the test split
    model = pc.load(out / "model.safetensors")
    xt, yt = float_subset("test", 100)
    ev = model.evaluate(xt, yt)
    assert result["test_accuracy"] == ev["accuracy"] and result["test_loss"] == pytest.approx(ev["loss"], rel=1e-6)
    assert model.checkpoint["extra"]["model"] == "seed_cnn"  # the canonical name, whatever alias the command line was given


def test_train_text_output_prints_final_test_accuracy(data_dir, tmp_path):
    proc = run_cli("train", "--data", data_dir, "--limit", 64, "--epochs", 1, "--out", tmp_path / "o", "--no-plots",
                   "--optimizer", "sgd", "--lr", "0.05")
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1:" in proc.stdout and "test accuracy" in proc.stdout
    assert "64 images" in proc.stdout and proc.stderr.strip() == ""
    assert pc.load(tmp_path / "o" / "model.safetensors").checkpoint["optimizer"]["type"] == "sgd"


def test_train_with_workers_matches_one_thread(data_dir, tmp_path):
    """--workers 2 splits every batch across two threads: the same run up to float rounding."""
    results = {}
    for w in ("1", "2"):
        proc = run_cli("train", "--data", data_dir, "--model", "lenet5", "--limit", 128, "--epochs", 1,
                       "--batch-size", 64, "--workers", w, "--out", tmp_path / w, "--no-plots", "--json")
        assert proc.returncode == 0, proc.stderr
        results[w] = last_json(proc.stdout)
    assert results["2"]["test_loss"] == pytest.approx(results["1"]["test_loss"], rel=1e-4)
    one, two = state_of(tmp_path / "1" / "model.safetensors"), state_of(tmp_path / "2" / "model.safetensors")
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_evaluate_json_on_a_folder_of_any_prefix(run, tmp_path):
    out, _ = run
    folder = tmp_path / "mine"
    folder.mkdir()
    x, y = subset("test", 100)
    write_idx(folder / "kannada_images_v2.idx", x)
    write_idx(folder / "kannada_labels_v2.idx", y)
    (folder / "README.txt").write_text("ignored")
    proc = run_cli("evaluate", out / "model.safetensors", "--data", folder, "--json", "--batch-size", 30)
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert set(result) >= {"accuracy", "loss", "n"} and result["n"] == 100
    ev = pc.load(out / "model.safetensors").evaluate(pc.data.preprocess(x), y)
    assert result["accuracy"] == ev["accuracy"] and result["loss"] == pytest.approx(ev["loss"], rel=1e-5)


def test_evaluate_on_csv_with_crlf_and_blank_lines_and_on_npz(run, tmp_path):
    out, _ = run
    x, y = subset("test", 40)
    ev = pc.load(out / "model.safetensors").evaluate(pc.data.preprocess(x), y)
    write_csv(tmp_path / "t.csv", x, y, crlf=True, blank_lines=True)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    for f in ("t.csv", "t.npz"):
        proc = run_cli("evaluate", out / "model.safetensors", "--data", tmp_path / f, "--json")
        assert proc.returncode == 0, proc.stderr
        assert last_json(proc.stdout)["n"] == 40 and last_json(proc.stdout)["accuracy"] == ev["accuracy"]


def test_predict_png_jpeg_idx_and_csv_match_model_predict(run, tmp_path):
    from PIL import Image

    out, _ = run
    model = pc.load(out / "model.safetensors")
    x, _ = subset("test", 6)
    pngs, jpgs = [], []
    for i, img in enumerate(x):
        pngs.append(tmp_path / f"digit{i}.png")
        Image.fromarray(img, mode="L").save(pngs[-1])
        jpgs.append(tmp_path / f"digit{i}.jpg")
        Image.fromarray(img, mode="L").save(jpgs[-1], quality=95)
    write_idx(tmp_path / "few-images-idx3-ubyte", x)
    write_csv(tmp_path / "few.csv", x)  # test layout: id column, no labels
    inputs = [*pngs, *jpgs, tmp_path / "few-images-idx3-ubyte", tmp_path / "few.csv"]
    proc = run_cli("predict", out / "model.safetensors", *inputs, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = last_json(proc.stdout)["predictions"]
    assert len(rows) == 24
    by_input = {r["input"]: r for r in rows}
    want = model.predict(pc.data.preprocess(x))
    jpeg_pixels = np.stack([np.asarray(Image.open(p).convert("L")) for p in jpgs])
    want_jpeg = model.predict(pc.data.preprocess(jpeg_pixels))
    proba = model.predict_proba(pc.data.preprocess(x))
    for i in range(6):
        assert by_input[str(pngs[i])]["class"] == want[i]
        assert by_input[str(pngs[i])]["probability"] == pytest.approx(float(proba[i, want[i]]), rel=1e-5)
        assert by_input[str(jpgs[i])]["class"] == want_jpeg[i]
        assert by_input[f"{tmp_path / 'few-images-idx3-ubyte'}[{i}]"]["class"] == want[i]
        assert by_input[f"{tmp_path / 'few.csv'}[{i}]"]["class"] == want[i]
    # text output and --invert (dark digit on white)
    Image.fromarray(255 - x[0], mode="L").save(tmp_path / "inverted.png")
    proc = run_cli("predict", out / "model.safetensors", tmp_path / "inverted.png", "--invert")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(f"{tmp_path / 'inverted.png'}: {want[0]} (")


def test_info_lists_backends_and_reasons():
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = last_json(proc.stdout)
    assert info["portacnn"] == pc.__version__ and info["backends"]["numpy"]["available"]
    for name, entry in info["backends"].items():
        assert entry["available"] or entry["reason"], name
    assert set(info["backends"]) == {"numpy", "cupy", "array_api_strict", "torch"}
    text = run_cli("info").stdout
    assert "numpy" in text and "available" in text
    if not info["backends"]["cupy"]["available"]:
        assert "cupy" in text and "unavailable:" in text


def test_resume_via_cli_is_bit_for_bit(data_dir, tmp_path):
    common = ["--data", data_dir, "--limit", 96, "--batch-size", 16, "--no-plots", "--json", "--seed", 3,
              "--checkpoint-every", 1]
    full = run_cli("train", *common, "--epochs", 3, "--out", tmp_path / "full")
    part = run_cli("train", *common, "--epochs", 2, "--out", tmp_path / "part")
    assert full.returncode == 0 and part.returncode == 0, full.stderr + part.stderr
    # --resume remembers limit, seed and batch size (data files must be named again: a checkpoint never chooses
    # what is opened); the output folder defaults to the checkpoint's
    resumed = run_cli("train", "--resume", tmp_path / "part" / "model.safetensors", "--data", data_dir,
                      "--epochs", 3, "--json", "--no-plots")
    assert resumed.returncode == 0, resumed.stderr
    assert last_json(resumed.stdout)["n_train"] == 96
    assert_same_state(state_of(tmp_path / "part" / "model.safetensors"), state_of(tmp_path / "full" / "model.safetensors"))
    h_full = json.loads((tmp_path / "full" / "history.json").read_text())["history"]
    h_res = json.loads((tmp_path / "part" / "history.json").read_text())["history"]
    assert h_full == h_res


# -- usage errors, in-process (fast) and through a real subprocess --------------------------------------------
BAD_FLAGS = [
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--backend", "tensorflow"], "invalid choice"),
    (["train", "--optimizer", "rmsprop"], "invalid choice"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-3"], "--epochs"),
    (["train", "--epochs", "two"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "--limit", "0"], "--limit"),
    (["train", "--frobnicate"], "unrecognized"),
    (["fly"], "invalid choice"),
    ([], "required"),
    (["evaluate"], "required"),
    (["predict", "m.safetensors"], "required"),
    (["evaluate", "m.safetensors", "--batch-size", "-5"], "--batch-size"),
    (["train", "--workers", "0"], "--workers"),
    (["evaluate", "m.safetensors", "--workers", "many"], "--workers"),
]


@pytest.mark.parametrize("argv, fragment", BAD_FLAGS, ids=[" ".join(a) or "nothing" for a, _ in BAD_FLAGS])
def test_bad_flags_are_one_line_usage_errors(argv, fragment, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, "portacnn: error:", fragment)
    assert captured.out == ""


@pytest.mark.parametrize("argv, fragment", [BAD_FLAGS[0], BAD_FLAGS[4], BAD_FLAGS[14]])
def test_bad_flags_in_a_real_process(argv, fragment):
    assert_usage_error(run_cli(*argv), fragment)


def test_unavailable_backend_is_a_one_line_error(run):
    out, _ = run
    if "cupy" in pc.available_backends():
        pytest.skip("cupy is usable here")
    assert_usage_error(run_cli("evaluate", out / "model.safetensors", "--backend", "cupy"), "cupy", "not usable")
