"""Layers as JSON-ready descriptions and back: ``{"type": "Conv2D", "in_channels": 1, ...}``.

:meth:`portacnn.Sequential.architecture` writes one description per layer and checkpoints store them;
:func:`layer_from_spec` rebuilds a layer from one (a :class:`~portacnn.layers.Residual` holds the
descriptions of its own layers, so nesting needs nothing more). Unknown types and bad fields are
ValueErrors naming the item.
"""

from __future__ import annotations

import inspect

from ..validation import _short


def layer_types() -> dict:
    """Type name -> layer class, for every layer a description may name."""
    from . import LAYER_TYPES  # the package imports every layer module; importing it here avoids a cycle

    return LAYER_TYPES


def layer_spec(layer) -> dict:
    """``{"type": <class name>, **config}`` with tuples as lists (JSON-ready)."""
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in layer.config().items()}
    return {"type": type(layer).__name__, **cfg}


def layer_from_spec(spec, where: str = "layer"):
    """The layer ``spec`` describes (lists become tuples: the constructors take pairs as tuples). Its fields must
    be the constructor's arguments (an unknown or missing one is a ValueError naming it), and the constructor
    checks their values: a layer read from a file passes exactly the checks of the same layer built in Python."""
    types = layer_types()
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or spec["type"] not in types:
        raise ValueError(f"{where} is not a known layer ({', '.join(types)}): {_short(spec)}")
    cls = types[spec["type"]]
    fields = inspect.signature(cls.__init__).parameters
    known = [name for name, f in fields.items() if name != "self" and f.kind not in (f.VAR_POSITIONAL, f.VAR_KEYWORD)]
    required = [name for name in known if fields[name].default is inspect.Parameter.empty]
    unknown = sorted(str(k) for k in spec if k != "type" and k not in known)
    missing = [name for name in required if name not in spec]
    if unknown or missing:
        raise ValueError(f"{where} ({spec['type']}) has unknown fields {unknown} or lacks fields {missing} "
                         f"(its fields: {', '.join(known)})")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
    try:
        return cls(**kwargs)
    except ValueError as e:  # "Conv2D padding must be ..." -> "layer 3 (Conv2D) padding must be ..."
        text, own = str(e), cls.__name__ + " "
        raise ValueError(f"{where} ({spec['type']}) {text[len(own):] if text.startswith(own) else text}") from None
