"""Helpers around the optimizers: :func:`split_decay` (parameter groups without weight decay on biases) and
:func:`clip_grad_norm` (gradient clipping, as ``torch.nn.utils.clip_grad_norm_``)."""

from __future__ import annotations

from array_api_compat import array_namespace

from ..validation import Real, check


def split_decay(model, weight_decay=None) -> list[dict]:
    """Two parameter groups of ``model`` (anything with ``.parameters()``, or a list of parameters):
    ``[{"params": weights}, {"params": biases, "weight_decay": 0.0}]`` where weights are the parameters with
    ``ndim >= 2`` (Conv2D and Dense kernels) and the rest (biases, other 1-D parameters) get no weight decay.
    ``weight_decay``, if given, is set on the first group; otherwise it takes the optimizer's.

    Note: the optimizer's flat parameter order is then weights first, not the model's order.
    """
    params = list(model.parameters() if hasattr(model, "parameters") else model)
    decay = [p for p in params if len(p.data.shape) >= 2]
    no_decay = [p for p in params if len(p.data.shape) < 2]
    first = {"params": decay} if weight_decay is None else {"params": decay, "weight_decay": weight_decay}
    return [first, {"params": no_decay, "weight_decay": 0.0}]


def clip_grad_norm(parameters, max_norm) -> object:
    """Scale the gradients in place so that their global L2 norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` (``norm_type=2``)::

        total = sqrt(sum over parameters of ||grad||^2)
        grad = grad * min(1, max_norm / (total + 1e-6))

    Returns ``total``, the norm before clipping, as a **0-d array on the gradients' device** (backend namespace
    and dtype of the gradients): the scaling is computed there too, so clipping never synchronises with the
    host; call ``float(...)`` (or the backend's ``to_numpy``) when the number is needed. Parameters whose
    ``grad`` is None are skipped; with no gradient at all it returns the Python float ``0.0``.
    ``parameters`` is a single parameter or an iterable of them (parameter-group dicts are accepted too).
    """
    max_norm = check(max_norm, Real(0), "clip_grad_norm max_norm")
    if hasattr(parameters, "data"):
        parameters = [parameters]
    params = []
    for item in parameters:
        params.extend(item["params"] if isinstance(item, dict) else [item])
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    xp = array_namespace(*[p.grad for p in params])
    norms = [xp.sqrt(xp.sum(p.grad * p.grad)) for p in params]
    total = xp.sqrt(xp.sum(xp.stack(norms) ** 2)) if len(norms) > 1 else norms[0]
    coef = max_norm / (total + 1e-6)
    coef = xp.where(coef < 1.0, coef, xp.ones_like(coef))
    for p in params:
        p.grad = p.grad * coef
    return total
