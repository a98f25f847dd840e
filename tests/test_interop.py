"""portacnn.interop: to_torch / from_torch give networks computing the same numbers with bit-identical weights."""

from __future__ import annotations

import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close, sweep
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


# -- what a conversion cannot reproduce: refused on every module of the tree ------------------------------
def _tree():
    """A network with a module at every kind of place: the root, a plain leaf, a nested Sequential and its leaves,
    a TorchResidual, its body and shortcut Sequentials and their leaves, the GlobalAvgPool2D pair, the head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Sequential(nn.BatchNorm2d(2), nn.ReLU()),
        TorchResidual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh()), nn.Sequential(nn.Conv2d(2, 2, 1))),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))


TREE_PATHS = ["", "0", "1", "1.0", "1.1", "2", "2.body", "2.body.0", "2.body.1", "2.shortcut", "2.shortcut.0", "3",
              "4", "5"]


def _at(net, path):
    return net if not path else net.get_submodule(path)


def _named(path):
    return "the Sequential itself" if not path else f"module '{path}'"


HOOKS = {  # kind -> (register(module) -> handle, what the message calls it)
    "forward": (lambda m: m.register_forward_hook(lambda mod, i, o: o), "forward hook"),
    "forward_with_kwargs": (lambda m: m.register_forward_hook(lambda mod, a, k, o: o, with_kwargs=True),
                            "forward hook"),
    "forward_always_called": (lambda m: m.register_forward_hook(lambda mod, i, o: None, always_call=True),
                              "forward hook"),
    "forward_pre": (lambda m: m.register_forward_pre_hook(lambda mod, i: None), "forward pre-hook"),
    "forward_pre_with_kwargs": (lambda m: m.register_forward_pre_hook(lambda mod, a, k: None, with_kwargs=True),
                                "forward pre-hook"),
    "full_backward": (lambda m: m.register_full_backward_hook(lambda mod, gi, go: None), "backward hook"),
    "backward": (lambda m: m.register_backward_hook(lambda mod, gi, go: None), "backward hook"),
    "full_backward_pre": (lambda m: m.register_full_backward_pre_hook(lambda mod, go: None), "backward pre-hook"),
    "state_dict_post": (lambda m: m.register_state_dict_post_hook(lambda mod, sd, prefix, local: None),
                        "state-dict hook"),
    "state_dict_pre": (lambda m: m.register_state_dict_pre_hook(lambda mod, prefix, keep: None),
                       "state-dict pre-hook"),
    "load_state_dict_pre": (lambda m: m.register_load_state_dict_pre_hook(lambda *a: None),
                            "load-state-dict pre-hook"),
    "load_state_dict_post": (lambda m: m.register_load_state_dict_post_hook(lambda mod, keys: None),
                             "load-state-dict post-hook"),
}


@pytest.mark.parametrize("path", sweep(TREE_PATHS, 3))
@pytest.mark.parametrize("kind", sorted(HOOKS))
def test_a_hook_of_any_kind_on_any_module_is_refused_by_path(kind, path):
    net = _tree()
    assert from_torch(net, input_shape=(1, 5, 5)).architecture()  # converts without the hook
    register, called = HOOKS[kind]
    handle = register(_at(net, path))
    with pytest.raises(ValueError, match=f"from_torch: {_named(path)} .*has a {called}, which portacnn's model "
                                         r"would not run; remove its handle") as e:
        from_torch(net, input_shape=(1, 5, 5))
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
    handle.remove()
    assert from_torch(net, input_shape=(1, 5, 5)).architecture()


@pytest.mark.parametrize("register", [torch.nn.modules.module.register_module_forward_hook,
                                      torch.nn.modules.module.register_module_forward_pre_hook,
                                      torch.nn.modules.module.register_module_full_backward_hook,
                                      torch.nn.modules.module.register_module_full_backward_pre_hook],
                         ids=lambda f: f.__name__)
def test_a_global_module_hook_is_refused(register):
    handle = register(lambda *args: None)
    try:
        with pytest.raises(ValueError, match=f"a global hook is registered .*{register.__name__}"):
            from_torch(_tree())
    finally:
        handle.remove()
    assert from_torch(_tree()).architecture()


def _replace_forward(m):
    m.forward = lambda *args: args[0]


SHADOWS = {  # how an instance gets behaviour its class does not have -> the attribute named
    "forward": (_replace_forward, "forward"),
    "compile": (lambda m: m.compile(), "_compiled_call_impl"),
    "call_impl": (lambda m: setattr(m, "_call_impl", lambda *a, **k: a[0]), "_call_impl"),
}


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # compile()'s import
@pytest.mark.parametrize("path", sweep(TREE_PATHS, 3))
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "compile" else k  # torch.compile:
                                  for k in sorted(SHADOWS)])  # a second of import on its first call
def test_behaviour_set_on_an_instance_is_refused_by_path(kind, path):
    net = _tree()
    change, attribute = SHADOWS[kind]
    change(_at(net, path))
    with pytest.raises(ValueError, match=f"from_torch: {_named(path)} .*has '{attribute}' set on the instance, "
                                         f"replacing .*; portacnn converts .* own behaviour only") as e:
        from_torch(net)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(1, 1, 1), lambda: nn.Linear(1, 1), lambda: nn.BatchNorm2d(1), lambda: nn.BatchNorm1d(1),
    lambda: nn.MaxPool2d(1), lambda: nn.AvgPool2d(1), lambda: nn.ReLU(), lambda: nn.LeakyReLU(), lambda: nn.Sigmoid(),
    lambda: nn.Tanh(), lambda: nn.Flatten(), lambda: nn.Dropout(), lambda: nn.AdaptiveAvgPool2d(1),
    lambda: nn.Sequential(nn.ReLU()), lambda: TorchResidual(nn.Sequential(nn.ReLU())),
], ids=lambda make: type(make()).__name__)
@pytest.mark.parametrize("override", [True, False], ids=["overrides-forward", "plain-subclass"])
def test_subclasses_of_supported_classes_are_refused(make, override):
    base = type(make())
    namespace = {"forward": lambda self, *a: base.forward(self, *a) * 2} if override else {}
    sub = type(f"My{base.__name__}", (base,), namespace)
    module = make()
    module.__class__ = sub  # the same settings and tensors, another class
    tail = [nn.Flatten()] if base is nn.AdaptiveAvgPool2d else []  # the pair GlobalAvgPool2D is made of
    with pytest.raises(ValueError, match=rf"from_torch: module '1' \(My{base.__name__}.*has no portacnn layer") as e:
        from_torch(nn.Sequential(nn.ReLU(), module, *tail))
    assert "\n" not in str(e.value)  # a container's repr spans lines: messages show its class name only


def test_subclass_of_sequential_as_the_root_is_refused():
    class MySequential(nn.Sequential):
        def forward(self, x):
            return super().forward(x) + 1

    with pytest.raises(ValueError, match="from_torch takes a torch.nn.Sequential; got MySequential"):
        from_torch(MySequential(nn.ReLU()))


def test_requires_grad_and_training_mode_do_not_matter():
    net = _tree()
    expected = from_torch(net).state_dict()
    for change in (lambda n: n.requires_grad_(False), lambda n: n.eval(), lambda n: n.train()):
        change(net)
        assert_same_state(from_torch(net).state_dict(), expected)


def test_a_repeated_module_runs_as_often_as_torch_runs_it():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu, nn.Linear(3, 2))
    model = from_torch(net)  # named_children() lists relu once; forward runs it twice
    assert [type(layer).__name__ for layer in model] == ["Dense", "ReLU", "Dense", "ReLU", "Dense"]
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    assert_close(np.asarray(model.forward(x)), torch_out(net.eval(), x), "float32")


def _tied():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.weight = a.weight
    return nn.Sequential(a, nn.ReLU(), b)


def _shared_in_residual():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    return nn.Sequential(conv, TorchResidual(nn.Sequential(conv)))


def _with_child():
    lin = nn.Linear(2, 2)
    lin.add_module("extra", nn.Linear(2, 2))
    return nn.Sequential(lin)


def _sequential_parameter():
    net = nn.Sequential(nn.Linear(2, 2))
    net.register_parameter("scale", nn.Parameter(torch.ones(1)))
    return net


def _residual_extra():
    block = TorchResidual(nn.Sequential(nn.ReLU()))
    block.add_module("gate", nn.Sigmoid())
    return nn.Sequential(block)


def _nan_weight():
    net = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        net[0].bias[1] = float("inf")
    return net


@pytest.mark.parametrize("make, match", [
    (lambda: nn.Sequential(*[nn.Linear(2, 2)] * 2), r"module '1' .* is the module '0' again \(shared weights\)"),
    (_shared_in_residual, r"module '1.body.0' .* is the module '0' again \(shared weights\)"),
    (_tied, r"tensors '0.weight' and '2.weight' share memory \(tied weights\)"),
    (lambda: nn.Sequential(nn.ReLU(), None), "module '1' is None, which torch's Sequential cannot run"),
    (lambda: nn.Sequential(nn.Linear(2, 2, device="meta")), "tensor '0.weight' is on the meta device"),
    (_with_child, r"module '0' \(Linear\) has submodules \['extra'\], which torch's Linear never runs"),
    (_sequential_parameter, r"the Sequential itself \(Sequential\) holds tensors \['scale'\] of its own"),
    (_residual_extra, r"module '0' \(TorchResidual\) has submodules \['gate'\] besides body and shortcut"),
    (_nan_weight, r"from_torch: state dict entry '0.bias' holds 1 NaN or infinite values"),
])
def test_what_the_converted_model_could_not_hold_is_refused(make, match):
    with pytest.raises(ValueError, match=match) as e:
        from_torch(make())
    assert str(e.value).startswith("from_torch") and "\n" not in str(e.value)


@pytest.mark.parametrize("shape, match", [
    ((0, 5, 5), "must be"), ((1, -5, 5), "must be"), ((1, 5.5, 5), "must be"), ((True, 5, 5), "must be"),
    ("abc", "must be"), ((1, 5), "must be"), ((1, 5, 5, 1), "must be"), (5, "must be"), ((1, 5, None), "must be"),
    ((3, 5, 5), r"layer 0 \(Conv2D\) expects 1 input channels but gets 3"),
    ((1, 2, 2), r"layer 2.body.0 \(Conv2D\) its 3x3 window .* does not fit the 2x2 input"),
    ((25,), r"layer 0 \(Conv2D\)"),
])
def test_an_input_shape_the_layers_cannot_take_is_refused(shape, match):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                        TorchResidual(nn.Sequential(nn.Conv2d(2, 2, 3))), nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    with pytest.raises(ValueError, match=match) as e:
        from_torch(net, input_shape=shape)
    assert str(e.value).startswith("from_torch") and "\n" not in str(e.value)


def test_an_input_shape_that_fits_is_stored_as_ints():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    model = from_torch(net, input_shape=[np.int64(1), 5, 5])
    assert model.input_shape == (1, 5, 5) and all(type(d) is int for d in model.input_shape)
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\) expects 18 features but gets 32"):
        from_torch(net, input_shape=(1, 6, 6))
