"""portacnn.interop: to_torch / from_torch give networks computing the same numbers with bit-identical weights."""

from __future__ import annotations

import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close
from conftest import randomize_batchnorm as randomize
from portacnn import layers as L

torch = pytest.importorskip("torch", reason="torch is not installed (the interop tests need it)")
nn = torch.nn

from portacnn.interop import TorchResidual, from_torch, to_torch


def stack(dtype="float32"):
    """Every layer type and option: nested Residual blocks with and without shortcuts, BatchNorm 2-D and 1-D
    (affine or not), same padding with even and dilated kernels, pools with padding, every activation."""
    inner = L.Residual([L.Conv2D(4, 4, (2, 3), padding="same", dilation=(2, 1)), L.Tanh()])
    layers = [
        L.Conv2D(2, 4, 3, padding=1),
        L.Residual([L.Conv2D(4, 4, 3, padding="same", bias=False), L.BatchNorm2D(4), L.ReLU(), inner, L.Dropout(0.2)]),
        L.Residual([L.Conv2D(4, 6, 3, stride=2, padding=(1, 0)), L.BatchNorm2D(6, affine=False), L.LeakyReLU(0.1)],
                   shortcut=[L.Conv2D(4, 6, (1, 3), stride=2, bias=False), L.BatchNorm2D(6)]),
        L.AvgPool2D(3, stride=1, padding=1), L.MaxPool2D((2, 3), stride=(1, 2), padding=(1, 1)), L.Sigmoid(),
        L.Dropout(0.5), L.GlobalAvgPool2D(), L.BatchNorm1D(6), L.Dense(6, 5), L.BatchNorm1D(5, affine=False),
        L.Tanh(), L.Dense(5, 3, bias=False),
    ]
    return randomize(pc.Sequential(layers, dtype=dtype, seed=4, input_shape=(2, 13, 12)), 4)


def assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k, value in a.items():
        va, vb = np.asarray(value), np.asarray(b[k])
        assert va.dtype == vb.dtype and va.shape == vb.shape and np.array_equal(va, vb), k


def torch_out(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


MODELS = [pytest.param(name, id=name) for name in sorted(pc.models.MODELS)] + [pytest.param("stack", id="stack")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", MODELS)
def test_to_torch_computes_the_same_with_the_same_weights_and_back(name, dtype):
    model = stack(dtype) if name == "stack" else randomize(pc.models.MODELS[name](dtype=dtype, seed=2), 2)
    net = to_torch(model)
    assert net.training and all(m.training for m in net.modules())  # torch's convention for new modules
    state = model.state_dict()
    assert_same_state(state, {k: v.numpy() for k, v in net.state_dict().items()})
    net.eval()
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, *model.input_shape)).astype(dtype)
        out = torch_out(net, x)
        assert out.dtype == np.dtype(dtype)
        assert_close(out, np.asarray(model.forward(x)), dtype, err_msg=f"batch {n}")
    back = from_torch(net, input_shape=model.input_shape)
    assert back.architecture() == model.architecture() and back.dtype == dtype
    assert back.input_shape == model.input_shape
    assert_same_state(back.state_dict(), state)


def test_a_state_dict_loads_unchanged_into_the_to_torch_network():
    model = randomize(pc.models.kannada_bn(seed=7), 7)
    net = to_torch(pc.models.kannada_bn(seed=8))  # same architecture, other weights
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    assert_same_state({k: v.numpy() for k, v in net.state_dict().items()}, model.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert_close(torch_out(net.eval(), x), np.asarray(model.forward(x)), "float32")


def test_to_torch_leaves_torch_random_state_alone_and_pickles():
    before = torch.random.get_rng_state()
    net = to_torch(stack())
    assert torch.equal(before, torch.random.get_rng_state())
    assert type(net[1]) is TorchResidual and net[1].shortcut is None and type(net[2].shortcut) is nn.Sequential
    again = pickle.loads(pickle.dumps(net))
    assert type(again[1]).__module__ == "portacnn.interop"
    assert_same_state({k: v.numpy() for k, v in again.state_dict().items()},
                      {k: v.numpy() for k, v in net.state_dict().items()})


def test_from_torch_of_a_hand_written_network():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 5, 4, padding="same", dilation=2), nn.BatchNorm2d(5), nn.ReLU(inplace=True)),
        nn.MaxPool2d(2),  # stride None: the kernel
        nn.Conv2d(5, 6, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), nn.LeakyReLU(0.2),
        nn.AvgPool2d(3, stride=1, padding=1), nn.Tanh(),
        nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),  # unnested: still one GlobalAvgPool2D
        nn.Dropout(0.3), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Sigmoid(), nn.Linear(8, 4),
    ).double()
    x = torch.randn(6, 3, 14, 16, dtype=torch.float64)
    net.train()
    for _ in range(3):  # running statistics that are not the initial ones
        net(x)
    net.eval()
    model = from_torch(net, input_shape=(3, 14, 16))
    assert model.dtype == "float64" and model.input_shape == (3, 14, 16)
    assert [type(layer).__name__ for layer in model] == [
        "Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D", "Conv2D", "LeakyReLU", "AvgPool2D", "Tanh", "GlobalAvgPool2D",
        "Dropout", "Dense", "BatchNorm1D", "Sigmoid", "Dense"]
    assert model[0].padding == "same" and model[0].dilation == (2, 2) and model[3].stride == (2, 2)
    # keys follow the flattened order: torch's "0.1.running_mean" is the model's "1.running_mean"
    renamed = {"0.0.": "0.", "0.1.": "1.", "2.": "4.", "9.": "10.", "10.": "11.", "12.": "13."}
    torch_state = {next(new + k[len(old):] for old, new in renamed.items() if k.startswith(old)): v.numpy()
                   for k, v in net.state_dict().items()}
    assert_same_state(model.state_dict(), torch_state)
    assert int(model.state_dict()["1.num_batches_tracked"]) == 3
    assert_close(np.asarray(model.forward(x.numpy())), torch_out(net, x.numpy()), "float64")


def test_from_torch_float32_residual_and_backend():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1),
                        TorchResidual(nn.Sequential(nn.Conv2d(2, 2, 3, padding="same"), nn.ReLU())),
                        nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    model = from_torch(net, backend="numpy")
    assert model.dtype == "float32" and isinstance(model[1], L.Residual) and model[1].shortcut is None
    x = np.random.default_rng(0).standard_normal((2, 1, 5, 5)).astype(np.float32)
    assert_close(np.asarray(model.forward(x)), torch_out(net, x), "float32")


@pytest.mark.parametrize("module, match", [
    (nn.Conv2d(2, 2, 3, groups=2), "module '1' .* has groups=2; portacnn's Conv2D has none"),
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'; portacnn pads with zeros only"),
    (nn.MaxPool2d(2, ceil_mode=True), "ceil_mode=True; portacnn's MaxPool2D takes ceil_mode=False only"),
    (nn.MaxPool2d(2, dilation=2), "dilation=2; portacnn's MaxPool2D takes dilation=1 only"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices=True"),
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode=True; portacnn's AvgPool2D"),
    (nn.AvgPool2d(2, count_include_pad=False), "count_include_pad=False"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override=3"),
    (nn.BatchNorm2d(2, track_running_stats=False), "track_running_stats=False"),
    (nn.BatchNorm2d(2, momentum=None), "momentum=None"),
    (nn.Flatten(start_dim=2), r"flattens other axes; portacnn's Flatten is Flatten\(start_dim=1, end_dim=-1\)"),
    (nn.AdaptiveAvgPool2d(2), r"only as AdaptiveAvgPool2d\(1\) followed by Flatten\(\)"),
    (nn.AdaptiveAvgPool2d(1), r"only as AdaptiveAvgPool2d\(1\) followed by Flatten\(\)"),
    (nn.GELU(), r"module '1' \(GELU\(approximate='none'\)\) has no portacnn layer \(supported: Conv2d"),
    (nn.Conv1d(2, 2, 3), r"module '1' \(Conv1d.*has no portacnn layer"),
    (nn.Dropout2d(0.5), "has no portacnn layer"),
    (nn.MaxPool2d(2, padding=2), r"module '1' .*padding 2x2 must be at most half its kernel size"),
])
def test_unsupported_modules_and_options_are_refused_by_path(module, match):
    with pytest.raises(ValueError, match=match) as e:
        from_torch(nn.Sequential(nn.ReLU(), module, nn.ReLU()))
    assert "\n" not in str(e.value) and str(e.value).startswith("from_torch: module '1'")


def test_nested_paths_and_other_refusals():
    with pytest.raises(ValueError, match=r"module '1.body.0' \(GELU"):
        from_torch(nn.Sequential(nn.ReLU(), TorchResidual(nn.Sequential(nn.GELU()))))
    named = nn.Sequential(OrderedDict(stem=nn.ReLU(), features=nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ELU())))
    with pytest.raises(ValueError, match=r"module 'features.2' \(ELU"):
        from_torch(named)
    with pytest.raises(ValueError, match=r"from_torch takes a torch.nn.Sequential; got Linear \(wrap a single module"):
        from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="holds no module"):
        from_torch(nn.Sequential())
    with pytest.raises(ValueError, match=r"parameters are \['torch.float16'\]; portacnn takes one of float32 or float64"):
        from_torch(nn.Sequential(nn.Linear(2, 2)).half())
    with pytest.raises(ValueError, match="to_torch takes a portacnn Sequential model; got Sequential"):
        to_torch(nn.Sequential(nn.ReLU()))


def test_missing_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="torch is not installed; pip install torch") as e:
        to_torch(pc.models.seed_cnn())
    assert "\n" not in str(e.value)
