"""fit's Keras habits: the optimizer and the loss by name (and with a resume), and ``help(model.fit)`` showing
training.fit's own signature, defaults and docstring. A tiny model on 24 random 8x8 images: fast."""

from __future__ import annotations

import inspect
import pydoc

import numpy as np
import pytest
from clihelp import assert_same_state

import portacnn as pc
from portacnn.layers import Conv2D, Dense, Flatten, ReLU
from portacnn.losses import softmax_cross_entropy
from portacnn.training import loop

BATCH = 8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    return rng.standard_normal((24, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 24)


def _model():
    return pc.Sequential([Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(2 * 6 * 6, 3)], seed=1)


def _fit(model, data, epochs=1, **kw):
    return model.fit(*data, epochs=epochs, batch_size=BATCH, progress=False, **kw)


# -- the optimizer by name ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, kind", [("adam", pc.optim.Adam), ("AdamW", pc.optim.AdamW), ("SGD", pc.optim.SGD),
                                        ("rmsprop", pc.optim.RMSprop)])
def test_an_optimizer_name_trains_as_that_optimizer_with_its_defaults(data, name, kind):
    named, given = _model(), _model()
    _fit(named, data, optimizer=name)
    _fit(given, data, optimizer=kind(given.parameters()))
    assert type(named.optimizer) is kind
    assert named.optimizer.param_groups[0]["lr"] == kind(_model().parameters()).param_groups[0]["lr"]
    assert named.optimizer.params == named.parameters()  # built on this model's parameters
    assert_same_state(named.state_dict(), given.state_dict())  # bit for bit the instance's training


def test_no_optimizer_is_still_adam_at_1e3(data):
    model, adam = _model(), _model()
    _fit(model, data)
    _fit(adam, data, optimizer=pc.optim.Adam(adam.parameters(), lr=1e-3))
    assert type(model.optimizer) is pc.optim.Adam
    assert_same_state(model.state_dict(), adam.state_dict())


@pytest.mark.parametrize("bad, said", [("adagrad", "unknown optimizer name 'adagrad'"), ("", "unknown optimizer name"),
                                       (pc.optim.Adam, "got type"), (0.01, "got float")])
def test_other_optimizers_are_refused_in_one_line_before_training(data, bad, said):
    model = _model()
    before = model.state_dict()
    with pytest.raises(ValueError) as e:
        _fit(model, data, optimizer=bad)
    message = str(e.value)
    assert said in message and "\n" not in message
    assert all(name in message for name in ("adam", "adamw", "rmsprop", "sgd"))  # the names it knows
    assert_same_state(model.state_dict(), before)


def test_resume_with_the_saved_optimizers_name_continues_its_state_and_another_name_is_refused(data, tmp_path):
    full = _model()
    _fit(full, data, epochs=2, optimizer="adam")
    path = tmp_path / "run.safetensors"
    _fit(_model(), data, optimizer="adam", checkpoint_path=path)
    resumed = pc.load(path)
    _fit(resumed, data, epochs=2, optimizer="ADAM", resume=resumed)  # a fresh Adam would lose the moments
    assert_same_state(resumed.state_dict(), full.state_dict())
    again = pc.load(path)
    with pytest.raises(ValueError, match=r"^resume: the run was trained with adam, not sgd; leave optimizer out"):
        _fit(again, data, epochs=2, optimizer="sgd", resume=again)


def test_resume_from_a_checkpoint_without_an_optimizer_builds_the_named_one(data, tmp_path):
    path = tmp_path / "run.safetensors"
    first = _model()
    _fit(first, data, optimizer="sgd", checkpoint_path=path)
    state = pc.load(path).checkpoint["train_state"]
    pc.checkpoint.save(first, path, train_state=state)  # no optimizer saved (plain SGD has no state anyway)
    resumed, full = pc.load(path), _model()
    _fit(resumed, data, epochs=2, optimizer="sgd", resume=resumed)
    _fit(full, data, epochs=2, optimizer="sgd")
    assert type(resumed.optimizer) is pc.optim.SGD
    assert_same_state(resumed.state_dict(), full.state_dict())


# -- the loss by name ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["cross_entropy", "Sparse_Categorical_Crossentropy", softmax_cross_entropy])
def test_the_loss_by_its_names_trains_as_the_default(data, loss):
    named, plain = _model(), _model()
    h = _fit(named, data, loss=loss)
    _fit(plain, data)
    assert_same_state(named.state_dict(), plain.state_dict())
    assert np.isfinite(h.history["loss"][0])


@pytest.mark.parametrize("bad, said", [
    ("categorical_crossentropy", "takes one-hot labels; portacnn trains on integer class ids"),
    ("mse", "unknown loss 'mse'; known names: cross_entropy, sparse_categorical_crossentropy"),
    (lambda logits, labels: (logits, logits), "unknown loss <function"),
    (None, "unknown loss None")])  # fmt: skip
def test_other_losses_are_refused_in_one_line_before_training(data, bad, said):
    model = _model()
    before = model.state_dict()
    with pytest.raises(ValueError) as e:
        _fit(model, data, loss=bad)
    assert said in str(e.value) and "\n" not in str(e.value)
    assert_same_state(model.state_dict(), before)


def test_loss_names_have_one_home():
    assert set(pc.losses.LOSSES) == {"cross_entropy", "sparse_categorical_crossentropy"}
    assert all(f is softmax_cross_entropy for f in pc.losses.LOSSES.values())
    assert pc.losses.get_loss("CROSS_ENTROPY") is softmax_cross_entropy


# -- help(model.fit) ----------------------------------------------------------------------------------------
def test_model_fit_has_training_fits_signature_defaults_and_docstring():
    model = _model()
    full = list(inspect.signature(loop.fit).parameters.values())
    assert full[0].name == "model"
    bound = list(inspect.signature(model.fit).parameters.values())
    assert [(p.name, p.default, p.kind) for p in bound] == [(p.name, p.default, p.kind) for p in full[1:]]
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in bound)  # nothing hidden in **kwargs
    assert inspect.getdoc(model.fit) == inspect.getdoc(loop.fit)
    shown = pydoc.render_doc(model.fit, renderer=pydoc.plaintext)
    for p in bound:
        assert (p.name if p.default is p.empty else f"{p.name}={p.default!r}") in shown
    assert "``resume`` is a model loaded with" in shown and "raises :class:`TrainingDiverged`" in shown
