"""The jax backend: what only JAX needs (immutable arrays; 64-bit arrays off unless switched on) and the whole
training path on it (every optimizer, schedule and augmentation, label smoothing, validation, checkpoints and
resume), each against the same run on NumPy with the same seed.

The layers, losses and optimizers run the backend-parametrized oracle suites on jax as on every backend
(conftest's ``backend`` fixture); this module checks what those suites cannot: whole runs, and a process
without ``jax_enable_x64`` (conftest switches it on for float64 tests; here it is switched off and back).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # visibly skipped where JAX is not installed

import portacnn as pc  # noqa: E402
from clihelp import assert_one_line_error, assert_same_state, float_subset, run_cli, tiny_model  # noqa: E402
from conftest import assert_close  # noqa: E402
from portacnn import checkpoint  # noqa: E402
from portacnn.augment import Compose, RandomAffine, RandomCrop, RandomErasing, RandomHorizontalFlip  # noqa: E402
from portacnn.callbacks import LearningRateScheduler  # noqa: E402
from portacnn.optim import lr_scheduler  # noqa: E402

BATCH = 32


@pytest.fixture
def without_x64():
    """This process with JAX's 64-bit arrays switched off (JAX's default), restored afterwards."""
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def data():
    (x, y), (xv, yv) = float_subset("train", 96), float_subset("test", 40)
    return (x, y), (xv, yv)


def _state_close(a: dict, b: dict, dtype: str, rtol: float, what: str = ""):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        scale = float(np.abs(b[key]).max()) if b[key].size else 0.0
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=rtol * scale, err_msg=f"{what} {key}")


# -- JAX without 64-bit arrays (its default) -----------------------------------------------------------------------
def test_float32_trains_without_64_bit_arrays_and_without_a_warning(without_x64, data):
    (x, y), (xv, yv) = data
    ref = tiny_model()
    h_ref = ref.fit(x, y, epochs=1, batch_size=BATCH, validation_data=(xv, yv), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX warns when asked for a 64-bit dtype it cannot make
        model = tiny_model(backend="jax")
        h = model.fit(x, y, epochs=1, batch_size=BATCH, validation_data=(xv, yv), progress=False)
        proba = model.predict_proba(xv)
        result = model.evaluate(xv, yv)
    assert all(p.data.dtype == jax.numpy.float32 for p in model.parameters())
    assert proba.dtype == np.float32 and result["n"] == len(yv)
    for key, values in h_ref.history.items():
        np.testing.assert_allclose(h.history[key], values, rtol=2e-5, err_msg=key)
    _state_close(model.state_dict(), ref.state_dict(), "float32", 1e-4, "jax without x64")


def test_a_batchnorm_network_keeps_float32_and_int64_counts_without_64_bit_arrays(without_x64):
    """kannada_bn with augmentation and label smoothing on JAX without 64-bit arrays: every weight and buffer on
    the device is 32-bit (no silent float64 anywhere, which JAX would warn about), the state dict holds float32
    arrays and int64 counts as on NumPy, and the run ends where NumPy's ends."""
    x, y = float_subset("train", 64)
    out = {}
    for backend in ("numpy", "jax"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m = pc.models.kannada_bn(backend=backend, seed=2)
            m.fit(x, y, epochs=1, batch_size=BATCH, augment=RandomAffine(), label_smoothing=0.1, progress=False)
        out[backend] = m
    jm = out["jax"]
    assert all(p.data.dtype == jax.numpy.float32 for p in jm.parameters())
    bn = jm.layers[1]
    assert bn.running_mean.dtype == jax.numpy.float32 and bn.num_batches_tracked.dtype == jax.numpy.int32
    state, ref = jm.state_dict(), out["numpy"].state_dict()
    assert {k: v.dtype for k, v in state.items()} == {k: v.dtype for k, v in ref.items()}
    assert int(state["1.num_batches_tracked"]) == int(ref["1.num_batches_tracked"]) == 2
    _state_close(state, ref, "float32", 1e-3, "kannada_bn without x64")


def test_float64_without_64_bit_arrays_is_one_clear_error(without_x64):
    with pytest.raises(ValueError, match="JAX_ENABLE_X64=1") as err:
        tiny_model(backend="jax", dtype="float64")
    assert "\n" not in str(err.value)
    be = pc.get_backend("jax")
    with pytest.raises(ValueError, match="JAX_ENABLE_X64=1"):  # never float32 arrays under a float64 label
        be.asarray(np.zeros(3), dtype="float64")
    model = tiny_model(dtype="float64")
    before = model.state_dict()
    with pytest.raises(ValueError, match="JAX_ENABLE_X64=1"):
        model.to("jax")
    assert model.backend.name == "numpy" and model.dtype == "float64"  # nothing moved
    assert_same_state(model.state_dict(), before)
    assert be.dtype("complex64") == jax.numpy.complex64  # 32-bit halves: JAX has it without x64


def test_integers_beyond_int32_are_refused_without_64_bit_arrays(without_x64):
    """JAX without 64-bit arrays would wrap them silently (a label 2**32 + 3 read as class 3)."""
    be = pc.get_backend("jax")
    logits = be.asarray(np.zeros((2, 10)), dtype="float32")
    with pytest.raises(ValueError, match="labels holds integers beyond int32"):
        pc.losses.softmax_cross_entropy(logits, np.array([2**32 + 3, 1]))
    model = pc.models.kannada_bn(backend="jax")
    state = model.state_dict()
    assert state["1.num_batches_tracked"].dtype == np.int64
    with pytest.raises(ValueError, match="'1.num_batches_tracked' holds integers beyond int32"):
        model.load_state_dict({**state, "1.num_batches_tracked": np.array(2**32 + 5)})
    model.load_state_dict({**state, "1.num_batches_tracked": np.array(2**31 - 1)})
    assert int(model.state_dict()["1.num_batches_tracked"]) == 2**31 - 1


@pytest.mark.parametrize("x64", [False, True])
def test_counts_are_read_back_exactly_beyond_float32(without_x64, x64):
    """The loss sum and the count of correct predictions come back in one transfer; without 64-bit arrays the
    count travels as two float32 halves, so 2**24 + 1 (the first integer float32 cannot hold) stays exact."""
    from portacnn.training.evaluation import read_loss_and_count

    jax.config.update("jax_enable_x64", x64)
    xp = pc.get_backend("jax").xp
    count_dtype, sum_dtype = pc.backend.wide_dtypes(xp)
    for count in (0, 4095, 4096, 2**24 + 1, 2**31 - 1):
        loss = xp.asarray(2.5, dtype=sum_dtype)
        assert read_loss_and_count(xp, loss, xp.asarray(count, dtype=count_dtype)) == (2.5, count)


def test_a_pickled_model_whose_jax_device_is_missing_is_one_clear_error():
    """What a model pickled on a GPU meets on a CPU machine (no GPU here: the lookup itself is what is tested)."""
    from portacnn.backend.registry import _jax_backend

    assert _jax_backend("cpu", 0).device == jax.devices("cpu")[0]
    for platform, device_id in (("cpu", 99), ("gpu", 0), ("no_such_platform", 0)):
        with pytest.raises(pc.BackendUnavailableError, match=f"has no {platform} device {device_id} here"):
            _jax_backend(platform, device_id)


def test_jax_models_pickle_and_predict_alike(data):
    import pickle

    (x, y), (xv, _) = data
    model = tiny_model(backend="jax")
    model.fit(x, y, epochs=1, batch_size=BATCH, progress=False)
    again = pickle.loads(pickle.dumps(model))
    assert again.backend == model.backend and again.backend.name == "jax"
    np.testing.assert_array_equal(again.predict_proba(xv), model.predict_proba(xv))


@pytest.mark.slow
def test_cli_float64_on_jax_without_x64_is_a_one_line_error(tmp_path):
    proc = run_cli("train", "--backend", "jax", "--dtype", "float64", "--epochs", "1", "--limit", "64",
                   "--out", tmp_path / "run")
    assert proc.returncode != 0
    assert_one_line_error(proc.stderr, "JAX_ENABLE_X64")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_wide_dtypes_follow_the_64_bit_switch(without_x64):
    import jax.numpy as jnp

    assert pc.backend.wide_dtypes(jnp) == (jnp.int32, jnp.float32)
    jax.config.update("jax_enable_x64", True)
    assert pc.backend.wide_dtypes(jnp) == (jnp.int64, jnp.float64)
    assert pc.backend.wide_dtypes(pc.get_backend("numpy").xp) == (np.int64, np.float64)


@pytest.mark.slow
def test_info_reports_jax_and_its_64_bit_switch():
    info = __import__("json").loads(run_cli("info", "--json").stdout.strip().splitlines()[-1])
    entry = info["backends"]["jax"]
    assert entry["available"] and entry["version"] == jax.__version__
    assert entry["float64"] is False  # a fresh process: JAX's default
    assert "JAX_ENABLE_X64=1 for float64" in run_cli("info").stdout


# -- whole runs against NumPy's ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_seed_cnn_one_epoch_ends_where_numpy_ends(dtype):
    """The tutorial network, one epoch on 512 Kannada-MNIST images with seed 0: the same history, weights and
    predictions as NumPy's to float rounding (the sums run in other orders)."""
    x, y = float_subset("train", 512)
    xt, _ = float_subset("test", 200)
    runs = {}
    for name in ("numpy", "jax"):
        m = pc.models.seed_cnn(backend=name, dtype=dtype, seed=0)
        h = m.fit(x.astype(dtype), y, epochs=1, batch_size=64, seed=0, progress=False)
        runs[name] = (h.history, m.state_dict(), m.predict_proba(xt.astype(dtype)))
    (h_np, s_np, p_np), (h_jax, s_jax, p_jax) = runs["numpy"], runs["jax"]
    rtol = 2e-5 if dtype == "float32" else 1e-10
    for key in h_np:
        np.testing.assert_allclose(h_jax[key], h_np[key], rtol=rtol, err_msg=key)
    _state_close(s_jax, s_np, dtype, 1e-4 if dtype == "float32" else 1e-9, "seed_cnn")
    assert_close(p_jax, p_np, dtype, rtol=1e-4 if dtype == "float32" else 1e-9)


def _cosine(opt):
    return LearningRateScheduler(lr_scheduler.CosineAnnealingLR(opt, T_max=3), per="step")


def _step(opt):
    return LearningRateScheduler(lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))


def _one_cycle(opt):
    return LearningRateScheduler(lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=6), per="step")


def _warm_then_cosine(opt):
    return LearningRateScheduler(lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, total_iters=2), lr_scheduler.CosineAnnealingLR(opt, T_max=4)], milestones=[2]),
        per="step")


RUNS = {  # optimizer, its arguments, schedule, augmentation, label smoothing
    "adam-cosine-affine": ("adam", {}, _cosine, RandomAffine(), 0.0),
    "adamw-onecycle-erase": ("adamw", {"weight_decay": 0.05}, _one_cycle, RandomErasing(p=1.0), 0.1),
    "sgd-nesterov-step-cropflip": ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, _step,
                                   Compose([RandomCrop(padding=2), RandomHorizontalFlip()]), 0.0),
    "rmsprop-centered-sequential": ("rmsprop", {"lr": 1e-3, "momentum": 0.5, "centered": True}, _warm_then_cosine,
                                    None, 0.2),
}


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_every_optimizer_schedule_and_augmentation_trains_as_on_numpy(data, run):
    """float64, 2 epochs with a validation split: JAX's run ends at NumPy's weights, history and learning rate."""
    name, kwargs, schedule, augment, smoothing = RUNS[run]
    (x, y), _ = data
    out = {}
    for backend in ("numpy", "jax"):
        m = tiny_model(backend=backend, dtype="float64")
        opt = pc.optim.by_name(name)(m.parameters(), **kwargs)
        h = m.fit(x.astype("float64"), y, epochs=2, batch_size=BATCH, optimizer=opt, callbacks=[schedule(opt)],
                  augment=augment, label_smoothing=smoothing, validation_split=0.25, progress=False, seed=7)
        out[backend] = (h.history, m.state_dict(), opt.param_groups[0]["lr"])
    (h_np, s_np, lr_np), (h_jax, s_jax, lr_jax) = out["numpy"], out["jax"]
    assert lr_jax == lr_np
    for key in h_np:
        np.testing.assert_allclose(h_jax[key], h_np[key], rtol=1e-9, err_msg=key)
    _state_close(s_jax, s_np, "float64", 1e-8, run)


@pytest.mark.slow
def test_batchnorm_network_trains_as_on_numpy():
    """kannada_bn's building blocks (BatchNorm, Residual, Dropout, its running statistics): one epoch on 64 images in
    float64, the weights and the buffers JAX ends with are NumPy's."""
    x, y = float_subset("train", 64)
    out = {}
    for backend in ("numpy", "jax"):
        m = pc.models.kannada_bn(backend=backend, dtype="float64", seed=1)
        m.fit(x.astype("float64"), y, epochs=1, batch_size=BATCH, progress=False)
        out[backend] = m.state_dict()
    _state_close(out["jax"], out["numpy"], "float64", 1e-8, "kannada_bn")


def test_checkpoint_and_resume_on_jax_are_exact(data, tmp_path):
    """Interrupted after one epoch and resumed from the file, on JAX: the uninterrupted run's weights, optimizer
    state and history, bit for bit; the JAX checkpoint loads on NumPy with the same state."""
    (x, y), _ = data
    full = tiny_model(backend="jax")
    h_full = full.fit(x, y, epochs=2, batch_size=BATCH, seed=3, progress=False)

    path = tmp_path / "run.safetensors"
    first = tiny_model(backend="jax")
    first.fit(x, y, epochs=1, batch_size=BATCH, seed=3, progress=False, checkpoint_path=path)
    on_numpy = pc.load(path, backend="numpy")
    assert_same_state(on_numpy.state_dict(), first.state_dict())
    resumed = pc.load(path, backend="jax")
    assert resumed.backend.name == "jax"
    h = resumed.fit(x, y, epochs=2, batch_size=BATCH, seed=3, progress=False, resume=resumed, checkpoint_path=path)
    assert_same_state(resumed.state_dict(), full.state_dict())
    assert h.history == h_full.history
    opt = checkpoint.optimizer_from_checkpoint(pc.load(path))
    for i, state in opt.state.items():
        for key, value in state.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(full.optimizer.state[i][key]), err_msg=f"{i}.{key}")
