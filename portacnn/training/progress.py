"""What ``fit`` shows while it trains (Keras' ``verbose``): a tqdm bar on a terminal or in a Jupyter notebook,
else one line per epoch on stderr (logs, CI: a long fit is never silent), or nothing."""

from __future__ import annotations

import sys

from .builtin import FitCallback


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget bar); IPython is never imported here."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _metric(key, value) -> str:
    return f"{value:.4g}" if key == "lr" else f"{value:.4f}"


class ProgressDisplay(FitCallback):
    """``verbose=1``: a bar per epoch (images done, running loss and accuracy, then the epoch's metrics) on a
    terminal or in a notebook, else a line per epoch; ``verbose=2``: a line per epoch; ``0``: nothing.

    ``total`` is the epoch's training images; ``state`` (the run's TrainState) tells a resumed epoch's images
    done, ``history`` the metrics to show."""

    def __init__(self, verbose: int, epochs: int, total: int, state, history):
        self.epochs, self.total, self.state, self.history = epochs, total, state, history
        self.bars = verbose == 1 and (sys.stderr.isatty() or in_notebook())
        self.lines = bool(verbose) and not self.bars
        self.bar = None

    def on_epoch_begin(self, epoch):
        if self.bars:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=f"epoch {epoch + 1}/{self.epochs}", unit="img", leave=True,
                            dynamic_ncols=True)
            self.bar.update(self.state.seen)

    def on_log(self, state):
        if self.bar is not None:
            self.bar.update(state.seen - self.bar.n)
            self.bar.set_postfix(loss=f"{state.loss_sum / state.seen:.4f}", acc=f"{state.correct / state.seen:.4f}",
                                 refresh=False)

    def on_epoch_end(self, epoch, logs):
        shown = {key: _metric(key, values[-1]) for key, values in self.history.history.items() if values}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=True)
            self.close()
        if self.lines:
            print(f"epoch {epoch + 1}/{self.epochs}: " + "  ".join(f"{k} {v}" for k, v in shown.items())
                  + f"  ({self.history.epoch_times[-1]:.1f} s)", file=sys.stderr, flush=True)

    def on_stop(self):
        self.close()

    def close(self) -> None:
        """Close the epoch's bar, if one is open (also when the run fails)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
