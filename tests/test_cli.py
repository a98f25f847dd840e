"""The ``portacnn`` command through ``python -m portacnn`` subprocesses: train, evaluate, predict, info,
exact resume, and usage errors (one line on stderr, exit 2, no traceback). Tiny IDX folders under tmp."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import numpy as np
import pytest
from clihelp import (assert_one_line_error, assert_same_state, assert_usage_error, float_subset, idx_folder,
                     last_json, run_cli, state_of, subset, write_csv, write_idx)  # fmt: skip

import portacnn as pc
from portacnn import cli
from portacnn.recipe import Recipe

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
    assert len(history["history"]["loss"]) == 2
    assert "val_accuracy" not in history["history"]  # no --val-split: the test set is scored once, at the end
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
    assert set(info["backends"]) == {"numpy", "cupy", "array_api_strict", "torch", "jax"}
    extras = info["deploy_and_scale_out"]
    assert set(extras) == {"onnx", "onnxruntime", "mpi4py", "mpiexec", "nccl"}
    for package in ("onnx", "onnxruntime", "mpi4py"):
        assert extras[package] == (importlib.metadata.version(package) if importlib.util.find_spec(package) else None)
    assert extras["nccl"] is None or info["backends"]["cupy"]["available"]
    text = run_cli("info").stdout
    assert "numpy" in text and "available" in text
    assert "deploy and scale out:" in text and f"mpi4py            {extras['mpi4py'] or 'not installed'}" in text
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


RECIPE = ["--optimizer", "adamw", "--weight-decay", "0.05", "--schedule", "onecycle", "--label-smoothing", "0.1",
          "--val-split", "0.25", "--early-stopping", "4", "--augment", "affine+erase"]


def test_recipe_flags_reach_the_run_and_its_checkpoint(data_dir, tmp_path):
    proc = run_cli("train", "--data", data_dir, "--limit", 128, "--batch-size", 16, "--epochs", 2, "--no-plots",
                   "--out", tmp_path / "o", *RECIPE)
    assert proc.returncode == 0, proc.stderr
    assert "128 images (full training set; 32 of them held out for validation)" in proc.stdout
    assert "adamw lr 0.001, onecycle schedule, label smoothing 0.1, affine+erase augmentation" in proc.stdout
    history = json.loads((tmp_path / "o" / "history.json").read_text())["history"]
    assert len(history["val_loss"]) == 2 and len(history["lr"]) == 2 and history["lr"][-1] < history["lr"][0] / 10  # annealed
    model = pc.load(tmp_path / "o" / "model.safetensors")
    extra = model.checkpoint["extra"]
    assert {k: extra[k] for k in ("optimizer", "weight_decay", "schedule", "label_smoothing", "val_split",
                                  "early_stopping", "lr", "augment")} == dict(
        optimizer="adamw", weight_decay=0.05, schedule="onecycle", label_smoothing=0.1, val_split=0.25, early_stopping=4,
        lr=1e-3, augment="affine+erase")
    groups = model.checkpoint["optimizer"]["param_groups"]  # no decay on biases
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_a_run_stopped_mid_schedule_resumes_bit_for_bit(data_dir, tmp_path, monkeypatch, capsys):
    """SIGTERM in the middle of epoch 2 of a one-cycle AdamW run with smoothing, a validation split and early
    stopping; --resume then ends with exactly the weights, history and learning rates of an unbroken run."""
    import os
    import signal

    common = ["train", "--data", str(data_dir), "--limit", "128", "--batch-size", "16", "--epochs", "3",
              "--no-plots", "--no-progress", "--workers", "1", "--seed", "2", *RECIPE]
    assert cli.main([*common, "--out", str(tmp_path / "full")]) == 0

    class Terminate(pc.callbacks.Callback):
        def on_train_batch_end(self, batch, logs):
            if logs["epoch"] == 1 and batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    make = Recipe.callbacks
    monkeypatch.setattr(Recipe, "callbacks", lambda *a: make(*a) + [Terminate()])
    assert cli.main([*common, "--out", str(tmp_path / "part")]) == 143
    monkeypatch.setattr(Recipe, "callbacks", make)
    saved = pc.load(tmp_path / "part" / "model.safetensors").checkpoint["train_state"]
    assert (saved["epoch"], saved["step"]) == (1, 3)
    assert cli.main(["train", "--resume", str(tmp_path / "part" / "model.safetensors"), "--data", str(data_dir),
                     "--no-plots", "--no-progress", "--workers", "1"]) == 0
    capsys.readouterr()
    assert_same_state(state_of(tmp_path / "part" / "model.safetensors"), state_of(tmp_path / "full" / "model.safetensors"))
    histories = [json.loads((tmp_path / run / "history.json").read_text())["history"] for run in ("full", "part")]
    assert histories[0] == histories[1] and len(histories[0]["lr"]) == 3


def test_kannada_bn_trains_with_its_own_recipe_unless_told(data_dir, tmp_path):
    proc = run_cli("train", "--model", "kannada_bn", "--data", data_dir, "--limit", 64, "--batch-size", 32, "--epochs", 1,
                   "--no-plots", "--out", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    assert "(full training set; 6 of them held out for validation), read as 1x28x28, scaled to [0, 1], 1 epoch, " \
           "batch 32, adamw lr 0.003, onecycle schedule, label smoothing 0.1, affine augmentation" in proc.stdout
    proc = run_cli("train", "--model", "kannada_bn", "--data", data_dir, "--limit", 64, "--batch-size", 32, "--epochs", 1,
                   "--no-plots", "--out", tmp_path / "b", "--augment", "none", "--optimizer", "adam", "--lr", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert "adam lr 0.01, onecycle schedule, label smoothing 0.1\n" in proc.stdout


def test_resume_keeps_the_schedule(data_dir, tmp_path):
    out = tmp_path / "o"
    proc = run_cli("train", "--data", data_dir, "--limit", 64, "--batch-size", 16, "--epochs", 1, "--no-plots",
                   "--out", out, "--schedule", "cosine")
    assert proc.returncode == 0, proc.stderr
    ckpt = out / "model.safetensors"
    assert_usage_error(run_cli("train", "--resume", ckpt, "--data", data_dir, "--lr", "0.01"), "drop --lr")
    assert_usage_error(run_cli("train", "--resume", ckpt, "--data", data_dir, "--epochs", 2),
                       "cosine schedule spans 1 epochs")
    assert_usage_error(run_cli("train", "--resume", ckpt, "--data", data_dir, "--schedule", "step"),
                       "that run used --schedule cosine")


def test_resume_of_a_run_saved_before_the_recipe_was_recorded(data_dir, tmp_path):
    """Its checkpoint names no optimizer in 'extra': the saved optimizer's own type and rate are the run's."""
    from portacnn import checkpoint

    out = tmp_path / "o"
    proc = run_cli("train", "--data", data_dir, "--limit", 64, "--batch-size", 16, "--epochs", 1, "--no-plots",
                   "--out", out, "--optimizer", "sgd", "--lr", "0.02")
    assert proc.returncode == 0, proc.stderr
    ckpt = out / "model.safetensors"
    model = pc.load(ckpt)
    info = model.checkpoint
    old = {k: info["extra"][k] for k in ("model", "epochs", "protocol", "limit", "data")}
    checkpoint.save(model, ckpt, optimizer=checkpoint.optimizer_from_checkpoint(model), train_state=info["train_state"],
                    extra=old)
    resumed = run_cli("train", "--resume", ckpt, "--data", data_dir, "--epochs", 2, "--no-plots")
    assert resumed.returncode == 0, resumed.stderr
    assert "sgd lr 0.02" in resumed.stdout
    extra = pc.load(ckpt).checkpoint["extra"]
    assert extra["optimizer"] == "sgd" and extra["lr"] == 0.02


# -- usage errors, in-process (fast) and through a real subprocess --------------------------------------------
BAD_FLAGS = [
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--backend", "tensorflow"], "invalid choice"),
    (["train", "--optimizer", "lamb"], "invalid choice"),
    (["train", "--schedule", "exponential"], "invalid choice"),
    (["train", "--label-smoothing", "1"], "--label-smoothing"),
    (["train", "--val-split", "-0.1"], "--val-split"),
    (["train", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "--early-stopping", "0"], "--early-stopping"),
    (["train", "--early-stopping", "3"], "--early-stopping watches the validation loss: give --val-split"),
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


def test_version_in_process_prints_the_package_version_and_exits_0(capsys):
    assert cli.main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"portacnn {pc.__version__}\n" and captured.err == ""
    assert pc.__version__.count(".") == 2 and all(part.isdigit() for part in pc.__version__.split("."))


def test_version_in_a_real_process():
    proc = run_cli("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"portacnn {pc.__version__}\n", "")


def test_unavailable_backend_is_a_one_line_error(run):
    out, _ = run
    if "cupy" in pc.available_backends():
        pytest.skip("cupy is usable here")
    assert_usage_error(run_cli("evaluate", out / "model.safetensors", "--backend", "cupy"), "cupy", "not usable")
