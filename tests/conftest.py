"""Shared fixtures and helpers for the portacnn test suite.

* ``backend``: one test body run on every backend (numpy, array_api_strict on a non-default device,
  torch when importable, cupy marked ``gpu``). ``gpu`` items become visible skips when CuPy has no
  usable CUDA device.
* ``to_numpy`` / ``assert_close``: bring results back to the host and compare them with tolerances
  that depend on the dtype under test (float32 ~1e-5 relative, float64 ~1e-10).

Test modules import the helpers with ``from conftest import ...`` (pytest puts this directory on
``sys.path``; the test directory is deliberately not a package).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import portacnn as pc

TORCH_IMPORTABLE = importlib.util.find_spec("torch") is not None
JAX_IMPORTABLE = importlib.util.find_spec("jax") is not None

BACKEND_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="array_api_strict"),
    pytest.param(
        "torch",
        id="torch",
        marks=pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed"),
    ),
    # eager JAX compiles every op for each new shape: its cases triple the layer suites' time, so the fast default
    # run leaves them to the full run (the README's test line, which CI runs); tests/backend/test_jax.py keeps
    # whole JAX runs in the fast loop
    pytest.param("jax", id="jax", marks=[pytest.mark.skipif(not JAX_IMPORTABLE, reason="jax is not installed"),
                                         pytest.mark.slow]),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]

DTYPE_PARAMS = [pytest.param("float32", id="float32"), pytest.param("float64", id="float64")]

# Default comparison tolerances per dtype: rtol, and atol as a fraction of the largest |expected|.
TOLERANCES = {"float32": 1e-5, "float64": 1e-10}


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a usable CUDA device (CuPy backend)")
    if JAX_IMPORTABLE:
        # float64 tests need JAX's 64-bit arrays; float32 tests then also catch any silent promotion to float64
        # (without x64 JAX would turn it back into float32, hiding it). tests/backend/test_jax.py checks a
        # process without it.
        import jax

        jax.config.update("jax_enable_x64", True)
    if TORCH_IMPORTABLE:
        # The tensors here are tiny: torch's intra-op thread pool only oversubscribes a small machine
        # next to NumPy's BLAS threads (measured ~3-5x slower torch-oracle tests on 2 cores).
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if "cupy" in pc.available_backends():
        return
    skip_gpu = pytest.mark.skip(reason="no usable CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def sweep(cases, fast: int, unpack: bool = False) -> list:
    """``cases`` for a parametrize, ``fast`` of them spread evenly over the list in the fast default run and the
    rest marked ``slow`` (the README's test line, which CI runs, takes them all): a property-style sweep keeps its
    whole breadth without making the inner loop slow. ``unpack``: each case is a tuple of the arguments."""
    cases = list(cases)
    step = max(1, len(cases) // max(1, fast))
    out = []
    for i, case in enumerate(cases):
        marks = () if i % step == 0 else (pytest.mark.slow,)
        if isinstance(case, type(pytest.param(None))):  # already a pytest.param: keep its id and marks
            out.append(pytest.param(*case.values, id=case.id, marks=tuple(case.marks) + marks))
        else:
            out.append(pytest.param(*(case if unpack else (case,)), marks=marks))
    return out


def make_backend(name: str):
    """The Backend a test runs on; array_api_strict deliberately on a non-default device."""
    if name == "array_api_strict":
        import array_api_strict

        return pc.get_backend("array_api_strict", device=array_api_strict.Device("device1"))
    if name in ("torch", "jax") and name not in pc.available_backends():
        pytest.skip(f"{name} backend unavailable")
    return pc.get_backend(name)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    return make_backend(request.param)


@pytest.fixture(params=["fast", "portable"])
def fast_paths(request, monkeypatch):
    """Run a test with the kernels' fast paths on, then off (``PORTACNN_PORTABLE=1``: the layers' reference
    math and the portable primitives), so every fast path is checked against the same oracles."""
    if request.param == "portable":
        monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    else:
        monkeypatch.delenv("PORTACNN_PORTABLE", raising=False)
    return request.param


@pytest.fixture(params=DTYPE_PARAMS)
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ----------------------------------------------------------------------------------------------------
# helpers


def to_numpy(backend, x) -> np.ndarray:
    """A host NumPy copy of a backend array (0-d arrays stay 0-d)."""
    return np.asarray(backend.to_numpy(x))


def device_of(x):
    import array_api_compat

    return array_api_compat.device(x)


def assert_on_backend(backend, x, dtype: str, shape=None):
    """``x`` is an array of ``backend``'s namespace, on its device, with the given dtype (and shape)."""
    assert x.dtype == getattr(backend.xp, dtype), f"dtype {x.dtype}, expected {dtype}"
    assert device_of(x) == backend.device, f"device {device_of(x)!r}, expected {backend.device!r}"
    if shape is not None:
        assert tuple(x.shape) == tuple(shape), f"shape {tuple(x.shape)}, expected {tuple(shape)}"


def tolerance(dtype: str) -> float:
    return TOLERANCES[str(dtype)]


def assert_close(actual, expected, dtype="float64", rtol=None, atol=None, err_msg=""):
    """Compare host arrays with dtype-aware tolerances.

    ``rtol`` defaults to 1e-5 for float32 and 1e-10 for float64; ``atol`` defaults to ``rtol`` times the
    largest magnitude in ``expected`` (so entries that cancel to ~0 are judged on the tensor's scale,
    which is how float32 rounding errors behave).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    assert np.all(np.isfinite(actual)), f"non-finite values in result {err_msg}"
    if rtol is None:
        rtol = tolerance(dtype)
    if atol is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
        atol = rtol * max(scale, 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


def max_rel_diff(actual, expected) -> float:
    """max |a - e| / max |e|: the figure reported in oracle summaries."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return float(np.max(np.abs(actual - expected)) / (scale if scale > 0 else 1.0))


def single(layer, backend, dtype="float64", weights=None, seed=0):
    """A one-layer Sequential around ``layer`` on ``backend``; ``weights`` ({"weight":..., "bias":...})
    are loaded through ``load_state_dict`` with keys "0.weight"/"0.bias"."""
    model = pc.Sequential([layer], backend=backend, dtype=dtype, seed=seed)
    if weights is not None:
        model.load_state_dict({f"0.{k}": np.asarray(v, dtype=dtype) for k, v in weights.items()})
    return model


def randomize_batchnorm(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are the identity map), biases too."""
    r = np.random.default_rng(seed)
    state = model.state_dict()
    bn = {k.rsplit(".", 1)[0] for k in state if k.endswith(".running_mean")}
    for k, v in state.items():
        prefix, name = k.rsplit(".", 1)
        if name == "running_mean":
            state[k] = r.normal(0, 0.5, v.shape).astype(v.dtype)
        elif name == "running_var":
            state[k] = r.uniform(0.3, 2.0, v.shape).astype(v.dtype)
        elif name == "num_batches_tracked":
            state[k] = np.asarray(r.integers(1, 1000), dtype=np.int64)
        elif prefix in bn and name == "weight":
            state[k] = r.uniform(0.5, 1.5, v.shape).astype(v.dtype)
        elif name == "bias":
            state[k] = (v + r.normal(0, 0.1, v.shape)).astype(v.dtype)
    model.load_state_dict(state)
    return model
