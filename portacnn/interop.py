"""Convert between :class:`portacnn.Sequential` and ``torch.nn.Sequential``, weights and buffers copied exactly.

torch is optional and imported only when a conversion runs. Layer by layer:

==================  =====================================================================================
portacnn            torch
==================  =====================================================================================
Conv2D              ``nn.Conv2d`` (padding int, pair, "same" or "valid"; stride; dilation; bias);
                    groups=1 and padding_mode="zeros" only
MaxPool2D           ``nn.MaxPool2d`` (ceil_mode=False, dilation=1, return_indices=False only)
AvgPool2D           ``nn.AvgPool2d`` (count_include_pad=True, ceil_mode=False, divisor_override=None only)
GlobalAvgPool2D     ``nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())`` (one module, no parameters,
                    so the state-dict indices stay aligned; ``from_torch`` also takes the pair unnested)
BatchNorm2D/1D      ``nn.BatchNorm2d`` / ``nn.BatchNorm1d`` (track_running_stats=True, a float momentum)
ReLU, LeakyReLU,    ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Sigmoid``, ``nn.Tanh``, ``nn.Flatten`` (start_dim=1,
Sigmoid, Tanh,      end_dim=-1 only), ``nn.Linear``, ``nn.Dropout``
Flatten, Dense,
Dropout
Residual            :class:`TorchResidual` (``portacnn.interop.TorchResidual``): submodules ``body`` and
                    ``shortcut`` (an ``nn.Sequential`` each; ``shortcut`` None for the identity), so its
                    state keys are portacnn's "<i>.body.<j>.weight", "<i>.shortcut.<j>.running_mean"
==================  =====================================================================================

So ``to_torch(model).state_dict()`` has exactly the keys of ``model.state_dict()``, and
``net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})`` loads a model's
state into a network :func:`to_torch` built. :func:`from_torch` flattens nested ``nn.Sequential``s (its
model's keys then follow the flattened order) and refuses, with a ValueError naming the module's path and
the option, every module and option portacnn cannot compute the same way.
"""

from __future__ import annotations

import numpy as np

from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D,
                     LeakyReLU, MaxPool2D, ReLU, Residual, Sigmoid, Tanh)

__all__ = ["from_torch", "to_torch"]  # and TorchResidual, made on first access (it needs torch)

_MISSING = "torch is not installed; pip install torch to convert models to and from torch modules"
_CLASSES = {}  # the torch classes defined here, made on first use (torch is imported only then)


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(_MISSING) from e
    return torch


def _residual_class():
    """``TorchResidual``, defined once torch is imported; pickles as ``portacnn.interop.TorchResidual``."""
    if "TorchResidual" not in _CLASSES:
        nn = _torch().nn

        class TorchResidual(nn.Module):
            """portacnn's Residual in torch: ``body(x) + shortcut(x)``, ``body(x) + x`` when ``shortcut`` is None."""

            def __init__(self, body, shortcut=None):
                super().__init__()
                self.body = body
                self.shortcut = shortcut

            def forward(self, x):
                return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

        TorchResidual.__module__ = __name__
        TorchResidual.__qualname__ = "TorchResidual"
        _CLASSES["TorchResidual"] = TorchResidual
    return _CLASSES["TorchResidual"]


def __getattr__(name):  # ``portacnn.interop.TorchResidual`` imports torch only when asked for
    if name == "TorchResidual":
        return _residual_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- portacnn -> torch -----------------------------------------------------------------------------------
def _to_pool(cls_name):
    return lambda layer, nn, meta: getattr(nn, cls_name)(layer.kernel_size, stride=layer.stride, padding=layer.padding)


def _to_batchnorm(cls_name):
    return lambda layer, nn, meta: getattr(nn, cls_name)(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                                                         affine=layer.affine, **meta)


def _to_plain(cls_name):
    return lambda layer, nn, meta: getattr(nn, cls_name)()


#: portacnn layer -> the torch module computing it (parameters uninitialised on the meta device, loaded later);
#: one entry per type of portacnn.layers.LAYER_TYPES (tests/layers/test_layer_table.py checks it)
_TO_TORCH = {
    Conv2D: lambda layer, nn, meta: nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                              stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                              bias=layer.use_bias, **meta),
    Dense: lambda layer, nn, meta: nn.Linear(layer.in_features, layer.out_features, bias=layer.use_bias, **meta),
    BatchNorm2D: _to_batchnorm("BatchNorm2d"), BatchNorm1D: _to_batchnorm("BatchNorm1d"),
    MaxPool2D: _to_pool("MaxPool2d"), AvgPool2D: _to_pool("AvgPool2d"),
    GlobalAvgPool2D: lambda layer, nn, meta: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    LeakyReLU: lambda layer, nn, meta: nn.LeakyReLU(layer.negative_slope),
    Dropout: lambda layer, nn, meta: nn.Dropout(layer.p),
    ReLU: _to_plain("ReLU"), Sigmoid: _to_plain("Sigmoid"), Tanh: _to_plain("Tanh"), Flatten: _to_plain("Flatten"),
    Residual: lambda layer, nn, meta: _residual_class()(
        _torch_sequential(layer.body, nn, meta["dtype"]),
        None if layer.shortcut is None else _torch_sequential(layer.shortcut, nn, meta["dtype"])),
}


def _torch_module(layer, nn, dt):
    """The torch module computing ``layer``."""
    make = _TO_TORCH.get(type(layer))
    if make is None:
        raise ValueError(f"to_torch: no torch module for {layer!r} (portacnn's own layers only)")
    return make(layer, nn, {"device": "meta", "dtype": dt})


def _torch_sequential(layers, nn, dt):
    return nn.Sequential(*(_torch_module(layer, nn, dt) for layer in layers))


def to_torch(model):
    """A ``torch.nn.Sequential`` computing ``model``, on the CPU in the model's dtype, with exact copies of its
    parameters and buffers (BatchNorm running statistics and ``num_batches_tracked`` included).

    Like every new torch module it is returned in training mode (dropout active, BatchNorm on batch
    statistics): call ``.eval()`` before inference. Its state-dict keys are the model's (module docstring).
    """
    from .sequential import Sequential

    if not isinstance(model, Sequential):
        raise ValueError(f"to_torch takes a portacnn Sequential model; got {type(model).__name__}")
    torch = _torch()
    dt = getattr(torch, model.dtype)
    net = _torch_sequential(model.layers, torch.nn, dt)  # on the meta device: no init work, torch's RNG untouched
    net = net.to_empty(device="cpu")
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    return net


# -- torch -> portacnn -----------------------------------------------------------------------------------
def _flat(module, path):
    """(path, module) of the leaves of nested ``nn.Sequential``s, in order."""
    from torch import nn

    if type(module) is nn.Sequential:
        return [item for name, sub in module.named_children() for item in _flat(sub, f"{path}.{name}" if path else name)]
    return [(path, module)]


def _ints(value):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else int(value)


def _refuse(path, module, problem):
    raise ValueError(f"from_torch: module {path!r} ({module!r}) {problem}")


def _from_conv(path, module, nn):
    if module.groups != 1:
        _refuse(path, module, f"has groups={module.groups}; portacnn's Conv2D has none (use groups=1)")
    if module.padding_mode != "zeros":
        _refuse(path, module, f"has padding_mode={module.padding_mode!r}; portacnn pads with zeros only")
    padding = module.padding if isinstance(module.padding, str) else _ints(module.padding)
    return Conv2D(module.in_channels, module.out_channels, _ints(module.kernel_size), stride=_ints(module.stride),
                  padding=padding, dilation=_ints(module.dilation), bias=module.bias is not None)


def _from_maxpool(path, module, nn):
    for option, value, plain in (("ceil_mode", module.ceil_mode, False), ("dilation", _ints(module.dilation), 1),
                                 ("return_indices", module.return_indices, False)):
        if value not in (plain, (plain, plain)):
            _refuse(path, module, f"has {option}={value!r}; portacnn's MaxPool2D takes {option}={plain!r} only")
    return MaxPool2D(_ints(module.kernel_size), stride=_ints(module.stride), padding=_ints(module.padding))


def _from_avgpool(path, module, nn):
    for option, value, plain in (("ceil_mode", module.ceil_mode, False),
                                 ("count_include_pad", module.count_include_pad, True),
                                 ("divisor_override", module.divisor_override, None)):
        if value != plain:
            _refuse(path, module, f"has {option}={value!r}; portacnn's AvgPool2D takes {option}={plain!r} only")
    return AvgPool2D(_ints(module.kernel_size), stride=_ints(module.stride), padding=_ints(module.padding))


def _from_batchnorm(cls):
    def make(path, module, nn):
        if not module.track_running_stats:
            _refuse(path, module, "has track_running_stats=False; portacnn's BatchNorm keeps running statistics")
        if module.momentum is None:
            _refuse(path, module, "has momentum=None (a cumulative average); give it a float momentum such as 0.1")
        return cls(module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine)
    return make


def _from_flatten(path, module, nn):
    if (module.start_dim, module.end_dim) != (1, -1):
        _refuse(path, module, "flattens other axes; portacnn's Flatten is Flatten(start_dim=1, end_dim=-1)")
    return Flatten()


def _from_adaptive(path, module, nn):
    _refuse(path, module, "maps to portacnn's GlobalAvgPool2D only as AdaptiveAvgPool2d(1) followed by Flatten()")


#: torch module class name -> the portacnn layer it becomes (GlobalAvgPool2D comes from the pair
#: AdaptiveAvgPool2d(1) + Flatten, read in :func:`_layers`; Residual from :class:`TorchResidual`)
_FROM_TORCH = {
    "Conv2d": _from_conv, "MaxPool2d": _from_maxpool, "AvgPool2d": _from_avgpool,
    "BatchNorm2d": _from_batchnorm(BatchNorm2D), "BatchNorm1d": _from_batchnorm(BatchNorm1D),
    "Linear": lambda path, module, nn: Dense(module.in_features, module.out_features, bias=module.bias is not None),
    "Flatten": _from_flatten, "LeakyReLU": lambda path, module, nn: LeakyReLU(module.negative_slope),
    "Dropout": lambda path, module, nn: Dropout(module.p), "ReLU": lambda path, module, nn: ReLU(),
    "Sigmoid": lambda path, module, nn: Sigmoid(), "Tanh": lambda path, module, nn: Tanh(),
    "AdaptiveAvgPool2d": _from_adaptive,
}


def _layer(path, module, nn):
    """(portacnn layer, {local state name: tensor}) for one torch module (not a Sequential)."""
    kind = type(module)
    if kind is _residual_class():
        body = _layers(module.body, f"{path}.body", nn)
        shortcut = None if module.shortcut is None else _layers(module.shortcut, f"{path}.shortcut", nn)
        layer = Residual([lay for lay, _ in body], None if shortcut is None else [lay for lay, _ in shortcut])
        tensors = {f"body.{j}.{k}": t for j, (_, ts) in enumerate(body) for k, t in ts.items()}
        tensors.update({f"shortcut.{j}.{k}": t for j, (_, ts) in enumerate(shortcut or []) for k, t in ts.items()})
        return layer, tensors
    own = {k: t for k, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
           if t is not None}
    make = _FROM_TORCH.get(kind.__name__)
    if make is None or getattr(nn, kind.__name__, None) is not kind:
        _refuse(path, module, "has no portacnn layer (supported: Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1) + "
                              "Flatten, BatchNorm2d/1d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Linear, Dropout, "
                              "Sequential, portacnn.interop.TorchResidual)")
    return make(path, module, nn), own


def _layers(seq, path, nn):
    """[(layer, tensors)] for the modules of ``seq`` (a ``nn.Sequential``), nested Sequentials flattened."""
    items, out, i = _flat(seq, path), [], 0
    while i < len(items):
        where, module = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if type(module) is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)) and type(nxt) is nn.Flatten \
                and (nxt.start_dim, nxt.end_dim) == (1, -1):
            out.append((GlobalAvgPool2D(), {}))
            i += 2
            continue
        try:
            out.append(_layer(where, module, nn))
        except ValueError as e:
            if str(e).startswith("from_torch:"):
                raise
            raise ValueError(f"from_torch: module {where!r} ({module!r}): {e}") from None
        i += 1
    if not out:
        raise ValueError(f"from_torch: {'the Sequential' if not path else repr(path)} holds no module")
    return out


def from_torch(module, input_shape=None, backend=None):
    """A :class:`portacnn.Sequential` computing ``module`` (a ``torch.nn.Sequential``), its parameters and
    buffers copied bit for bit, in the module's dtype (float32 or float64), on ``backend``.

    ``input_shape`` (C, H, W) is stored as the model's (see :class:`~portacnn.Sequential`). Nested
    Sequentials are flattened, so the model's state keys follow the flattened order (they equal the
    module's own for a network :func:`to_torch` built). Unknown modules and options portacnn does not compute
    are ValueErrors naming the module's path in ``module``.
    """
    from .sequential import Sequential

    torch = _torch()
    nn = torch.nn
    if type(module) is not nn.Sequential:
        raise ValueError(f"from_torch takes a torch.nn.Sequential; got {type(module).__name__} "
                         "(wrap a single module: nn.Sequential(module))")
    items = _layers(module, "", nn)
    tensors = {f"{i}.{k}": t for i, (_, ts) in enumerate(items) for k, t in ts.items()}
    floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(floats) > 1 or not floats <= {torch.float32, torch.float64}:
        raise ValueError(f"from_torch: the module's parameters are {sorted(map(str, floats))}; portacnn takes one of "
                         "float32 or float64 (call module.float() or module.double() first)")
    dtype = "float64" if floats == {torch.float64} else "float32"
    model = Sequential([layer for layer, _ in items], backend=backend, dtype=dtype, input_shape=input_shape)
    model.load_state_dict({k: np.array(t.detach().cpu().numpy(), copy=True) for k, t in tensors.items()})
    return model
