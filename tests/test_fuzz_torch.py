"""Property-based comparison with PyTorch: random layer stacks, geometries, batch sizes, dtypes, backends,
worker counts and special input values, forward and backward against the same network in torch (float64).

Three properties: (1) finite inputs (zeros of both signs, ties, large values in float64): logits, loss,
every parameter gradient and the input gradient match; (2) inputs holding infinities and NaN: the forward
pass matches value for value (NaN where torch has NaN); (3) stacks of max-pools and ReLUs, which compute no
sums, fed infinities, the dtype's extremes, signed zeros and ties: output and input gradient equal torch's
bit for bit. Gradients at NaN are a documented difference of max-pool (portacnn/layers/maxpool.py), so they
are not compared here. Runs are derandomized, so CI sees the same cases every time.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import oracles  # noqa: E402
import portacnn as pc  # noqa: E402
from conftest import make_backend  # noqa: E402
from portacnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning")]
RTOL = {"float32": 2e-4, "float64": 1e-10}
SETTINGS = settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
RAN = {"finite": 0, "non_finite": 0, "routing": 0}


@st.composite
def cases(draw):
    """A random stack (convs and pools that keep at least one output pixel, ReLUs, then Flatten + Dense), its
    input shape, dtype, backend, worker count and seed."""
    n, c, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(3, 11)), draw(st.integers(3, 11))
    input_shape, layers = (n, c, h, w), []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["conv", "pool", "relu"]))
        if kind == "relu":
            layers.append(ReLU())
            continue
        kh, kw = draw(st.integers(1, min(h, 4))), draw(st.integers(1, min(w, 4)))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        if kind == "conv":
            ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
            out = draw(st.sampled_from([1, 2, 5, 33]))  # narrow and wide (channels-last) conv layouts
            layers.append(Conv2D(c, out, (kh, kw), stride=(sh, sw), padding=(ph, pw)))
            c = out
        else:
            ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
            layers.append(MaxPool2D((kh, kw), stride=(sh, sw), padding=(ph, pw)))
        h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    layers += [Flatten(), Dense(c * h * w, draw(st.integers(2, 6)))]
    dtype = draw(st.sampled_from(["float32", "float64"]))
    backend = draw(st.sampled_from(["numpy", "array_api_strict", "torch"]))
    workers = draw(st.sampled_from([1, 2])) if backend == "numpy" else 1
    return layers, input_shape, dtype, backend, workers, draw(st.integers(0, 2**16))


def _values(rng, shape, dtype, finite):
    x = rng.standard_normal(shape).astype(dtype)
    r = rng.random(shape)
    x[r < 0.15] = 0.0
    x[(r >= 0.15) & (r < 0.25)] = -0.0
    x[(r >= 0.25) & (r < 0.35)] = 1.0  # ties
    if finite:
        if dtype == "float64":  # large, but no sum of them overflows (in float32 the cancellation they
            x[(r >= 0.35) & (r < 0.4)] = -1e3  # cause in gradient sums would swamp any fixed tolerance)
        return x
    # no finite extremes here: whether a float32 sum of them overflows depends on the summation order, which
    # differs from torch's (the dtype's extremes are checked in the exact pool/ReLU routing test below)
    specials = np.array([np.inf, -np.inf, np.nan], dtype=dtype)
    pick = (r >= 0.35) & (r < 0.5)
    x[pick] = rng.choice(specials, int(pick.sum()))
    return x


def _run(case, finite):
    layers, input_shape, dtype, backend, workers, seed = case
    n = input_shape[0]
    rng = np.random.default_rng(seed)
    model = pc.Sequential(layers, backend=make_backend(backend), dtype=dtype, seed=seed, workers=workers)
    x = _values(rng, input_shape, dtype, finite)
    net = oracles.torch_mirror(model, "float64")  # the oracle runs in float64 on the same numbers
    tx = torch.tensor(x.astype(np.float64), requires_grad=True)
    t_logits = net(tx)
    logits = model.forward(x, training=True)
    got = model.backend.to_numpy(logits).astype(np.float64)
    expected = t_logits.detach().numpy()
    if dtype == "float32":  # where float32 overflows, so would any float32 implementation
        expected = expected.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite_part = ~np.isnan(expected)
    assert np.array_equal(np.isinf(got[finite_part]), np.isinf(expected[finite_part]))
    scale = max(1.0, float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)))
    ok = np.isfinite(expected)
    np.testing.assert_allclose(got[ok], expected[ok], rtol=RTOL[dtype], atol=RTOL[dtype] * scale)
    if not finite:
        RAN["non_finite"] += 1
        return
    y = rng.integers(0, expected.shape[1], n)
    loss, dlogits = pc.losses.softmax_cross_entropy(logits, model.backend.asarray(y))
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(y))
    t_loss.backward()
    assert float(model.backend.to_numpy(loss)) == pytest.approx(t_loss.item(), rel=RTOL[dtype] * 10, abs=RTOL[dtype])
    dx = model.backend.to_numpy(model.backward(dlogits, input_grad=True))
    gscale = max(1e-3, float(np.max(np.abs(tx.grad.numpy()))))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10 * gscale)
    for p, (name, tp) in zip(model.parameters(), net.named_parameters()):
        assert p.name == name
        tg = tp.grad.numpy()
        pscale = max(1e-3, float(np.max(np.abs(tg))))
        np.testing.assert_allclose(model.backend.to_numpy(p.grad), tg, rtol=RTOL[dtype] * 10,
                                   atol=RTOL[dtype] * 10 * pscale, err_msg=name)
    RAN["finite"] += 1


@SETTINGS
@given(cases())
def test_random_stacks_with_finite_special_values_match_torch_forward_and_backward(case):
    _run(case, finite=True)


@SETTINGS
@given(cases())
def test_random_stacks_with_infinities_and_nan_match_torch_forward(case):
    _run(case, finite=False)


@st.composite
def routing_cases(draw):
    """Stacks of max-pools and ReLUs only (they compute no sums, so every result is exact), fed infinities,
    the dtype's extremes, signed zeros and ties: where each gradient goes must be torch's, bit for bit."""
    n, c, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 9)), draw(st.integers(2, 9))
    input_shape, layers = (n, c, h, w), []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            layers.append(ReLU())
            continue
        kh, kw = draw(st.integers(1, min(h, 4))), draw(st.integers(1, min(w, 4)))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
        layers.append(MaxPool2D((kh, kw), stride=(sh, sw), padding=(ph, pw)))
        h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    dtype = draw(st.sampled_from(["float32", "float64"]))
    backend = draw(st.sampled_from(["numpy", "array_api_strict", "torch"]))
    return layers, input_shape, dtype, backend, draw(st.integers(0, 2**16))


@SETTINGS
@given(routing_cases())
def test_pool_and_relu_gradients_at_infinities_extremes_and_ties_match_torch_exactly(case):
    layers, input_shape, dtype, backend, seed = case
    rng = np.random.default_rng(seed)
    model = pc.Sequential(layers, backend=make_backend(backend), dtype=dtype, seed=seed, workers=1)
    net = oracles.torch_mirror(model, dtype)
    fmax = np.finfo(dtype).max
    values = np.array([np.inf, -np.inf, fmax, -fmax, 0.0, -0.0, 1.0, -1.0], dtype=dtype)
    x = rng.choice(values, size=input_shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = net(tx)
    y = model.forward(x, training=True)
    np.testing.assert_array_equal(model.backend.to_numpy(y), ty.detach().numpy())
    g = rng.integers(1, 100, tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(model.backend.to_numpy(model.backward(g)), tx.grad.numpy())
    RAN["routing"] += 1


def test_report_how_many_cases_ran():
    """Runs last in this module: the counts the closing note quotes (-s shows them)."""
    print(f"\nfuzz vs torch: {RAN['finite']} finite cases (forward + every gradient), "
          f"{RAN['non_finite']} non-finite cases (forward), {RAN['routing']} pool/ReLU routing cases (exact)")
