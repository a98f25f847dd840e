"""The NumPy backend's compiled kernels (numba) against the layers' portable math, layout by layout.

Each case runs one layer forward and backward twice on the same data: with the fast paths on and with
``PORTACNN_PORTABLE=1``; the portable run is the reference (it is itself checked against float64 loops,
finite differences and torch in tests/layers). Inputs come in every memory order the layers produce:
NCHW, channels-last (N, H, W, C) and batch-last (C, H, W, N) views, and a non-contiguous slice.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import portacnn as pc
from portacnn.kernels import compiled, fast_path
from portacnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, MaxPool2D, ReLU

pytestmark = pytest.mark.skipif(not compiled.usable(), reason=f"compiled kernels not usable: {compiled.status()}")

LAYOUTS = ["nchw", "nhwc", "chwn", "strided"]


def _in_layout(x, layout):
    if layout == "nhwc":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "chwn":
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    if layout == "strided":  # every other column of a wider array: no contiguous block at all
        wide = np.repeat(x, 2, axis=3)
        return wide[..., ::2]
    return np.ascontiguousarray(x)


def _step(layer, x, dy, monkeypatch, portable):
    if portable:
        monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    else:
        monkeypatch.delenv("PORTACNN_PORTABLE", raising=False)
    y = layer.forward(x, True)
    dx = layer.backward(dy, True)
    grads = [p.grad.copy() for p in layer.parameters()]
    buffers = {k: np.asarray(v).copy() for k, v in layer.buffers().items()}
    return np.array(y), np.array(dx), grads, buffers


def _compare(layer_fn, shape, layout, dtype, monkeypatch, exact=False, seed=0):
    rng = np.random.default_rng(seed)
    x = _in_layout(rng.standard_normal(shape).astype(dtype) * 2 + 0.5, layout)
    fast_model = pc.Sequential([layer_fn()], dtype=dtype, seed=1)
    ref_model = pc.Sequential([layer_fn()], dtype=dtype, seed=1)
    fast_layer, ref_layer = fast_model.layers[0], ref_model.layers[0]
    y_shape = ref_layer.output_shape(tuple(x.shape[1:]))
    dy = _in_layout(rng.standard_normal((shape[0], *y_shape)).astype(dtype), layout) if len(shape) == 4 else \
        rng.standard_normal((shape[0], *y_shape)).astype(dtype)
    got = _step(fast_layer, x, dy, monkeypatch, portable=False)
    want = _step(ref_layer, x, dy, monkeypatch, portable=True)
    rtol = 0 if exact else (2e-5 if dtype == "float32" else 1e-11)
    for g, w, what in ((got[0], want[0], "y"), (got[1], want[1], "dx")):
        assert g.dtype == w.dtype == np.dtype(dtype), what
        assert g.shape == w.shape, what
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=what)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max(), err_msg=what)
    for g, w in zip(got[2], want[2]):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=max(rtol, 1e-12), atol=max(rtol, 1e-12) * np.abs(w).max())
    for name in want[3]:
        np.testing.assert_allclose(got[3][name], want[3][name], rtol=max(rtol, 1e-12), atol=1e-7, err_msg=name)


def test_the_fast_paths_are_registered_for_numpy_only():
    a = np.zeros((1, 1, 1, 1), np.float32)
    for name in ("batchnorm_forward_train", "batchnorm_backward_train", "relu_forward", "relu_backward",
                 "maxpool2d_forward", "maxpool2d_forward_relu", "maxpool2d_backward", "conv2d_forward",
                 "conv2d_backward"):
        assert fast_path(a, name) is not None, name
    import array_api_strict as xps

    assert fast_path(xps.asarray([1.0]), "relu_forward") is None


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm2d(layout, dtype, affine, monkeypatch):
    _compare(lambda: BatchNorm2D(5, affine=affine), (6, 5, 7, 9), layout, dtype, monkeypatch)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm1d_and_a_shifted_mean(dtype, monkeypatch):
    _compare(lambda: BatchNorm1D(7), (33, 7), "nchw", dtype, monkeypatch)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 3, 5, 5)) * 0.01 + 100.0).astype(dtype)  # mean >> spread: no cancellation loss
    layer = pc.Sequential([BatchNorm2D(3)], dtype=dtype).layers[0]
    y_fast = layer.forward(x, True)
    monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    y_ref = layer.forward(x, True)
    np.testing.assert_allclose(y_fast, y_ref, rtol=2e-3 if dtype == "float32" else 1e-9, atol=2e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relu_is_exact_with_nan_and_infinities(layout, monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    x.flat[[0, 7, 19, 40]] = [np.nan, -np.inf, np.inf, -0.0]
    _compare(ReLU, x.shape, layout, "float32", monkeypatch, exact=True)
    layer = ReLU()
    xl = _in_layout(x, layout)
    y = layer.forward(xl)
    assert np.isnan(np.asarray(y)).sum() == 1 and y.strides == np.empty_like(xl).strides


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (3, 1, 0)])
def test_maxpool_equals_the_portable_pool(layout, kernel, stride, padding, monkeypatch):
    _compare(lambda: MaxPool2D(kernel, stride, padding), (3, 4, 9, 8), layout, "float32", monkeypatch,
             exact=stride is None)  # non-overlapping windows: every cell takes one gradient, exactly


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "chwn"])
@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), (2, 1, 0)])
def test_relu_then_maxpool_in_one_pass_is_exact(layout, kernel, stride, padding, monkeypatch):
    """A ReLU followed by max pooling runs as one pass (the pool reads max(x, 0); its backward applies the mask):
    the same bits as the two portable layers, with ties, zeros, NaN and infinities, tiling and overlapping
    windows."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    x[0, 0, :4, :4] = -1.0  # whole windows below zero: the pooled ReLU is 0, its gradient masked
    x[1, 1, :3, :3] = 0.0
    x.flat[[5, 77, 150, 301]] = [np.nan, -np.inf, np.inf, -0.0]
    x = _in_layout(x, layout)
    outs = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        m = pc.Sequential([ReLU(), MaxPool2D(kernel, stride, padding)], workers=1)
        y = np.asarray(m.forward(x, training=True))
        assert m.layers[0]._fused == (portable == "0")  # the fused pass ran, or the two layers
        dy = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
        outs.append((y, np.asarray(m.backward(dy))))
    (y_fast, dx_fast), (y_ref, dx_ref) = outs
    np.testing.assert_array_equal(y_fast, y_ref)
    if stride is None:  # every cell takes at most one gradient: exact
        np.testing.assert_array_equal(dx_fast, dx_ref)
    else:  # overlapping windows add their gradients in another order
        np.testing.assert_allclose(dx_fast, dx_ref, rtol=1e-6, atol=1e-6)


def test_maxpool_ties_and_nan_follow_the_portable_rules(monkeypatch):
    x = np.zeros((1, 1, 4, 4), np.float32)  # all ties: the first cell of each window takes the gradient
    x[0, 0, 2, 3] = np.nan  # a NaN window: NaN out, its gradient reaches no input
    x[0, 0, 0, 1] = -np.inf
    dy = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    outs = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        layer = MaxPool2D(2)
        y = layer.forward(x, True)
        outs.append((np.array(y), np.array(layer.backward(dy))))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert np.isnan(outs[0][0][0, 0, 1, 1]) and outs[0][1][0, 0, 2:, 2:].sum() == 0
    assert outs[0][1][0, 0, 0, 0] == 1 and outs[0][1][0, 0, 0, 2] == 2


CONVS = [  # (in, out, kernel, stride, padding, dilation, bias, input (N, H, W))
    (8, 32, 3, 1, 1, 1, True, (4, 7, 9)),
    (3, 40, (3, 2), (2, 1), (1, 2), (2, 1), True, (3, 11, 9)),
    (5, 33, 4, 1, "same", 1, False, (2, 9, 10)),
    (6, 32, 1, 2, 0, 1, True, (3, 8, 7)),
    (7, 33, 1, 1, 0, 1, True, (3, 8, 7)),  # 1x1, stride 1: the input is the columns, their gradient dx
    (1, 32, 3, 1, 1, 1, False, (5, 9, 8)),  # one input channel (a first layer)
    (2, 3, 5, 1, 2, 1, True, (3, 11, 10)),  # narrow: direct loops over the batch
    (4, 3, 3, 1, 1, 1, True, (4, 7, 9)),
    (1, 6, 5, 1, 2, 1, True, (5, 12, 12)),  # LeNet-5's first conv: four-tap passes, two outputs at a time
    (6, 16, 5, 1, 0, 1, True, (3, 14, 14)),  # LeNet-5's second: 16 outputs on a 10x10 image
    (3, 5, (3, 6), 1, "same", (2, 1), False, (3, 9, 11)),  # dilated, uneven "same" padding, a six-wide kernel
    (2, 4, 3, 2, 1, 1, True, (3, 9, 8)),  # strided: the generic batch-last kernel
    (2, 4, 3, 1, 3, 1, True, (2, 6, 7)),  # padded past the kernel's extent: the generic kernel too
    (16, 32, 3, 1, 1, 1, True, (3, 7, 9)),  # Winograd F(2x2, 3x3): odd sizes, the last tiles half outside
    (24, 16, 3, 1, (2, 0), 1, False, (2, 6, 8)),  # Winograd, tiles starting two rows above the image
    (16, 20, 3, 1, 3, 1, True, (2, 5, 6)),  # Winograd, padded past the kernel: dx skips dy's outer rows
]


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "strided"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: f"{s[0]}-{s[1]}-k{s[2]}-s{s[3]}-p{s[4]}-d{s[5]}")
def test_conv2d(layout, dtype, spec, monkeypatch):
    c, o, k, s, p, d, bias, (n, h, w) = spec
    _compare(lambda: Conv2D(c, o, k, stride=s, padding=p, dilation=d, bias=bias), (n, c, h, w), layout, dtype,
             monkeypatch)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: f"{s[0]}-{s[1]}-k{s[2]}-s{s[3]}-p{s[4]}-d{s[5]}")
def test_conv_with_relu_epilogue(spec, bias, monkeypatch):
    """Inference's conv + bias + ReLU (the folded BatchNorm's path) against the portable conv and max(., 0)."""
    c, o, k, s, p, d, _, (n, h, w) = spec
    rng = np.random.default_rng(3)
    layer = pc.Sequential([Conv2D(c, o, k, stride=s, padding=p, dilation=d, bias=bias)], seed=0).layers[0]
    x = _in_layout(rng.standard_normal((n, c, h, w)).astype(np.float32), "nhwc")
    wt = rng.standard_normal(layer.weight.data.shape).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if bias else None
    monkeypatch.delenv("PORTACNN_PORTABLE", raising=False)
    got, fused = layer.apply(x, wt, b, relu=True)
    got = np.asarray(got) if fused else np.maximum(got, 0)
    monkeypatch.setenv("PORTACNN_PORTABLE", "1")
    want = np.maximum(layer.apply(x, wt, b), 0)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
    assert (got >= 0).all() and ((got == 0) == (want == 0)).mean() > 0.99


@pytest.mark.parametrize("padding", [2, 0])
def test_narrow_input_gradient_skips_only_the_padding(padding, monkeypatch):
    """The direct input gradient is a convolution of dy padded with zeros; it multiplies no weight by that
    padding, so an infinite weight makes inf/NaN exactly where the portable col2im puts them."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    outs = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        layer = pc.Sequential([Conv2D(2, 3, 5, padding=padding)], seed=0).layers[0]
        layer.weight.data[1, 0, 0, 0] = np.inf
        with np.errstate(invalid="ignore"):  # inf times a padding zero: NaN, as expected
            y = layer.forward(x, True)
            outs.append(np.asarray(layer.backward(np.ones(y.shape, np.float32))))
    fast, ref = outs
    assert np.isinf(ref).any() or np.isnan(ref).any()
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(fast), np.isinf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(fast[finite], ref[finite], rtol=2e-5, atol=2e-5 * np.abs(ref[finite]).max())


@pytest.mark.parametrize("c", [6, 16], ids=["im2col", "winograd"])
def test_conv_in_many_blocks_equals_one_block(c, monkeypatch):
    """Blocks of images are multiplied apart and their weight gradients added in block order."""
    from portacnn.kernels import numpy_compiled

    rng = np.random.default_rng(2)
    x = rng.standard_normal((9, c, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((9, 32, 8, 8)).astype(np.float32)
    results = []
    for block in (1 << 30, 1):  # one block; one image per block
        monkeypatch.setattr(numpy_compiled, "CONV_BLOCK_BYTES", block)
        layer = pc.Sequential([Conv2D(c, 32, 3, padding=1)], seed=0).layers[0]
        y = layer.forward(x, True)
        dx = layer.backward(dy)
        results.append((np.array(y), np.array(dx), layer.weight.grad.copy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])  # each output row: the same products
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-5, atol=1e-5 * np.abs(results[0][2]).max())


@pytest.mark.parametrize("net", ["kannada_bn", "lenet5"])
def test_results_do_not_depend_on_the_thread_count(net):
    """A training step gives the same bits on one thread and on two (fixed sum orders)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    states = []
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            m = getattr(pc.models, net)(seed=0, workers=1)
            m.fit(x, y, epochs=1, batch_size=8, verbose=0, seed=0)
            states.append(m.state_dict())
    for k in states[0]:
        np.testing.assert_array_equal(states[0][k], states[1][k], err_msg=k)


def test_switches_and_status(monkeypatch):
    a = np.zeros((1, 2, 2, 2), np.float32)
    assert compiled.status().startswith("compiled with numba")
    monkeypatch.setenv("PORTACNN_COMPILED", "0")
    assert fast_path(a, "relu_forward") is None and fast_path(a, "conv2d_forward") is not None  # the generic one
    assert compiled.status().startswith("portable") and "PORTACNN_COMPILED=0" in compiled.status()
    monkeypatch.setenv("PORTACNN_COMPILED", "yes")
    with pytest.raises(ValueError, match="PORTACNN_COMPILED must be 0 or 1"):
        compiled.check_environment()


def test_without_numba_everything_runs_portable(monkeypatch):
    """A machine whose numba is missing or refuses its NumPy: one reason line, and the portable code."""
    monkeypatch.setattr(compiled, "_load", lambda: (None, "numba is not usable (No module named 'numba'); "
                                                         "install it with: pip install numba"))
    a = np.zeros((1, 2, 2, 2), np.float32)
    assert fast_path(a, "batchnorm_forward_train") is None
    assert compiled.status() == "portable (numba is not usable (No module named 'numba'); install it with: pip install numba)"
    m = pc.models.kannada_bn(seed=0)
    rng = np.random.default_rng(0)
    hist = m.fit(rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


@pytest.mark.slow
def test_a_second_process_loads_the_kernels_from_the_disk_cache(tmp_path):
    """Compiled once, then loaded: the second process finds every kernel it uses in numba's cache."""
    code = ("import numpy as np, portacnn as pc\n"
            "from portacnn.kernels import compiled\n"
            "m = pc.models.kannada_bn(seed=0)\n"
            "x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)\n"
            "m.fit(x, np.arange(4), epochs=1, batch_size=4, verbose=0)\n"
            "m = pc.models.lenet5(seed=0)\n"  # the narrow convs' direct loops and the fused ReLU + pool
            "m.fit(x, np.arange(4), epochs=1, batch_size=4, verbose=0)\n"
            "k = compiled.kernels()\n"
            "used = [f for f in vars(k).values() if hasattr(f, 'stats') and f.signatures]\n"
            "print(sum(len(f.stats.cache_misses) for f in used), sum(len(f.stats.cache_hits) for f in used))\n")
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    misses1, hits1 = map(int, first.stdout.split())
    misses2, hits2 = map(int, second.stdout.split())
    assert misses1 > 0 and hits1 == 0, first.stdout
    # nothing compiled again; every kernel it called came from the cache (a helper inlined into its callers
    # is compiled with them in the first process but never called on its own in the second)
    assert misses2 == 0 and 0 < hits2 <= misses1, second.stdout


@pytest.mark.parametrize("cls, weight_decay", [("Adam", 0.0), ("Adam", 0.05), ("AdamW", 0.05)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_update_in_one_pass_gives_the_same_bits(cls, weight_decay, dtype, monkeypatch):
    """The fused update makes the portable update's float operations in its order, in the array's dtype."""
    from portacnn.layers import Parameter

    rng = np.random.default_rng(5)
    results = []
    for portable in ("0", "1"):
        monkeypatch.setenv("PORTACNN_PORTABLE", portable)
        rng = np.random.default_rng(5)  # the same numbers for both runs
        params = [Parameter("w", rng.standard_normal((7, 5)).astype(dtype)), Parameter("b", rng.standard_normal(9).astype(dtype))]
        opt = getattr(pc.optim, cls)(params, lr=3e-3, weight_decay=weight_decay)
        for step in range(4):
            for p in params:
                p.grad = rng.standard_normal(p.data.shape).astype(dtype) * (step + 1)
            opt.step()
        results.append([p.data.copy() for p in params] + [s for st in opt.state.values() for s in st.values()]
                       if hasattr(opt, "state") else [p.data.copy() for p in params])
    for a, b in zip(results[0], results[1]):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_forked_child_computes_with_its_own_kernel_threads():
    """A process forked after the kernels ran (multiprocessing's fork, a Dask process pool) has none of the
    parent's pool threads: it must make its own instead of waiting on threads that do not exist."""
    code = ("import multiprocessing as mp, numpy as np, portacnn as pc\n"
            "m = pc.models.kannada_bn(seed=0)\n"
            "x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)\n"
            "want = m.predict_proba(x)\n"
            "def child(q):\n"
            "    q.put(m.predict_proba(x))\n"
            "if __name__ == '__main__':\n"
            "    ctx = mp.get_context('fork')\n"
            "    q = ctx.Queue()\n"
            "    p = ctx.Process(target=child, args=(q,))\n"
            "    p.start()\n"
            "    got = q.get(timeout=60)\n"
            "    p.join(10)\n"
            "    print(p.exitcode, float(abs(got - want).max()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    code_, diff = out.stdout.split()
    assert code_ == "0" and float(diff) == 0.0
