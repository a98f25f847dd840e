"""Sequential models: state dict layout, loading errors, seeded initialisation, moving between backends."""

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close, assert_on_backend, make_backend, to_numpy

SEED_CNN_SHAPES = {
    "0.weight": (2, 1, 5, 5), "0.bias": (2,),
    "4.weight": (60, 288), "4.bias": (60,),
    "6.weight": (10, 60), "6.bias": (10,),
}  # fmt: skip
LENET5_SHAPES = {
    "0.weight": (6, 1, 5, 5), "0.bias": (6,),
    "3.weight": (16, 6, 5, 5), "3.bias": (16,),
    "7.weight": (120, 400), "7.bias": (120,),
    "9.weight": (84, 120), "9.bias": (84,),
    "11.weight": (10, 84), "11.bias": (10,),
}  # fmt: skip
KANNADA_SHAPES = {
    "0.weight": (32, 1, 3, 3), "0.bias": (32,),
    "2.weight": (64, 32, 3, 3), "2.bias": (64,),
    "7.weight": (128, 9216), "7.bias": (128,),
    "10.weight": (10, 128), "10.bias": (10,),
}  # fmt: skip

MODEL_SHAPES = [
    pytest.param("seed_cnn", SEED_CNN_SHAPES, id="seed_cnn"),
    pytest.param("lenet5", LENET5_SHAPES, id="lenet5"),
    pytest.param("kannada_cnn", KANNADA_SHAPES, id="kannada_cnn"),
]


def build(name, backend="numpy", **kw):
    return getattr(pc.models, name)(backend=backend, **kw)


@pytest.mark.parametrize("name,shapes", MODEL_SHAPES)
def test_state_dict_keys_and_shapes(name, shapes, dtype):
    model = build(name, dtype=dtype)
    sd = model.state_dict()
    assert list(sd) == list(shapes)  # layer order, torch.nn.Sequential indices
    for key, shape in shapes.items():
        assert isinstance(sd[key], np.ndarray), key
        assert sd[key].shape == shape, key
        assert sd[key].dtype == np.dtype(dtype), key
    assert [p.name for p in model.parameters()] == list(shapes)


@pytest.mark.parametrize("name,shapes", MODEL_SHAPES)
def test_state_dict_is_a_host_copy(name, shapes):
    model = build(name)
    sd = model.state_dict()
    sd["0.weight"][...] = 123.0
    assert not np.any(model.state_dict()["0.weight"] == 123.0)


@pytest.mark.parametrize("name,shapes", MODEL_SHAPES)
def test_forward_output_shape(backend, name, shapes):
    model = build(name, backend=backend)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    out = model.forward(x, training=False)
    assert_on_backend(backend, out, "float32", shape=(2, 10))


def test_default_dtype_is_float32():
    model = pc.models.seed_cnn(backend="numpy")
    assert all(v.dtype == np.float32 for v in model.state_dict().values())


def test_load_state_dict_round_trip(backend, rng):
    model = pc.models.seed_cnn(backend=backend, seed=0)
    new = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_state_dict(new)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, new[k])
    for p in model.parameters():
        assert_on_backend(backend, p.data, "float32")


def test_load_state_dict_from_another_backend_model(backend):
    src = pc.models.seed_cnn(backend="numpy", seed=5)
    dst = pc.models.seed_cnn(backend=backend, seed=6)
    dst.load_state_dict(src.state_dict())
    for k, v in dst.state_dict().items():
        np.testing.assert_array_equal(v, src.state_dict()[k])


def test_load_state_dict_missing_key_names_it():
    model = pc.models.seed_cnn(backend="numpy")
    sd = model.state_dict()
    del sd["4.bias"]
    with pytest.raises(ValueError, match=r"4\.bias"):
        model.load_state_dict(sd)


def test_load_state_dict_unexpected_key_names_it():
    model = pc.models.seed_cnn(backend="numpy")
    sd = model.state_dict()
    sd["5.weight"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"5\.weight"):
        model.load_state_dict(sd)


def test_load_state_dict_wrong_shape_names_it():
    model = pc.models.seed_cnn(backend="numpy")
    sd = model.state_dict()
    sd["6.weight"] = np.zeros((60, 10), dtype=np.float32)  # transposed
    with pytest.raises(ValueError, match=r"6\.weight"):
        model.load_state_dict(sd)


def test_failed_load_leaves_model_unchanged():
    model = pc.models.seed_cnn(backend="numpy")
    before = model.state_dict()
    sd = {k: np.zeros_like(v) for k, v in before.items()}
    sd["6.bias"] = np.zeros(11, dtype=np.float32)
    with pytest.raises(ValueError):
        model.load_state_dict(sd)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5", "kannada_cnn"])
def test_same_seed_same_weights_on_every_backend(backend, name, dtype):
    ref = build(name, "numpy", seed=11, dtype=dtype).state_dict()
    got = build(name, backend, seed=11, dtype=dtype).state_dict()
    assert list(got) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5"])
def test_same_seed_is_deterministic_and_seeds_differ(name):
    a = build(name, seed=1).state_dict()
    b = build(name, seed=1).state_dict()
    c = build(name, seed=2).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a[k], c[k]), k


@pytest.mark.parametrize("name,shapes", MODEL_SHAPES)
def test_init_matches_torch_default_bounds(name, shapes):
    """torch's default Conv2d/Linear init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    sd = build(name, seed=0, dtype="float64").state_dict()
    for key, value in sd.items():
        layer = key.split(".")[0]
        fan_in = int(np.prod(sd[f"{layer}.weight"].shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        assert np.max(np.abs(value)) <= bound * (1 + 1e-7), key
        if value.size >= 50:
            # uniform, not e.g. normal or constant: range covered, mean ~0, std ~bound/sqrt(3)
            assert np.max(np.abs(value)) > 0.8 * bound, key
            assert value.min() < 0 < value.max(), key
        if value.size >= 1000:
            assert abs(value.mean()) < 0.05 * bound, key
            assert abs(value.std() / (bound / np.sqrt(3)) - 1) < 0.05, key


def test_to_round_trip_keeps_weights(rng):
    model = pc.models.lenet5(backend="numpy", seed=3)
    ref = model.state_dict()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    ref_out = pc.get_backend("numpy").to_numpy(model.forward(x))
    path = ["array_api_strict", make_backend("array_api_strict")]
    if "torch" in pc.available_backends():
        path.append("torch")
    path.append("numpy")
    for target in path:
        same = model.to(target)
        assert same is model
        expected_name = target if isinstance(target, str) else target.name
        assert model.backend.name == expected_name
        if not isinstance(target, str):
            assert model.backend.device == target.device
        for p in model.parameters():
            assert_on_backend(model.backend, p.data, "float32")
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, ref[k], err_msg=f"{k} after .to({target!r})")
        out = model.forward(x, training=False)
        assert_on_backend(model.backend, out, "float32", shape=(2, 10))
        assert_close(to_numpy(model.backend, out), ref_out, "float32")


def test_to_backend_object_then_train(backend, rng):
    model = pc.models.seed_cnn(backend="numpy", seed=0).to(backend)
    assert model.backend == backend
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    out = model.forward(x, training=True)
    loss, d = pc.losses.softmax_cross_entropy(out, backend.asarray(np.array([1, 2, 3])))
    dx = model.backward(d)
    assert_on_backend(backend, dx, "float32", shape=x.shape)
    for p in model.parameters():
        assert_on_backend(backend, p.grad, "float32", shape=tuple(p.data.shape))


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5", "kannada_cnn"])
def test_input_channel_mismatch(backend, name):
    model = build(name, backend)
    with pytest.raises(ValueError):
        model.forward(np.zeros((2, 3, 28, 28), dtype=np.float32))


def test_wrong_input_rank(backend):
    model = pc.models.seed_cnn(backend=backend)
    with pytest.raises(ValueError):
        model.forward(np.zeros((2, 28, 28), dtype=np.float32))


def test_float64_model_keeps_float64(backend, rng):
    model = pc.models.seed_cnn(backend=backend, dtype="float64")
    for p in model.parameters():
        assert_on_backend(backend, p.data, "float64")
    out = model.forward(rng.standard_normal((2, 1, 28, 28)), training=True)
    assert_on_backend(backend, out, "float64", shape=(2, 10))
    loss, d = pc.losses.softmax_cross_entropy(out, backend.asarray(np.array([0, 9])))
    assert_on_backend(backend, loss, "float64", shape=())
    dx = model.backward(d)
    assert_on_backend(backend, dx, "float64", shape=(2, 1, 28, 28))


def test_backward_without_input_grad_gives_the_same_parameter_grads(backend):
    """fit skips the first layer's input gradient; every parameter gradient must be unchanged."""
    rng = np.random.default_rng(3)
    x = rng.random((4, 1, 28, 28))
    labels = rng.integers(0, 10, 4)
    grads = []
    for input_grad in (True, False):
        model = pc.models.lenet5(backend=backend, dtype="float64", seed=0)
        logits = model.forward(x, training=True)
        _, dlogits = pc.losses.softmax_cross_entropy(logits, model.backend.asarray(labels))
        dx = model.backward(dlogits, input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append({p.name: model.backend.to_numpy(p.grad) for p in model.parameters()})
    for key in grads[0]:
        np.testing.assert_array_equal(grads[0][key], grads[1][key], err_msg=key)


@pytest.mark.parametrize("shape, message", [
    ((3, 28, 28), r"input_shape \(3, 28, 28\) does not fit the model: layer 0 \(Conv2D\) expects 1 input channels"),
    ((1, 2, 2), r"does not fit the model: layer 0 \(Conv2D\) its 5x5 window"),
    ((1, -28, 28), r"input_shape must be \(C, H, W\) \(or \(F,\) for flat input\) of positive ints"),
    ("abc", r"input_shape must be \(C, H, W\)"),
    ((1, 28.0, 28), r"input_shape must be \(C, H, W\)"),
])
def test_an_input_shape_the_layers_do_not_take_is_refused(shape, message):
    layers = [pc.layers.Conv2D(1, 2, 5), pc.layers.ReLU(), pc.layers.Flatten(), pc.layers.Dense(2 * 24 * 24, 10)]
    assert pc.Sequential(layers, input_shape=[1, 28, 28]).input_shape == (1, 28, 28)
    with pytest.raises(ValueError, match=message):
        pc.Sequential([type(layer)(**layer.config()) for layer in layers], input_shape=shape)


# -- summary, as Keras shows it ------------------------------------------------------------------------------
def _rows(text):
    """The summary's layer rows as (key, description, output shape, parameters), descriptions keeping indents."""
    lines = text.splitlines()
    start = lines[0].index("layer")
    shape_at, count_at = lines[0].index("output shape"), lines[0].index("parameters")
    return [(line[:start].strip(), line[start:shape_at].rstrip(), line[shape_at:count_at].strip(),
             line[count_at:].strip()) for line in lines[2:-1]]


def test_summary_is_one_short_row_per_layer_with_shapes_and_parameters():
    L = pc.layers
    model = pc.Sequential([L.Conv2D(1, 32, 3, padding=1), L.ReLU(), L.BatchNorm2D(32), L.MaxPool2D(2),
                           L.Dropout(0.25), L.Flatten(), L.Dense(32 * 14 * 14, 128), L.LeakyReLU(0.2),
                           L.Dense(128, 10)], input_shape=(1, 28, 28))
    text = model.summary()
    assert _rows(text) == [
        ("0", "Conv2D(1->32, 3x3, pad 1)", "(32, 28, 28)", "320"),
        ("1", "ReLU", "(32, 28, 28)", "0"),
        ("2", "BatchNorm2D(32)", "(32, 28, 28)", "64"),
        ("3", "MaxPool2D(2)", "(32, 14, 14)", "0"),
        ("4", "Dropout(0.25)", "(32, 14, 14)", "0"),
        ("5", "Flatten", "(6272,)", "0"),
        ("6", "Dense(6272->128)", "(128,)", "802,944"),
        ("7", "LeakyReLU(0.2)", "(128,)", "0"),
        ("8", "Dense(128->10)", "(10,)", "1,290"),
    ]
    assert text.splitlines()[-1] == "804,618 parameters (float32, backend numpy, input (1, 28, 28))"


def test_summary_names_the_arguments_that_differ_from_the_usual():
    L = pc.layers
    block = L.Residual([L.Conv2D(2, 2, 3, padding="same", bias=False), L.BatchNorm2D(2, affine=False)],
                       shortcut=[L.Conv2D(2, 2, 1, dilation=2)])
    model = pc.Sequential([L.Conv2D(1, 2, (3, 2), stride=(1, 2), padding=(1, 0), dilation=2), block,
                           L.AvgPool2D(3, stride=2, padding=1), L.GlobalAvgPool2D(), L.BatchNorm1D(2),
                           L.Dense(2, 3, bias=False)], input_shape=(1, 9, 12))
    assert [row[:2] for row in _rows(model.summary())] == [
        ("0", "Conv2D(1->2, 3x2, stride 1x2, pad 1x0, dilation 2)"),
        ("1", "Residual"),
        ("1.body.0", "  Conv2D(2->2, 3x3, pad same, no bias)"),
        ("1.body.1", "  BatchNorm2D(2, no affine)"),
        ("1.shortcut.0", "  Conv2D(2->2, 1x1, dilation 2)"),
        ("2", "AvgPool2D(3, stride 2, pad 1)"),
        ("3", "GlobalAvgPool2D"),
        ("4", "BatchNorm1D(2)"),
        ("5", "Dense(2->3, no bias)"),
    ]


@pytest.mark.parametrize("run", ["forward", "infer", "predict"])
def test_a_hand_built_model_shows_shapes_after_its_first_batch_and_saves_none(run, tmp_path):
    L = pc.layers
    model = pc.Sequential([L.Conv2D(1, 2, 3), L.ReLU(), L.GlobalAvgPool2D(), L.Dense(2, 3)])
    before = model.summary()
    assert {row[2] for row in _rows(before)} == {"?"}
    assert before.splitlines()[-1].endswith("input ?; for shapes pass input_shape=(C, H, W) or run a batch)")
    with pytest.raises(ValueError):
        model.forward(np.zeros((2, 3, 8, 8), np.float32))  # a batch it cannot take teaches it nothing
    assert model.summary() == before
    getattr(model, run)(np.zeros((2, 1, 8, 6), np.float32))
    getattr(model, run)(np.zeros((2, 1, 5, 5), np.float32))  # the first batch's shape stays
    after = model.summary()
    assert [row[2] for row in _rows(after)] == ["(2, 6, 4)", "(2, 6, 4)", "(2,)", "(3,)"]
    assert after.splitlines()[-1].endswith("input (1, 8, 6) of the first batch)")
    assert model.input_shape is None  # what fit trains on, and checkpoints keep, is not guessed from a batch
    model.save(tmp_path / "m.safetensors")
    assert pc.load(tmp_path / "m.safetensors").input_shape is None
    assert "(2, 3, 3)" in model.summary(input_shape=(1, 5, 5))  # an explicit shape comes first


def test_a_declared_input_shape_wins_over_the_batches_computed():
    L = pc.layers
    model = pc.Sequential([L.Conv2D(1, 2, 3), L.GlobalAvgPool2D()], input_shape=(1, 8, 8))
    model.forward(np.zeros((1, 1, 5, 5), np.float32))
    assert _rows(model.summary())[0][2] == "(2, 6, 6)"
    assert model.summary().splitlines()[-1].endswith("input (1, 8, 8))")
