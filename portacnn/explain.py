"""What the network looks at, for one image: feature maps, saliency and Grad-CAM.

With ``x`` the model's input (1, C, H, W), ``y = model(x)`` the logits and ``y_c`` the score of class ``c``
(the logit, before the softmax; the predicted class unless one is named):

:func:`feature_maps` (model, image, layer) gives the activations ``A`` (K, h, w) a layer computes for the image:
what each of its K channels responds to.

:func:`saliency` (model, image, class_id) follows Simonyan, Vedaldi and Zisserman (2014), "Deep Inside
Convolutional Networks"; the channels are reduced by the maximum of the absolute value, as in the paper (a grey
image has one)::

    S[i, j] = max_ch | d y_c / d x[ch, i, j] |           (H, W): which pixels change the score most

:func:`grad_cam` (model, image, class_id, layer) follows Selvaraju et al. (2017), "Grad-CAM: Visual Explanations
from Deep Networks via Gradient-based Localization"::

    alpha_k = mean_{i,j} d y_c / d A[k, i, j]            (K,): how much channel k matters for class c
    cam     = ReLU( sum_k alpha_k A[k] )                  (h, w): where the evidence for the class lies

then resized to the input's H x W by bilinear interpolation with half-pixel centres (what
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` computes) and divided by its maximum,
so it lies in [0, 1] (all zeros when no location speaks for the class). ``A`` is by default the output of the
last layer whose output is images (C, H, W), the layer before the network flattens or pools them away.

``layer`` is an index into ``model.layers`` (negative ones count from the end), or its name as ``model.summary()``
shows it: ``"3"``, or ``"4.body.1"`` for a layer inside a :class:`~portacnn.layers.Residual`.

Everything is computed in the model's own backend, namespace and dtype, from the layers' own forward and backward
passes (``forward(x, training=False)``: BatchNorm normalises with its running statistics and Dropout passes
everything, as in inference); only the finished map comes to the host, as a NumPy array. The image is anything
``model.predict`` takes, for one image: raw integer pixels (read by the model's preprocessing, as predict reads
them) as (H, W), (C, H, W), channels-last (H, W, C) or a batch of one; or float model input as (C, H, W) or a
batch of one (floats are used as they are, channels first, as ``predict`` takes them).

Nothing of the model changes: weights and buffers (running statistics) stay as they were, every
``Parameter.grad`` is put back as it was before the call (the same array, or None), and what the layers kept for
backward is dropped afterwards (:meth:`~portacnn.Sequential.release`), so a ``model.backward`` needs a new
``model.forward`` first.
"""

from __future__ import annotations

import contextlib

import numpy as np
from array_api_compat import array_namespace, device

from .backend import numpy_dtype
from .layers import Residual
from .layers.base import run_backward, run_forward

__all__ = ["feature_maps", "grad_cam", "last_image_layer", "resolve_layer", "saliency"]


# -- the model, the image, the layer ----------------------------------------------------------------------------


def _check_model(model):
    from .sequential import Sequential

    if not isinstance(model, Sequential):
        what = "an Ensemble: explain each of its models (ensemble.models[i])" if hasattr(model, "models") else \
            f"a {type(model).__name__}"
        raise ValueError(f"explaining needs one portacnn Sequential model; got {what}")
    return model


def _model_input(model, image):
    """One image as the model's input (1, C, H, W) on its backend and dtype, read as ``model.predict`` reads it."""
    from . import inputs

    if not hasattr(image, "shape"):
        image = np.asarray(image)
    shape = tuple(image.shape)
    if len(shape) == 4 and shape[0] != 1:
        raise ValueError(f"explaining takes one image; got a batch of {shape[0]} (pass image[i])")
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"image must be one image (H, W), (C, H, W) or (H, W, C); got shape {shape}")
    xp = array_namespace(image)
    if len(shape) == 2 and numpy_dtype(image.dtype).kind == "f":
        image = xp.reshape(image, (1, 1, *shape))  # a grey float image: one channel
    elif len(shape) < 4:
        image = xp.expand_dims(image, axis=0)
    return inputs.images(image, model, what="image").rows(slice(0, 1))


def resolve_layer(model, layer) -> str:
    """The name (as ``model.summary()`` shows it: ``"3"``, ``"4.body.1"``) of the layer ``layer`` designates: an
    index into ``model.layers`` (negative ones count from the end) or such a name; a one-line ValueError
    otherwise."""
    return _path(_check_model(model), layer)[1]


def _path(model, layer):
    """``(steps, name)``: steps ``[(layers, index), ...]`` from ``model.layers`` down to the layer (a Residual's
    ``body`` or ``shortcut`` list for each level inside one), and its canonical name."""
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (int, np.integer, str)):
        raise ValueError(f"layer must be an index into model.layers or a name such as '3' or '4.body.1'; got {layer!r}")
    parts = str(int(layer) if not isinstance(layer, str) else layer).strip().split(".")
    layers, steps, names = model.layers, [], []
    try:
        index = int(parts[0])
    except ValueError:
        raise ValueError(f"layer {layer!r}: expected an index such as 3 or a name such as '4.body.1'") from None
    k = 0
    while True:
        n = len(layers)
        if not -n <= index < n:
            where = "the model" if not steps else f"{'.'.join(names)}"
            raise ValueError(f"layer {layer!r}: {where} has {n} layers (0..{n - 1}); see model.summary()")
        index %= n
        steps.append((layers, index))
        names.append(str(index))
        k += 1
        if k == len(parts):
            return steps, ".".join(names)
        held = layers[index]
        branch = parts[k]
        if not isinstance(held, Residual) or branch not in ("body", "shortcut") or k + 1 == len(parts):
            raise ValueError(f"layer {layer!r}: {'.'.join(names)} is {held.short()}, which has no "
                             f"layer {'.'.join(parts[k:])!r}; see model.summary()")
        layers = held.body if branch == "body" else held.shortcut
        if layers is None:
            raise ValueError(f"layer {layer!r}: the Residual {'.'.join(names)} has no shortcut layers")
        names.append(branch)
        try:
            index = int(parts[k + 1])
        except ValueError:
            raise ValueError(f"layer {layer!r}: expected an index after {'.'.join(names)}") from None
        k += 1


def last_image_layer(model, input_shape) -> str:
    """The name of the last layer of ``model.layers`` whose output is images (C, H, W) for input images of
    ``input_shape`` (C, H, W), before the model's output: what :func:`grad_cam` uses by default (a one-line
    ValueError when there is none, as for a model that flattens its input first)."""
    shape, last = tuple(int(d) for d in input_shape), None
    layers = _check_model(model).layers
    for i, layer in enumerate(layers):
        shape = layer.output_shape(shape)
        if len(shape) == 3:
            last = i
    if last is None or last == len(layers) - 1:
        raise ValueError("the model has no layer whose output is images (C, H, W) before its output; Grad-CAM needs "
                         "a convolutional model")
    return str(last)


def _class(logits, class_id):
    """The class to explain: ``class_id`` checked against the logits (1, classes), else the predicted one."""
    if len(logits.shape) != 2 or int(logits.shape[0]) != 1:
        raise ValueError(f"the model's output has shape {tuple(logits.shape)}, not (1, classes): explaining needs "
                         "a classifier")
    classes = int(logits.shape[1])
    if class_id is None:
        xp = array_namespace(logits)
        return int(xp.argmax(logits[0, ...]))
    if isinstance(class_id, (bool, np.bool_)) or not isinstance(class_id, (int, np.integer)) or \
            not 0 <= int(class_id) < classes:
        raise ValueError(f"class_id must be a class of the model, an int in 0..{classes - 1}; got {class_id!r}")
    return int(class_id)


def _one_hot(logits, k):
    """d y_k / d logits: one at class ``k``, in the logits' namespace, dtype and device."""
    xp = array_namespace(logits)
    hot = xp.arange(int(logits.shape[1]), device=device(logits)) == k
    return xp.reshape(xp.astype(hot, logits.dtype), (1, -1))


@contextlib.contextmanager
def _untouched(model):
    """Every parameter's ``grad`` put back as it was on the way out, and the layers' forward caches dropped; a
    layer without a backward pass (a user's own Layer) is a one-line ValueError."""
    kept = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    except NotImplementedError as e:
        raise ValueError("explaining needs every layer's backward pass; a layer has none "
                         f"({e or 'not implemented'})") from None
    finally:
        for p, grad in kept:
            p.grad = grad
        model.release()


# -- forward to a layer and back to it ----------------------------------------------------------------------------


def _forward(steps, x):
    """``(output of steps[0]'s layers, activation of the layer at the end of steps)``, inference mode."""
    layers, i = steps[0]
    h = run_forward(layers[:i], x, False)
    if len(steps) == 1:
        a = out = layers[i].forward(h, False)
    else:  # inside a Residual: its branch gives the activation; the block is then run whole (the same caches)
        _, a = _forward(steps[1:], h)
        out = layers[i].forward(h, False)
    return run_forward(layers[i + 1 :], out, False), a


def _backward(steps, grad):
    """d score / d (the activation at the end of steps), from ``grad`` at the output of steps[0]'s layers: each
    layer's backward in turn, from the last one to the one after the activation. Inside a Residual the branch's
    output gets the block's output gradient (the block adds its branches)."""
    layers, i = steps[0]
    grad = run_backward(layers[i + 1 :], grad, True)
    return grad if len(steps) == 1 else _backward(steps[1:], grad)


# -- the three views --------------------------------------------------------------------------------------------


def feature_maps(model, image, layer) -> np.ndarray:
    """The activations the layer ``layer`` (index or name) gives for ``image``: a host NumPy array (C, H, W) for a
    layer whose output is images, (F,) for one with flat output (see the module docstring)."""
    model = _check_model(model)
    x = _model_input(model, image)
    steps, _ = _path(model, layer)
    with _untouched(model):
        _, a = _forward(steps, x)
        return np.array(model.backend.to_numpy(a[0, ...]), copy=True)  # the caller's own, not a view of a cache


def saliency(model, image, class_id=None) -> np.ndarray:
    """``S[i, j] = max_c |d y_k / d x[c, i, j]|`` (Simonyan et al. 2014): the gradient of the class score (the
    logit of ``class_id``, by default the predicted class) with respect to the model's input, from
    ``model.forward(x, training=False)`` and ``model.backward(one_hot_k)``, reduced over the channels by the
    maximum of its absolute value. A host NumPy array (H, W) in the model's dtype. The model's weights, buffers and
    gradients are left as they were."""
    model = _check_model(model)
    x = _model_input(model, image)
    with _untouched(model):
        logits = model.forward(x, training=False)
        k = _class(logits, class_id)
        dx = model.backward(_one_hot(logits, k))
        xp = model.backend.xp
        return np.asarray(model.backend.to_numpy(xp.max(xp.abs(dx[0, ...]), axis=0)))


def grad_cam(model, image, class_id=None, layer=None) -> np.ndarray:
    """The Grad-CAM map (Selvaraju et al. 2017) of ``class_id`` (by default the predicted class) at ``layer`` (by
    default the last layer whose output is images): ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the mean over
    (h, w) of ``d y_k / d A_k``, resized bilinearly (half-pixel centres) to the input's (H, W) and divided by its
    maximum: a host NumPy array (H, W) in [0, 1], in the model's dtype. A layer whose output is not images is a
    one-line ValueError. The model's weights, buffers and gradients are left as they were."""
    model = _check_model(model)
    x = _model_input(model, image)
    steps, name = _path(model, last_image_layer(model, x.shape[1:]) if layer is None else layer)
    with _untouched(model):
        logits, a = _forward(steps, x)
        if len(a.shape) != 4:
            raise ValueError(f"layer {name} gives flat output of shape {tuple(a.shape[1:])}; Grad-CAM needs a layer "
                             "whose output is images (C, H, W)")
        k = _class(logits, class_id)
        da = _backward(steps, _one_hot(logits, k))
        xp = model.backend.xp
        alpha = xp.mean(da, axis=(2, 3))  # (1, K)
        cam = xp.sum(alpha[:, :, None, None] * a, axis=1)[0, ...]  # (h, w)
        cam = xp.maximum(cam, xp.zeros((), dtype=cam.dtype, device=device(cam)))
        cam = _resize_bilinear(cam, tuple(int(d) for d in x.shape[2:]))
        top = xp.max(cam)
        cam = cam / xp.where(top > 0, top, xp.ones_like(top))  # all zeros stay zeros
        return np.asarray(model.backend.to_numpy(cam))


def _interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float64 R with ``R @ v`` the linear interpolation of ``v`` at the half-pixel centres of
    ``n_out`` cells: source position ``s = (i + 0.5) * n_in / n_out - 0.5``, clamped at 0, blending cells
    ``floor(s)`` and the next (the last cell repeats at the far edge), as torch's bilinear with
    ``align_corners=False``."""
    s = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = s - lo
    r = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(r, (rows, lo), 1.0 - frac)
    np.add.at(r, (rows, hi), frac)
    return r


def _resize_bilinear(m, size):
    """The (h, w) map ``m`` resized to ``size`` (H, W): ``Rh @ m @ Rw^T``, the two interpolation matrices made on the
    host from the sizes alone and moved to ``m``'s device."""
    xp = array_namespace(m)
    (h, w), (big_h, big_w) = tuple(int(d) for d in m.shape), size
    rh = xp.asarray(_interpolation_matrix(big_h, h), dtype=m.dtype, device=device(m))
    rw = xp.asarray(_interpolation_matrix(big_w, w), dtype=m.dtype, device=device(m))
    return xp.matmul(xp.matmul(rh, m), xp.matrix_transpose(rw))
