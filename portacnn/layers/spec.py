"""Layers as JSON-ready descriptions and back: ``{"type": "Conv2D", "in_channels": 1, ...}``.

:meth:`portacnn.Sequential.architecture` writes one description per layer and checkpoints store them;
:func:`layer_from_spec` rebuilds a layer from one (a :class:`~portacnn.layers.Residual` holds the
descriptions of its own layers, so nesting needs nothing more). Unknown types and bad fields are
ValueErrors naming the item.
"""

from __future__ import annotations


def layer_types() -> dict:
    """Type name -> layer class, for every layer a description may name."""
    from . import LAYER_TYPES  # the package imports every layer module; importing it here avoids a cycle

    return LAYER_TYPES


def layer_spec(layer) -> dict:
    """``{"type": <class name>, **config}`` with tuples as lists (JSON-ready)."""
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in layer.config().items()}
    return {"type": type(layer).__name__, **cfg}


def layer_from_spec(spec, where: str = "layer"):
    """The layer ``spec`` describes (lists become tuples: the constructors take pairs as tuples)."""
    types = layer_types()
    if not isinstance(spec, dict) or spec.get("type") not in types:
        raise ValueError(f"{where} is not a known layer ({', '.join(types)}): {spec!r}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "type"}
    try:
        return types[spec["type"]](**kwargs)
    except TypeError as e:
        raise ValueError(f"{where} ({spec['type']}) has bad arguments: {e}") from None
