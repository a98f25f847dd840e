"""An optimizer in a checkpoint: described with every parameter named by its index in ``model.parameters()``,
and rebuilt from that description."""

from __future__ import annotations

import numpy as np

from ..optim import OPTIMIZERS
from .limits import CheckpointError


def describe_optimizer(model, optimizer, path) -> tuple[dict, dict]:
    """The optimizer's metadata and buffers, every parameter named by its index in ``model.parameters()`` (the
    optimizer's own order differs when its groups split the model, as split_decay's do)."""
    index = {id(p): j for j, p in enumerate(model.parameters())}
    state = optimizer.state_dict(model.backend.to_numpy)
    try:
        to_model = [index[id(p)] for g in optimizer.param_groups for p in g["params"]]
    except KeyError:
        raise CheckpointError(f"{path}: not saved: the optimizer updates parameters that are not this model's; save "
                              "each optimizer with the model it trains") from None
    steps = [0] * len(index)  # a parameter the optimizer lacks is refused below, as no group holds it
    for i, t in enumerate(state["steps"]):
        steps[to_model[i]] = t
    buffers = {}
    for key, value in state["state"].items():
        i, name = key.split(".", 1)
        buffers[f"optim.{to_model[int(i)]}.{name}"] = np.ascontiguousarray(value)
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [to_model[i] for i in g["params"]]}
              for g in state["param_groups"]]
    spec = {"type": type(optimizer).__name__.lower(), "steps": steps, **optimizer.hyperparameters(),
            "param_groups": groups}
    return spec, buffers


def _constructor_arguments(saved: dict) -> dict:
    """A saved group's (or description's) values as an optimizer takes them (betas a tuple)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k != "params"}


def optimizer_from_checkpoint(model, info: dict | None = None):
    """The optimizer described in ``model.checkpoint`` (type, hyper-parameters, parameter groups with the keys
    schedulers wrote, step counts, buffers), or None. A file written before groups were saved holds one group,
    of every parameter in the model's order."""
    info = info or getattr(model, "checkpoint", None) or {}
    spec = info.get("optimizer")
    if not spec:
        return None
    spec = dict(spec)
    kind, steps, groups = spec.pop("type", None), spec.pop("steps", 0), spec.pop("param_groups", None)
    if kind not in OPTIMIZERS:
        raise CheckpointError(f"{info.get('path')}: unknown optimizer {kind!r} in checkpoint")
    params = model.parameters()
    n = len(params)
    if groups is None:
        groups = [{**spec, "params": list(range(n))}]
    order = [j for g in groups for j in g["params"]]  # the optimizer's parameters, as model indices
    if sorted(order) != list(range(n)):
        raise CheckpointError(f"{info.get('path')}: the saved optimizer's parameter groups do not hold each of this "
                              f"model's {n} parameters once; load the optimizer with the model it was saved with")
    steps = list(steps) if isinstance(steps, list) else [steps] * n
    position = {j: i for i, j in enumerate(order)}
    try:
        opt = OPTIMIZERS[kind]([{"params": [params[j] for j in g["params"]], **_constructor_arguments(g)}
                                for g in groups], **_constructor_arguments(spec))
        state = {}
        for key, value in (info.get("optimizer_state") or {}).items():
            j, name = key.split(".", 1)
            state[f"{position[int(j)]}.{name}"] = value
        opt.load_state_dict({"steps": [steps[j] for j in order], "state": state},
                            lambda v, dtype: model.backend.asarray(np.array(v), dtype=dtype))  # a copy: the
        # optimizer updates its buffers in place, and info's are the checkpoint's (a second resume from it reads them)
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{info.get('path')}: the saved optimizer state is unusable ({e})") from None
    return opt
