"""Ensembles: several trained models voting by their averaged class probabilities.

    p(x) = (1/K) * sum_k softmax(model_k(x))       predict = argmax p       loss = mean_n -log p_n[y_n]

Each model runs on its own backend and dtype; the average is taken on the host in float64, from the members'
log-probabilities: log p = logsumexp_k(log softmax(model_k(x))) - log K, so a class every member finds
very unlikely keeps a finite loss (as each member's own loss is) instead of underflowing to log 0.
``portacnn evaluate A B ...`` and ``portacnn predict A B ...`` use it.
"""

from __future__ import annotations

import numpy as np

from .training import check_labels, predict_log_proba


def average_log_proba(member_logs) -> np.ndarray:
    """log((1/K) * sum_k exp(member_logs[k])): the ensemble's log-probabilities from its K members' own (each
    (N, classes)), in float64 on the host. Scoring many subsets of the same members (as the accuracy study does)
    can predict once per member and call this for each subset."""
    logs = np.stack([np.asarray(m, dtype=np.float64) for m in member_logs])
    top = np.max(logs, axis=0)
    return top + np.log(np.mean(np.exp(logs - top), axis=0))


class Ensemble:
    """Ensemble(models): ``predict_proba`` is the mean of the members' probabilities."""

    def __init__(self, models):
        self.models = list(models)
        if not self.models:
            raise ValueError("Ensemble needs at least one model; got none")
        classes = {m.num_classes() for m in self.models}
        shapes = {m.input_shape for m in self.models if m.input_shape is not None}
        if len(classes) > 1:
            raise ValueError(f"Ensemble members must predict the same classes; their class counts are {sorted(classes, key=str)}")
        if len(shapes) > 1:
            raise ValueError(f"Ensemble members must read the same images; their input shapes are {sorted(shapes)}")

    def __len__(self):
        return len(self.models)

    def num_classes(self):
        return self.models[0].num_classes()

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
