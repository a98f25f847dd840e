"""The training recipe (portacnn.recipe) without training anything: defaults per network, explicit flags winning,
each field's rule shared by the flags, a Recipe and a stored recipe, the ``extra`` a checkpoint stores, and the
resume reconciliation with the messages the command line prints. Fast: no subprocess, no fit()."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from conftest import sweep

import portacnn as pc
from portacnn import augment, checkpoint, optim, recipe
from portacnn.cli import UsageError, build_parser
from portacnn.recipe import (DEFAULT_EPOCHS, DEFAULT_LR, MODEL_RECIPES, NULLABLE, RECIPE_DEFAULTS, RESUMED, RULES, STORED,
                             TRAIN_DEFAULTS, Recipe, RecipeError)
from portacnn.callbacks import EarlyStopping, LearningRateScheduler
from portacnn.validation import Integer, Real


def _one_line_error(call, *fragments, kind=ValueError):
    with pytest.raises(kind) as err:
        call()
    text = str(err.value)
    assert "\n" not in text and text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


# -- defaults ----------------------------------------------------------------------------------------------------
PLAIN = dict(batch_size=128, seed=0, dtype="float32", protocol="full", limit=None, data=None, optimizer="adam",
             lr=1e-3, momentum=0.9, weight_decay=None, schedule="constant", label_smoothing=0.0, val_split=0.0,
             early_stopping=None, augment="none", normalize=False)
BN = {**PLAIN, "optimizer": "adamw", "lr": 3e-3, "schedule": "onecycle", "label_smoothing": 0.1, "augment": "affine",
      "val_split": 0.1}
CIFAR = {**PLAIN, "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine", "augment": "crop+flip",
         "normalize": True}


@pytest.mark.parametrize("model, epochs, rest", [
    ("seed_cnn", 10, PLAIN), ("lenet5", 15, PLAIN), ("kannada_cnn", 12, PLAIN), ("kannada_bn", 7, BN),
    ("kannada_nobn", 7, BN), ("resnet20", 30, CIFAR), ("seed", 10, PLAIN), ("kannada", 12, PLAIN),
])
def test_defaults_per_network(model, epochs, rest):
    made = Recipe.from_flags({"model": model})
    assert made == Recipe(model=pc.models.canonical_name(model), epochs=epochs, **rest)
    assert made.epochs == epochs and made.model in pc.models.MODELS


def test_no_flags_is_the_seed_cnn_recipe_and_a_bare_recipe_fills_epochs_and_lr():
    assert Recipe.from_flags({}) == Recipe.from_flags({"model": None, "lr": None}) == Recipe()
    assert (Recipe().model, Recipe().epochs, Recipe().lr) == ("seed_cnn", 10, 1e-3)
    assert Recipe(optimizer="sgd").lr == 0.05 and Recipe(model="custom").epochs == 10


def test_the_default_tables_hold_together():
    assert set(DEFAULT_LR) == set(optim.OPTIMIZERS)
    assert set(DEFAULT_EPOCHS) == set(pc.models.MODELS)
    assert set(MODEL_RECIPES) <= set(pc.models.MODELS)
    for table in MODEL_RECIPES.values():
        Recipe(**table)  # every model recipe obeys the rules
        assert set(table) <= set(RULES)
    assert set(TRAIN_DEFAULTS) | set(RECIPE_DEFAULTS) <= set(RULES)


@pytest.mark.parametrize("flags, want", [
    ({"model": "kannada_bn", "optimizer": "adam", "lr": 0.01, "augment": "none"},
     {**BN, "optimizer": "adam", "lr": 0.01, "augment": "none"}),
    ({"model": "kannada_bn", "label_smoothing": 0.0, "val_split": 0.0, "schedule": "constant"},  # zero still wins
     {**BN, "label_smoothing": 0.0, "val_split": 0.0, "schedule": "constant"}),
    ({"model": "kannada_bn", "optimizer": "sgd"}, {**BN, "optimizer": "sgd"}),  # the network's lr stays
    ({"optimizer": "sgd", "momentum": 0.5, "weight_decay": 0.0}, {**PLAIN, "optimizer": "sgd", "lr": 0.05,
                                                                  "momentum": 0.5, "weight_decay": 0.0}),
    ({"batch_size": 16, "seed": 3, "dtype": "float64", "protocol": "tutorial", "limit": 96, "epochs": 2},
     {**PLAIN, "batch_size": 16, "seed": 3, "dtype": "float64", "protocol": "tutorial", "limit": 96}),
])
def test_explicit_flags_win(flags, want):
    made = Recipe.from_flags({**flags, "out": "ignored", "json": True})  # other flags are not the recipe's
    model = flags.get("model", "seed_cnn")
    assert made == Recipe(model=model, epochs=flags.get("epochs", DEFAULT_EPOCHS[model]), **want)


def test_data_is_recorded_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Recipe.from_flags({"data": "sub/../d"}).data == str((tmp_path / "d").resolve())


# -- the rules ---------------------------------------------------------------------------------------------------
#: per field, values every rule must accept and values it must refuse (None: accepted exactly when nullable)
VERDICTS = {
    "model": (["seed_cnn", "custom", "seed", "x" * 64], ["", 123, "x" * 65, "seed\x1b]0;pwned\x07", "a\nb"]),
    "epochs": ([1, 100_000], [0, -3, 100_001, 10**12, 2.0, "5", True]),
    "batch_size": ([1, 1 << 24], [0, (1 << 24) + 1, 1.5]),
    "seed": ([0, (1 << 128) - 1], [-1, 1 << 128, 0.0]),
    "dtype": (["float32", "float64"], ["float16", 32]),
    "protocol": (["full", "tutorial"], ["../../etc", "Full", 1]),
    "limit": ([1, (1 << 63) - 1], [0, -1, 1 << 63, 1.5]),
    "data": (["", "/nonexistent/../../etc/shadow", "x" * 4096], [5, "x" * 4097, "a\x00b"]),
    "optimizer": ([*sorted(DEFAULT_LR)], ["lamb", "Adam"]),
    "lr": ([1e-3, 1, 1e30], [0, 0.0, -0.1, math.nan, math.inf, 10**400, True, "0.1"]),
    "weight_decay": ([0, 0.05], [-1e-9, math.nan, math.inf]),
    "schedule": ([*recipe.SCHEDULES], ["exponential"]),
    "label_smoothing": ([0, 0.1, 0.999], [1, 1.0, -0.1, math.nan]),
    "val_split": ([0.0, 0.25], [1, -0.1, math.inf]),
    "early_stopping": ([1, 100_000], [0, 100_001, 2.5]),
    "augment": ([*recipe.AUGMENTATIONS], ["rotate", ""]),
    "normalize": ([True, False], [1, 0, "yes", None.__class__]),
}
CASES = [(field, value, True) for field, (good, _) in VERDICTS.items() for value in good] + \
        [(field, value, False) for field, (_, bad) in VERDICTS.items() for value in bad] + \
        [(field, None, field in NULLABLE) for field in VERDICTS]


def test_every_field_has_verdicts():
    assert set(VERDICTS) == set(RULES) and set(STORED) <= set(RULES) and set(RESUMED) <= set(RULES)


def _verdict(call) -> bool:
    try:
        call()
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("field, value, ok", sweep(CASES, 40, unpack=True), ids=[f"{f}={str(v)[:20]!r}" for f, v, _ in CASES])
def test_a_recipe_and_a_stored_recipe_obey_the_same_rule(field, value, ok):
    made = _verdict(lambda: Recipe(**{field: value, "val_split": 0.1} if field == "early_stopping" else {field: value}))
    if field in ("epochs", "lr") and value is None:  # None: the network's / the optimizer's default
        assert made
    else:
        assert made is ok
    if field in STORED:
        assert _verdict(lambda: Recipe.check_stored({field: value})) is ok
    if not ok:
        _one_line_error(lambda: Recipe.check_stored({field: value}) if field in STORED else Recipe(**{field: value}),
                        field, kind=ValueError)


def _train_actions():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    return {a.dest: a for a in sub._actions}


NUMERIC = [(f, v, ok) for f, v, ok in CASES if isinstance(RULES[f], (Integer, Real))
           and isinstance(v, (int, float)) and not isinstance(v, bool)]


@pytest.mark.parametrize("field, value, ok", NUMERIC, ids=[f"{f}={v!r}"[:40] for f, v, _ in NUMERIC])
def test_a_flag_accepts_exactly_what_the_rule_does(field, value, ok):
    """--epochs 100001 is refused like a stored 100001, --lr 1 read as 1.0 accepted like a stored 1."""
    try:
        parsed = _train_actions()[field].type(repr(value))
    except argparse.ArgumentTypeError as e:
        assert not ok and "\n" not in str(e)
        return
    assert ok and parsed == value


def test_choice_flags_offer_the_rules_choices():
    actions = _train_actions()
    for field in ("dtype", "protocol", "optimizer", "schedule", "augment"):
        assert tuple(actions[field].choices) == RULES[field].choices
    assert all(recipe.rule("model").accepts(name) for name in actions["model"].choices)
    assert set(recipe.RULES) - {"data", "model", "normalize"} <= {d for d, a in actions.items() if a.type or a.choices}
    assert isinstance(actions["normalize"], argparse.BooleanOptionalAction)  # --normalize / --no-normalize: a bool


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: must be a positive int, got '0'"),
    (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
    (["--epochs", "100001"], "argument --epochs: must be at most 100000, got '100001'"),
    (["--lr", "nan"], "argument --lr: must be a positive float, got 'nan'"),
    (["--label-smoothing", "1"], "argument --label-smoothing: must be at least 0 and below 1, got '1'"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be at least 0, got '-1'"),
    (["--seed", "-1"], "argument --seed: must be at least 0, got '-1'"),
    (["--limit", "0"], "argument --limit: must be a positive int, got '0'"),
    (["--optimizer", "lamb"], "argument --optimizer: invalid choice: 'lamb'"),
])
def test_flag_messages(argv, message):
    with pytest.raises(UsageError) as err:
        build_parser().parse_args(["train", *argv])
    assert str(err.value).startswith(message) and str(err.value).endswith("(see 'portacnn train --help')")


def test_early_stopping_needs_a_validation_split():
    _one_line_error(lambda: Recipe(early_stopping=3), "--early-stopping watches the validation loss: give --val-split",
                    kind=RecipeError)
    assert Recipe.from_flags({"model": "kannada_bn", "early_stopping": 3}).early_stopping == 3


# -- the stored recipe -------------------------------------------------------------------------------------------
CLI_EXTRA = {"model": "seed", "epochs": 3, "protocol": "full", "limit": 64, "data": None}
#: tests/test_checkpoint_trust.py's hostile "extra" edits, with what the refusal names
HOSTILE = {
    "extra not an object": ([1], "not an object"),
    "extra epochs 0": ({**CLI_EXTRA, "epochs": 0}, "'epochs' must be an int >= 1 and <= 100000; got 0"),
    "extra epochs huge": ({**CLI_EXTRA, "epochs": 10**12}, "'epochs'"),
    "extra epochs a string": ({**CLI_EXTRA, "epochs": "5"}, "'epochs' must be an int"),
    "extra epochs a bool": ({**CLI_EXTRA, "epochs": True}, "'epochs' must be an int"),
    "extra limit negative": ({**CLI_EXTRA, "limit": -1}, "'limit'"),
    "extra limit a float": ({**CLI_EXTRA, "limit": 1.5}, "'limit' must be a positive 64-bit int"),
    "extra protocol unknown": ({**CLI_EXTRA, "protocol": "../../etc"}, "'protocol' must be one of 'full', 'tutorial'"),
    "extra model a number": ({**CLI_EXTRA, "model": 123}, "'model' must be a printable string"),
    "extra model with a terminal escape": ({**CLI_EXTRA, "model": "seed\x1b]0;pwned\x07"}, "'model'"),
    "extra model empty": ({**CLI_EXTRA, "model": ""}, "'model'"),
    "extra data a number": ({**CLI_EXTRA, "data": 5}, "'data'"),
    "extra data too long": ({**CLI_EXTRA, "data": "x" * 5000}, "'data' must be a string of at most 4096 characters"),
    "extra lr beyond any float": ({**CLI_EXTRA, "lr": 10**400}, "'lr' must be a finite number > 0"),
    "extra optimizer unknown": ({**CLI_EXTRA, "optimizer": "lion"}, "'optimizer' must be one of"),
    "extra val_split 1": ({**CLI_EXTRA, "val_split": 1.0}, "'val_split'"),
    "extra early_stopping 0": ({**CLI_EXTRA, "early_stopping": 0}, "'early_stopping'"),
}


@pytest.mark.parametrize("extra, fragment", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_stored_recipes_are_refused_in_one_line(extra, fragment):
    _one_line_error(lambda: Recipe.check_stored(extra), fragment)
    legacy = getattr(checkpoint, "_check_extra", None)  # the checkpoint's own schema, until it calls check_stored
    if legacy is not None:
        with pytest.raises(checkpoint._Bad):
            legacy(extra)


@pytest.mark.parametrize("extra", [
    CLI_EXTRA, {}, {"note": "hi"}, {**CLI_EXTRA, "data": "/nonexistent/../../etc/shadow", "limit": None,
                                    "note": {"any": ["json", 1, None]}},
    {**CLI_EXTRA, "protocol": None, "weight_decay": None, "early_stopping": None}, Recipe(model="kannada_bn").to_extra(),
])
def test_valid_and_free_form_stored_recipes_pass(extra):
    Recipe.check_stored(extra)
    legacy = getattr(checkpoint, "_check_extra", None)
    if legacy is not None:
        legacy(extra)


def test_the_one_stored_value_refused_now_that_the_checkpoint_accepted():
    """A limit of 0 (which the trainer reads as no limit) is what the --limit flag refuses, so a stored one is too."""
    _one_line_error(lambda: Recipe.check_stored({"limit": 0}), "'limit'")


RECIPES = [Recipe(), Recipe.from_flags({"model": "kannada_bn", "seed": 4, "limit": 128, "epochs": 3}),
           Recipe(optimizer="sgd", lr=0.02, weight_decay=0.0, schedule="step", protocol="tutorial", data="/d/x.csv",
                  batch_size=16, dtype="float64", early_stopping=2, val_split=0.2, augment="affine+erase")]


@pytest.mark.parametrize("made", RECIPES)
def test_round_trip_through_extra(made):
    extra = json.loads(json.dumps(made.to_extra()))
    assert list(extra) == list(STORED)  # the format every portacnn checkpoint has used
    Recipe.check_stored(extra)
    back = Recipe.from_checkpoint(extra, {"batch_size": made.batch_size, "seed": made.seed, "epoch": 1}, made.dtype)
    assert back == made


def test_the_checkpoint_stores_and_returns_the_extra(tmp_path):
    made = RECIPES[2]
    path = checkpoint.save(pc.models.seed_cnn(), tmp_path / "m.safetensors", extra=made.to_extra())
    assert pc.load(path).checkpoint["extra"] == made.to_extra()


# -- resuming ----------------------------------------------------------------------------------------------------
STATE = {"batch_size": 16, "seed": 3, "epoch": 2}
SAVED = {"model": "seed_cnn", "epochs": 3, "protocol": "full", "limit": 96, "data": None, "lr": 0.001,
         "optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", "label_smoothing": 0.1, "val_split": 0.25,
         "early_stopping": 4, "augment": "affine"}


def _stored(**changes):
    return Recipe.from_checkpoint({**SAVED, **changes}, STATE, "float32")


def test_agreeing_flags_continue_the_run():
    stored = _stored()
    flags = {key: getattr(stored, key) for key in RESUMED}
    assert stored.resume(flags, "ck", 2) == stored == stored.resume({}, "ck", 2)
    assert stored.resume({"model": "seed", "momentum": 0.5}, "ck", 2).momentum == 0.5  # aliases agree


OTHER = {"model": "lenet5", "batch_size": 32, "seed": 4, "dtype": "float64", "protocol": "tutorial", "limit": 64,
         "optimizer": "sgd", "weight_decay": 0.0, "schedule": "step", "label_smoothing": 0.2, "val_split": 0.5,
         "early_stopping": 2, "augment": "none", "normalize": True}


@pytest.mark.parametrize("key", RESUMED)
def test_a_conflicting_flag_is_the_same_error_as_before(key):
    stored = _stored()
    flag = "--" + key.replace("_", "-")
    message = _one_line_error(lambda: stored.resume({key: OTHER[key]}, "runs/a/model.safetensors", 2), kind=RecipeError)
    assert message == (f"--resume runs/a/model.safetensors: that run used {flag} {getattr(stored, key)}, not {flag} "
                       f"{OTHER[key]}; drop {flag} to continue it, or start a new run without --resume")


def test_the_first_conflict_in_flag_order_is_reported():
    message = _one_line_error(lambda: _stored().resume({"augment": "none", "seed": 9}, "ck", 2), kind=RecipeError)
    assert "--seed 3, not --seed 9" in message


@pytest.mark.parametrize("saved, flags, want", [
    ({"data": "/d/train.csv"}, {}, "--resume ck: that run trained on '/d/train.csv'; give --data with that path to "
                                   "continue it (a checkpoint never chooses which files are opened)"),
    ({"data": "/d/train.csv"}, {"data": "/d/other.csv"}, "--resume ck: that run trained on '/d/train.csv', not --data "
                                                         "/d/other.csv"),
    ({}, {"data": "/d/x.csv"}, "--resume ck: that run trained on the embedded Kannada-MNIST, not --data /d/x.csv"),
    ({}, {"epochs": 5}, "--resume ck: that run's cosine schedule spans 3 epochs; it cannot change to --epochs 5 "
                        "(drop --epochs)"),
    ({"schedule": "constant"}, {"epochs": 1}, "--resume ck: that run has already trained 2 epochs, more than --epochs 1; "
                                              "give at least 2 (or drop --epochs)"),
    ({}, {"lr": 0.01}, "--resume ck: that run's learning rate follows its cosine schedule; drop --lr to continue it"),
])
def test_resume_refusals(saved, flags, want):
    assert _one_line_error(lambda: _stored(**saved).resume(flags, "ck", 2), kind=RecipeError) == want


def test_resume_takes_the_data_again_and_may_extend_a_constant_run(tmp_path):
    data = tmp_path / "d.csv"
    stored = _stored(data=str(data), schedule="constant")
    again = stored.resume({"data": str(tmp_path / "." / "d.csv"), "epochs": 6, "lr": 0.5}, "ck", 2)
    assert again == Recipe(**{**vars(stored), "epochs": 6})
    assert again.lr == 0.001  # an explicit --lr goes to the restored optimizer; the recipe keeps the run's rate
    assert _stored(schedule="constant").resume({"epochs": 2}, "ck", 2).epochs == 2


def test_old_checkpoints_ran_with_the_recipe_defaults():
    old = {"model": "kannada_bn", "epochs": 3, "protocol": None, "limit": None, "data": None}
    made = Recipe.from_checkpoint(old, STATE, "float64")
    assert {key: getattr(made, key) for key in RECIPE_DEFAULTS} == RECIPE_DEFAULTS  # not kannada_bn's recipe
    assert (made.protocol, made.lr, made.dtype, made.batch_size, made.seed) == ("full", 1e-3, "float64", 16, 3)
    trained = Recipe.from_checkpoint(old, STATE, "float32", {"type": "sgd", "lr": 0.02})
    assert (trained.optimizer, trained.lr) == ("sgd", 0.02)  # the saved optimizer's type and rate
    assert Recipe.from_checkpoint({**old, "optimizer": "adam"}, STATE, "float32", {"type": "sgd", "lr": 0.02}).lr == 0.02
    bare = Recipe.from_checkpoint(None, STATE, "float32")
    assert (bare.model, bare.epochs, bare.optimizer) == ("custom", 10, "adam")
    with pytest.raises(RecipeError, match="--model custom, not --model seed_cnn"):
        bare.resume({"model": "seed_cnn"}, "ck", 1)


# -- what a recipe stands for ------------------------------------------------------------------------------------
def test_summary():
    assert Recipe().summary() == "adam lr 0.001"
    assert Recipe.from_flags({"model": "kannada_bn", "early_stopping": 3}).summary() == (
        "adamw lr 0.003, onecycle schedule, label smoothing 0.1, affine augmentation, early stopping after 3 epochs "
        "without progress")


def test_builders():
    model = pc.models.seed_cnn()
    adamw = Recipe(optimizer="adamw").make_optimizer(model)
    assert isinstance(adamw, optim.AdamW) and [g["weight_decay"] for g in adamw.param_groups] == [0.01, 0.0]
    sgd = Recipe(optimizer="sgd", momentum=0.5).make_optimizer(model)
    assert isinstance(sgd, optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5 and sgd.param_groups[0]["lr"] == 0.05
    assert len(Recipe(weight_decay=0.0).make_optimizer(model).param_groups) == 1
    assert Recipe().augmentation() is None
    assert isinstance(Recipe(augment="affine").augmentation(), augment.RandomAffine)
    assert isinstance(Recipe(augment="affine+erase").augmentation(), augment.Compose)
    assert Recipe(augment="crop+flip").augmentation() == augment.Compose(
        [augment.RandomCrop(size=None, padding=4, fill=0.0), augment.RandomHorizontalFlip(p=0.5)])
    assert Recipe().callbacks(adamw, 100) == []
    found = Recipe(schedule="onecycle", early_stopping=2, val_split=0.2, batch_size=10, epochs=3).callbacks(adamw, 100)
    assert [type(c) for c in found] == [LearningRateScheduler, EarlyStopping]
    assert found[0].scheduler.total_steps == 3 * 8 and found[1].patience == 2  # 80 of 100 images train, 8 batches


def test_the_resnet20_recipe_builds_and_trains_on_any_image_size():
    """SGD lr 0.1, momentum 0.9, weight decay 5e-4 on the kernels only, cosine per step, pad-4 crops back to the
    batch's own size and flips: one epoch of a small ResNet-20 on 3x8x8 and 1x13x13 images runs."""
    made = Recipe.from_flags({"model": "resnet20", "epochs": 1, "batch_size": 4})
    assert made.summary() == "sgd lr 0.1, cosine schedule, crop+flip augmentation"  # (the normalisation: the data line)
    for shape in ((3, 8, 8), (1, 13, 13)):
        model = pc.models.resnet20(input_shape=shape, seed=0, workers=1)
        opt = made.make_optimizer(model)
        assert isinstance(opt, optim.SGD) and [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
        assert all(g["momentum"] == 0.9 and g["lr"] == 0.1 for g in opt.param_groups)
        decayed = {id(p) for p in opt.param_groups[0]["params"]}
        assert decayed == {id(p) for p in model.parameters() if p.data.ndim > 1}  # convolutions and the dense
        callbacks = made.callbacks(opt, 8)
        assert [type(c.scheduler).__name__ for c in callbacks] == ["CosineAnnealingLR"]
        x = np.random.default_rng(0).random((8, *shape)).astype(np.float32)
        history = model.fit(x, np.arange(8) % 10, epochs=1, batch_size=4, optimizer=opt, callbacks=callbacks,
                            augment=made.augmentation(), progress=False)
        assert np.isfinite(history.history["loss"]).all()
