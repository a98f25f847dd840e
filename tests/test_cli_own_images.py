"""The command line on your own images: a folder of colour classes and a CIFAR-10 binary file train, evaluate and
predict with their class names; predict questions what it should question; --csv writes id,label rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from clihelp import assert_one_line_error, float_subset, kannada

import portacnn as pc
from portacnn import cli

pytestmark = pytest.mark.slow  # real training runs through the command line: run by .ci/run, not by a plain pytest

CLASSES = ["circle", "cross", "square"]  # sorted, as the folder reader orders them


def _shape(k, rng, side=12):
    """A bright shape of class ``k`` in a random colour on a dark, slightly noisy background (H, W, 3)."""
    a = np.zeros((side, side, 3), np.int64)
    colour = rng.integers(120, 256, 3)
    c = side // 2
    if k == 0:
        yy, xx = np.mgrid[:side, :side]
        a[(yy - c) ** 2 + (xx - c) ** 2 < (side // 3) ** 2] = colour
    elif k == 1:
        a[c - 1:c + 1, 2:-2] = colour
        a[2:-2, c - 1:c + 1] = colour
    else:
        a[3:-3, 3:-3] = colour
    return np.clip(a + rng.integers(0, 25, a.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """shapes/{train,test}/<class>/*.png, 12x12 RGB."""
    from PIL import Image

    root = tmp_path_factory.mktemp("own") / "shapes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_shape(k, rng)).save(root / split / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--data", str(shapes), "--model", "seed_cnn", "--epochs", "12", "--lr", "0.01",
                     "--batch-size", "16", "--out", str(out), "--overwrite", "--no-progress", "--no-plots",
                     "--json"]) == 0
    return out


def test_a_folder_of_colour_classes_trains_with_its_names_and_preprocessing(trained, shapes, capsys):
    model = pc.load(trained / "model.safetensors")
    assert model.class_names == CLASSES and model.input_shape == (3, 12, 12)
    assert model.preprocessing.channels == 3 and model.preprocessing.size == (12, 12)
    assert model.num_classes() == 3
    # the model reads the raw test images itself, as the CLI evaluated them
    x, y, _ = pc.data.load_image_folder(shapes, "test")
    assert model.evaluate(x, y)["accuracy"] >= 0.9


def test_evaluate_matches_a_folders_classes_to_the_models_by_name(trained, shapes, tmp_path, capsys):
    assert cli.main(["evaluate", str(trained / "model.safetensors"), "--data", str(shapes / "test"), "--json"]) == 0
    full = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert full["n"] == 18 and full["accuracy"] >= 0.9
    # two of the classes, in a folder whose sorted order differs from the model's: matched by name
    import shutil

    sub = tmp_path / "sub"
    for name in ("square", "circle"):
        shutil.copytree(shapes / "test" / name, sub / name)
    assert cli.main(["evaluate", str(trained / "model.safetensors"), "--data", str(sub), "--json"]) == 0
    part = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert part["n"] == 12 and part["accuracy"] >= 0.9  # mapped wrongly (by position) it would score ~0
    shutil.copytree(shapes / "test" / "cross", sub / "triangle")
    assert cli.main(["evaluate", str(trained / "model.safetensors"), "--data", str(sub)]) == 2
    assert_one_line_error(capsys.readouterr().err, "class 'triangle' is not one of the model's classes")


def test_predict_on_a_folder_names_classes_in_sorted_order_and_writes_csv(trained, shapes, tmp_path, capsys):
    target = tmp_path / "predictions.csv"
    assert cli.main(["predict", str(trained / "model.safetensors"), str(shapes / "test"), "--csv", str(target)]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = sorted((shapes / "test").rglob("*.png"), key=lambda p: p.relative_to(shapes / "test").as_posix())
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in files]
    said = [line.split(": ")[1].split(" (")[0] for line in lines]
    truth = [p.parent.name for p in files]
    assert np.mean([a == b for a, b in zip(said, truth)]) >= 0.9
    rows = list(csv.reader(target.open()))
    assert rows[0] == ["id", "label"] and rows[1:] == [[str(p), s] for p, s in zip(files, said)]


def test_a_cifar10_binary_file_trains(tmp_path, capsys):
    """Made in the test: CIFAR-10 records whose class is the brightest plane (R, G or B), with the meta file."""
    rng = np.random.default_rng(1)
    n = 240
    labels = np.arange(n) % 3
    planes = rng.integers(0, 60, (n, 3, 32, 32))
    planes[np.arange(n), labels] += 150
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    names = ["red", "green", "blue", "d", "e", "f", "g", "h", "i", "j"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n")
    for name, rows in (("data_batch_1.bin", slice(0, 200)), ("test_batch.bin", slice(200, n))):
        records = np.concatenate([labels[rows, None], planes[rows].reshape(-1, 3072)], axis=1).astype(np.uint8)
        (folder / name).write_bytes(records.tobytes())
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(folder / "data_batch_1.bin"), "--model", "seed_cnn", "--epochs", "6",
                     "--lr", "0.01", "--batch-size", "16", "--out", str(out), "--no-progress", "--no-plots", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    model = pc.load(out / "model.safetensors")
    assert model.input_shape == (3, 32, 32) and result["test_accuracy"] >= 0.9
    # the folder: its test batch and names; resnet20's recipe normalises per channel
    assert cli.main(["train", "--data", str(folder), "--model", "resnet20", "--epochs", "1", "--limit", "32",
                     "--batch-size", "16", "--out", str(tmp_path / "r20"), "--no-progress", "--no-plots"]) == 0
    r20 = pc.load(tmp_path / "r20" / "model.safetensors")
    assert r20.class_names == names and r20.preprocessing.mean is not None and r20.num_classes() == 10
    assert "read as 3x32x32, scaled to [0, 1], normalised per channel" in capsys.readouterr().out


@pytest.fixture(scope="module")
def kannada_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("kan") / "model.safetensors"
    x, y = float_subset("train", 2000)
    model = pc.models.seed_cnn()
    model.preprocessing = pc.Preprocessing.from_images(kannada("train")[0][:2000])
    model.fit(x, y, epochs=2, batch_size=64, progress=False)
    model.save(out)
    return out


def test_the_three_predict_cases_get_a_warning_or_a_message(kannada_model, tmp_path, capsys):
    from PIL import Image

    digit = kannada("test")[0][0]
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    Image.fromarray(255 - digit).save(tmp_path / "dark.png")
    Image.fromarray(digit).resize((200, 200)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((40, 120), np.uint8)).save(tmp_path / "strip.png")
    assert cli.main(["predict", str(kannada_model), *(str(tmp_path / f) for f in ("noise.png", "dark.png", "big.png"))]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "colour image(s) read as greyscale" in err and "noise.png" in err
    assert "reversed polarity" in err and "dark.png)" in err and "--invert" in err
    assert "unlike anything it was trained on" in err and "noise.png)" in err
    assert "resized to the 28x28" in err and "big.png 200x200" in err
    assert len(captured.out.splitlines()) == 3
    assert cli.main(["predict", str(kannada_model), str(tmp_path / "strip.png")]) == 2
    assert_one_line_error(capsys.readouterr().err, "strip.png", "120x40", "--resize stretch, pad or crop")
    assert cli.main(["predict", str(kannada_model), str(tmp_path / "dark.png"), "--invert"]) == 0
    assert "warning" not in capsys.readouterr().err  # inverted, it is like the training images


def test_predict_csv_takes_a_kaggle_files_ids(kannada_model, tmp_path, capsys):
    from clihelp import write_csv

    images = kannada("test")[0][:5]
    source = tmp_path / "test.csv"
    write_csv(source, images)  # the test layout: id,pixel0,...
    target = tmp_path / "submission.csv"
    assert cli.main(["predict", str(kannada_model), str(source), "--csv", str(target)]) == 0
    assert f"wrote 5 predictions to {target}" in capsys.readouterr().err
    rows = list(csv.reader(target.open()))
    assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(5)]
    model = pc.load(kannada_model)
    assert [int(r[1]) for r in rows[1:]] == model.predict(images).tolist()
    assert cli.main(["predict", str(kannada_model), str(source), "--csv", str(tmp_path / "no" / "x.csv")]) == 2
    assert_one_line_error(capsys.readouterr().err, "x.csv")


def test_evaluate_reads_a_folder_as_predict_does_and_scores_one_class(trained, shapes, tmp_path, capsys):
    """Images of another size are resized out loud (or refused for their aspect), and one class is enough."""
    from PIL import Image

    one = tmp_path / "one" / "square"
    one.mkdir(parents=True)
    for k, p in enumerate(sorted((shapes / "test" / "square").glob("*.png"))):
        Image.open(p).resize((24, 24)).save(one / f"{k}.png")
    assert cli.main(["evaluate", str(trained / "model.safetensors"), "--data", str(tmp_path / "one"), "--json"]) == 0
    captured = capsys.readouterr()
    assert "resized to the 12x12 the model reads" in captured.err
    assert json.loads(captured.out.splitlines()[-1])["n"] == 6
    Image.open(next(one.glob("*.png"))).resize((36, 12)).save(one / "wide.png")
    assert cli.main(["evaluate", str(trained / "model.safetensors"), "--data", str(tmp_path / "one")]) == 2
    assert_one_line_error(capsys.readouterr().err, "wide.png", "--resize stretch, pad or crop")
    assert cli.main(["evaluate", str(trained / "model.safetensors"), "--data", str(tmp_path / "one"),
                     "--resize", "crop"]) == 0
