"""Fast paths registered at the seam in portacnn.kernels must return what the portable array-API primitives
and the layers' reference math return (exactly, or to float rounding where BLAS sums in another order)."""

import numpy as np
import pytest

import portacnn as pc
from portacnn import kernels
from portacnn.kernels import gemm as _gemm, windows as _windows

GEOMETRIES = [  # (N, C, H, W, kernel, stride, padding ((top, bottom), (left, right)), dilation)
    (3, 1, 28, 28, (5, 5), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 6, 14, 14, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    (2, 32, 26, 26, (3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 3, 11, 9, (3, 2), (2, 3), ((1, 1), (0, 0)), (1, 1)),
    (1, 4, 7, 7, (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    (2, 2, 9, 12, (4, 3), (3, 2), ((1, 1), (1, 1)), (1, 1)),
    (2, 3, 12, 11, (3, 3), (1, 1), ((0, 0), (0, 0)), (2, 2)),  # dilated
    (2, 4, 13, 10, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 3)),  # dilated, strided, asymmetric padding
    (1, 2, 8, 9, (4, 4), (1, 1), ((1, 2), (1, 2)), (1, 1)),  # "same" for an even window
    (2, 5, 9, 9, (2, 3), (1, 1), ((1, 2), (2, 2)), (3, 2)),  # "same", dilated: (1, 2) = 3*(2-1) split
    (1, 3, 7, 6, (1, 1), (1, 1), ((0, 0), (0, 0)), (3, 2)),  # 1x1: dilation changes nothing
]


def _portable(monkeypatch):
    monkeypatch.setenv("PORTACNN_PORTABLE", "1")


def test_numpy_registers_fast_paths():
    for primitive in ("im2col_nhwc", "short_wide_matmul", "conv2d_forward", "conv2d_backward", "in_layout_of"):
        assert kernels.fast_path(np.zeros(1, np.float32), primitive) is not None
    assert kernels.fast_path(np.zeros(1, np.float32), "no_such_primitive") is None


def test_portable_switch_turns_fast_paths_off(monkeypatch):
    _portable(monkeypatch)
    assert kernels.fast_path(np.zeros(1, np.float32), "im2col_nhwc") is None


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:4])) + f"-k{g[4]}-s{g[5]}-p{g[6]}-d{g[7]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("primitive", ["im2col_nhwc"])
def test_fast_im2col_equals_the_portable_loop(monkeypatch, geometry, dtype, primitive):
    n, c, h, w, kernel, stride, padding, dilation = geometry
    x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(dtype)
    out_hw = tuple(_windows.out_size(*a) for a in zip((h, w), kernel, stride, padding, dilation))
    arg = _windows.pad_hw(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), *padding)
    fast = getattr(_windows, primitive)(arg, kernel, stride, out_hw, dilation)
    _portable(monkeypatch)
    reference = getattr(_windows, primitive)(arg, kernel, stride, out_hw, dilation)
    assert fast.dtype == reference.dtype and fast.shape == reference.shape
    np.testing.assert_array_equal(fast, reference)
    if dilation == (1, 1):  # the default argument is no dilation
        np.testing.assert_array_equal(getattr(_windows, primitive)(arg, kernel, stride, out_hw), reference)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[:4])) + f"-k{g[4]}-s{g[5]}-p{g[6]}-d{g[7]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_col2im_equals_the_portable_loop(monkeypatch, geometry, dtype):
    """NumPy's in-place col2im_chwn adds the same slices in the same order as the portable at() loop: the same bits."""
    n, c, h, w, kernel, stride, padding, dilation = geometry
    out_hw = tuple(_windows.out_size(*a) for a in zip((h, w), kernel, stride, padding, dilation))
    padded = (c, h + sum(padding[0]), w + sum(padding[1]), n)
    cols = np.random.default_rng(1).standard_normal((c * kernel[0] * kernel[1], out_hw[0] * out_hw[1] * n)).astype(dtype)
    assert kernels.fast_path(cols, "col2im_chwn") is not None
    fast = _windows.col2im_chwn(cols, padded, kernel, stride, out_hw, dilation)
    _portable(monkeypatch)
    reference = _windows.col2im_chwn(cols, padded, kernel, stride, out_hw, dilation)
    assert fast.dtype == reference.dtype and fast.shape == reference.shape == padded
    np.testing.assert_array_equal(fast, reference)


def test_pad_hw_and_out_size_take_ints_or_sides():
    """Pools pass ints (both sides); convs pass (before, after): the same numbers where they agree."""
    x = np.arange(2 * 3 * 4 * 1, dtype=np.float64).reshape(2, 3, 4, 1)
    np.testing.assert_array_equal(_windows.pad_hw(x, 1, 2), _windows.pad_hw(x, (1, 1), (2, 2)))
    padded = _windows.pad_hw(x, (0, 2), (1, 0), value=-1.0)
    assert padded.shape == (2, 5, 5, 1)
    np.testing.assert_array_equal(padded[:, :3, 1:, :], x)
    assert np.all(padded[:, 3:, :, :] == -1) and np.all(padded[:, :, :1, :] == -1)
    assert _windows.pad_hw(x, 0, 0) is x and _windows.pad_hw(x, (0, 0), 0, copy=True) is not x
    assert _windows.out_size(7, 3, 2, 1) == _windows.out_size(7, 3, 2, (1, 1)) == 4
    assert _windows.out_size(7, 3, 1, (1, 2), 2) == 6  # (7 + 3 - 5) // 1 + 1


@pytest.mark.parametrize("shape", [(2, 25, 73728), (6, 25, 100352 + 17), (8, 9, 9000), (3, 150, 2000), (9, 25, 20000), (4, 25, 100)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_short_wide_matmul_equals_one_product(monkeypatch, shape, dtype):
    """The column-blocked product (used for a <= 8-row a and more than two blocks of columns, else one
    product) equals the single product to rounding, blocks ending mid-way included: it is no further from
    the float64 product than the single one (OpenBLAS may pick another kernel for a block's edge tile,
    so the two can differ in the last bit)."""
    m, k, p = shape
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, p)).astype(dtype)
    fast = _gemm.short_wide_matmul(a, b)
    _portable(monkeypatch)
    reference = _gemm.short_wide_matmul(a, b)
    assert fast.dtype == reference.dtype and fast.shape == reference.shape == (m, p)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = k * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert np.all(np.abs(fast - exact) <= bound) and np.all(np.abs(reference - exact) <= bound)


@pytest.mark.parametrize("make", [pc.models.seed_cnn, pc.models.lenet5, pc.models.kannada_cnn])
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-5), ("float64", 1e-12)])
def test_models_give_the_same_results_with_and_without_fast_paths(monkeypatch, make, dtype, rtol):
    """Logits, input gradient and every parameter gradient of the zoo models with every fast path on (the
    conv layouts, blocked GEMMs, window views, layout copies) and off (the layers' reference math): the same
    sums in other orders, so equal to rounding."""
    rng = np.random.default_rng(1)
    x, y = rng.random((4, 1, 28, 28)).astype(dtype), rng.integers(0, 10, 4)
    results = []
    for portable in (False, True):
        if portable:
            _portable(monkeypatch)
        model = make(seed=0, dtype=dtype, workers=1)
        logits = model.forward(x, training=True)
        _, d = pc.losses.softmax_cross_entropy(logits, y)
        dx = model.backward(d)
        results.append([logits, dx] + [p.grad for p in model.parameters()])
    for fast, reference in zip(*results):
        scale = float(np.max(np.abs(reference)))
        np.testing.assert_allclose(fast, reference, rtol=rtol, atol=rtol * scale)
