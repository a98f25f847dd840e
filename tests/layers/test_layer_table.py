"""One sweep over the table of layer types (portacnn.layers.LAYER_TYPES): every type has an example here and is
covered everywhere a layer must be known (shapes and the layer contract, the checkpoint's reader, save/load,
ONNX export, the torch round trip, the summary). A new layer type missing from any table fails here."""

from __future__ import annotations

import math

import numpy as np
import pytest

import portacnn as pc
from portacnn import export, interop
from portacnn.layers import (LAYER_TYPES, AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                             GlobalAvgPool2D, Layer, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Tanh)
from portacnn.layers.spec import layer_from_spec, layer_spec

#: type name -> (a layer of that type, per-image input shape)
EXAMPLES = {
    "Conv2D": (lambda: Conv2D(2, 3, (3, 2), stride=(1, 2), padding=1), (2, 6, 5)),
    "MaxPool2D": (lambda: MaxPool2D(2), (2, 6, 4)),
    "AvgPool2D": (lambda: AvgPool2D(3, stride=2, padding=1), (2, 7, 6)),
    "GlobalAvgPool2D": (lambda: GlobalAvgPool2D(), (3, 4, 5)),
    "BatchNorm2D": (lambda: BatchNorm2D(2), (2, 4, 3)),
    "BatchNorm1D": (lambda: BatchNorm1D(5), (5,)),
    "Dense": (lambda: Dense(6, 4), (6,)),
    "Flatten": (lambda: Flatten(), (2, 3, 2)),
    "ReLU": (lambda: ReLU(), (2, 3, 3)),
    "LeakyReLU": (lambda: LeakyReLU(0.2), (2, 3, 3)),
    "Sigmoid": (lambda: Sigmoid(), (2, 3, 3)),
    "Tanh": (lambda: Tanh(), (4,)),
    "Dropout": (lambda: Dropout(0.3), (2, 3, 3)),
    "Residual": (lambda: Residual([Conv2D(2, 2, 3, padding=1), BatchNorm2D(2), ReLU()], [Conv2D(2, 2, 1)]),
                 (2, 5, 5)),
}
TYPES = sorted(LAYER_TYPES)


def _model(name, **kw):
    make, shape = EXAMPLES[name]
    return pc.Sequential([make()], seed=0, dtype="float64", input_shape=shape, **kw), shape


def _batch(shape, n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _all_layer_classes():
    """Every public concrete layer class the package defines (subclasses of Layer, any depth)."""
    found, todo = set(), [Layer]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("portacnn.layers") and not sub.__name__.startswith("_") \
                    and sub.__name__ != "Pool2D":  # the pools' shared base, never built itself
                found.add(sub)
    return found


def test_the_table_holds_every_layer_class_and_every_type_has_an_example():
    assert {cls.__name__: cls for cls in _all_layer_classes()} == LAYER_TYPES
    assert set(EXAMPLES) == set(LAYER_TYPES)


@pytest.mark.parametrize("name", TYPES)
def test_shapes_and_the_layer_contract(name):
    model, shape = _model(name)
    layer = model.layers[0]
    assert type(layer) is LAYER_TYPES[name]
    x = _batch(shape)
    y = model.forward(x, training=True)
    assert tuple(y.shape) == (4, *layer.output_shape(shape))
    dx = model.backward(np.ones_like(y))
    assert tuple(dx.shape) == x.shape and dx.dtype == x.dtype
    assert {k: tuple(p.data.shape) for k, p in layer.named_parameters().items()} == layer.parameter_shapes()
    assert list(layer.parameter_shapes()) == list(layer.named_parameters())  # the same order
    assert {k: tuple(np.shape(v)) for k, v in layer.buffers().items()} == layer.buffer_shapes()
    cost = layer.cost(shape)
    assert set(cost) == {"operations", "temporaries", "columns"} and all(v >= 0 for v in cost.values())
    twin = layer_from_spec(layer_spec(layer))
    assert type(twin) is type(layer) and twin.config() == layer.config()
    with pytest.raises(ValueError, match="unknown fields"):
        layer_from_spec({**layer_spec(layer), "not_a_field": 1})


@pytest.mark.parametrize("name", TYPES)
def test_the_checkpoint_reader_and_save_load(name, tmp_path):
    model, shape = _model(name)
    plan = pc.checkpoint.check_architecture(model.architecture(), shape, "float64")
    assert plan["parameters"] == sum(math.prod(p.data.shape) for p in model.parameters())
    assert plan["output_shape"] == model.layers[0].output_shape(shape)
    path = model.save(tmp_path / "m.safetensors")
    loaded = pc.load(path)
    assert type(loaded.layers[0]) is LAYER_TYPES[name] and loaded.architecture() == model.architecture()
    x = _batch(shape, seed=1)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


@pytest.mark.parametrize("name", TYPES)
def test_onnx_export(name):
    assert LAYER_TYPES[name] in export._EMITTERS
    ort = pytest.importorskip("onnxruntime")
    model, shape = _model(name)
    proto = export.onnx_model(model, dtype="float32")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _batch(shape, seed=2)
    got = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-5, atol=1e-5)  # the model in float64, ONNX in float32


@pytest.mark.parametrize("name", TYPES)
def test_torch_round_trip(name):
    assert LAYER_TYPES[name] in interop._TO_TORCH
    torch = pytest.importorskip("torch")
    model, shape = _model(name)
    net = interop.to_torch(model).eval()
    back = interop.from_torch(net, input_shape=shape)
    assert back.architecture() == model.architecture()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
    x = _batch(shape, seed=3)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TYPES)
def test_summary_names_the_layer(name):
    model, shape = _model(name)
    text = model.summary()
    assert name in text and str(model.layers[0].output_shape(shape)) in text


#: type name -> constructor arguments it must refuse (one bad value each); types without arguments refuse any
BAD = {
    "Conv2D": [dict(in_channels=0, out_channels=2, kernel_size=3), dict(in_channels=1, out_channels=2, kernel_size=3,
                                                                          bias="no"),
               dict(in_channels=1, out_channels=2, kernel_size=3, padding="full"),
               dict(in_channels=1, out_channels=2, kernel_size=3, stride=2, padding="same")],
    "MaxPool2D": [dict(kernel_size=0), dict(kernel_size=2, padding=2), dict(kernel_size=2, stride=True)],
    "AvgPool2D": [dict(kernel_size=(2, 2, 2)), dict(kernel_size=3, padding=-1)],
    "BatchNorm2D": [dict(num_features=2, eps=0), dict(num_features=2, momentum=1.5), dict(num_features=2, affine=1)],
    "BatchNorm1D": [dict(num_features=True), dict(num_features=3, eps=float("nan"))],
    "Dense": [dict(in_features=4, out_features=0), dict(in_features=4, out_features=2, bias="no")],
    "Dropout": [dict(p=1.0), dict(p=-0.1), dict(p="0.5")],
    "LeakyReLU": [dict(negative_slope=float("inf")), dict(negative_slope=True)],
    "Residual": [dict(layers=[]), dict(layers=[{"type": "ReLU"}], shortcut=[{"type": "Lambda"}])],
}


@pytest.mark.parametrize("name", TYPES)
def test_the_reader_refuses_what_the_constructor_refuses(name):
    """A layer read from a file passes exactly the constructor's checks: every bad value the constructor refuses
    (and any unknown field) is refused by the checkpoint reader too, before anything is built."""
    cases = BAD.get(name, []) + [{"not_a_field": 1, **(BAD.get(name) or [{}])[0]}]
    for kwargs in cases:
        with pytest.raises((ValueError, TypeError)):
            LAYER_TYPES[name](**kwargs)
        arch = [{"type": name, **kwargs}]
        with pytest.raises(ValueError, match=f"layer 0 \\({name}\\)"):
            pc.checkpoint.check_architecture(arch)


def test_the_checkpoint_package_names_no_layer_type():
    """Its code (not its prose) holds no layer type's name: the layers declare what it needs."""
    import ast
    import pathlib

    names = set(LAYER_TYPES)
    for path in pathlib.Path(pc.checkpoint.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(
            n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            text = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else
                    node.value if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings else "")
            assert not any(n in text for n in names), f"{path.name}:{getattr(node, 'lineno', '?')} names {text!r}"


@pytest.mark.parametrize("kind", [["Conv2D"], {"Conv2D": 1}, 3, None])
def test_a_layer_type_that_is_not_a_string_is_a_value_error(kind):
    with pytest.raises(ValueError, match="is not a known layer"):
        layer_from_spec({"type": kind})
    with pytest.raises(ValueError, match="is not a known layer"):
        pc.checkpoint.check_architecture([{"type": kind}])
