"""Checkpoints of format "1" written by the portacnn before the checkpoint became a package (commit 83f661e:
tests/fixtures/v1_*.safetensors, made by a script run on that tree) still load, predict what they predicted then,
rebuild their optimizer and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import portacnn as pc
from portacnn.checkpoint import optimizer_from_checkpoint
from portacnn.recipe import Recipe

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_residual_batchnorm_run_with_groups_a_schedule_and_callbacks_loads_and_resumes():
    path = FIXTURES / "v1_residual_adamw.safetensors"
    model = pc.load(path)
    info = model.checkpoint
    assert info["input_shape"] == (1, 12, 12) and info["train_state"]["epoch"] == 2
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, 48)
    probe = np.load(FIXTURES / "v1_probe.npy")
    np.testing.assert_allclose(model.predict_proba(x[:4])[:, :10].ravel()[:40], probe[0], rtol=1e-5, atol=1e-6)
    opt = optimizer_from_checkpoint(model)
    assert type(opt) is pc.optim.AdamW and len(opt.param_groups) == 2
    assert [c["type"] for c in info["train_state"]["callbacks"]] == ["LearningRateScheduler", "EarlyStopping"]
    recipe = Recipe.from_checkpoint(info["extra"], info["train_state"], model.dtype, info["optimizer"])
    assert (recipe.optimizer, recipe.schedule, recipe.val_split, recipe.batch_size) == ("adamw", "onecycle", 0.25, 12)
    # resume with the run's own callbacks: their saved states are checked against them and restored
    sched = pc.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=2 * 3)
    stopper = pc.callbacks.EarlyStopping(monitor="val_loss", patience=3)
    history = model.fit(x, y, epochs=2, batch_size=12, optimizer=opt, validation_split=0.25, progress=False,
                        callbacks=[pc.callbacks.LearningRateScheduler(sched, per="step"), stopper], resume=model)
    assert history.history["loss"] == info["train_state"]["history"]["loss"]  # both epochs had run: nothing to do
    assert stopper.best == info["train_state"]["callbacks"][1]["state"]["best"]


def test_a_model_without_a_stored_input_shape_and_an_sgd_with_nesterov_loads():
    model = pc.load(FIXTURES / "v1_sgd_no_input_shape.safetensors")
    assert model.checkpoint["input_shape"] is None
    plan = pc.checkpoint.check_architecture(model.architecture())
    assert plan["input_shape"] == (1, 29, 29) and plan["input_shape_from"].startswith("inferred from layer 4 (Dense)")
    opt = optimizer_from_checkpoint(model)
    assert type(opt) is pc.optim.SGD and opt.param_groups[0]["nesterov"] is True
    rng = np.random.default_rng(0)
    rng.random((48, 1, 12, 12), dtype=np.float32), rng.integers(0, 10, 48)  # the script's draws, in its order
    x2 = rng.random((16, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(model.predict_proba(x2[:4]).ravel()[:40], np.load(FIXTURES / "v1_probe.npy")[1],
                               rtol=1e-5, atol=1e-6)
