"""Ensembles: the averaged probabilities against a hand-computed mean, evaluate's loss and accuracy, the
members' checks, and ``portacnn evaluate A B`` / ``portacnn predict A B INPUTS`` in-process."""

import json

import numpy as np
import pytest
from clihelp import float_subset, idx_folder, trained_checkpoint

import portacnn as pc
from portacnn import cli
from portacnn.layers import Dense, Flatten


def _members(backends=("numpy", "numpy")):
    return [pc.models.seed_cnn(backend=b, seed=k, workers=1) for k, b in enumerate(backends)]


def test_probabilities_are_the_members_mean(rng):
    models = _members(("numpy", "array_api_strict")) + [pc.models.seed_cnn(dtype="float64", seed=7)]
    x = rng.random((9, 1, 28, 28)).astype(np.float32)
    ens = pc.Ensemble(models)
    expected = np.mean([np.asarray(m.predict_proba(x, batch_size=4), np.float64) for m in models], axis=0)
    got = ens.predict_proba(x, batch_size=4)
    assert got.dtype == np.float64 and got.shape == (9, 10)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=0)  # float32 members: log-softmax vs softmax rounding
    logs = [np.asarray(pc.training.predict_log_proba(m, x, batch_size=4), np.float64) for m in models]
    np.testing.assert_allclose(got, np.mean(np.exp(logs), axis=0), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(ens.predict(x), np.argmax(expected, axis=1))
    assert len(ens) == 3 and ens.num_classes() == 10


def test_evaluate_scores_the_average(rng):
    models = _members()
    x = rng.random((12, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 12)
    p = np.mean([np.asarray(m.predict_proba(x, batch_size=5), np.float64) for m in models], axis=0)
    r = pc.Ensemble(models).evaluate(x, y, batch_size=5)
    assert r["n"] == 12
    assert r["accuracy"] == np.mean(np.argmax(p, axis=1) == y)
    assert r["loss"] == pytest.approx(-np.mean(np.log(p[np.arange(12), y])), rel=1e-6)
    one = pc.Ensemble(models[:1]).evaluate(x, y)  # one member: its own figures
    own = models[0].evaluate(x, y)
    assert one["accuracy"] == own["accuracy"] and one["loss"] == pytest.approx(own["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="must lie in 0..9"):
        pc.Ensemble(models).evaluate(x, np.full(12, 10))


def test_a_confident_mistake_keeps_a_finite_loss(rng):
    """Logits so far apart that float32 probabilities underflow to 0: averaging in log space keeps the loss."""
    model = pc.Sequential([Flatten(), Dense(4, 3)], input_shape=(1, 2, 2), workers=1)
    state = model.state_dict()
    state["1.weight"] = np.array([[500, 0, 0, 0], [0, 0, 0, 0], [-500, 0, 0, 0]], np.float32)
    model.load_state_dict(state)
    x = np.ones((2, 1, 2, 2), np.float32)
    y = np.array([2, 0])
    own = model.evaluate(x, y)
    r = pc.Ensemble([model, model]).evaluate(x, y)
    assert np.isfinite(own["loss"]) and r["loss"] == pytest.approx(own["loss"], rel=1e-5)


def test_members_must_agree():
    with pytest.raises(ValueError, match="at least one model"):
        pc.Ensemble([])
    other = pc.Sequential([Flatten(), Dense(784, 3)])
    with pytest.raises(ValueError, match="same classes"):
        pc.Ensemble([pc.models.seed_cnn(), other])
    wide = pc.Sequential([Flatten(), Dense(1024, 10)], input_shape=(1, 32, 32))
    with pytest.raises(ValueError, match="same images"):
        pc.Ensemble([pc.models.seed_cnn(), wide])


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    return [trained_checkpoint(root / f"m{k}.safetensors", n=128, seed=k) for k in range(2)], root


def test_cli_evaluate_and_predict_with_two_models(two_checkpoints, capsys):
    paths, root = two_checkpoints
    data_dir = idx_folder(root / "data", n_train=32, n_test=40)
    assert cli.main(["evaluate", *map(str, paths), "--data", str(data_dir), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    models = [pc.load(p) for p in paths]
    x, y = float_subset("test", 40)
    expected = pc.Ensemble(models).evaluate(x, y)
    assert result["models"] == 2 and result["n"] == 40
    assert result["accuracy"] == expected["accuracy"] and result["loss"] == pytest.approx(expected["loss"], rel=1e-9)
    assert cli.main(["evaluate", *map(str, paths), "--data", str(data_dir)]) == 0
    assert "(ensemble of 2 models)" in capsys.readouterr().out
    idx = next(data_dir.glob("t10k-images*"))
    assert cli.main(["predict", *map(str, paths), str(idx), "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    np.testing.assert_array_equal([p["class"] for p in predictions], pc.Ensemble(models).predict(x))


def test_cli_refuses_models_that_cannot_form_an_ensemble(two_checkpoints, tmp_path, capsys):
    paths, _ = two_checkpoints
    pc.Sequential([Flatten(), Dense(784, 3)], input_shape=(1, 28, 28)).save(tmp_path / "three.safetensors")
    assert cli.main(["evaluate", str(paths[0]), str(tmp_path / "three.safetensors")]) == 2
    assert "cannot form an ensemble" in capsys.readouterr().err
    assert cli.main(["predict", str(paths[0]), str(paths[1])]) == 2
    assert "at least one input file" in capsys.readouterr().err
