"""Ensembles: several trained models voting by their averaged class probabilities.

    p(x) = (1/K) * sum_k softmax(model_k(x))       predict = argmax p       loss = mean_n -log p_n[y_n]

Each model runs on its own backend and dtype; the average is taken on the host in float64 (a probability
that underflows to 0 in every member gives an infinite loss, as a one-hot mistake would). ``portacnn evaluate
A B ...`` and ``portacnn predict A B ...`` use it.
"""

from __future__ import annotations

import numpy as np

from .training import check_labels


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

    def predict_proba(self, x, batch_size=1000) -> np.ndarray:
        """Averaged probabilities (N, classes), float64 on the host."""
        total = None
        for model in self.models:
            p = np.asarray(model.predict_proba(x, batch_size=batch_size), dtype=np.float64)
            total = p if total is None else total + p
        return total / len(self.models)

    def predict(self, x, batch_size=1000) -> np.ndarray:
        return np.argmax(self.predict_proba(x, batch_size=batch_size), axis=1)

    def evaluate(self, x, y, batch_size=1000) -> dict:
        """``{"loss", "accuracy", "n"}`` of the averaged probabilities (loss: their mean negative log-likelihood)."""
        proba = self.predict_proba(x, batch_size=batch_size)
        n = proba.shape[0]
        y = check_labels(self.models[0], y, n)
        picked = proba[np.arange(n), y]
        with np.errstate(divide="ignore"):
            loss = float(-np.mean(np.log(picked))) if n else 0.0
        accuracy = float(np.mean(np.argmax(proba, axis=1) == y)) if n else 0.0
        return {"loss": loss, "accuracy": accuracy, "n": int(n)}
