"""BatchNorm2D and BatchNorm1D on every backend against torch.nn.BatchNorm2d / BatchNorm1d: training and
inference forward and backward, running statistics, finite differences, state dicts both ways with torch,
the never-sharded contract, checkpoints and argument checks."""

import math

import numpy as np
import pytest

import portacnn as pc
from conftest import TORCH_IMPORTABLE, assert_close, assert_on_backend, single, to_numpy
from layerhelp import fd_check_layer
from portacnn.layers import AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Flatten, ReLU

needs_torch = pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed")

CASES = [  # layer class, input shape, constructor kwargs
    pytest.param(BatchNorm2D, (4, 3, 5, 6), {}, id="2d"),
    pytest.param(BatchNorm2D, (2, 2, 3, 3), dict(eps=1e-3, momentum=0.3), id="2d-eps-momentum"),
    pytest.param(BatchNorm2D, (3, 4, 2, 5), dict(affine=False), id="2d-no-affine"),
    pytest.param(BatchNorm1D, (6, 5), {}, id="1d"),
    pytest.param(BatchNorm1D, (4, 3), dict(momentum=1.0, affine=False), id="1d-no-affine"),
]


def _torch_module(cls, shape, kwargs, dtype):
    import torch

    mod = getattr(torch.nn, cls.__name__[:-1] + "d")(shape[1], **kwargs).to(getattr(torch, dtype))
    return mod


def _set_affine(model, mod, rng, dtype):
    """Random weight and bias in both (non-trivial affine maps), loaded the same way."""
    import torch

    layer = model.layers[0]
    if not layer.affine:
        return
    c = layer.num_features
    w, b = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    state = model.state_dict()
    state.update({"0.weight": w, "0.bias": b})
    model.load_state_dict(state)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(w))
        mod.bias.copy_(torch.from_numpy(b))


@needs_torch
@pytest.mark.parametrize("cls, shape, kwargs", CASES)
def test_training_steps_match_torch(backend, dtype, rng, cls, shape, kwargs):
    import torch

    model = single(cls(shape[1], **kwargs), backend, dtype)
    mod = _torch_module(cls, shape, kwargs, dtype)
    _set_affine(model, mod, rng, dtype)
    layer = model.layers[0]
    for step in range(3):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        out = model.forward(backend.asarray(x, dtype=dtype), training=True)
        assert_on_backend(backend, out, dtype, shape=shape)
        dx = model.backward(backend.asarray(g, dtype=dtype))
        assert_on_backend(backend, dx, dtype, shape=shape)
        xt = torch.tensor(x, requires_grad=True)
        mod.zero_grad()
        yt = mod(xt)
        yt.backward(torch.from_numpy(g))
        assert_close(to_numpy(backend, out), yt.detach().numpy(), dtype, err_msg=f"forward, step {step}")
        assert_close(to_numpy(backend, dx), xt.grad.numpy(), dtype, err_msg=f"dx, step {step}")
        if layer.affine:
            assert_on_backend(backend, layer.weight.grad, dtype, shape=(shape[1],))
            assert_close(to_numpy(backend, layer.weight.grad), mod.weight.grad.numpy(), dtype, err_msg="dw")
            assert_close(to_numpy(backend, layer.bias.grad), mod.bias.grad.numpy(), dtype, err_msg="db")
    for name in ("running_mean", "running_var"):
        buf = layer.buffers()[name]
        assert_on_backend(backend, buf, dtype, shape=(shape[1],))
        assert_close(to_numpy(backend, buf), getattr(mod, name).numpy(), dtype, err_msg=name)
    count = layer.num_batches_tracked
    assert tuple(count.shape) == () and count.dtype == backend.xp.int64
    assert int(to_numpy(backend, count)) == int(mod.num_batches_tracked) == 3
    state = model.state_dict()
    assert state["0.num_batches_tracked"].dtype == np.int64 and state["0.num_batches_tracked"] == 3


@needs_torch
@pytest.mark.parametrize("cls, shape, kwargs", CASES)
def test_inference_matches_torch(backend, dtype, rng, cls, shape, kwargs):
    import torch

    model = single(cls(shape[1], **kwargs), backend, dtype)
    mod = _torch_module(cls, shape, kwargs, dtype)
    _set_affine(model, mod, rng, dtype)
    c = shape[1]
    state = model.state_dict()  # running statistics of some earlier training
    state.update({"0.running_mean": rng.standard_normal(c).astype(dtype),
                  "0.running_var": rng.uniform(0.2, 3.0, c).astype(dtype), "0.num_batches_tracked": np.int64(7)})
    model.load_state_dict(state)
    mod.load_state_dict({k[2:]: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    mod.eval()
    x, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    out = model.forward(backend.asarray(x, dtype=dtype), training=False)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    xt = torch.tensor(x, requires_grad=True)
    yt = mod(xt)
    yt.backward(torch.from_numpy(g))
    assert_on_backend(backend, out, dtype, shape=shape)
    assert_on_backend(backend, dx, dtype, shape=shape)
    assert_close(to_numpy(backend, out), yt.detach().numpy(), dtype)
    assert_close(to_numpy(backend, dx), xt.grad.numpy(), dtype)
    if model.layers[0].affine:
        assert_close(to_numpy(backend, model.layers[0].weight.grad), mod.weight.grad.numpy(), dtype)
        assert_close(to_numpy(backend, model.layers[0].bias.grad), mod.bias.grad.numpy(), dtype)
    after = model.state_dict()  # inference leaves the running statistics alone
    for key in ("0.running_mean", "0.running_var", "0.num_batches_tracked"):
        np.testing.assert_array_equal(after[key], state[key])


@pytest.mark.parametrize("cls, shape, kwargs", CASES)
def test_finite_differences_in_training(backend, rng, cls, shape, kwargs):
    model = single(cls(shape[1], **kwargs), backend, "float64")
    weights = None
    if model.layers[0].affine:
        c = shape[1]
        weights = {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.standard_normal(c)}
    # fd_check_layer loads the weights alone; a state dict must be complete, so the buffers are added to each
    full = model.load_state_dict
    model.load_state_dict = lambda state: full({**model.state_dict(), **state})
    model.load_state_dict({f"0.{k}": v for k, v in (weights or {}).items()})
    fd_check_layer(model, backend, rng.standard_normal(shape), weights=weights)


@needs_torch
def test_state_dict_loads_into_torch_and_back(rng):
    import torch
    from torch import nn

    import oracles

    model = pc.Sequential([Conv2D(2, 3, 3, padding=1), BatchNorm2D(3), ReLU(), Flatten(), Dense(3 * 16, 5),
                           BatchNorm1D(5)], dtype="float64", seed=1, workers=1)
    for _ in range(2):
        model.forward(rng.standard_normal((4, 2, 4, 4)), training=True)
    state = model.state_dict()
    assert list(state)[:7] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                               "1.num_batches_tracked"]
    net = oracles.torch_mirror(model, "float64")  # loads every key, buffers included (strict)
    assert set(net.state_dict()) == set(state)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key])
        assert value.dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float64)
    x = rng.standard_normal((3, 2, 4, 4))
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(np.asarray(model.forward(x)), expected, "float64")

    # and back: a torch model trained a few steps loads into portacnn, buffers included
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.from_numpy(rng.standard_normal((4, 2, 4, 4))))
    assert isinstance(net[1], nn.BatchNorm2d)
    twin = pc.Sequential.from_architecture(model.architecture(), dtype="float64", workers=1)
    twin.load_state_dict(net.state_dict())
    got = twin.state_dict()
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(got[key], value.numpy())
    assert got["1.num_batches_tracked"].dtype == np.int64 and got["1.num_batches_tracked"] == 5
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(np.asarray(twin.forward(x)), expected, "float64")


def test_load_state_dict_checks_buffers():
    model = pc.Sequential([BatchNorm1D(3)], workers=1)
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['0.running_var'\]"):
        model.load_state_dict({k: v for k, v in state.items() if k != "0.running_var"})
    with pytest.raises(ValueError, match="0.running_mean.*shape"):
        model.load_state_dict({**state, "0.running_mean": np.zeros(4)})
    with pytest.raises(ValueError, match="0.running_var.*NaN"):
        model.load_state_dict({**state, "0.running_var": np.array([1.0, np.nan, 1.0])})
    for bad in (np.float64(2.5), np.int64(-1), np.float64(np.inf)):
        with pytest.raises(ValueError, match="0.num_batches_tracked.*whole numbers"):
            model.load_state_dict({**state, "0.num_batches_tracked": bad})
    model.load_state_dict({**state, "0.num_batches_tracked": np.float32(4.0)})  # a checkpoint's float count
    assert model.layers[0].num_batches_tracked.dtype == np.int64 and model.layers[0].num_batches_tracked == 4


def test_to_moves_buffers(rng):
    model = pc.Sequential([BatchNorm2D(2)], dtype="float32", workers=1)
    model.forward(rng.standard_normal((3, 2, 2, 2)), training=True)
    before = model.state_dict()
    model.to("array_api_strict", dtype="float64")
    layer = model.layers[0]
    assert_on_backend(model.backend, layer.running_mean, "float64", shape=(2,))
    assert_on_backend(model.backend, layer.running_var, "float64", shape=(2,))
    assert layer.num_batches_tracked.dtype == model.backend.xp.int64
    after = model.state_dict()
    for key in before:
        assert_close(after[key], before[key], "float32")
    model.forward(model.backend.asarray(rng.standard_normal((3, 2, 2, 2)), dtype="float64"), training=True)
    assert int(to_numpy(model.backend, layer.num_batches_tracked)) == 2


def test_contract():
    layer = BatchNorm2D(3)
    assert not layer.row_separable and not layer.draws_random
    assert layer.input_channels == 3 and layer.out_features is None
    assert BatchNorm1D(4).out_features == 4 and BatchNorm1D(4).input_channels is None
    model = single(layer, pc.get_backend("numpy"), "float32")
    assert set(layer.buffers()) == {"running_mean", "running_var", "num_batches_tracked"}
    assert [p.name for p in model.parameters()] == ["0.weight", "0.bias"]
    assert single(BatchNorm2D(3, affine=False), pc.get_backend("numpy")).parameters() == []
    assert layer.output_shape((3, 5, 4)) == (3, 5, 4)
    with pytest.raises(NotImplementedError, match="has buffers"):
        layer.replica()  # never sharded: the base refusal stands
    layer.forward(np.ones((2, 3, 2, 2), dtype=np.float32), training=True)
    layer.release()
    assert not [k for k in vars(layer) if k.startswith("_")] and layer.running_mean is not None
    assert BatchNorm2D(**layer.config()).config() == layer.config() == dict(num_features=3, eps=1e-5, momentum=0.1,
                                                                            affine=True)


def test_a_model_with_batchnorm_is_never_sharded(rng):
    model = pc.Sequential([Conv2D(1, 4, 3), BatchNorm2D(4), ReLU(), Flatten(), Dense(4 * 6 * 6, 3)], workers=2)
    assert model.shards_for((256, 1, 8, 8)) == 1
    model = pc.Sequential([Flatten(), Dense(64, 8), BatchNorm1D(8), Dense(8, 3)], workers=2)
    assert model.shards_for((256, 1, 8, 8)) == 1
    out = model.forward(rng.standard_normal((256, 1, 8, 8)), training=True)  # runs unsharded (no replica)
    assert out.shape == (256, 3)


def _bn_model(backend="numpy", dtype="float64"):
    layers = [Conv2D(2, 4, 3, padding=1), BatchNorm2D(4, momentum=0.2), ReLU(), AvgPool2D(2), Flatten(),
              Dense(4 * 3 * 3, 5), BatchNorm1D(5, eps=1e-3), Dense(5, 3)]
    return pc.Sequential(layers, backend=backend, dtype=dtype, seed=3, workers=1)


@pytest.mark.parametrize("input_shape", [None, (2, 6, 6)], ids=["inferred", "stored"])
def test_checkpoint_round_trip_restores_running_statistics(backend, tmp_path, rng, input_shape):
    model = _bn_model()
    for _ in range(3):
        model.forward(rng.standard_normal((5, 2, 6, 6)), training=True)
    path = model.save(tmp_path / "bn.safetensors", input_shape=input_shape)
    back = pc.load(path, backend=backend)
    assert back.architecture() == model.architecture()
    saved, got = model.state_dict(), back.state_dict()
    assert set(got) == set(saved)
    for key, value in saved.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert got[key].dtype == value.dtype, key
    assert got["1.num_batches_tracked"] == 3 and got["6.num_batches_tracked"] == 3
    x = rng.standard_normal((4, 2, 6, 6))
    out = back.forward(back.backend.asarray(x, dtype="float64"))
    assert_on_backend(back.backend, out, "float64", shape=(4, 3))
    assert_close(to_numpy(back.backend, out), np.asarray(model.forward(x)), "float64")


def test_check_architecture_knows_batchnorm():
    from portacnn import checkpoint

    model = _bn_model()
    plan = checkpoint.check_architecture(model.architecture())
    assert plan["input_shape"][0] == 2 and plan["output_shape"] == (3,)
    assert plan["parameters"] == model.num_parameters()
    plan = checkpoint.check_architecture([{"type": "BatchNorm2D", "num_features": 3}, {"type": "ReLU"}])
    assert plan["input_shape"] == (3, 28, 28)  # channels from the BatchNorm2D
    plan = checkpoint.check_architecture([{"type": "BatchNorm1D", "num_features": 7},
                                          {"type": "Dense", "in_features": 7, "out_features": 2}])
    assert plan["input_shape"] == (7,) and plan["output_shape"] == (2,)
    plan = checkpoint.check_architecture([{"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
                                          {"type": "Flatten"}, {"type": "BatchNorm1D", "num_features": 50},
                                          {"type": "Dense", "in_features": 50, "out_features": 2}])
    assert plan["input_shape"] == (1, 7, 7)


@pytest.mark.parametrize("arch, message", [
    ([{"type": "BatchNorm2D"}], "lacks fields"),
    ([{"type": "BatchNorm2D", "num_features": 0}], "num_features"),
    ([{"type": "BatchNorm2D", "num_features": 2.0}], "num_features"),
    ([{"type": "BatchNorm2D", "num_features": 2, "eps": 0}], "eps"),
    ([{"type": "BatchNorm2D", "num_features": 2, "eps": float("inf")}], "eps"),
    ([{"type": "BatchNorm1D", "num_features": 2, "momentum": 1.5}], "momentum"),
    ([{"type": "BatchNorm1D", "num_features": 2, "momentum": None}], "momentum"),
    ([{"type": "BatchNorm1D", "num_features": 2, "affine": 1}], "affine"),
    ([{"type": "BatchNorm1D", "num_features": 2, "track_running_stats": False}], "unknown fields"),
    ([{"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
      {"type": "BatchNorm2D", "num_features": 3}], "expects 3 channels but gets 2"),
    ([{"type": "Flatten"}, {"type": "BatchNorm2D", "num_features": 1}], "takes images"),
    ([{"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
      {"type": "BatchNorm1D", "num_features": 2}], "takes flat features"),
    ([{"type": "Flatten"}, {"type": "BatchNorm1D", "num_features": 5}], "expects 5 features but gets 784"),
])
def test_checkpoint_validator_refuses_bad_batchnorm(arch, message):
    from portacnn import checkpoint

    with pytest.raises(ValueError, match=message):
        checkpoint.check_architecture(arch, input_shape=(1, 28, 28))


def test_checkpoint_refuses_bad_buffers(tmp_path, rng):
    import json

    from safetensors.numpy import load_file, save_file

    from portacnn import checkpoint

    model = _bn_model()
    path = model.save(tmp_path / "bn.safetensors")
    tensors = load_file(path)
    assert tensors["1.num_batches_tracked"].dtype == np.float64  # stored as a float tensor
    from safetensors import safe_open

    with safe_open(path, "np") as f:
        meta = dict(f.metadata())
    for key, value, message in [("1.num_batches_tracked", np.array(1.5), "whole number"),
                                ("1.num_batches_tracked", np.array(-1.0), "whole number"),
                                ("1.running_var", np.zeros(5), "has shape \\(5,\\); the architecture needs \\(4,\\)"),
                                ("1.running_mean", np.array([0.0, np.inf, 0.0, 0.0]), "NaN or infinite")]:
        bad = {**tensors, key: value}
        m = {k: v for k, v in meta.items() if k != "sha256"}
        m["sha256"] = checkpoint._digest(bad, m)
        save_file(bad, tmp_path / "bad.safetensors", metadata=m)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            pc.load(tmp_path / "bad.safetensors")
    missing = {k: v for k, v in tensors.items() if k != "6.running_mean"}
    m = {k: v for k, v in meta.items() if k != "sha256"}
    m["sha256"] = checkpoint._digest(missing, m)
    save_file(missing, tmp_path / "bad.safetensors", metadata=m)
    with pytest.raises(checkpoint.CheckpointError, match="weights do not match the saved architecture"):
        pc.load(tmp_path / "bad.safetensors")
    assert json.loads(meta["architecture"])[1]["type"] == "BatchNorm2D"


@pytest.mark.parametrize("cls", [BatchNorm2D, BatchNorm1D])
@pytest.mark.parametrize("kwargs, name", [
    (dict(num_features=0), "num_features"),
    (dict(num_features=-2), "num_features"),
    (dict(num_features=2.0), "num_features"),
    (dict(num_features=True), "num_features"),
    (dict(num_features=2, eps=0.0), "eps"),
    (dict(num_features=2, eps=-1e-5), "eps"),
    (dict(num_features=2, eps=float("nan")), "eps"),
    (dict(num_features=2, eps="1e-5"), "eps"),
    (dict(num_features=2, momentum=-0.1), "momentum"),
    (dict(num_features=2, momentum=1.1), "momentum"),
    (dict(num_features=2, momentum=None), "momentum"),
    (dict(num_features=2, affine=1), "affine"),
])
def test_rejects_bad_arguments(cls, kwargs, name):
    with pytest.raises(ValueError, match=rf"{cls.__name__} {name}"):
        cls(**kwargs)


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2D.*expects input of shape \(N, 3, H, W\); got shape \(2, 3, 4\)"):
        single(BatchNorm2D(3), pc.get_backend("numpy")).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\); got shape \(2, 2, 4, 4\)"):
        single(BatchNorm2D(3), pc.get_backend("numpy")).forward(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"BatchNorm1D.*\(N, 3\); got shape \(2, 3, 4\)"):
        single(BatchNorm1D(3), pc.get_backend("numpy")).forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        single(BatchNorm1D(3), pc.get_backend("numpy")).forward(np.zeros((1, 3)), training=True)
    out = single(BatchNorm1D(3), pc.get_backend("numpy")).forward(np.zeros((1, 3)))  # inference: fine
    assert out.shape == (1, 3)


@pytest.mark.parametrize("cls, shape", [(BatchNorm2D, (3, 4, 5, 5)), (BatchNorm1D, (3, 6))])
def test_sync_gives_the_statistics_of_every_process_rows(backend, dtype, rng, cls, shape):
    """With ``sync`` (what MPI training sets), the statistics and the backward's sums are the whole batch's. A
    stand-in for a second process holding other rows (2 of them, with another mean and spread) adds their sums
    in float64: the layer must act as on the two processes' rows stacked, its parameter gradients staying its
    own rows' part."""
    axes = (0, 2, 3) if len(shape) == 4 else (0,)
    x = rng.standard_normal(shape).astype(dtype) * 2 + 1
    dy = rng.standard_normal(shape).astype(dtype)
    other_shape = (2,) + shape[1:]
    x_other = (rng.standard_normal(other_shape) * 3 - 2).astype(dtype)
    dy_other = rng.standard_normal(other_shape).astype(dtype)
    per_row = math.prod(shape[2:])
    calls, seen = [], {}

    def channels(v):
        return v.reshape((1, -1) + (1,) * (len(shape) - 2))

    def second_process(partial, m):
        calls.append((tuple(partial.shape), m))
        mine = to_numpy(backend, partial).astype(np.float64)
        if len(calls) == 1:  # sum(x)
            total = mine + x_other.astype(np.float64).sum(axis=axes)
            seen["mean"] = total / (m + 2 * per_row)
        elif len(calls) == 2:  # sum((x - mean)^2), around the whole batch's mean
            total = mine + ((x_other - channels(seen["mean"])) ** 2).sum(axis=axes)
            seen["var"] = total / (m + 2 * per_row)
        else:  # [sum(dy), sum(dy * xhat)]
            xhat = (x_other - channels(seen["mean"])) / np.sqrt(channels(seen["var"]) + 1e-5)
            total = mine + np.stack([dy_other.sum(axis=axes), (dy_other * xhat).sum(axis=axes)])
        return backend.asarray(total, dtype=dtype), m + 2 * per_row

    synced, whole = cls(shape[1]), cls(shape[1])
    for layer in (synced, whole):
        layer.initialize(np.random.default_rng(0), backend, dtype)
    whole.weight.data = synced.weight.data = backend.asarray(rng.uniform(0.5, 2, shape[1]), dtype=dtype)
    synced.sync = second_process
    y = synced.forward(backend.asarray(x, dtype=dtype), training=True)
    y2 = whole.forward(backend.asarray(np.concatenate([x, x_other]), dtype=dtype), training=True)
    assert_close(to_numpy(backend, y), to_numpy(backend, y2)[: shape[0]], dtype)
    for name in ("running_mean", "running_var"):  # M - 1 in the unbiased variance is the whole batch's
        assert_close(to_numpy(backend, getattr(synced, name)), to_numpy(backend, getattr(whole, name)), dtype)
    dx = synced.backward(backend.asarray(dy, dtype=dtype))
    dx2 = whole.backward(backend.asarray(np.concatenate([dy, dy_other]), dtype=dtype))
    assert_close(to_numpy(backend, dx), to_numpy(backend, dx2)[: shape[0]], dtype)
    # the parameters' gradients are this process's rows' part (the gradient allreduce adds the parts)
    xhat_mine = (to_numpy(backend, y2)[: shape[0]] - channels(to_numpy(backend, whole.bias.data))) \
        / channels(to_numpy(backend, whole.weight.data))
    assert_close(to_numpy(backend, synced.bias.grad), dy.astype(np.float64).sum(axis=axes), dtype)
    assert_close(to_numpy(backend, synced.weight.grad), (dy * xhat_mine).sum(axis=axes), dtype)
    m = shape[0] * per_row
    assert calls == [((shape[1],), m), ((shape[1],), m), ((2, shape[1]), m)]  # each time this process's count
    synced.sync = None  # back to this batch's own statistics
    assert_close(to_numpy(backend, synced.forward(backend.asarray(x, dtype=dtype), training=True)),
                 to_numpy(backend, whole.forward(backend.asarray(x, dtype=dtype), training=True)), dtype)
