"""The model zoo's factories (portacnn.models): input_shape and num_classes, the defaults unchanged, ResNet-20.

Oracles: a copy of each factory's construction as it was before the factories took input_shape and num_classes
(the defaults must build those networks, weights bit for bit), and an independent PyTorch ResNet-20 written
here as the paper describes it (He et al. 2016, section 4.2, with projection shortcuts where the size changes),
loaded with portacnn's weights through an explicit name map: forward in training and in inference, the loss,
the input gradient and every parameter gradient, on every backend, in float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import portacnn as pc
from conftest import (BACKEND_PARAMS, TORCH_IMPORTABLE, assert_close, assert_on_backend, make_backend,
                      randomize_batchnorm, to_numpy)
from portacnn.layers import (BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                             Residual)


needs_torch = pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed")


# -- the factories as they were: the defaults must build exactly these ---------------------------------------
def _old_kannada_res(batchnorm):
    def conv_bn(c_in, c_out):
        if not batchnorm:
            return [Conv2D(c_in, c_out, 3, padding=1), ReLU()]
        return [Conv2D(c_in, c_out, 3, padding=1, bias=False), BatchNorm2D(c_out), ReLU()]

    def conv(c_in, c_out, k):
        if not batchnorm:
            return [Conv2D(c_in, c_out, k, padding=k // 2)]
        return [Conv2D(c_in, c_out, k, padding=k // 2, bias=False), BatchNorm2D(c_out)]

    block = Residual([*conv_bn(32, 64), *conv(64, 64, 3)], shortcut=conv(32, 64, 1))
    return [*conv_bn(1, 32), *conv_bn(32, 32), MaxPool2D(2), block, ReLU(), MaxPool2D(2), *conv_bn(64, 128),
            GlobalAvgPool2D(), Dropout(0.3), Dense(128, 10)]


OLD = {
    "seed_cnn": lambda: [Conv2D(1, 2, 5), ReLU(), MaxPool2D(2), Flatten(), Dense(288, 60), ReLU(), Dense(60, 10)],
    "lenet5": lambda: [Conv2D(1, 6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(6, 16, 5), ReLU(), MaxPool2D(2),
                       Flatten(), Dense(400, 120), ReLU(), Dense(120, 84), ReLU(), Dense(84, 10)],
    "kannada_cnn": lambda: [Conv2D(1, 32, 3), ReLU(), Conv2D(32, 64, 3), ReLU(), MaxPool2D(2), Dropout(0.25),
                            Flatten(), Dense(9216, 128), ReLU(), Dropout(0.5), Dense(128, 10)],
    "kannada_bn": lambda: _old_kannada_res(True),
    "kannada_nobn": lambda: _old_kannada_res(False),
}


def assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k, v in a.items():
        assert v.dtype == b[k].dtype and v.shape == b[k].shape and np.array_equal(v, b[k]), k


@pytest.mark.parametrize("seed", [0, pytest.param(7, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", sorted(OLD))
def test_defaults_build_the_same_networks_bit_for_bit(name, seed, dtype):
    old = pc.Sequential(OLD[name](), dtype=dtype, seed=seed, input_shape=(1, 28, 28))
    new = pc.models.MODELS[name](dtype=dtype, seed=seed)
    assert new.architecture() == old.architecture() and new.input_shape == old.input_shape == (1, 28, 28)
    assert_same_state(new.state_dict(), old.state_dict())
    assert_same_state(pc.models.MODELS[name](dtype=dtype, seed=seed, input_shape=(1, 28, 28), num_classes=10)
                      .state_dict(), old.state_dict())


def test_every_factory_has_the_zoo_signature():
    import inspect

    want = ["backend", "dtype", "seed", "workers", "input_shape", "num_classes"]
    for name, make in pc.models.MODELS.items():
        params = inspect.signature(make).parameters
        assert list(params) == want, name
        assert [params[k].default for k in want[:4]] == [None, "float32", 0, "auto"], name
        assert params["num_classes"].default == 10, name
        assert params["input_shape"].default == ((3, 32, 32) if name == "resnet20" else (1, 28, 28)), name
    assert pc.models.canonical_name("seed") == "seed_cnn" and pc.models.ALIASES["kannada"] == "kannada_cnn"


# -- other inputs and classes ------------------------------------------------------------------------------------
SHAPES = [(3, 32, 32), (2, 20, 17), (1, 13, 13)]


def _shape_cases():
    """Every (network, shape); each network with one shape (and each shape with two networks) in the fast run."""
    for i, name in enumerate(sorted(pc.models.MODELS)):
        for j, shape in enumerate(SHAPES):
            marks = () if (i + j) % len(SHAPES) == 0 else (pytest.mark.slow,)
            yield pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}", marks=marks)


@pytest.mark.parametrize("name,shape", _shape_cases())
def test_any_input_shape_and_classes(name, shape):
    model = pc.models.MODELS[name](input_shape=shape, num_classes=7, seed=1, workers=1)
    assert model.input_shape == shape and model.layers[0].in_channels == shape[0]
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    assert model.forward(x).shape == (2, 7) and model.infer(x).shape == (2, 7)
    dense = next(layer for layer in model.layers if isinstance(layer, Dense))
    before = model.layers[: model.layers.index(dense)]
    assert dense.in_features == int(np.prod(pc.layers.plan.walk(before, shape)[0]))


def test_the_issue_example_and_first_dense_sizes():
    model = pc.models.seed_cnn(input_shape=(3, 32, 32), num_classes=100)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes["0.weight"] == (2, 3, 5, 5) and shapes["4.weight"] == (60, 2 * 14 * 14)
    assert shapes["6.weight"] == (100, 60)
    assert pc.models.lenet5(input_shape=(3, 32, 32)).state_dict()["7.weight"].shape == (120, 16 * 6 * 6)
    assert pc.models.kannada_cnn(input_shape=(1, 32, 32)).state_dict()["7.weight"].shape == (128, 64 * 14 * 14)
    assert pc.models.kannada_bn(input_shape=(3, 64, 48), num_classes=2).state_dict()["15.weight"].shape == (2, 128)


SMALLEST = {"seed_cnn": 6, "lenet5": 12, "kannada_cnn": 6, "kannada_bn": 4, "kannada_nobn": 4, "resnet20": 1}


@pytest.mark.parametrize("name", sorted(pc.models.MODELS))
def test_the_smallest_side_is_named_and_is_the_boundary(name):
    make, side = pc.models.MODELS[name], SMALLEST[name]
    for shape in ((1, side, side), (2, side, side + 5), (3, side + 3, side)):
        assert make(input_shape=shape, workers=1).forward(np.zeros((1, *shape))).shape == (1, 10)
    if side == 1:
        return
    for shape in ((1, side - 1, side - 1), (2, side - 1, 40), (3, 40, 1)):
        with pytest.raises(ValueError) as info:
            make(input_shape=shape)
        text = str(info.value)
        assert "\n" not in text and text.startswith(f"{name} takes images of at least {side}x{side} pixels")
        assert str(shape) in text


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_shape=(28, 28)), r"lenet5 input_shape must be \(C, H, W\)"),
    (dict(input_shape=(784,)), r"lenet5 input_shape must be \(C, H, W\) images; got \(784,\)"),
    (dict(input_shape=(0, 28, 28)), "lenet5 input_shape must be"),
    (dict(input_shape="1x28x28"), "lenet5 input_shape must be"),
    (dict(input_shape=(1.0, 28, 28)), "lenet5 input_shape must be"),
    (dict(num_classes=0), "lenet5 num_classes must be a positive int; got 0"),
    (dict(num_classes=2.0), "lenet5 num_classes must be a positive int; got 2.0"),
    (dict(num_classes=True), "lenet5 num_classes must be a positive int; got True"),
    (dict(num_classes=None), "lenet5 num_classes must be a positive int; got None"),
])
def test_bad_input_shape_or_classes(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        pc.models.lenet5(**kwargs)
    assert "\n" not in str(info.value)


def test_checkpoint_keeps_the_shape_and_classes(tmp_path):
    model = pc.models.lenet5(input_shape=(3, 20, 24), num_classes=4, seed=2)
    model.save(tmp_path / "m.safetensors")
    back = pc.load(tmp_path / "m.safetensors")
    assert back.input_shape == (3, 20, 24) and back.architecture() == model.architecture()
    assert_same_state(back.state_dict(), model.state_dict())


# -- ResNet-20 ---------------------------------------------------------------------------------------------------
def test_resnet20_layout_and_parameter_count():
    model = pc.models.resnet20()
    assert model.input_shape == (3, 32, 32) and len(model.layers) == 23
    assert model.num_parameters() == 272_474  # the docstring's count (the paper's 0.27 M, option B shortcuts)
    assert pc.models.resnet20(num_classes=100).num_parameters() == 272_474 - 650 + 64 * 100 + 100
    convs = [p for p in model.parameters() if p.data.ndim == 4]
    assert len(convs) == 19 + 2  # 19 3x3 convolutions (the paper's 6n + 1, n = 3) and two 1x1 projections
    assert sum(p.data.size for p in model.parameters() if "shortcut" in p.name) == 2_752
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "BatchNorm2D", "ReLU"] + ["Residual", "ReLU"] * 9 + ["GlobalAvgPool2D", "Dense"]
    blocks = model.layers[3:21:2]
    assert [b.shortcut is not None for b in blocks] == [False] * 3 + [True, False, False] * 2
    assert [b.body[0].stride for b in blocks] == [(1, 1)] * 3 + [(2, 2), (1, 1), (1, 1)] * 2
    assert [b.body[0].out_channels for b in blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert all(not conv.use_bias for b in blocks for conv in b.children() if isinstance(conv, Conv2D))
    walked = [pc.layers.plan.walk(model.layers[: i + 1], (3, 32, 32))[0] for i in (2, 7, 13, 19, 21)]
    assert walked == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]


def torch_resnet20(in_channels=3, num_classes=10):
    """ResNet-20 written directly in torch, independent of portacnn's architecture description."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:  # option B: 1x1 projection with BatchNorm
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(c_out))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            width, stages = 16, []
            for filters, stride in ((16, 1), (32, 2), (64, 2)):
                stages.append(nn.Sequential(*(Block(width if i == 0 else filters, filters, stride if i == 0 else 1)
                                              for i in range(3))))
                width = filters
            self.layer1, self.layer2, self.layer3 = stages
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return ResNet20()


def torch_name(key: str) -> str:
    """portacnn's state key of ResNet-20 -> the torch module's: "9.shortcut.1.bias" -> "layer2.0.shortcut.1.bias"."""
    index, rest = key.split(".", 1)
    i = int(index)
    if i in (0, 1, 22):
        return {0: "conv1", 1: "bn1", 22: "fc"}[i] + "." + rest
    block = (i - 3) // 2  # layers 3, 5, ..., 19 are the nine blocks (a ReLU after each)
    branch, j, leaf = rest.split(".", 2)
    part = {"body": {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2"}, "shortcut": {"0": "shortcut.0",
            "1": "shortcut.1"}}[branch][j]  # fmt: skip
    return f"layer{block // 3 + 1}.{block % 3}.{part}.{leaf}"


def torch_twin(model, dtype):
    """The torch ResNet-20 in ``dtype`` with ``model``'s weights and BatchNorm buffers (every key mapped, shapes
    equal, nothing left over)."""
    import torch

    state = model.state_dict()
    net = torch_resnet20(model.input_shape[0], model.layers[-1].out_features).to(getattr(torch, dtype))
    theirs = net.state_dict()
    mapped = {torch_name(k): v for k, v in state.items()}
    assert set(mapped) == set(theirs) and len(mapped) == len(state)
    assert all(tuple(theirs[k].shape) == v.shape for k, v in mapped.items())
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mapped.items()})
    return net


# Tolerances are the suite's (conftest.TOLERANCES: 1e-5 float32, 1e-10 float64, on the scale of each tensor);
# measured worst over every backend, case, mode and tensor here: 4.4e-6 in float32, 5e-14 in float64.
CASES = {"3x32x32-10": ((3, 32, 32), 10), "2x13x11-5": ((2, 13, 11), 5)}  # CIFAR's; odd sides, other classes


def _resnet_cases(fast_dtype: str, fast_backends=("numpy", "array_api_strict", "torch")):
    """(backend, dtype, shape, classes) for every backend, dtype and case; the small case in ``fast_dtype`` on
    ``fast_backends`` in the fast run, the rest marked slow (the README's test line runs them all)."""
    for case, (shape, classes) in CASES.items():
        for backend in BACKEND_PARAMS:
            for dtype in ("float32", "float64"):
                fast = case == "2x13x11-5" and dtype == fast_dtype and backend.id in fast_backends
                slow = () if fast else (pytest.mark.slow,)
                yield pytest.param(backend.values[0], dtype, shape, classes, id=f"{backend.id}-{dtype}-{case}",
                                   marks=(*backend.marks, *slow))


def _pair(backend, dtype, shape, classes, seed=0):
    model = pc.models.resnet20(backend=backend, dtype=dtype, seed=seed, input_shape=shape, num_classes=classes)
    randomize_batchnorm(model, seed)  # not the identity: every BatchNorm's affine map and statistics matter
    return model, torch_twin(model, dtype)


def _compare_step(backend, dtype, model, net, training, n=4, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *model.input_shape)).astype(dtype)
    y = rng.integers(0, model.layers[-1].out_features, size=n)
    net.train(training)
    xt = torch.tensor(x, requires_grad=True)
    t_logits = net(xt)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.as_tensor(y))
    t_loss.backward()

    logits = model.forward(backend.asarray(x), training=training)
    loss, dlogits = pc.losses.softmax_cross_entropy(logits, backend.asarray(y))
    dx = model.backward(dlogits)
    assert_on_backend(backend, logits, dtype, shape=(n, model.layers[-1].out_features))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    assert_close(to_numpy(backend, logits), t_logits.detach().numpy(), dtype, err_msg="logits")
    assert_close(to_numpy(backend, loss), t_loss.item(), dtype, err_msg="loss")
    assert_close(to_numpy(backend, dx), xt.grad.numpy(), dtype, err_msg="input grad")
    theirs = dict(net.named_parameters())
    assert len(model.parameters()) == len(theirs)
    for p in model.parameters():
        assert_on_backend(backend, p.grad, dtype, shape=p.data.shape)
        assert_close(to_numpy(backend, p.grad), theirs[torch_name(p.name)].grad.numpy(), dtype,
                     err_msg=f"grad {p.name}")
    buffers = {k: v.numpy() for k, v in net.state_dict().items()}
    for k, v in model.state_dict().items():  # running statistics (updated in training), counts
        if v.dtype.kind == "f":
            assert_close(v, buffers[torch_name(k)], dtype, err_msg=k)
        else:
            np.testing.assert_array_equal(v, buffers[torch_name(k)], err_msg=k)
    return logits


@needs_torch
@pytest.mark.parametrize("backend,dtype,shape,classes", _resnet_cases("float32"))
def test_resnet20_training_step_matches_torch(backend, dtype, shape, classes):
    """Batch statistics: logits, loss, input gradient, every parameter gradient and the updated running
    statistics."""
    backend = make_backend(backend)
    model, net = _pair(backend, dtype, shape, classes)
    _compare_step(backend, dtype, model, net, training=True)


@needs_torch
@pytest.mark.parametrize("backend,dtype,shape,classes", _resnet_cases("float64", ("numpy", "torch")))
def test_resnet20_inference_matches_torch(backend, dtype, shape, classes):
    """Running statistics (torch's eval()): the forward pass, the folded inference path, and backward through
    the fixed affine maps."""
    backend = make_backend(backend)
    model, net = _pair(backend, dtype, shape, classes, seed=1)
    logits = _compare_step(backend, dtype, model, net, training=False, seed=1)
    x = backend.asarray(np.random.default_rng(1).standard_normal((4, *shape)).astype(dtype))
    assert_close(to_numpy(backend, model.infer(x)), to_numpy(backend, logits), dtype)


def test_resnet20_trains_with_its_initialisation():
    """The library's convolution initialisation (not He's) is enough: a few SGD steps fit a small fixed batch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3, 4, 4)).astype(np.float32)
    y = np.arange(10)
    model = pc.models.resnet20(input_shape=(3, 4, 4), seed=0, workers=1)
    opt = pc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(12):
        loss, d = pc.losses.softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(d, input_grad=False)
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
