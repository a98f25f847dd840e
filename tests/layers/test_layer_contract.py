"""What a layer declares (parameters, buffers, row-separability, random draws, widths, output shape, replica)
is true, and the modules that rely on it (data-parallel shards, the model) use the declaration."""

import numpy as np
import pytest

import portacnn as pc
from portacnn.layers import Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D, ReLU
from portacnn.layers.base import Parameter

STACKS = [
    pytest.param(lambda: [Conv2D(3, 5, (3, 2), stride=(2, 1), padding=(1, 0)), ReLU(), MaxPool2D(3, 2, 1), Flatten()],
                 (3, 11, 9), id="conv-pool"),
    pytest.param(lambda: [Conv2D(1, 33, 3), MaxPool2D(2), Dropout(0.3), Flatten(), Dense(33 * 13 * 13, 4)],
                 (1, 28, 28), id="wide-conv-dense"),
    pytest.param(lambda: [Flatten(), Dense(12, 7), ReLU(), Dense(7, 3)], (3, 2, 2), id="dense"),
]


@pytest.mark.parametrize("make, shape", STACKS)
def test_declared_output_shapes_are_the_real_ones(make, shape):
    model = pc.Sequential(make(), seed=0, workers=1)
    x = np.random.default_rng(0).random((2,) + shape, dtype=np.float32)
    declared = shape
    for layer in model.layers:
        x = layer.forward(x, training=True)
        declared = layer.output_shape(declared)
        assert tuple(x.shape[1:]) == declared, layer


@pytest.mark.parametrize("make", [pc.models.seed_cnn, pc.models.lenet5, pc.models.kannada_cnn])
def test_zoo_models_declare_their_widths(make):
    model = make()
    assert model.input_channels() == 1 and model.num_classes() == 10
    assert [type(layer).__name__ for layer in model.layers if layer.draws_random] == \
        ["Dropout"] * sum(isinstance(layer, Dropout) for layer in model.layers)
    assert all(layer.row_separable and layer.buffers() == {} for layer in model.layers)


def test_replica_shares_arrays_through_its_own_parameters():
    model = pc.models.kannada_cnn(seed=0)
    for layer in model.layers:
        twin = layer.replica()
        assert type(twin) is type(layer) and twin.config() == layer.config()
        for mine, master in zip(twin.parameters(), layer.parameters()):
            assert mine is not master and mine.data is master.data and mine.name == master.name


class _Running(Layer):
    """A layer with a buffer and rows that interact (what BatchNorm will be)."""

    row_separable = False

    def __init__(self):
        self.mean = None

    def initialize(self, rng, backend, dtype):
        self.mean = backend.xp.zeros((3,), dtype=backend.dtype(dtype), device=backend.device)

    def buffers(self):
        return {"running_mean": self.mean}

    def forward(self, x, training=False):
        return x - self.backend_mean(x)

    def backend_mean(self, x):
        return x[0:1, ...] * 0  # depends on another row: not row-separable

    def backward(self, grad_out, need_input_grad=True):
        return grad_out


def test_a_layer_with_buffers_must_define_its_own_replica():
    layer = _Running()
    layer.initialize(np.random.default_rng(0), pc.get_backend("numpy"), "float32")
    with pytest.raises(NotImplementedError, match="has buffers and must define replica"):
        layer.replica()


def test_a_layer_that_is_not_row_separable_is_never_sharded():
    model = pc.Sequential([Flatten(), _Running()], seed=0, workers=2)
    assert model.shards_for((256, 3)) == 1
    model.layers[1].row_separable = True  # the same model, declared separable: sharded as asked
    model.layers[1].buffers = lambda: {}
    assert model.shards_for((256, 3)) == 2


def test_parameters_are_declared_not_probed():
    class Scaled(Layer):
        def initialize(self, rng, backend, dtype):
            self.gain = Parameter("gain", backend.asarray(np.ones(1), dtype=dtype))

        def parameters(self):
            return [self.gain]

        def forward(self, x, training=False):
            return x * self.gain.data

        def backward(self, grad_out, need_input_grad=True):
            return grad_out

    model = pc.Sequential([Scaled(), Flatten(), Dense(4, 2)], seed=0)
    assert [p.name for p in model.parameters()] == ["0.gain", "2.weight", "2.bias"]
    assert model.input_channels() is None and model.num_classes() == 2


def test_summary_lists_shapes_and_parameters():
    model = pc.models.lenet5()
    text = model.summary()
    lines = text.splitlines()
    assert len(lines) == 2 + len(model.layers) + 1
    assert "(6, 28, 28)" in lines[2] and "156" in lines[2] and lines[-1].startswith("61,706 parameters")
    assert "(10,)" in lines[-2] and "850" in lines[-2]
    assert "?" in pc.Sequential([Flatten(), Dense(4, 2)]).summary().splitlines()[2]
    assert "(2,)" in pc.Sequential([Flatten(), Dense(4, 2)]).summary(input_shape=(1, 2, 2)).splitlines()[3]
