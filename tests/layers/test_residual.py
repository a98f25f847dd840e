"""Residual blocks: y = body(x) + shortcut(x), against torch (forward, every gradient, BatchNorm buffers after
training steps) on every backend, finite differences, nested state-dict keys both ways with torch,
checkpoints, shards and the errors users meet."""

import copy
import pickle

import numpy as np
import pytest

import oracles
import portacnn as pc
from conftest import TORCH_IMPORTABLE, assert_close, assert_on_backend, to_numpy
from layerhelp import fd_check_layer
from portacnn import checkpoint
from portacnn.layers import (BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                             Residual)

needs_torch = pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch (the oracle) is not installed")


def basic_block(c_in, c_out, stride=1):
    """ResNet's basic block: two 3x3 convs with BatchNorm; a strided 1x1 conv shortcut when the shape changes."""
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = [Conv2D(c_in, c_out, 1, stride=stride, bias=False), BatchNorm2D(c_out)]
    return Residual([Conv2D(c_in, c_out, 3, stride=stride, padding=1, bias=False), BatchNorm2D(c_out), ReLU(),
                     Conv2D(c_out, c_out, 3, padding=1, bias=False), BatchNorm2D(c_out)], shortcut=shortcut)


def resnet(backend="numpy", dtype="float64", seed=0, workers=1):
    return pc.Sequential([Conv2D(2, 4, 3, padding=1), ReLU(), basic_block(4, 4), ReLU(), basic_block(4, 6, stride=2),
                          ReLU(), Residual([Residual([Conv2D(6, 6, 1)]), ReLU()]), GlobalAvgPool2D(), Dense(6, 3)],
                         backend=backend, dtype=dtype, seed=seed, workers=workers, input_shape=(2, 8, 8))


def _randomise(model, rng):
    """Non-trivial BatchNorm weights and running statistics, so that no term hides behind a 1 or a 0."""
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.int64(3)
        elif key.endswith("running_var") or (key.endswith("weight") and value.ndim == 1):
            state[key] = rng.uniform(0.5, 1.5, value.shape)
        elif key.endswith(("running_mean", "bias")):
            state[key] = rng.standard_normal(value.shape) * 0.2
    model.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------
# the math

def test_identity_shortcut_adds_the_input(backend, dtype, rng):
    model = pc.Sequential([Residual([Conv2D(3, 3, 3, padding=1), ReLU()])], backend=backend, dtype=dtype, workers=1)
    x = rng.standard_normal((2, 3, 5, 5)).astype(dtype)
    out = model.forward(backend.asarray(x, dtype=dtype))
    assert_on_backend(backend, out, dtype, shape=x.shape)
    w, b = (model.state_dict()[k].astype(np.float64) for k in ("0.body.0.weight", "0.body.0.bias"))
    expected = np.maximum(oracles.conv2d_forward(x.astype(np.float64), w, b, padding=1), 0) + x
    assert_close(to_numpy(backend, out), expected, dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    dx = model.backward(backend.asarray(g, dtype=dtype))
    assert_on_backend(backend, dx, dtype, shape=x.shape)
    # the identity branch hands dy straight back: dx = (the body's input gradient) + dy
    twin = pc.Sequential([Conv2D(3, 3, 3, padding=1), ReLU()], dtype="float64", workers=1)
    twin.load_state_dict({"0.weight": w, "0.bias": b})
    twin.forward(x.astype(np.float64))
    assert_close(to_numpy(backend, dx), np.asarray(twin.backward(g.astype(np.float64))) + g, dtype)


@pytest.mark.parametrize("shortcut", [False, True], ids=["identity", "projection"])
def test_finite_differences(backend, rng, shortcut):
    layer = (Residual([Conv2D(2, 3, 3, stride=2, padding=1), ReLU(), Conv2D(3, 3, 1)],
                      shortcut=Conv2D(2, 3, 1, stride=2)) if shortcut
             else Residual([Conv2D(2, 2, 3, padding=1), ReLU(), Conv2D(2, 2, 3, padding=1)]))
    model = pc.Sequential([layer], backend=backend, dtype="float64", workers=1)
    weights = {k[2:]: v for k, v in model.state_dict().items()}
    fd_check_layer(model, backend, rng.standard_normal((2, 2, 5, 5)), weights=weights)


@needs_torch
def test_training_matches_torch(backend, dtype, rng):
    """Three training steps of a small ResNet with SGD: outputs, the input gradient, every parameter gradient and
    every BatchNorm buffer equal torch's (the torch twin is built from the architecture, state dict loaded)."""
    import torch

    model = resnet(backend, dtype)
    _randomise(model, rng)
    net = oracles.torch_mirror(model, dtype)
    opt = pc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        x = rng.standard_normal((4, 2, 8, 8)).astype(dtype)
        g = rng.standard_normal((4, 3)).astype(dtype)
        out = model.forward(backend.asarray(x, dtype=dtype), training=True)
        dx = model.backward(backend.asarray(g, dtype=dtype))
        xt = torch.tensor(x, requires_grad=True)
        topt.zero_grad()
        yt = net(xt)
        yt.backward(torch.from_numpy(g))
        assert_on_backend(backend, out, dtype, shape=(4, 3))
        assert_close(to_numpy(backend, out), yt.detach().numpy(), dtype, err_msg=f"forward, step {step}")
        assert_close(to_numpy(backend, dx), xt.grad.numpy(), dtype, err_msg=f"dx, step {step}")
        tgrads = {name: p.grad.numpy() for name, p in net.named_parameters()}
        for p in model.parameters():
            assert_on_backend(backend, p.grad, dtype, shape=tgrads[p.name].shape)
            assert_close(to_numpy(backend, p.grad), tgrads[p.name], dtype, err_msg=f"{p.name}, step {step}")
        opt.step()
        opt.zero_grad()
        topt.step()
    tstate = net.state_dict()
    for key, value in model.state_dict().items():
        assert_close(value, tstate[key].numpy(), dtype, err_msg=key)
    net.eval()
    x = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(to_numpy(backend, model.forward(backend.asarray(x, dtype=dtype))), expected, dtype, err_msg="eval")


@needs_torch
def test_state_dict_loads_into_torch_and_back(rng):
    import torch

    model = resnet()
    _randomise(model, rng)
    state = model.state_dict()
    assert "2.body.0.weight" in state and "4.shortcut.1.running_var" in state and "6.body.0.body.0.bias" in state
    net = oracles.torch_mirror(model, "float64")  # strict load: the keys are torch's
    assert list(net.state_dict()) == list(state)  # and in torch's order (each layer's parameters, then buffers)
    with torch.no_grad():
        for _ in range(2):  # torch trains its buffers on
            net(torch.from_numpy(rng.standard_normal((5, 2, 8, 8))))
    twin = pc.Sequential.from_architecture(model.architecture(), dtype="float64", workers=1)
    twin.load_state_dict(net.state_dict())
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[key], value.numpy())
    net.eval()
    x = rng.standard_normal((3, 2, 8, 8))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert_close(np.asarray(twin.forward(x)), expected, "float64")


# ---------------------------------------------------------------------------------------------------------
# the layer contract

def test_contract_follows_the_children():
    plain = Residual([Conv2D(3, 3, 3, padding=1), ReLU()])
    assert plain.row_separable and not plain.draws_random and plain.input_channels == 3 and plain.out_features is None
    assert plain.output_shape((3, 7, 6)) == (3, 7, 6)
    bn = basic_block(3, 5, stride=2)
    assert not bn.row_separable and bn.output_shape((3, 7, 7)) == (5, 4, 4)
    assert [name for name, _ in bn.sublayers()] == [f"body.{j}" for j in range(5)] + ["shortcut.0", "shortcut.1"]
    drop = Residual([Flatten(), Dense(4, 4), Dropout(0.5)], shortcut=Flatten())
    assert drop.draws_random and drop.out_features == 4
    rebuilt = Residual(**bn.config())
    assert rebuilt.config() == bn.config() and repr(rebuilt) == repr(bn)


def test_summary_lists_the_blocks_layers():
    text = resnet().summary()
    for row in ("2.body.0", "4.shortcut.0", "6.body.0.body.0"):
        assert f"\n{row} " in text
    assert "(6, 4, 4)" in text and f"{resnet().num_parameters():,} parameters" in text


def test_checkpoint_round_trip(tmp_path, backend, rng):
    model = resnet(backend, "float32")
    _randomise(model, rng)
    model.save(tmp_path / "r.safetensors")
    loaded = pc.load(tmp_path / "r.safetensors", backend=backend)
    assert loaded.architecture() == model.architecture()
    x = rng.standard_normal((3, 2, 8, 8)).astype("float32")
    np.testing.assert_array_equal(to_numpy(backend, loaded.forward(x)), to_numpy(backend, model.forward(x)))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)


def test_copies_and_moves(rng):
    model = resnet(dtype="float32")
    _randomise(model, rng)
    x = rng.standard_normal((2, 2, 8, 8)).astype("float32")
    expected = np.asarray(model.forward(x))
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(np.asarray(twin.forward(x)), expected)
    model.to("array_api_strict", dtype="float64")
    assert model.layers[2].body[1].running_mean.dtype == model.backend.xp.float64
    assert_close(to_numpy(model.backend, model.forward(x)), expected, "float32")


def test_dropout_inside_a_block_gives_the_same_masks_in_shards(rng):
    """Without BatchNorm a block is row-separable: shards take their rows of the same whole-batch draws."""
    def make(workers):
        return pc.Sequential([Conv2D(1, 4, 3, padding=1), Residual([Conv2D(4, 4, 3, padding=1), ReLU(), Dropout(0.3)]),
                              MaxPool2D(2), Flatten(), Dense(64, 5)], dtype="float64", seed=3, workers=workers)
    one, two = make(1), make(2)
    assert two.shards_for((64, 1, 8, 8)) == 2
    x = rng.standard_normal((64, 1, 8, 8))
    a, b = one.forward(x, training=True), two.forward(x, training=True)
    assert_close(np.asarray(b), np.asarray(a), "float64")
    g = rng.standard_normal((64, 5))
    assert_close(np.asarray(two.backward(g)), np.asarray(one.backward(g)), "float64")
    for p, q in zip(one.parameters(), two.parameters()):
        assert_close(np.asarray(q.grad), np.asarray(p.grad), "float64", err_msg=p.name)
    assert resnet(workers=2).shards_for((256, 2, 8, 8)) == 1  # BatchNorm inside: never sharded


def test_release_drops_the_caches_of_the_layers_inside(rng):
    model = resnet()
    model.forward(rng.standard_normal((2, 2, 8, 8)), training=True)
    model.release()
    for layer in (model.layers[2].body[0], model.layers[4].shortcut[1], model.layers[6].body[0].body[0]):
        assert not [k for k in vars(layer) if k.startswith("_")]


# ---------------------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("args, message", [
    (([],), "non-empty list of layers"),
    (("relu",), "non-empty list of layers"),
    (([ReLU(), "relu"],), "item 1 is not a portacnn layer"),
    (([{"type": "Nope"}],), "is not a known layer"),
    (([ReLU()], []), "shortcut must be a layer or a non-empty list"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        Residual(*args)


def test_the_same_layer_twice_is_refused():
    relu = ReLU()
    with pytest.raises(ValueError, match="Residual holds the layer ReLU"):
        Residual([relu, relu])
    with pytest.raises(ValueError, match="twice"):
        Residual([Residual([relu]), relu])
    with pytest.raises(ValueError, match="Sequential holds the layer ReLU"):
        pc.Sequential([Residual([relu]), relu])


def test_branches_of_different_shapes_are_named():
    block = Residual([Conv2D(2, 3, 3, padding=1)])
    with pytest.raises(ValueError, match=r"layers give shape \(3, 5, 5\) but its shortcut gives \(2, 5, 5\)"):
        block.output_shape((2, 5, 5))
    model = pc.Sequential([block], workers=1)
    with pytest.raises(ValueError, match="shortcut"):
        model.forward(np.zeros((1, 2, 5, 5), np.float32))


def _arch_with(block):
    return [{"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": [3, 3], "padding": [1, 1]},
            block, {"type": "Flatten"}, {"type": "Dense", "in_features": 2 * 28 * 28, "out_features": 10}]


@pytest.mark.parametrize("block, message", [
    ({"type": "Residual"}, "lacks fields"),
    ({"type": "Residual", "layers": []}, "layer 1 \\(Residual\\) layers must be a layer or a non-empty list"),
    ({"type": "Residual", "layers": [{"type": "Conv2D", "in_channels": 2, "out_channels": 3, "kernel_size": 1}]},
     "layers give shape"),
    ({"type": "Residual", "layers": [{"type": "ReLU"}], "shortcut": [{"type": "Bad"}]}, "shortcut item 0 is not a known layer"),
    ({"type": "Residual", "layers": [{"type": "Conv2D", "in_channels": 3, "out_channels": 2, "kernel_size": 1}]},
     r"layer 1.body.0 \(Conv2D\) expects 3 input channels"),
])
def test_checkpoint_validator_refuses_bad_blocks(block, message):
    with pytest.raises(ValueError, match=message):
        checkpoint.check_architecture(_arch_with(block), (1, 28, 28))


def test_checkpoint_validator_bounds_nesting_and_layer_count():
    block = {"type": "ReLU"}
    for _ in range(checkpoint.MAX_DEPTH):
        block = {"type": "Residual", "layers": [block]}
    checkpoint.check_architecture(_arch_with(block), (1, 28, 28))  # MAX_DEPTH nested blocks are fine
    with pytest.raises(ValueError, match="MAX_DEPTH"):
        checkpoint.check_architecture(_arch_with({"type": "Residual", "layers": [block]}), (1, 28, 28))
    wide = {"type": "Residual", "layers": [{"type": "ReLU"}] * checkpoint.MAX_LAYERS}
    with pytest.raises(ValueError, match="MAX_LAYERS"):
        checkpoint.check_architecture(_arch_with(wide), (1, 28, 28))
    plan = checkpoint.check_architecture(resnet().architecture())  # no input shape: inferred through the blocks
    assert plan["output_shape"] == (3,) and plan["parameters"] == resnet().num_parameters()
