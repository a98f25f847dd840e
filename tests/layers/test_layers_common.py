"""What every layer shares: dtype and device preserved, bad constructor arguments and inputs refused."""

import numpy as np
import pytest

from conftest import assert_on_backend, single, to_numpy
from portacnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU


# ----------------------------------------------------------------------------------------------------
# dtype / device preservation for every layer, forward and backward

LAYER_CASES = [
    pytest.param(lambda: Conv2D(2, 3, 3, stride=2, padding=1), (2, 2, 7, 7), id="conv"),
    pytest.param(lambda: MaxPool2D(3, stride=2, padding=1), (2, 2, 7, 7), id="maxpool"),
    pytest.param(lambda: MaxPool2D(2), (2, 2, 6, 6), id="maxpool2"),
    pytest.param(lambda: ReLU(), (2, 2, 4, 4), id="relu"),
    pytest.param(lambda: Flatten(), (2, 2, 4, 4), id="flatten"),
    pytest.param(lambda: Dense(5, 3), (4, 5), id="dense"),
    pytest.param(lambda: Dropout(0.3), (2, 2, 4, 4), id="dropout"),
]


@pytest.mark.parametrize("factory,shape", LAYER_CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_preserves_dtype_and_device(backend, dtype, rng, factory, shape, training):
    model = single(factory(), backend, dtype)
    for p in model.parameters():
        assert_on_backend(backend, p.data, dtype)
    x = backend.asarray(rng.standard_normal(shape), dtype=dtype)
    out = model.forward(x, training=training)
    assert_on_backend(backend, out, dtype)
    dx = model.backward(backend.asarray(np.ones(tuple(out.shape)), dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=shape)
    for p in model.parameters():
        assert_on_backend(backend, p.grad, dtype, shape=tuple(p.data.shape))


@pytest.mark.parametrize("factory,shape", LAYER_CASES)
def test_layer_accepts_numpy_input(backend, rng, factory, shape):
    model = single(factory(), backend, "float32")
    out = model.forward(rng.standard_normal(shape).astype(np.float32), training=False)
    assert_on_backend(backend, out, "float32")


# ----------------------------------------------------------------------------------------------------
# argument and input validation

BAD_CONSTRUCTORS = [
    pytest.param(lambda: Conv2D(1, -2, 3), "out_channels", id="conv-neg-out"),
    pytest.param(lambda: Conv2D(0, 2, 3), "in_channels", id="conv-zero-in"),
    pytest.param(lambda: Conv2D(1, 2, 0), "kernel_size", id="conv-zero-kernel"),
    pytest.param(lambda: Conv2D(1, 2, (3, -1)), "kernel_size", id="conv-neg-kernel-w"),
    pytest.param(lambda: Conv2D(1, 2, 3, stride=0), "stride", id="conv-zero-stride"),
    pytest.param(lambda: Conv2D(1, 2, 3, padding=-1), "padding", id="conv-neg-padding"),
    pytest.param(lambda: MaxPool2D(0), "kernel_size", id="pool-zero-kernel"),
    pytest.param(lambda: MaxPool2D(2, stride=0), "stride", id="pool-zero-stride"),
    pytest.param(lambda: MaxPool2D(2, padding=-1), "padding", id="pool-neg-padding"),
    pytest.param(lambda: Dense(0, 3), "in_features", id="dense-zero-in"),
    pytest.param(lambda: Dense(3, -1), "out_features", id="dense-neg-out"),
    pytest.param(lambda: Dropout(1.5), r"p|probability|rate", id="dropout-above-1"),
    pytest.param(lambda: Dropout(-0.1), r"p|probability|rate", id="dropout-negative"),
]


@pytest.mark.parametrize("factory,name", BAD_CONSTRUCTORS)
def test_bad_constructor_arguments(factory, name):
    with pytest.raises(ValueError, match=rf"\b({name})\b"):
        factory()


BAD_INPUTS = [  # the layer, a bad input shape, what the one-line message must say
    pytest.param(lambda: Conv2D(1, 2, 3), (1, 5, 5), r"Conv2D\(in_channels=1.*expects input of shape \(N, 1, H, W\); got shape \(1, 5, 5\)", id="conv-rank3"),
    pytest.param(lambda: Conv2D(1, 2, 3), (2, 3, 5, 5), r"Conv2D.*\(N, 1, H, W\); got shape \(2, 3, 5, 5\)", id="conv-channels"),
    pytest.param(lambda: MaxPool2D(2), (2, 4, 4), r"MaxPool2D.*\(N, C, H, W\); got shape \(2, 4, 4\)", id="pool-rank3"),
    pytest.param(lambda: MaxPool2D(2), (2, 1, 1, 4, 4), r"MaxPool2D.*got shape \(2, 1, 1, 4, 4\)", id="pool-rank5"),
    pytest.param(lambda: Dense(4, 2), (2, 1, 2, 2), r"Dense\(in_features=4.*got shape \(2, 1, 2, 2\)", id="dense-rank4"),
    pytest.param(lambda: Dense(4, 2), (2, 5), r"Dense\(in_features=4.*got shape \(2, 5\)", id="dense-features"),
]


@pytest.mark.parametrize("factory,shape,message", BAD_INPUTS)
def test_bad_input_shapes(backend, factory, shape, message):
    model = single(factory(), backend, "float32")
    with pytest.raises(ValueError, match=message) as info:
        model.forward(backend.asarray(np.zeros(shape, dtype=np.float32)), training=False)
    assert "\n" not in str(info.value)


def test_relu_of_infinities_and_nan_matches_torch_semantics(backend):
    x = np.array([[-np.inf, np.inf, np.nan, -1.0, 0.0, 2.0]], dtype=np.float32)
    out = to_numpy(backend, single(ReLU(), backend, "float32").forward(x))
    np.testing.assert_array_equal(out, np.array([[0.0, np.inf, np.nan, 0.0, 0.0, 2.0]], dtype=np.float32))
