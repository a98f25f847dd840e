"""Ensembles: several trained models voting by their averaged class probabilities.

    p(x) = (1/K) * sum_k softmax(model_k(x))       predict = argmax p       loss = mean_n -log p_n[y_n]

Each model runs on its own backend and dtype; the average is taken on the host in float64, from the members'
log-probabilities: log p = logsumexp_k(log softmax(model_k(x))) - log K, so a class every member finds
very unlikely keeps a finite loss (as each member's own loss is) instead of underflowing to log 0.
``portacnn evaluate A B ...`` and ``portacnn predict A B ...`` use it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from .layers.plan import walk
from .training import check_labels, predict_log_proba
from .validation import _short


def average_log_proba(member_logs) -> np.ndarray:
    """log((1/K) * sum_k exp(member_logs[k])): the ensemble's log-probabilities from its K members' own (each
    (N, classes)), in float64 on the host. Scoring many subsets of the same members (as the accuracy study does)
    can predict once per member and call this for each subset."""
    logs = np.stack([np.asarray(m, dtype=np.float64) for m in member_logs])
    top = np.max(logs, axis=0)
    return top + np.log(np.mean(np.exp(logs - top), axis=0))


class EnsembleError(ValueError):
    """Models that cannot form an ensemble. ``member`` is the index of the one refused (None when the problem is
    the collection itself), so a caller holding the members' names (``portacnn evaluate A B ...``) can name it."""

    def __init__(self, message: str, member: int | None = None):
        super().__init__(message)
        self.member = member


def _usual(values):
    """(index, value) of the most common of ``values`` (index, value) pairs, the earliest on a tie: what the odd
    member out is compared with, so a bad member 0 is named, not every other member."""
    top = Counter(v for _, v in values).most_common(1)[0][0]
    return next((k, v) for k, v in values if v == top)


def _check_members(models) -> list:
    """``models`` as a list of members that can vote together, or an :class:`EnsembleError` naming the first that
    cannot, in one short line (never a list of all members): each is a portacnn Sequential; each gives the same
    number of classes (with the same names, where they have names); and each takes the same images: the ``input_shape`` most members store (every member that
    stores one stores it, every member's layers take it and give one score per class), else the same channel
    count. Where members disagree, the odd one is compared with the most common value. Backends and dtypes may
    differ: each member runs on its own."""
    from .sequential import Sequential

    if isinstance(models, Sequential):
        raise EnsembleError("Ensemble takes a list of models; got one Sequential (wrap it: Ensemble([model]))")
    if isinstance(models, (str, bytes, dict)) or not isinstance(models, Iterable):
        raise EnsembleError(f"Ensemble takes a list of models; got {type(models).__name__} {_short(models, 40)}")
    models = list(models)
    if not models:
        raise EnsembleError("Ensemble needs at least one model; got none")
    for k, m in enumerate(models):
        if not isinstance(m, Sequential):
            raise EnsembleError(f"Ensemble member {k} is a {type(m).__name__} ({_short(m, 40)}), not a portacnn model; "
                                "pass trained portacnn.Sequential models", k)
    # the class counts the members' layers fix (a fully convolutional classifier ending in a global pooling fixes
    # none: its count is its last convolution's channels, checked below when the image shape is known)
    classes = [(k, c) for k, c in enumerate(m.num_classes() for m in models) if c is not None]
    usual, count = _usual(classes) if classes else (None, None)
    for k, c in classes:
        if c != count:
            raise EnsembleError(f"Ensemble member {k} predicts {c} classes but member {usual} predicts {count}; every "
                                "member must predict the same classes", k)
    names = [(k, m.class_names) for k, m in enumerate(models) if m.class_names is not None]
    if names:
        usual, named = _usual([(k, tuple(n)) for k, n in names])
        for k, n in names:
            if tuple(n) != named:
                raise EnsembleError(f"Ensemble member {k} names its classes {_short(n, 40)} but member {usual} names "
                                    f"them {_short(list(named), 40)}; every member must predict the same classes", k)
    shapes = [(k, tuple(m.input_shape)) for k, m in enumerate(models) if m.input_shape is not None]
    if not shapes:  # no member knows its image size: the channels must still agree
        reads = [(k, m.input_channels()) for k, m in enumerate(models) if m.input_channels() is not None]
        usual, channels = _usual(reads) if reads else (None, None)
        for k, c in reads:
            if c != channels:
                raise EnsembleError(f"Ensemble member {k} reads {c}-channel images but member {usual} reads "
                                    f"{channels}-channel ones; every member must read the same images", k)
        return models
    usual, shape = _usual(shapes)
    for k, m in enumerate(models):
        if m.input_shape is not None and tuple(m.input_shape) != shape:
            raise EnsembleError(f"Ensemble member {k} reads images of shape {tuple(m.input_shape)} but member {usual} "
                                f"reads {shape}; every member must read the same images", k)
        try:
            out, _ = walk(m.layers, shape)
        except ValueError as e:
            raise EnsembleError(f"Ensemble member {k} cannot read the {shape} images member {usual} reads: {e}",
                                k) from None
        if len(out) != 1 or (count is not None and out != (count,)):
            raise EnsembleError(f"Ensemble member {k} gives {out} per image, not {count or 'a vector of'} class scores",
                                k)
        count = out[0]  # members that fix no count must agree with the first that gave one
    return models


class Ensemble:
    """Ensemble(models): ``predict_proba`` is the mean of the members' probabilities. The members are checked
    when it is made (:func:`_check_members`): an :class:`EnsembleError` (a ValueError) names the first member
    that cannot join the others, and why."""

    def __init__(self, models):
        self.models = _check_members(models)

    def __len__(self):
        return len(self.models)

    def num_classes(self):
        return self.models[0].num_classes()

    @property
    def class_names(self):
        """The members' class names (they agree; None when no member has any)."""
        return next((m.class_names for m in self.models if m.class_names is not None), None)

    @property
    def preprocessing(self):
        """The first member's :class:`~portacnn.preprocessing.Preprocessing` (None: none has one). Raw images are
        read by each member's own (they read the same image shape; their normalisations may differ)."""
        return next((m.preprocessing for m in self.models if m.preprocessing is not None), None)

    def predict_log_proba(self, x, batch_size=1000) -> np.ndarray:
        """Log of the averaged probabilities (N, classes), float64 on the host."""
        return average_log_proba([predict_log_proba(m, x, batch_size=batch_size) for m in self.models])

    def predict_proba(self, x, batch_size=1000) -> np.ndarray:
        """Averaged probabilities (N, classes), float64 on the host."""
        return np.exp(self.predict_log_proba(x, batch_size=batch_size))

    def predict(self, x, batch_size=1000) -> np.ndarray:
        return np.argmax(self.predict_proba(x, batch_size=batch_size), axis=1)

    def evaluate(self, x, y, batch_size=1000) -> dict:
        """``{"loss", "accuracy", "n"}`` of the averaged probabilities (loss: their mean negative log-likelihood)."""
        logp = self.predict_log_proba(x, batch_size=batch_size)
        n = logp.shape[0]
        y = check_labels(self.models[0], y, n)
        loss = float(-np.mean(logp[np.arange(n), y])) if n else 0.0
        accuracy = float(np.mean(np.argmax(logp, axis=1) == y)) if n else 0.0
        return {"loss": loss, "accuracy": accuracy, "n": int(n)}
