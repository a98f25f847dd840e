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

A conversion reproduces a module's class, never what was added to one instance, so :func:`from_torch` also
refuses (on any module of the tree, the Sequential itself included) subclasses of the supported classes, hooks
of every kind (forward, forward pre-, backward, state-dict, load-state-dict; and global module hooks), instance
attributes that shadow the class's (a ``forward`` set on the instance, ``module.compile()``), weights shared by
two modules, submodules a leaf module never runs, ``None`` entries, and tensors without values (the meta
device). Whether parameters require gradients, and training or eval mode, do not matter. A given
``input_shape`` must be one the converted layers take (checked by walking them on it).
"""

from __future__ import annotations

import numpy as np

from .layers.plan import check_input_shape, walk
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
def _show(module) -> str:
    """How messages show a module: its repr when that is one short line, else its class name."""
    text = repr(module)
    return text if "\n" not in text and len(text) <= 100 else type(module).__name__


def _where(path) -> str:
    return f"module {path!r}" if path else "the Sequential itself"


def _refuse(path, module, problem):
    raise ValueError(f"from_torch: {_where(path)} ({_show(module)}) {problem}")


#: per-module hook tables (torch's attribute names) and what messages call them: every one changes what the
#: module computes, its gradients or its saved state, and none is part of a portacnn layer
_HOOKS = {"_forward_hooks": "forward hook", "_forward_pre_hooks": "forward pre-hook",
          "_backward_hooks": "backward hook", "_backward_pre_hooks": "backward pre-hook",
          "_state_dict_hooks": "state-dict hook", "_state_dict_pre_hooks": "state-dict pre-hook",
          "_load_state_dict_pre_hooks": "load-state-dict pre-hook",
          "_load_state_dict_post_hooks": "load-state-dict post-hook"}
#: the hooks torch runs around every module (``torch.nn.modules.module.register_module_forward_hook`` ...)
_GLOBAL_HOOKS = {"_global_forward_hooks": "register_module_forward_hook",
                 "_global_forward_pre_hooks": "register_module_forward_pre_hook",
                 "_global_backward_hooks": "register_module_full_backward_hook",
                 "_global_backward_pre_hooks": "register_module_full_backward_pre_hook"}


def _check_global_hooks(torch):
    table = torch.nn.modules.module
    for name, register in _GLOBAL_HOOKS.items():
        if getattr(table, name, None):
            raise ValueError(f"from_torch: a global hook is registered (torch.nn.modules.module.{register}); it runs "
                             "around every torch module but not in portacnn's model: remove its handle first")


def _check_plain(path, module):
    """Refuse what makes ``module`` compute (or train, or save) other than its class does: hooks of any kind, and
    instance attributes shadowing the class's (a ``forward`` set on the instance, ``module.compile()``'s
    compiled call). Subclasses are refused where the class is looked up (exact classes only)."""
    for name, kind in _HOOKS.items():
        if getattr(module, name, None):
            _refuse(path, module, f"has a {kind}, which portacnn's model would not run; remove its handle "
                                  "(handle.remove()) before converting")
    cls = type(module)
    shadowing = sorted(name for name in vars(module) if hasattr(cls, name))
    if shadowing:
        _refuse(path, module, f"has {shadowing[0]!r} set on the instance, replacing {cls.__name__}.{shadowing[0]}; "
                              f"portacnn converts {cls.__name__}'s own behaviour only: delete the attribute "
                              f"(del module.{shadowing[0]}) or convert an unmodified module")


def _flat(module, path, nn, seen):
    """(path, module) of the leaves of nested ``nn.Sequential``s, in the order ``forward`` runs them (a module
    listed twice is visited twice), each checked by :func:`_check_plain`. ``seen`` maps id(module) to its first
    path: a module with tensors met again shares its weights, which portacnn's layers cannot."""
    _check_plain(path, module)
    own = {k for k, _ in module.named_parameters(recurse=False)} | {k for k, _ in module.named_buffers(recurse=False)}
    if id(module) in seen and own:
        _refuse(path, module, f"is the module {seen[id(module)]!r} again (shared weights); portacnn's layers each "
                              "own their weights: use a copy (copy.deepcopy(module))")
    seen.setdefault(id(module), path)
    if type(module) is not nn.Sequential:
        return [(path, module)]
    if own:
        _refuse(path, module, f"holds tensors {sorted(own)} of its own, which no layer uses; move them into a layer")
    items = []
    for name, sub in module._modules.items():  # not named_children(): it skips repeats and None, forward does not
        where = f"{path}.{name}" if path else name
        if sub is None:
            raise ValueError(f"from_torch: module {where!r} is None, which torch's Sequential cannot run; "
                             "remove it (del net[i])")
        items += _flat(sub, where, nn, seen)
    return items


def _ints(value):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else int(value)


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


def _layer(path, module, nn, seen):
    """(portacnn layer, {local state name: tensor}) for one torch module (not a Sequential)."""
    kind = type(module)
    if kind is _residual_class():
        extra = sorted(set(module._modules) - {"body", "shortcut"})
        if extra or module.body is None:
            _refuse(path, module, f"has submodules {extra} besides body and shortcut; portacnn's Residual computes "
                                  "body(x) + shortcut(x) only" if extra else "has no body")
        body = _layers(module.body, f"{path}.body", nn, seen)
        shortcut = None if module.shortcut is None else _layers(module.shortcut, f"{path}.shortcut", nn, seen)
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
    if module._modules:
        _refuse(path, module, f"has submodules {sorted(module._modules)}, which torch's {kind.__name__} never runs "
                              "and portacnn's layer would drop; remove them")
    return make(path, module, nn), own


def _layers(seq, path, nn, seen):
    """[(layer, tensors)] for the modules of ``seq`` (a ``nn.Sequential``), nested Sequentials flattened."""
    items, out, i = _flat(seq, path, nn, seen), [], 0
    while i < len(items):
        where, module = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if type(module) is nn.AdaptiveAvgPool2d and module.output_size in (1, (1, 1)) and type(nxt) is nn.Flatten \
                and (nxt.start_dim, nxt.end_dim) == (1, -1):
            out.append((GlobalAvgPool2D(), {}))
            i += 2
            continue
        try:
            out.append(_layer(where, module, nn, seen))
        except ValueError as e:
            if str(e).startswith("from_torch:"):
                raise
            raise ValueError(f"from_torch: {_where(where)} ({_show(module)}): {e}") from None
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
    shape = None if input_shape is None else check_input_shape(input_shape, "from_torch input_shape")
    _check_global_hooks(torch)
    items = _layers(module, "", nn, {})
    tensors = {f"{i}.{k}": t for i, (_, ts) in enumerate(items) for k, t in ts.items()}
    host = _host_tensors(tensors, torch)
    floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(floats) > 1 or not floats <= {torch.float32, torch.float64}:
        raise ValueError(f"from_torch: the module's parameters are {sorted(map(str, floats))}; portacnn takes one of "
                         "float32 or float64 (call module.float() or module.double() first)")
    dtype = "float64" if floats == {torch.float64} else "float32"
    layers = [layer for layer, _ in items]
    if shape is not None:
        try:
            walk(layers, shape)
        except ValueError as e:
            raise ValueError(f"from_torch: input_shape {shape} does not fit the module: {e}; pass the (C, H, W) "
                             "it reads") from None
    model = Sequential(layers, backend=backend, dtype=dtype, input_shape=shape)
    try:
        model.load_state_dict(host)
    except ValueError as e:  # a NaN weight, a weight whose shape its module's settings contradict
        raise ValueError(f"from_torch: {e}") from None
    return model


def _host_tensors(tensors, torch) -> dict:
    """NumPy copies of ``tensors`` (state key -> torch tensor), refusing tensors without values (the meta
    device), sparse or quantized ones, and one tensor's memory held under two keys (tied weights)."""
    host, owners = {}, {}
    for key, t in tensors.items():
        if t.device.type == "meta":
            raise ValueError(f"from_torch: tensor {key!r} is on the meta device and holds no values; load the weights "
                             "first (module.to_empty(device='cpu') then load_state_dict)")
        if t.layout != torch.strided or t.is_quantized:
            raise ValueError(f"from_torch: tensor {key!r} is {'quantized' if t.is_quantized else t.layout}; portacnn "
                             "takes dense float tensors (convert the module back to a plain float one)")
        if t.numel():
            where = (t.device, t.untyped_storage().data_ptr())
            if where in owners:
                raise ValueError(f"from_torch: tensors {owners[where]!r} and {key!r} share memory (tied weights); "
                                 "portacnn's layers each own their weights: give each its own copy")
            owners[where] = key
        host[key] = np.array(t.detach().cpu().numpy(), copy=True)
    return host
