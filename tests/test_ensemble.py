"""Ensembles: the averaged probabilities against a hand-computed mean, evaluate's loss and accuracy, the
members' checks, and ``portacnn evaluate A B`` / ``portacnn predict A B INPUTS`` in-process."""

import json

import numpy as np
import pytest
from clihelp import float_subset, idx_folder, trained_checkpoint

import portacnn as pc
from portacnn import cli
from portacnn import layers as L
from portacnn.ensemble import EnsembleError
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


# -- hostile members: each named by its index, in one short line --------------------------------------------
def _good(k=0):
    return pc.models.seed_cnn(seed=k, workers=1)


def _with_input_shape(model, shape):
    """A model whose input_shape was set after construction (the constructor refuses a shape its layers do not
    take; the attribute itself can still be assigned)."""
    model.input_shape = shape
    return model


BAD = {  # kind -> (make the bad member, what the message says about it)
    "str": (lambda: "x", r"is a str \('x'\), not a portacnn model"),
    "None": (lambda: None, r"is a NoneType \(None\), not a portacnn model"),
    "int": (lambda: 3, "is a int"),
    "layer": (lambda: Dense(784, 10), r"is a Dense \(Dense\(in_features=784.*\), not a portacnn model"),
    "list of layers": (lambda: [Flatten(), Dense(784, 10)], "is a list"),
    "ensemble": (lambda: pc.Ensemble([_good()]), "is a Ensemble"),
    "array": (lambda: np.zeros(3), "is a ndarray"),
    "the class": (lambda: pc.Sequential, "is a type"),
    "other classes": (lambda: pc.Sequential([Flatten(), Dense(784, 3)], input_shape=(1, 28, 28)),
                      r"predicts 3 classes but member \d+ predicts 10; every member must predict the same classes"),
    "no Dense": (lambda: pc.Sequential([Flatten()], input_shape=(1, 28, 28)),
                 r"gives \(784,\) per image, not 10 class scores"),
    "other input shape": (lambda: pc.Sequential([Flatten(), Dense(1024, 10)], input_shape=(1, 32, 32)),
                          r"reads images of shape \(1, 32, 32\) but member \d+ reads \(1, 28, 28\)"),
    "layers unfit for the images": (lambda: pc.Sequential([Flatten(), Dense(1024, 10)]),
                                    r"cannot read the \(1, 28, 28\) images member \d+ reads: layer 1 \(Dense\) "
                                    "expects 1024 features but gets 784"),
    "three channels": (lambda: pc.Sequential([L.Conv2D(3, 4, 3), L.GlobalAvgPool2D(), Dense(4, 10)]),
                       r"cannot read .* reads: layer 0 \(Conv2D\) expects 3 input channels but gets 1"),
    "own input shape unfit": (lambda: _with_input_shape(pc.Sequential([Flatten(), Dense(784, 10)]), (1, 28, 29)),
                              r"reads images of shape \(1, 28, 29\)"),
}


@pytest.mark.parametrize("size, where", [(3, 0), (3, 2), (7, 3), (40, 0), (40, 17), (40, 39)])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_member_is_named_by_its_index_in_one_short_line(kind, size, where):
    good = _good()
    make, says = BAD[kind]
    members = [good] * size
    members[where] = make()
    with pytest.raises(ValueError, match=rf"^Ensemble member {where} {says}") as e:
        pc.Ensemble(members)
    message = str(e.value)
    assert "\n" not in message and len(message) < 200, message
    assert isinstance(e.value, EnsembleError) and e.value.member == where
    assert len(pc.Ensemble([good] * size)) == size  # the same ensemble without the bad member forms


def test_members_without_input_shapes_must_read_the_same_channels():
    one = pc.Sequential([L.Conv2D(1, 4, 3), L.GlobalAvgPool2D(), Dense(4, 10)])
    three = pc.Sequential([L.Conv2D(3, 4, 3), L.GlobalAvgPool2D(), Dense(4, 10)])
    with pytest.raises(EnsembleError, match="member 2 reads 3-channel images but member 0 reads 1-channel ones") as e:
        pc.Ensemble([one, one, three])
    assert e.value.member == 2
    assert len(pc.Ensemble([one, pc.Sequential([L.ReLU(), L.Flatten(), Dense(16, 10)])])) == 2  # no channels: any


@pytest.mark.parametrize("models, says", [
    ("abc", "takes a list of models; got str 'abc'"), (3, "takes a list of models; got int"),
    ({"a": 1}, "takes a list of models; got dict"), (None, "takes a list of models; got NoneType"),
    (_good(), r"got one Sequential \(wrap it: Ensemble\(\[model\]\)\)"), ([], "at least one model"),
    (iter([]), "at least one model"),
])
def test_what_is_not_a_list_of_models_is_refused(models, says):
    with pytest.raises(EnsembleError, match=says) as e:
        pc.Ensemble(models)
    assert e.value.member is None and "\n" not in str(e.value)


def test_members_may_differ_in_backend_and_dtype_and_come_from_a_generator():
    ens = pc.Ensemble(m for m in [_good(0), pc.models.seed_cnn(seed=1, dtype="float64"),
                                  pc.models.seed_cnn(seed=2, backend="array_api_strict")])
    assert len(ens) == 3


def test_the_command_line_names_the_odd_member_of_forty_in_one_short_line(tmp_path, capsys):
    from portacnn.cli import main

    good, bad = pc.models.seed_cnn(seed=0), pc.Sequential([Flatten(), Dense(784, 3)], input_shape=(1, 28, 28))
    paths = [str(good.save(tmp_path / f"m{i}.safetensors")) for i in range(39)]
    paths.insert(17, str(bad.save(tmp_path / "odd.safetensors")))
    assert main(["evaluate", *paths]) == 2  # refused when the ensemble is formed, before any image is read
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and len(err) < 300, err
    assert err.startswith(f"portacnn: error: {paths[17]}: cannot form an ensemble") and "member 17" in err, err


def test_loading_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(pc.CheckpointError, match="is a folder, not a checkpoint file"):
        pc.load(tmp_path)


def test_fully_convolutional_classifiers_form_an_ensemble():
    allconv = lambda s: pc.Sequential([L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.Conv2D(4, 10, 1), L.GlobalAvgPool2D()],
                                      seed=s, input_shape=(1, 28, 28))
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    members = [allconv(0), allconv(1)]
    np.testing.assert_allclose(pc.Ensemble(members).predict_proba(x),
                               (members[0].predict_proba(x) + members[1].predict_proba(x)) / 2, rtol=1e-6)


def test_members_must_name_their_classes_alike_and_each_reads_raw_images_its_own_way():
    from portacnn.preprocessing import Preprocessing

    def member(seed, names=None, mean=None):
        m = pc.Sequential([Flatten(), Dense(16, 3)], seed=seed, input_shape=(1, 4, 4))
        m.class_names = names
        if mean is not None:
            m.preprocessing = Preprocessing(1, (4, 4), mean=(mean,), std=(0.5,))
        return m

    a, b = member(0, ["cat", "dog", "owl"], 0.2), member(1, None, 0.6)
    ens = pc.Ensemble([a, b])
    assert ens.class_names == ["cat", "dog", "owl"] and ens.preprocessing == a.preprocessing
    raw = np.random.default_rng(0).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    floats = [(raw[:, None] / 255 - m.preprocessing.mean[0]) / 0.5 for m in (a, b)]  # each member's own input
    expected = (a.predict_proba(floats[0].astype(np.float32)) + b.predict_proba(floats[1].astype(np.float32))) / 2
    np.testing.assert_allclose(ens.predict_proba(raw), expected, rtol=1e-5)
    with pytest.raises(EnsembleError, match="member 1 names its classes") as err:
        pc.Ensemble([a, member(2, ["cat", "owl", "dog"]), member(3, ["cat", "dog", "owl"])])
    assert err.value.member == 1
