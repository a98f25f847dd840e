"""Paths at the command line, in-process and quick: a folder where a file is expected says it is a folder; an
output whose folder is missing is named (never a hidden temporary file) before any work; a refused ``train``
leaves no empty ``--out`` (nor ``runs/<timestamp>``) behind, and RunFolder removes only the empty folders it made.
Every error: exit 2, one line on stderr."""

from __future__ import annotations

import os

import pytest
from clihelp import assert_one_line_error, idx_folder, tiny_model

import portacnn as pc
from portacnn import cli
from portacnn.run_folder import LOCK_NAME, RunFolder, RunFolderError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return idx_folder(tmp_path_factory.mktemp("data"), n_train=64, n_test=20)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    tiny_model().save(path)
    return path


def cli_error(capsys, argv, *fragments):
    assert cli.main([str(a) for a in argv]) == 2
    line = assert_one_line_error(capsys.readouterr().err, "portacnn: error:", *fragments)
    assert ".tmp" not in line, line
    return line


def _places(tmp_path):
    (tmp_path / "afolder").mkdir()
    (tmp_path / "afile.png").write_bytes(b"not read")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"folder": (tmp_path / "afolder", "is a folder, not"),
            "missing": (tmp_path / "absent.png", "no such file"),
            "fifo": (fifo, "is not a regular file")}


# -- inputs ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", ["folder", "missing", "fifo"])
def test_predict_says_what_an_input_is_instead_of_a_file(tmp_path, capsys, model_path, kind):
    path, fragment = _places(tmp_path)[kind]
    if kind == "folder":  # a folder is an input (its images), but this one has none
        fragment = "a folder without image files"
    line = cli_error(capsys, ["predict", model_path, path], str(path), fragment)
    if kind == "folder":
        assert "no such file" not in line and ".png" in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("kind", ["folder", "missing", "fifo"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "resume"])
def test_a_checkpoint_argument_that_is_not_a_file(tmp_path, capsys, model_path, command, kind):
    path, fragment = _places(tmp_path)[kind]
    argv = {"evaluate": ["evaluate", path], "predict": ["predict", path, tmp_path / "afile.png"],
            "export": ["export", path, tmp_path / "out.onnx"], "resume": ["train", "--resume", path]}[command]
    line = cli_error(capsys, argv, str(path), fragment)
    if kind == "folder":
        assert "checkpoint file" in line
    assert not (tmp_path / "out.onnx").exists()


# -- outputs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("output, fragments", [
    ("nope/out.onnx", ["nope/out.onnx", "folder nope", "does not exist"]),
    ("a/b/out.onnx", ["a/b/out.onnx", "does not exist", "a is missing"]),
    ("afolder", ["afolder", "is a folder"]),
    ("afile.png/out.onnx", ["afile.png", "is not a folder"]),
])
def test_export_names_an_output_it_cannot_write_before_converting(tmp_path, monkeypatch, capsys, model_path, output,
                                                                  fragments):
    monkeypatch.chdir(tmp_path)
    _places(tmp_path)
    converted = []
    from portacnn import export

    monkeypatch.setattr(export, "export_checkpoint", lambda *a, **k: converted.append(a))
    cli_error(capsys, ["export", model_path, output], *fragments)
    assert converted == []  # refused before any work
    assert not (tmp_path / "nope").exists() and not (tmp_path / "a").exists()


# -- a refused train leaves no folder -------------------------------------------------------------------------
REFUSED = [
    (["--limit", 2, "--val-split", 0.9], "leaves no training images out of 2"),
    (["--limit", 64, "--val-split", 0.999], "leaves no training images out of 64"),
    (["--limit", 1, "--val-split", 0.5], "leaves no training images out of 1"),
    (["--limit", 10, "--val-split", 0.96, "--schedule", "onecycle"], "leaves no training images out of 10"),
]


@pytest.mark.parametrize("out", ["D", "D/sub/deeper", None], ids=["out", "out-with-missing-parents", "default-out"])
@pytest.mark.parametrize("flags, fragment", REFUSED, ids=[" ".join(map(str, f)) for f, _ in REFUSED])
def test_a_refused_run_leaves_no_output_folder(tmp_path, monkeypatch, capsys, data_dir, flags, fragment, out):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", data_dir, "--epochs", 1, "--no-plots", *flags] + (["--out", out] if out else [])
    cli_error(capsys, argv, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["runs"])  # runs/ itself may stay (shared by all runs)
    assert not any((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else True


@pytest.mark.parametrize("out", ["D", "D/sub", None], ids=["out", "out-with-missing-parents", "default-out"])
def test_a_run_failing_after_the_claim_removes_the_folders_it_made(tmp_path, monkeypatch, capsys, data_dir, out):
    """The root fix: whatever fails once the folder is claimed (here: fit refuses), the folders the claim made
    are removed while they are empty."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise ValueError("refused for the test")

    monkeypatch.setattr(pc.Sequential, "fit", refuse)
    cli_error(capsys, ["train", "--data", data_dir, "--epochs", 1, "--no-plots", "--limit", 16]
              + (["--out", out] if out else []), "refused for the test")
    assert not (tmp_path / "D").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_folder_that_held_a_run_or_existed_is_never_removed(tmp_path, capsys, data_dir):
    existing = tmp_path / "existing"
    existing.mkdir()
    cli_error(capsys, ["train", "--data", data_dir, "--epochs", 1, "--limit", 2, "--val-split", 0.9, "--out", existing],
              "leaves no training images")
    assert existing.is_dir()  # not made by the run: kept, empty as it was
    held = tmp_path / "held"
    held.mkdir()
    (held / "history.json").write_text("{}")
    cli_error(capsys, ["train", "--data", data_dir, "--epochs", 1, "--limit", 16, "--out", held], "already holds a run")
    assert (held / "history.json").read_text() == "{}" and not (held / LOCK_NAME).exists()


# -- RunFolder itself -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("made", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
def test_run_folder_removes_the_empty_folders_it_made(tmp_path, depth, made):
    out = tmp_path.joinpath(*[f"d{i}" for i in range(depth)])
    if made:  # e.g. cli's runs/<timestamp>: made for the claim before it
        out.mkdir(parents=True)
    with RunFolder(out, made=made) as folder:
        assert folder.path.is_dir() and (out / LOCK_NAME).is_file()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == ([tmp_path / "d0"] if made and depth > 1 else [])


def test_run_folder_keeps_what_holds_anything_and_what_it_did_not_make(tmp_path):
    out = tmp_path / "a" / "b"
    with RunFolder(out):
        (out / "model.safetensors").write_bytes(b"x")
    assert (out / "model.safetensors").is_file()  # a run's file keeps its folder and the parents
    (out / "model.safetensors").unlink()
    with RunFolder(out, overwrite=True):
        pass
    assert out.is_dir()  # it existed before this claim: never removed
    with pytest.raises(RunFolderError, match="already holds a run"):
        (out / "history.json").write_text("{}")
        RunFolder(out).__enter__()
    assert (out / "history.json").is_file()


def test_run_folder_refused_under_a_file_makes_nothing(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunFolderError, match="not writable"):
        RunFolder(tmp_path / "afile" / "new" / "run").__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_run_folder_failing_after_making_its_folders_removes_them(tmp_path, monkeypatch):
    def fail(self):
        raise RunFolderError("could not lock (for the test)")

    monkeypatch.setattr(RunFolder, "_lock", fail)
    with pytest.raises(RunFolderError, match="for the test"):
        RunFolder(tmp_path / "a" / "b" / "c").__enter__()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["model", "image", "in folder"])
def test_predict_csv_never_overwrites_the_checkpoint_or_an_input(tmp_path, capsys, model_path, target):
    from PIL import Image

    model = tmp_path / "m.safetensors"
    model.write_bytes(model_path.read_bytes())
    (tmp_path / "imgs").mkdir()
    image = tmp_path / "imgs" / "a.png"
    Image.new("L", (28, 28)).save(image)
    inputs = [tmp_path / "imgs"] if target == "in folder" else [image]
    csv_path = model if target == "model" else image
    before = csv_path.read_bytes()
    cli_error(capsys, ["predict", model, *inputs, "--csv", csv_path], "--csv would overwrite", "give another name")
    assert csv_path.read_bytes() == before


@pytest.mark.parametrize("data", ["cifar.bin", "grey.npz", "embedded"])
def test_evaluate_says_what_the_model_reads_of_data_it_does_not_resize(tmp_path, capsys, data):
    """Data other than an image folder are never resized or converted for a model: the error says what the model
    reads (not a size= or channels= the user never gave)."""
    import numpy as np

    from portacnn.preprocessing import Preprocessing

    layers = [pc.layers.Conv2D(3, 2, 3), pc.layers.ReLU(), pc.layers.Flatten(), pc.layers.Dense(200, 3)]
    model = pc.Sequential(layers)
    model.preprocessing = Preprocessing(3, (12, 12))
    model.save(tmp_path / "m.safetensors")
    rng = np.random.default_rng(0)
    if data == "cifar.bin":
        records = np.concatenate([np.zeros((4, 1), np.uint8), rng.integers(0, 256, (4, 3072), dtype=np.uint8)], 1)
        (tmp_path / data).write_bytes(records.tobytes())
        fragment = "the model reads 12x12"
    elif data == "grey.npz":
        x, y = rng.integers(0, 256, (4, 12, 12), dtype=np.uint8), np.zeros(4, np.int64)
        np.savez(tmp_path / data, x_train=x, y_train=y, x_test=x, y_test=y)
        fragment = "the model reads 3-channel colour images"
    else:
        fragment = "the model reads 3-channel colour images"
    where = [] if data == "embedded" else ["--data", tmp_path / data]
    line = cli_error(capsys, ["evaluate", tmp_path / "m.safetensors", *where], fragment)
    assert "asked for" not in line and "drop " not in line


def test_evaluate_on_labels_beyond_the_models_classes_names_the_data(tmp_path, capsys, model_path):
    import numpy as np

    x = np.zeros((4, 28, 28), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(4), x_test=x, y_test=np.arange(4) + 8)
    line = cli_error(capsys, ["evaluate", model_path, "--data", tmp_path / "d.npz"],
                     "d.npz: its labels run from 8 to 11", "the model has 10 classes")
    assert "y must" not in line
