"""The Python API refuses what it cannot honour with a message naming the problem, and SIGTERM during fit
behaves like Ctrl-C."""

import os
import signal

import numpy as np
import pytest

import portacnn as pc
from portacnn import kernels
from portacnn.backend import check_environment
from portacnn.training import Stopped


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def test_backward_before_forward_is_a_runtime_error():
    model = pc.models.seed_cnn()
    with pytest.raises(RuntimeError, match=r"backward\(\) needs a successful forward\(\) first"):
        model.backward(np.ones((2, 10), np.float32))


def test_backward_after_a_failed_forward_is_a_runtime_error():
    model = pc.models.seed_cnn()
    model.forward(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError):
        model.forward(np.zeros((2, 3, 28, 28), np.float32))  # wrong channels
    with pytest.raises(RuntimeError, match="successful forward"):
        model.backward(np.ones((2, 10), np.float32))


def test_backward_gradient_must_match_the_last_output():
    model = pc.models.seed_cnn()
    model.forward(np.zeros((2, 1, 28, 28), np.float32), training=True)
    with pytest.raises(ValueError, match=r"gradient of shape \(2, 9\); the last forward pass returned shape \(2, 10\)"):
        model.backward(np.ones((2, 9), np.float32))


def test_empty_sequential_is_refused():
    with pytest.raises(ValueError, match="at least one layer"):
        pc.Sequential([])


@pytest.mark.parametrize("dtype", ["float16", "int8", np.int64, "bfloat16", "complex64"])
def test_moving_to_a_dtype_the_library_cannot_train_is_refused_and_changes_nothing(dtype):
    model = pc.models.seed_cnn()
    before = model.state_dict()
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        model.to("numpy", dtype=dtype)
    assert model.dtype == "float32"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_load_state_dict_refuses_non_finite_values(bad):
    model = pc.models.seed_cnn()
    state = model.state_dict()
    state = {k: v.astype(np.float64) for k, v in state.items()}
    state["4.weight"][3, 7] = bad
    with pytest.raises(ValueError, match="state dict entry '4.weight' holds 1 NaN or infinite values"):
        model.load_state_dict(state)


def test_save_to_a_folder_is_one_error_and_leaves_no_temporary_file(tmp_path):
    model = pc.models.seed_cnn()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        model.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, value, match", [
    ("PORTACNN_BLOCK_BYTES", "garbage", "PORTACNN_BLOCK_BYTES must be a non-negative integer"),
    ("PORTACNN_BLOCK_BYTES", "-5", "PORTACNN_BLOCK_BYTES must be a non-negative integer"),
    ("PORTACNN_PORTABLE", "yes", "PORTACNN_PORTABLE must be 0 or 1"),
    ("PORTACNN_BACKEND", "tensorflow", "PORTACNN_BACKEND='tensorflow' is not a backend"),
    ("PORTACNN_MPI_TRANSPORT", "gloo", "PORTACNN_MPI_TRANSPORT='gloo' is not one of auto, nccl, host"),
])  # fmt: skip
def test_bad_environment_variables_are_named(monkeypatch, name, value, match):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        check_environment()
        kernels.check_environment()


def test_bad_block_bytes_is_named_where_a_layer_reads_it(monkeypatch):
    monkeypatch.setenv("PORTACNN_BLOCK_BYTES", "garbage")
    with pytest.raises(ValueError, match="PORTACNN_BLOCK_BYTES"):
        pc.models.kannada_cnn(workers=1).forward(np.zeros((2, 1, 28, 28), np.float32))


# -- SIGTERM -------------------------------------------------------------------------------------------
def test_sigterm_during_fit_saves_and_marks_the_history_like_ctrl_c(tmp_path):
    x, y = _data()
    ckpt = tmp_path / "model.safetensors"
    model = pc.models.seed_cnn(seed=0)

    def terminate(epoch, logs):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    history = model.fit(x, y, epochs=3, batch_size=8, progress=False, checkpoint_path=ckpt, on_epoch_end=terminate)
    assert history.interrupted and history.signal == "SIGTERM"
    assert len(history.history["loss"]) == 1
    saved = pc.load(ckpt)
    assert saved.checkpoint["train_state"]["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after fit


def test_a_second_sigterm_stops_at_once(tmp_path):
    x, y = _data()
    model = pc.models.seed_cnn(seed=0)

    def terminate_twice(epoch, logs):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Stopped) as info:
        model.fit(x, y, epochs=3, batch_size=8, progress=False, checkpoint_path=tmp_path / "m.safetensors",
                  on_epoch_end=terminate_twice)
    assert info.value.signum == signal.SIGTERM
    assert isinstance(info.value, KeyboardInterrupt)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the divergence itself: NumPy overflows on purpose
def test_divergence_names_no_checkpoint_when_this_run_wrote_none(tmp_path):
    x, y = _data()
    other = tmp_path / "model.safetensors"
    pc.models.seed_cnn(seed=5).save(other)  # another run's file at the path this run would write
    model = pc.models.seed_cnn(seed=0)
    with pytest.raises(pc.training.TrainingDiverged) as info:
        model.fit(x, y, epochs=2, batch_size=8, progress=False, optimizer=pc.optim.SGD(model.parameters(), lr=1e30),
                  checkpoint_path=other)
    assert "checkpoint" not in str(info.value)


def test_sigterm_after_the_last_step_is_still_reported(tmp_path):
    x, y = _data()
    model = pc.models.seed_cnn(seed=0)

    def terminate_at_the_end(epoch, logs):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    history = model.fit(x, y, epochs=2, batch_size=8, progress=False, checkpoint_path=tmp_path / "m.safetensors",
                        on_epoch_end=terminate_at_the_end)
    assert not history.interrupted and history.signal == "SIGTERM"  # complete, but asked to stop


@pytest.mark.parametrize("bad", [np.floating, np.number, "U5", "V8", "datetime64[s]"])
def test_dtypes_that_are_not_one_numeric_dtype_are_refused(bad):
    with pytest.raises(ValueError):
        pc.get_backend("numpy").asarray([1.0, 2.0], dtype=bad)
    with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
        pc.models.seed_cnn(dtype=bad)
