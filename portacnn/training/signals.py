"""Signals during training: Ctrl-C (SIGINT) and SIGTERM become a flag checked between steps.

``timeout``, Slurm, Kubernetes and systemd stop a job with SIGTERM; a terminal with SIGINT. Either makes
the loop finish its step, save a checkpoint and return; a second signal stops at once (:class:`Stopped`).
"""

from __future__ import annotations

import signal
import threading


class Stopped(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM during training: stop at once, without saving. ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupt:
    """Turns Ctrl-C (SIGINT) and SIGTERM (what ``timeout``, Slurm, Kubernetes and systemd send) during
    training into a flag checked between steps (main thread only); a second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.hit = False
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.hit:
            raise Stopped(signum)
        self.hit, self.signum = True, signum

    def __exit__(self, *exc):
        for signum, old in self._old.items():
            signal.signal(signum, old)
