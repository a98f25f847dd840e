"""Backend resolution, availability reporting and host <-> device transfers."""

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_on_backend, device_of


def test_available_backends_lists_cpu_backends():
    names = pc.available_backends()
    assert isinstance(names, list)
    assert "numpy" in names
    assert "array_api_strict" in names
    assert len(set(names)) == len(names)


def test_every_available_backend_resolves():
    for name in pc.available_backends():
        be = pc.get_backend(name)
        assert be.name == name
        assert be.xp is not None


def test_default_backend_is_numpy(monkeypatch):
    monkeypatch.delenv("PORTACNN_BACKEND", raising=False)
    assert pc.get_backend(None).name == "numpy"
    assert pc.get_backend().name == "numpy"


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setenv("PORTACNN_BACKEND", "array_api_strict")
    assert pc.get_backend(None).name == "array_api_strict"
    # an explicit argument beats the environment
    assert pc.get_backend("numpy").name == "numpy"


def test_env_var_unknown_name_is_value_error(monkeypatch):
    monkeypatch.setenv("PORTACNN_BACKEND", "no_such_backend")
    with pytest.raises(ValueError, match="no_such_backend"):
        pc.get_backend(None)


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError) as info:
        pc.get_backend("tensorflow")
    msg = str(info.value)
    for valid in ("numpy", "array_api_strict", "torch", "cupy"):
        assert valid in msg, f"{valid!r} missing from {msg!r}"


def test_unavailable_error_is_runtime_error():
    assert issubclass(pc.BackendUnavailableError, RuntimeError)


def test_cupy_without_gpu_is_unavailable_with_one_line_reason():
    if "cupy" in pc.available_backends():
        pytest.skip("cupy is usable on this machine")
    with pytest.raises(pc.BackendUnavailableError) as info:
        pc.get_backend("cupy")
    msg = str(info.value)
    assert msg.strip(), "empty message"
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    assert "cupy" in msg.lower()


def test_get_backend_accepts_backend_object(backend):
    again = pc.get_backend(backend)
    assert again.name == backend.name
    assert again.device == backend.device


def test_strict_backend_on_non_default_device():
    import array_api_strict

    dev = array_api_strict.Device("device1")
    be = pc.get_backend("array_api_strict", device=dev)
    assert be.device == dev
    x = be.asarray(np.ones((2, 3), dtype=np.float32))
    assert device_of(x) == dev


@pytest.mark.parametrize("np_dtype", ["float32", "float64", "int64"])
def test_asarray_to_numpy_round_trip(backend, np_dtype):
    host = (np.arange(24).reshape(2, 3, 4) - 7).astype(np_dtype)
    if "float" in np_dtype:
        host = host * np.asarray(1.25, dtype=np_dtype) + np.asarray(0.1, dtype=np_dtype)
    x = backend.asarray(host)
    assert_on_backend(backend, x, np_dtype, shape=host.shape)
    back = backend.to_numpy(x)
    assert isinstance(back, np.ndarray)
    assert back.dtype == np.dtype(np_dtype)
    np.testing.assert_array_equal(back, host)


@pytest.mark.parametrize("target", ["float32", "float64"])
def test_asarray_casts_to_requested_dtype(backend, target):
    host = np.linspace(-2, 2, 12, dtype=np.float64).reshape(3, 4)
    x = backend.asarray(host, dtype=target)
    assert_on_backend(backend, x, target, shape=(3, 4))
    np.testing.assert_array_equal(backend.to_numpy(x), host.astype(target))


def test_asarray_of_backend_array_stays(backend):
    x = backend.asarray(np.ones((2, 2), dtype=np.float32))
    y = backend.asarray(x)
    assert y is x  # no copy, not even a view
    assert_on_backend(backend, y, "float32", shape=(2, 2))


def test_synchronize_calls_the_backends_own_wait(backend, monkeypatch):
    """synchronize() is the registered wait of the backend (CuPy: the current stream), called once."""
    from portacnn.backend import registry

    calls = []
    spec = registry._SPECS[backend.name]
    monkeypatch.setitem(registry._SPECS, backend.name,
                        type(spec)(spec.load, spec.to_numpy, lambda: calls.append(backend.name)))
    assert backend.synchronize() is None
    assert calls == [backend.name]
