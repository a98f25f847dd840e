"""portacnn.export: ONNX graphs that ONNX Runtime (and onnx's reference evaluator) run to portacnn's numbers.

float32 graphs are compared with ONNX Runtime's CPU provider. float64 models export as float64 graphs;
ONNX Runtime's CPU provider has no float64 Conv, AveragePool or GlobalAveragePool, so float64 graphs with
those are checked with ``onnx.reference.ReferenceEvaluator`` (NumPy, exact to float64 rounding), the
conv-free ones with ONNX Runtime too, and ``dtype="float32"`` (the documented way to run a float64 model in
ONNX Runtime) with ONNX Runtime.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import portacnn as pc
from conftest import assert_close, sweep
from conftest import randomize_batchnorm as randomize
from portacnn import layers as L

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'portacnn[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'portacnn[onnx]')")

from onnx.reference import ReferenceEvaluator

from portacnn.export import MIN_OPSET, ExportPathError, OnnxUnavailable, export_checkpoint, onnx_model, to_onnx


# -- helpers ---------------------------------------------------------------------------------------------


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # tiny graphs: one thread is the fastest and leaves the machine alone
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def images(shape, n, dtype, seed=1):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)


def probabilities(model, x):
    """``model.predict_proba(x)``; for flat input (which predict_proba does not take), the same softmax."""
    if x.ndim == 4:
        return model.predict_proba(x)
    z = np.asarray(model.forward(x))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_runtime(model, path, softmax=False, batches=(1, 7), dtype=None):
    """ONNX Runtime's outputs equal portacnn's (logits, or predict_proba with softmax) at each batch size."""
    dtype = dtype or model.dtype
    s = session(path)
    for n in batches:
        x = images(model.input_shape, n, model.dtype, seed=n)
        got = s.run(None, {"images": x.astype(dtype)})[0]
        want = probabilities(model, x) if softmax else np.asarray(model.forward(x))
        assert got.dtype == np.dtype(dtype) and got.shape == want.shape
        assert_close(got, want, dtype, err_msg=f"batch {n}")


# -- models covering every layer and option ----------------------------------------------------------------
def conv_options():
    """same (odd, even and dilated kernels: asymmetric pads), valid, int and pair padding, strides, dilations."""
    return [
        L.Conv2D(2, 3, 3, padding="same"), L.Conv2D(3, 4, (2, 4), padding="same"),  # pads (0, 1) and (1, 2)
        L.Conv2D(4, 4, 2, padding="same", dilation=(3, 2)),  # pads (1, 2) and (1, 1)
        L.LeakyReLU(0.25), L.Conv2D(4, 5, 3, padding="valid", stride=2),
        L.Conv2D(5, 3, (3, 2), padding=(2, 1), stride=(1, 2), dilation=(2, 1), bias=False), L.Tanh(),
        L.Conv2D(3, 3, 1, padding=1), L.Flatten(), L.Dense(3 * 9 * 8, 12), L.Sigmoid(), L.Dense(12, 5, bias=False),
    ], (2, 15, 21)


def pools():
    """max and average pools with padding and strides, the global pool, BatchNorm 2-D and 1-D."""
    return [
        L.Conv2D(3, 4, 3), L.BatchNorm2D(4), L.AvgPool2D(3, stride=2, padding=1), L.ReLU(),
        L.MaxPool2D((3, 2), stride=(1, 2), padding=(1, 1)), L.BatchNorm2D(4, affine=False, eps=1e-3),
        L.MaxPool2D(2), L.AvgPool2D((2, 3), padding=(1, 1)), L.Sigmoid(), L.GlobalAvgPool2D(),
        L.BatchNorm1D(4), L.Dense(4, 6), L.BatchNorm1D(6, affine=False), L.Dense(6, 3),
    ], (3, 17, 18)


def residuals():
    """nested Residual blocks with and without shortcuts, dropout at the top and inside a block."""
    inner = L.Residual([L.Conv2D(4, 4, 3, padding="same"), L.Tanh()])
    return [
        L.Conv2D(1, 4, 3, padding=1),
        L.Residual([L.Conv2D(4, 4, 3, padding="same", bias=False), L.BatchNorm2D(4), L.ReLU(), inner, L.Dropout(0.2)]),
        L.Residual([L.Conv2D(4, 6, 3, stride=2, padding=1), L.BatchNorm2D(6), L.LeakyReLU(0.125)],
                   shortcut=[L.Conv2D(4, 6, 1, stride=2, bias=False), L.BatchNorm2D(6)]),
        L.Dropout(0.5), L.GlobalAvgPool2D(), L.Dropout(0.1), L.Dense(6, 4),
    ], (1, 12, 11)


def flat():
    """a model reading flat vectors: BatchNorm1D, Dense, Residual over Dense layers."""
    return [L.BatchNorm1D(8), L.Dense(8, 8), L.Residual([L.Dense(8, 8), L.Tanh()]), L.ReLU(), L.Dropout(0.3),
            L.Dense(8, 3)], (8,)


def convless():
    """every op ONNX Runtime runs in float64: max pool, BatchNorm, activations, Flatten, Dense, Add."""
    return [L.MaxPool2D(2, padding=1), L.BatchNorm2D(2), L.LeakyReLU(0.5),
            L.Residual([L.BatchNorm2D(2), L.Sigmoid()]), L.MaxPool2D(3, stride=2), L.Flatten(), L.BatchNorm1D(2 * 3 * 2),
            L.Dense(12, 4), L.Tanh()], (2, 14, 11)


STACKS = {"conv_options": conv_options, "pools": pools, "residuals": residuals, "flat": flat, "convless": convless}


def build(stack, dtype="float32", seed=0):
    layers, shape = STACKS[stack]()
    return randomize(pc.Sequential(layers, dtype=dtype, seed=seed, input_shape=shape), seed)


def random_stack(seed, dtype="float32"):
    """A random valid network: 2-5 layers of random convolutions, pools, BatchNorms, activations, dropouts and
    (nested) Residual blocks with random options, then a Flatten or global-pool head with dense layers."""
    r = np.random.default_rng(seed)

    def activation():
        return [L.ReLU(), L.LeakyReLU(float(r.uniform(0, 0.3))), L.Sigmoid(), L.Tanh()][int(r.integers(4))]

    def conv(c_in, c_out):
        k = tuple(int(v) for v in r.integers(1, 5, 2))
        d = tuple(int(v) for v in r.integers(1, 3, 2))
        mode = int(r.integers(4))
        if mode == 0:
            return L.Conv2D(c_in, c_out, k, padding="same", dilation=d, bias=bool(r.random() < 0.7))
        padding = "valid" if mode == 1 else int(r.integers(0, 2)) if mode == 2 else tuple(int(v) for v in r.integers(0, 3, 2))
        return L.Conv2D(c_in, c_out, k, stride=tuple(int(v) for v in r.integers(1, 3, 2)), padding=padding,
                        dilation=d, bias=bool(r.random() < 0.7))

    def residual(c, depth=0, c2=None):
        c2 = c2 or int(r.integers(1, 5))
        body = [L.Conv2D(c, c2, 3, padding="same"), L.BatchNorm2D(c2), activation()]
        if depth == 0 and r.random() < 0.5:
            body.append(residual(c2, 1, c2))  # keeps the channels: the block ends the body
        shortcut = None if c2 == c and r.random() < 0.7 else [L.Conv2D(c, c2, 1, bias=False)] + (
            [L.BatchNorm2D(c2)] if r.random() < 0.5 else [])
        return L.Residual(body, shortcut=shortcut)

    shape = (int(r.integers(1, 4)), int(r.integers(10, 17)), int(r.integers(10, 17)))
    input_shape, layers = shape, []
    for _ in range(int(r.integers(2, 6))):
        c, kind = shape[0], ["conv", "max", "avg", "bn", "act", "drop", "res"][int(r.integers(7))]
        if kind == "conv":
            layer = conv(c, int(r.integers(1, 5)))
        elif kind in ("max", "avg"):
            k = tuple(int(v) for v in r.integers(1, 4, 2))
            layer = (L.MaxPool2D if kind == "max" else L.AvgPool2D)(
                k, stride=tuple(int(v) for v in r.integers(1, 3, 2)), padding=tuple(int(r.integers(0, v // 2 + 1)) for v in k))
        elif kind == "bn":
            layer = L.BatchNorm2D(c, affine=bool(r.random() < 0.7))
        elif kind == "act":
            layer = activation()
        elif kind == "drop":
            layer = L.Dropout(0.3)
        else:
            layer = residual(c)
        out = layer.output_shape(shape)
        if min(out[1:]) >= 2:
            layers.append(layer)
            shape = out
    if r.random() < 0.5:
        layers.append(L.Flatten())
        features = int(np.prod(shape))
    else:
        layers.append(L.GlobalAvgPool2D())
        features = shape[0]
    if r.random() < 0.5:
        layers.append(L.BatchNorm1D(features))
    layers += [L.Dense(features, 7), activation(), L.Dense(7, 4)]
    return randomize(pc.Sequential(layers, dtype=dtype, seed=seed, input_shape=input_shape), seed)


# -- ONNX Runtime against portacnn -----------------------------------------------------------------------
@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "probabilities"])
@pytest.mark.parametrize("name", sorted(pc.models.MODELS))
def test_zoo_models_run_in_onnxruntime_as_in_portacnn(name, softmax, tmp_path):
    model = randomize(pc.models.MODELS[name](seed=3), seed=3)
    path = to_onnx(model, tmp_path / f"{name}.onnx", softmax=softmax)
    assert path == tmp_path / f"{name}.onnx"
    check_runtime(model, path, softmax=softmax)


@pytest.mark.parametrize("stack", ["conv_options", "pools", "residuals", "flat", "convless"])
def test_every_layer_and_option_runs_in_onnxruntime_as_in_portacnn(stack, tmp_path):
    model = build(stack)
    check_runtime(model, to_onnx(model, tmp_path / "m.onnx"))
    check_runtime(model, to_onnx(model, tmp_path / "p.onnx", softmax=True), softmax=True)


@pytest.mark.parametrize("seed", range(10))
def test_random_stacks_run_in_onnxruntime_as_in_portacnn(seed, tmp_path):
    model = random_stack(seed)
    check_runtime(model, to_onnx(model, tmp_path / "m.onnx"))


def test_asymmetric_same_padding_is_top_left_floor(tmp_path):
    model = pc.Sequential([L.Conv2D(1, 1, (2, 4), padding="same", dilation=(1, 1))], input_shape=(1, 5, 6))
    conv = next(n for n in onnx_model(model).graph.node if n.op_type == "Conv")
    pads = {a.name: list(a.ints) for a in conv.attribute}["pads"]
    assert pads == [0, 1, 1, 2]  # [top, left, bottom, right]: total 1 and 3, the odd one at the bottom/right


def test_float64_convless_runs_in_onnxruntime_in_float64(tmp_path):
    model = build("convless", dtype="float64")
    check_runtime(model, to_onnx(model, tmp_path / "m.onnx"))  # float64 tolerance (1e-10 relative)


def test_float64_model_exported_as_float32_runs_in_onnxruntime(tmp_path):
    model = build("residuals", dtype="float64")
    path = to_onnx(model, tmp_path / "m.onnx", dtype="float32")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    check_runtime(model, path, dtype="float32")


# -- onnx's reference evaluator ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["seed_cnn", "conv_options", "pools", "residuals"])
def test_reference_evaluator_agrees(name, dtype):
    model = randomize(pc.models.seed_cnn(dtype=dtype), 1) if name == "seed_cnn" else build(name, dtype)
    ev = ReferenceEvaluator(onnx_model(model, softmax=True))
    for n in (1, 7):
        x = images(model.input_shape, n, dtype, seed=n)
        got = ev.run(None, {"images": x})[0]
        assert got.dtype == np.dtype(dtype)
        assert_close(got, model.predict_proba(x), dtype)


def test_float64_leaky_relu_slope_is_rounded_to_float32_as_documented():
    model = pc.Sequential([L.Flatten(), L.LeakyReLU(0.01)], dtype="float64", input_shape=(1, 3, 3))
    x = -np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    got = ReferenceEvaluator(onnx_model(model)).run(None, {"images": x})[0]
    want = np.asarray(model.forward(x))
    assert_close(got, want, rtol=3e-8, atol=0)
    assert_close(got, x.reshape(1, 9) * float(np.float32(0.01)), rtol=1e-15, atol=0)


# -- the graph itself -------------------------------------------------------------------------------------
def test_graph_interface_versions_and_initializers(tmp_path):
    model = randomize(pc.models.kannada_bn(), 2)
    path = to_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == 8 and [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.producer_name == "portacnn"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and dims == ["N", 1, 28, 28]
    assert out.name == "logits" and [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 10]
    state = model.state_dict()
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert set(inits) == {k for k in state if not k.endswith("num_batches_tracked")}
    for k, v in inits.items():
        assert v.dtype == np.float32 and np.array_equal(v, state[k]), k
    assert not any(n.op_type == "Dropout" for n in proto.graph.node)
    ops = {n.op_type for n in proto.graph.node}
    assert ops == {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm"}


def test_class_names_and_preprocessing_travel_as_metadata(tmp_path):
    import json

    from portacnn.preprocessing import Preprocessing

    model = pc.models.seed_cnn()
    assert {p.key for p in onnx.load(str(to_onnx(model, tmp_path / "plain.onnx"))).metadata_props} == set()
    model.class_names = [f"digit {k}" for k in range(10)]
    model.preprocessing = Preprocessing(1, (28, 28), mean=(0.1,), std=(0.3,), border=0.0, border_spread=0.01)
    props = {p.key: p.value for p in onnx.load(str(to_onnx(model, tmp_path / "m.onnx"))).metadata_props}
    assert json.loads(props["class_names"]) == model.class_names
    assert Preprocessing.from_config(json.loads(props["portacnn_preprocessing"])) == model.preprocessing


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, 20])
def test_opsets_and_their_ir_versions(opset, tmp_path):
    model = build("pools")
    path = to_onnx(model, tmp_path / "m.onnx", opset=opset, softmax=True)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == opset
    assert proto.ir_version == {13: 7, 17: 8, 20: 9}[opset]
    check_runtime(model, path, softmax=True)


def test_fixed_batch_and_dynamic_image_sides(tmp_path):
    model = build("residuals")
    fixed = onnx.load(str(to_onnx(model, tmp_path / "f.onnx", dynamic_batch=False)))
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    check_runtime(model, tmp_path / "f.onnx", batches=(1,))
    # no input_shape: H and W are dynamic, and a fully convolutional net runs at any size
    model.input_shape = None
    proto = onnx.load(str(to_onnx(model, tmp_path / "d.onnx")))
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["N", 1, "H", "W"]
    s = session(tmp_path / "d.onnx")
    for h, w in ((12, 11), (20, 9)):
        x = images((1, h, w), 3, "float32")
        assert_close(s.run(None, {"images": x})[0], np.asarray(model.forward(x)), "float32")


def test_a_model_of_dropout_only_is_the_identity(tmp_path):
    model = pc.Sequential([L.Dropout(0.5)], input_shape=(2, 3, 3))
    check_runtime(model, to_onnx(model, tmp_path / "m.onnx"))


# -- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"opset": 12}, "opset 12 is not supported: portacnn exports opset 13 or later"),
    ({"opset": "17"}, "opset must be an int"),
    ({"opset": True}, "opset must be an int"),
    ({"opset": 10_000}, "newer than the installed onnx"),
    ({"softmax": "yes"}, "softmax must be True or False"),
    ({"dynamic_batch": None}, "dynamic_batch must be True or False"),
    ({"input_shape": (1, 28)}, r"input_shape must be \(C, H, W\)"),
    ({"input_shape": (3, 28, 28)}, r"layer 0 \(Conv2D\(.*\)\) takes \(N, 1, H, W\) but gets \(N, 3, 28, 28\)"),
    ({"input_shape": (1, 3, 3)}, r"layer 0 .* smaller than its window"),
    ({"input_shape": (1, 30, 30)}, r"layer 4 \(Dense\(in_features=288.*\)\) takes \(N, 288\) but gets \(N, 338\)"),
    ({"dtype": "float16"}, "dtype must be one of"),
])
def test_bad_arguments_are_one_line_value_errors_and_write_nothing(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match) as e:
        to_onnx(pc.models.seed_cnn(), tmp_path / "m.onnx", **kwargs)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_not_a_model_and_unknown_layers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="takes a portacnn Sequential model; got list"):
        to_onnx([L.ReLU()], tmp_path / "m.onnx")

    class Custom(L.ReLU):  # a subclass may compute anything: never exported as its base
        pass

    with pytest.raises(ValueError, match=r"layer 1.body.0 \(Custom\(\)\) has no ONNX mapping"):
        to_onnx(pc.Sequential([L.ReLU(), L.Residual([Custom()])], input_shape=(1, 2, 2)), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"softmax=True needs a model giving \(N, classes\)"):
        to_onnx(pc.Sequential([L.ReLU()], input_shape=(1, 2, 2)), tmp_path / "m.onnx", softmax=True)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(OnnxUnavailable, match=r'pip install "portacnn\[onnx\]"') as e:
        to_onnx(pc.models.seed_cnn(), tmp_path / "m.onnx")
    assert isinstance(e.value, ImportError) and "\n" not in str(e.value)


# -- files ----------------------------------------------------------------------------------------------
def test_writes_atomically_and_replaces_an_existing_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    to_onnx(pc.models.seed_cnn(), target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left
    onnx.checker.check_model(str(target))


def test_a_failed_write_leaves_no_file(monkeypatch, tmp_path):
    import portacnn._atomic as atomic

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError, match="No space left"):
        to_onnx(pc.models.seed_cnn(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(IsADirectoryError):
        to_onnx(pc.models.seed_cnn(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_export_checkpoint(tmp_path):
    model = randomize(pc.models.kannada_bn(seed=5), 5)
    ckpt = model.save(tmp_path / "m.safetensors")
    out = export_checkpoint(ckpt, tmp_path / "m.onnx", softmax=True)
    proto = onnx.load(str(out))
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["N", 1, 28, 28]
    assert proto.graph.output[0].name == "probabilities"
    check_runtime(pc.load(ckpt), out, softmax=True)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="would overwrite the checkpoint"):
        export_checkpoint(ckpt, ckpt)
    assert ckpt.read_bytes() == before
    with pytest.raises(ValueError, match="opset 12 is not supported"):  # checked before anything is read
        export_checkpoint(tmp_path / "missing.safetensors", tmp_path / "x.onnx", opset=12)


# -- hostile weights and paths ----------------------------------------------------------------------------
def poison(model, key, value):
    """Put ``value`` into one element of the parameter or buffer ``key`` (past load_state_dict's checks, as a
    diverged training run would), at a place that depends on the key."""
    params = {p.name: p for p in model.parameters()}
    current = params[key].data if key in params else model._buffer_slots()[key][2]
    held = np.array(current)
    held.flat[sum(map(ord, key)) % held.size] = value
    if key in params:
        params[key].data = model.backend.asarray(held)
    else:
        layer, name, _ = model._buffer_slots()[key]
        layer.set_buffer(name, model.backend.asarray(held))
    return model


FLOAT_KEYS = [pytest.param(stack, key, id=f"{stack}-{key}") for stack in sorted(STACKS)
              for key, value in build(stack).state_dict().items() if value.dtype.kind == "f"]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("stack, key", sweep(FLOAT_KEYS, 6, unpack=True))
def test_a_non_finite_weight_anywhere_is_refused_by_name_and_writes_nothing(stack, key, value, tmp_path):
    model = poison(build(stack), key, value)
    with pytest.raises(ValueError, match=rf"to_onnx: weight '{re.escape(key)}' holds 1 NaN or infinite values; "
                                         "export a model with finite weights") as e:
        to_onnx(model, tmp_path / "m.onnx")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=re.escape(key)):
        onnx_model(model, dtype="float64")
    with pytest.raises(ValueError, match=re.escape(key)):  # the file save() would refuse, as it always did
        model.save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_weight_too_large_for_the_export_dtype_is_refused(tmp_path):
    model = poison(build("flat", dtype="float64"), "1.weight", 1e300)
    with pytest.raises(ValueError, match=r"weight '1.weight' holds 1 values too large for float32; export in the "
                                         r"model's own dtype \(float64\)"):
        to_onnx(model, tmp_path / "m.onnx", dtype="float32")
    assert list(tmp_path.iterdir()) == []
    onnx.checker.check_model(onnx.load(str(to_onnx(model, tmp_path / "m.onnx"))))  # float64 holds it


@pytest.fixture
def no_export_work(monkeypatch):
    """Fails the test if an export starts building a graph or loading a checkpoint."""
    import portacnn.export as export
    import portacnn.sequential as sequential

    def never(*args, **kwargs):
        raise AssertionError("the export did work before refusing the output path")

    monkeypatch.setattr(export, "onnx_model", never)
    monkeypatch.setattr(sequential, "load", never)


@pytest.mark.parametrize("where, match", [
    ("nope/out.onnx", r"nope/out.onnx: folder .*nope does not exist; create it first"),
    ("a/b/c/out.onnx", r"a/b/c/out.onnx: folder .*a/b/c does not exist"),
    ("file.txt/out.onnx", r"file.txt/out.onnx: .*file.txt is not a folder"),
])
@pytest.mark.parametrize("export", ["to_onnx", "export_checkpoint"])
def test_an_unwritable_output_path_is_refused_first_naming_the_users_path(export, where, match, tmp_path,
                                                                          no_export_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("not a folder")
    with pytest.raises(ExportPathError, match=match) as e:
        if export == "to_onnx":
            to_onnx(pc.models.seed_cnn(), where)
        else:
            export_checkpoint("missing.safetensors", where)
    assert isinstance(e.value, ValueError) and isinstance(e.value, OSError)
    assert "\n" not in str(e.value) and ".tmp" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.parametrize("path, match", [(3, "to_onnx path must be a file name"), (None, "got NoneType")])
def test_a_path_that_is_not_a_path_is_refused(path, match, no_export_work):
    with pytest.raises(ValueError, match=match):
        to_onnx(pc.models.seed_cnn(), path)


def test_a_folder_as_the_output_is_refused_before_any_work(tmp_path, no_export_work):
    for export in (lambda: to_onnx(pc.models.seed_cnn(), tmp_path), lambda: export_checkpoint("m.st", tmp_path)):
        with pytest.raises(IsADirectoryError, match="is a folder; give a file name inside it") as e:
            export()
        assert e.value.filename == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path, no_export_work):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ExportPathError, match="is not writable"):
            to_onnx(pc.models.seed_cnn(), tmp_path / "m.onnx")
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("errno", [28, 5, 13])
def test_a_failed_write_names_the_users_path_and_leaves_no_temporary_file(errno, monkeypatch, tmp_path):
    import portacnn._atomic as atomic

    def broken(src, dst):
        raise OSError(errno, os.strerror(errno), src, None, dst)  # what os.replace raises: it names the temporary

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError) as e:
        to_onnx(pc.models.seed_cnn(), tmp_path / "m.onnx")
    assert e.value.errno == errno and e.value.filename == str(tmp_path / "m.onnx") and ".tmp" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_export_modules_import_no_optional_library_at_module_level():
    import portacnn.export
    import portacnn.interop

    for module in (portacnn.export, portacnn.interop):
        tree = ast.parse(Path(module.__file__).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        roots = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        roots |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not roots & {"onnx", "onnxruntime", "torch"}, module.__name__


def test_the_export_command(tmp_path, capsys, monkeypatch):
    """``portacnn export``: an ONNX file whose predictions are the checkpoint's; one-line errors otherwise."""
    from portacnn import cli

    model = pc.models.lenet5(seed=3)
    model.save(tmp_path / "m.safetensors")
    assert cli.main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"), "--softmax"]) == 0
    assert "wrote" in capsys.readouterr().out
    x = np.random.default_rng(0).random((5, 1, 28, 28)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert_close(got, model.predict_proba(x), "float32")
    assert cli.main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    assert cli.main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "n.onnx")]) == 2
    assert 'pip install "portacnn[onnx]"' in capsys.readouterr().err and not (tmp_path / "n.onnx").exists()
