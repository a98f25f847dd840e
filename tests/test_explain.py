"""portacnn.explain: feature maps, saliency and Grad-CAM against constructed models, finite differences and torch.

The math runs on every backend (numpy, array_api_strict on a second device, torch) and stays fast: tiny nets, one
image. Oracles: a model that reads one pixel, float64 central differences of the class score, torch autograd and
forward/backward hooks on the model's ``pc.to_torch`` twin, and layers run by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import JAX_IMPORTABLE, TORCH_IMPORTABLE, assert_close, make_backend, to_numpy
from oracles import numeric_grad

import portacnn as pc
from portacnn import explain
from portacnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                             Layer, LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Tanh)

BACKENDS = ["numpy", "array_api_strict",
            pytest.param("torch", marks=pytest.mark.skipif(not TORCH_IMPORTABLE, reason="torch is not installed")),
            pytest.param("jax", marks=[pytest.mark.skipif(not JAX_IMPORTABLE, reason="jax is not installed"),
                                       pytest.mark.slow]),
            pytest.param("cupy", marks=pytest.mark.gpu)]


def _with_state(model, rng, scale=0.5):
    """``model`` with random weights and BatchNorm running statistics far from their defaults (so inference-mode
    normalisation matters), loaded through its state dict."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(7)
        elif key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, value.shape)
        elif key.endswith("running_mean"):
            state[key] = rng.normal(0.0, 0.3, value.shape)
        else:
            state[key] = rng.normal(0.0, scale, value.shape)
    model.load_state_dict(state)
    return model


def conv_net(backend="numpy", dtype="float64", seed=0, channels=2):
    """Conv -> BatchNorm -> ReLU -> Conv -> ReLU -> MaxPool -> Dropout -> Flatten -> Dense, on 8x8 images."""
    layers = [Conv2D(channels, 4, 3, padding=1), BatchNorm2D(4), ReLU(), Conv2D(4, 6, 3), ReLU(), MaxPool2D(2),
              Dropout(0.5), Flatten(), Dense(6 * 3 * 3, 3)]
    model = pc.Sequential(layers, backend=make_backend(backend) if isinstance(backend, str) else backend,
                          dtype=dtype, seed=seed)
    return _with_state(model, np.random.default_rng(seed))


def residual_net(backend="numpy", dtype="float64", seed=0):
    body = [Conv2D(3, 3, 3, padding=1), BatchNorm2D(3), ReLU(), Conv2D(3, 3, 3, padding=1)]
    layers = [Conv2D(1, 3, 3, padding=1), ReLU(), Residual(body), ReLU(), GlobalAvgPool2D(), Dense(3, 4)]
    model = pc.Sequential(layers, backend=make_backend(backend), dtype=dtype, seed=seed)
    return _with_state(model, np.random.default_rng(seed))


def image(seed=1, channels=2, size=8):
    return np.random.default_rng(seed).random((channels, size, size))


def logit(model, x, k):
    """The class score y_k of host image ``x`` (C, H, W), in inference mode, as a float."""
    return float(to_numpy(model.backend, model.forward(x[None], training=False))[0, k])


# -- saliency ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_saliency_of_a_model_reading_one_pixel_is_that_pixel(name):
    h, w, (i, j) = 5, 6, (3, 1)
    model = pc.Sequential([Flatten(), Dense(h * w, 2)], backend=make_backend(name), dtype="float64")
    weight = np.zeros((2, h * w))
    weight[1, i * w + j] = -3.0  # class 1 reads pixel (i, j), negatively; class 0 reads nothing
    model.load_state_dict({"1.weight": weight, "1.bias": np.array([0.5, -0.5])})
    x = np.random.default_rng(0).random((1, h, w))
    s = explain.saliency(model, x, class_id=1)
    assert isinstance(s, np.ndarray) and s.shape == (h, w) and s.dtype == np.float64
    expected = np.zeros((h, w))
    expected[i, j] = 3.0  # |d y_1 / d x[i, j]|
    np.testing.assert_array_equal(s, expected)
    np.testing.assert_array_equal(explain.saliency(model, x, class_id=0), np.zeros((h, w)))


def test_saliency_equals_finite_differences_of_the_class_score():
    """A conv net with BatchNorm (running statistics) and Dropout, 2 input channels, float64: the gradient from the
    layers' backward equals central differences of the logit; the channels are reduced by max |.|."""
    model = conv_net()
    x = image()
    for k in (0, 2):
        numeric = numeric_grad(lambda v: logit(model, v, k), x)
        assert_close(explain.saliency(model, x, class_id=k), np.abs(numeric).max(axis=0), "float64", rtol=1e-7)
    predicted = int(np.argmax(to_numpy(model.backend, model.forward(x[None]))))
    np.testing.assert_array_equal(explain.saliency(model, x), explain.saliency(model, x, class_id=predicted))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", BACKENDS)
def test_saliency_equals_torch_autograd_on_the_twin(name, dtype):
    torch = pytest.importorskip("torch")
    model = conv_net(name, dtype)
    x = image().astype(dtype)
    twin = pc.to_torch(model).eval()  # BatchNorm on running statistics, Dropout off: what explain does
    xt = torch.tensor(x[None], requires_grad=True)
    out = twin(xt)
    k = int(out.argmax())
    out[0, k].backward()
    expected = xt.grad.abs().amax(dim=1)[0].numpy()
    got = explain.saliency(model, x)
    assert got.dtype == np.dtype(dtype)
    assert_close(got, expected, dtype)
    assert_close(explain.saliency(model, x, class_id=(k + 1) % 3),
                 _torch_saliency(twin, x, (k + 1) % 3), dtype)


def _torch_saliency(twin, x, k):
    import torch

    xt = torch.tensor(x[None], requires_grad=True)
    twin(xt)[0, k].backward()
    return xt.grad.abs().amax(dim=1)[0].numpy()


@pytest.mark.parametrize("name", BACKENDS)
def test_every_layer_back_propagates_after_an_inference_forward(name):
    """The layers the other tests leave out, each after a forward with training=False: the input gradient equals
    torch autograd's on the twin in eval mode."""
    pytest.importorskip("torch")
    layers = [Conv2D(1, 3, 3, padding=1), AvgPool2D(2), LeakyReLU(0.1), Tanh(), Conv2D(3, 2, 1), Sigmoid(), Flatten(),
              BatchNorm1D(32), Dropout(0.3), Dense(32, 3)]
    model = _with_state(pc.Sequential(layers, backend=make_backend(name), dtype="float64"), np.random.default_rng(4))
    x = image(channels=1)
    twin = pc.to_torch(model).eval()
    for k in range(3):
        assert_close(explain.saliency(model, x, k), _torch_saliency(twin, x, k), "float64")


# -- Grad-CAM ---------------------------------------------------------------------------------------------------


def _torch_grad_cam(twin, module, x, k=None):
    """Grad-CAM on the torch twin with a forward hook (the activation) and a tensor hook (its gradient), resized by
    torch's bilinear interpolate (align_corners=False) and divided by its maximum."""
    import torch

    seen = {}

    def keep(_, __, out):
        seen["a"] = out
        out.register_hook(lambda g: seen.__setitem__("g", g))

    handle = module.register_forward_hook(keep)
    try:
        out = twin(torch.tensor(x[None]))
    finally:
        handle.remove()
    k = int(out.argmax()) if k is None else k
    out[0, k].backward()
    a, g = seen["a"].detach(), seen["g"]
    cam = torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * a).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[1:], mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max() if cam.max() > 0 else cam).numpy()


@pytest.mark.parametrize("name", BACKENDS)
def test_grad_cam_equals_a_torch_implementation_with_hooks(name):
    pytest.importorskip("torch")
    model = conv_net(name, "float64", channels=1)
    twin = pc.to_torch(model).eval()
    x = image(channels=1)
    assert explain.last_image_layer(model, x.shape) == "6"  # Dropout: the last layer whose output is images
    for layer, module in ((None, twin[6]), (5, twin[5]), (4, twin[4]), ("2", twin[2]), (-3, twin[6])):
        for k in (None, 1):
            cam = explain.grad_cam(model, x, class_id=k, layer=layer)
            assert cam.shape == (8, 8) and cam.dtype == np.float64
            assert 0.0 <= cam.min() and cam.max() <= 1.0
            assert_close(cam, _torch_grad_cam(twin, module, x, k), "float64", err_msg=f"layer {layer}, class {k}")


def test_grad_cam_inside_a_residual_block_equals_torch():
    pytest.importorskip("torch")
    model = residual_net()
    twin = pc.to_torch(model).eval()
    x = image(channels=1)
    assert explain.last_image_layer(model, x.shape) == "3"
    for layer, module in ((None, twin[3]), ("2", twin[2]), ("2.body.2", twin[2].body[2]),
                          ("2.body.0", twin[2].body[0])):
        for k in range(4):
            assert_close(explain.grad_cam(model, x, k, layer), _torch_grad_cam(twin, module, x, k), "float64",
                         err_msg=f"layer {layer}, class {k}")


@pytest.mark.parametrize("name", BACKENDS)
def test_grad_cam_finds_the_one_channel_and_region_that_matter(name):
    """Two input channels copied by a 1x1 convolution; class 0 reads channel 1 only, class 1 channel 0 only (through
    the global average). Grad-CAM of each class is its channel's blob, nothing of the other; saliency likewise."""
    model = pc.Sequential([Conv2D(2, 2, 1), ReLU(), GlobalAvgPool2D(), Dense(2, 2)], backend=make_backend(name),
                          dtype="float64")
    model.load_state_dict({"0.weight": np.eye(2).reshape(2, 2, 1, 1), "0.bias": np.zeros(2),
                           "3.weight": np.array([[0.0, 2.0], [5.0, 0.0]]), "3.bias": np.zeros(2)})
    x = np.zeros((2, 6, 7))
    x[0, 1:3, 1:4] = [[0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]  # a blob in channel 0, top left
    x[1, 4:6, 5:7] = 0.8  # another in channel 1, bottom right
    np.testing.assert_allclose(explain.grad_cam(model, x, class_id=1), x[0] / x[0].max(), rtol=1e-12)
    np.testing.assert_allclose(explain.grad_cam(model, x, class_id=0), x[1] / x[1].max(), rtol=1e-12)
    s = explain.saliency(model, x, class_id=1)
    assert set(zip(*np.nonzero(s))) == set(zip(*np.nonzero(x[0])))  # d y_1 / d x flows only where channel 0 fires
    np.testing.assert_allclose(s[x[0] > 0], 5.0 / 42)
    # a class no location speaks for: all zeros, not NaN
    model.load_state_dict({**model.state_dict(), "3.weight": np.array([[0.0, -2.0], [5.0, 0.0]])})
    np.testing.assert_array_equal(explain.grad_cam(model, x, class_id=0), np.zeros((6, 7)))


@pytest.mark.parametrize("sizes", [(3, 8), (6, 8), (1, 5), (7, 7), (4, 28), (5, 3)])
def test_bilinear_resize_matches_torch_interpolate(sizes):
    torch = pytest.importorskip("torch")
    n_in, n_out = sizes
    r = explain._interpolation_matrix(n_out, n_in)
    np.testing.assert_allclose(r.sum(axis=1), 1.0)
    m = np.random.default_rng(n_in).random((n_in, n_in + 1))
    got = explain._resize_bilinear(m, (n_out, n_out + 2))
    ref = torch.nn.functional.interpolate(torch.tensor(m)[None, None], size=(n_out, n_out + 2), mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


# -- feature maps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_feature_maps_equal_the_layers_run_by_hand(name):
    model = conv_net(name, "float64")
    x = image()
    xb = model.backend.asarray(x[None], dtype="float64")
    h = xb
    for i, layer in enumerate(model.layers):
        h = layer.forward(h, False)
        expected = to_numpy(model.backend, h)[0]
        for ref in (i, str(i), i - len(model.layers)):
            got = explain.feature_maps(model, x, ref)
            assert isinstance(got, np.ndarray)
            np.testing.assert_array_equal(got, expected)
    assert explain.feature_maps(model, x, 0).shape == (4, 8, 8)
    assert explain.feature_maps(model, x, 7).shape == (54,)  # Flatten: flat output, (F,)


def test_feature_maps_inside_a_residual_block():
    model = residual_net()
    x = image(channels=1)
    h = model.backend.asarray(x[None], dtype="float64")
    for layer in model.layers[:2]:
        h = layer.forward(h, False)
    inner = h
    for j, layer in enumerate(model.layers[2].body):
        inner = layer.forward(inner, False)
        np.testing.assert_array_equal(explain.feature_maps(model, x, f"2.body.{j}"), inner[0])
    np.testing.assert_array_equal(explain.feature_maps(model, x, "2"), (inner + h)[0])
    assert explain.resolve_layer(model, "2.body.-1") == "2.body.3"
    assert explain.resolve_layer(model, np.int64(-1)) == "5"


# -- nothing changes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_weights_buffers_and_grads_are_left_as_they_were(name):
    model = conv_net(name, "float64")
    x = image()
    # a training step's gradients, as a model between two steps holds them; one parameter without any
    model.forward(x[None], training=True)
    model.backward(model.backend.asarray(np.ones((1, 3)), dtype="float64"))
    model.parameters()[0].grad = None
    state = model.state_dict()
    grads = [p.grad for p in model.parameters()]
    arrays = [p.data for p in model.parameters()]
    explain.saliency(model, x)
    explain.grad_cam(model, x)
    explain.grad_cam(model, x, 2, layer=2)
    explain.feature_maps(model, x, 3)
    after = model.state_dict()
    assert sorted(after) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(after[key], state[key], err_msg=key)  # running statistics included
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))  # the same arrays, None stays None
    assert all(p.data is a for p, a in zip(model.parameters(), arrays))
    with pytest.raises(RuntimeError, match="forward"):  # the forward caches were dropped
        model.backward(np.ones((1, 3)))


def test_an_error_inside_still_restores_the_grads():
    model = conv_net()
    sentinel = object()
    for p in model.parameters():
        p.grad = sentinel
    with pytest.raises(ValueError, match="class_id"):
        explain.saliency(model, image(), class_id=3)
    assert all(p.grad is sentinel for p in model.parameters())


# -- what it takes -------------------------------------------------------------------------------------------


def test_images_are_read_as_predict_reads_them():
    """Raw uint8 pixels go through the model's preprocessing (here with a per-channel normalisation); float images
    are model input; one image in any of its shapes, or a batch of one."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)  # channels-last raw colour images
    model = conv_net(channels=3)
    model.preprocessing = pc.Preprocessing.from_images(raw, normalize=True)
    floats = model.preprocessing.to_model_input(raw[:1], "float64")[0]
    expected = explain.saliency(model, floats)
    for form in (raw[0], np.moveaxis(raw[0], -1, 0), raw[:1], floats[None]):
        np.testing.assert_array_equal(explain.saliency(model, form), expected)
    grey = pc.Sequential([Flatten(), Dense(20, 2)], dtype="float64")
    two_d = rng.random((4, 5))
    np.testing.assert_array_equal(explain.saliency(grey, two_d), explain.saliency(grey, two_d[None]))


def test_refusals_are_one_line_value_errors():
    model = conv_net()
    x = image()

    class NoBackward(Layer):
        def forward(self, x, training=False):
            return x

    cases = [
        (lambda: explain.saliency(model, np.stack([x, x])), "one image"),
        (lambda: explain.grad_cam(model, x, layer=7), "flat output"),
        (lambda: explain.feature_maps(model, x, 9), "9 layers"),
        (lambda: explain.feature_maps(model, x, "1.body.0"), "no layer 'body.0'"),
        (lambda: explain.feature_maps(model, x, "first"), "expected an index"),
        (lambda: explain.feature_maps(model, x, True), "layer must be"),
        (lambda: explain.grad_cam(model, x, class_id=-1), "class_id"),
        (lambda: explain.saliency(model, x, class_id=True), "class_id"),
        (lambda: explain.grad_cam(pc.Sequential([Flatten(), Dense(128, 2)]), x), "no layer whose output is images"),
        (lambda: explain.saliency(pc.Ensemble([conv_net(), conv_net(seed=1)]), x), "Ensemble"),
        (lambda: explain.saliency(pc.Sequential([Flatten(), NoBackward(), Dense(128, 2)]), x), "backward"),
        (lambda: explain.saliency(pc.Sequential([Conv2D(2, 1, 1)]), x), "classifier"),
    ]
    for call, fragment in cases:
        with pytest.raises(ValueError, match=fragment) as e:
            call()
        assert "\n" not in str(e.value)


# -- the command line -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explained_model(tmp_path_factory):
    """A seed_cnn trained briefly on raw Kannada digits (so it keeps their preprocessing), with class names, and one
    test digit as a PNG file."""
    from clihelp import subset
    from PIL import Image

    folder = tmp_path_factory.mktemp("explain")
    x, y = subset("train", 256)
    model = pc.models.seed_cnn(seed=0)
    model.fit(x, y, epochs=1, batch_size=32, seed=0, progress=False)
    model.class_names = [f"digit{k}" for k in range(10)]
    model.save(folder / "model.safetensors")
    digit, _ = subset("test", 1)
    Image.fromarray(digit[0]).save(folder / "digit.png")
    return folder


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_explain_writes_three_pngs(explained_model, tmp_path, monkeypatch, capsys):
    import json

    from clihelp import assert_usage_error, run_cli

    model, digit = explained_model / "model.safetensors", explained_model / "digit.png"
    proc = run_cli("explain", model, digit, "--out", tmp_path / "why")  # the real command, in a subprocess
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{digit}: digit")  # the predicted class by its name, and its probability
    assert "wrote" in lines[1]
    for name in ("feature_maps.png", "saliency.png", "grad_cam.png"):
        assert str(tmp_path / "why" / name) in lines[1]
        assert (tmp_path / "why" / name).read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in (tmp_path / "why").iterdir()) == ["feature_maps.png", "grad_cam.png", "saliency.png"]

    from portacnn import cli

    monkeypatch.chdir(tmp_path)  # the default folder: after the image's name, here
    assert cli.main(["explain", str(model), str(digit), "--layer", "0", "--class", "digit3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["explained_class"] == 3 and result["explained_label"] == "digit3" and result["layer"] == "0"
    assert result["files"] == [f"digit-explain/{name}" for name in ("feature_maps.png", "saliency.png", "grad_cam.png")]
    assert cli.main(["explain", str(model), str(digit), "--class", "7", "--layer", "-5", "--out", "x"]) == 0
    assert "explaining class digit7" in capsys.readouterr().out

    for flags, fragment in ((["--layer", "12"], "--layer '12'"), (["--layer", "3"], "gives flat output"),
                            (["--class", "10"], "--class 10"), (["--class", "cat"], "not a class")):
        assert cli.main(["explain", str(model), str(digit), *flags]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and fragment in err, err
    (tmp_path / "data.csv").write_text("label,pixel0\n1,0\n")
    assert cli.main(["explain", str(model), str(tmp_path / "data.csv")]) == 2
    assert "not an image file" in capsys.readouterr().err

    fake = tmp_path / "no_matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib is not here')\n")
    import subprocess

    from clihelp import REPO, cli_cmd, cli_env

    proc = subprocess.run(cli_cmd("explain", model, digit), capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=cli_env(PYTHONPATH=f"{fake.parent}:{REPO}"))
    assert_usage_error(proc, "pip install 'portacnn[plot]'")
