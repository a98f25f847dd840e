"""The base of the callbacks ``fit`` builds from its own arguments, as Keras builds its History and progress bar.

``fit(checkpoint_path=..., verbose=...)`` and the rest need no callbacks from the caller: fit makes a
:class:`~portacnn.training.history.RecordHistory`, a :class:`~portacnn.training.progress.ProgressDisplay`, a
:class:`~portacnn.training.divergence.StopOnNonFinite` and, with a path, a
:class:`~portacnn.training.checkpointing.TrainingCheckpoint`, and calls them after the caller's callbacks at
the start of an epoch and before them at its end. Besides the hooks of
:class:`~portacnn.training.callbacks.Callback` they hear of what only the loop knows: that it read the epoch's
running sums back, that the caller's callbacks have seen an epoch, that a signal stopped the run, that the run
ended otherwise. They keep nothing in checkpoints: the run's position is its
:class:`~portacnn.train_state.TrainState`.
"""

from __future__ import annotations

from .callbacks import Callback


class FitCallback(Callback):
    """A callback of fit's own; every hook does nothing unless overridden."""

    def on_log(self, state) -> None:
        """The loop has read the epoch's running sums back into ``state`` (a TrainState): every ``log_every``
        steps, at the epoch's last step and when a signal came."""

    def on_callbacks_end(self, finished: bool) -> None:
        """The caller's callbacks have seen the epoch; ``finished``: one of them stopped the run."""

    def on_stop(self) -> None:
        """A signal (Ctrl-C, SIGTERM) stopped the run before its last epoch; fit returns next."""

    def on_train_end(self) -> None:
        """The run ended after its last epoch, or because a callback stopped it (not after :meth:`on_stop`)."""
