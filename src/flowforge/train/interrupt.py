"""Ctrl-C during training: finish the step, save it, then stop with a clear exception."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

# What ``signal.getsignal`` returns and ``signal.signal`` accepts: a handler, SIG_DFL/SIG_IGN
# (ints) or None (a handler not installed from Python).
_Handler = Callable[[int, FrameType | None], Any] | int | None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after a whole step, whose checkpoint was written.

    A :class:`KeyboardInterrupt`, so code that does not know it still stops. ``step`` is the
    step saved, ``run_dir`` where (``None``: the run had no run directory, nothing was saved).
    """

    def __init__(self, step: int, run_dir: Path | None):
        saved = f"the checkpoint is saved in {run_dir}" if run_dir else "nothing was saved"
        super().__init__(f"interrupted at step {step}; {saved}")
        self.step, self.run_dir = step, run_dir


class SigintFlag:
    """Turns the first Ctrl-C (SIGINT), or SIGTERM, into a flag the loop reads after a whole
    step, so the checkpoint it then writes is consistent; the same signal again acts at once,
    as usual. SIGTERM is what ``torchrun`` sends its workers when it is itself interrupted, and
    what batch schedulers send before they stop a job. Outside the main thread, or for a signal
    that is ignored, it changes nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.hit = False
        self.previous: dict[int, _Handler] = {}

    def __enter__(self) -> SigintFlag:
        try:
            for sig in self.SIGNALS:
                previous = signal.getsignal(sig)
                if previous is not signal.SIG_IGN and previous is not None:
                    signal.signal(sig, self._handle)
                    self.previous[sig] = previous
        except ValueError:  # not the main thread: signals cannot be handled here
            pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        signal.signal(signum, self.previous.pop(signum))

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous = {}
