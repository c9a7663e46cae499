"""SIGTERM and SIGINT for stages: stop at a safe point, say so, exit 130 / 143.

SIGTERM is what Prefect cancellation, `docker stop` and Kubernetes send; SIGINT is Ctrl-C.
Either one makes the stage raise `StageInterrupted` (a BaseException, so no `except
Exception` of a library swallows it). Code that must not be cut in the middle (a training
step, the swap that publishes outputs) runs inside `deferred()`: there the signal is only
recorded, and the code acts on it at its next safe point (`pending()`). A second signal
while deferred interrupts at once, so a stuck step can still be stopped.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator, Optional

HANDLED = (signal.SIGTERM, signal.SIGINT)

_received: Optional[int] = None
_deferring = 0


class StageInterrupted(BaseException):
    """The stage was asked to stop by a signal; `detail` says what was kept."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.detail = detail

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _handler(signum: int, frame: object) -> None:
    global _received
    first = _received is None
    _received = signum
    if _deferring and first:
        return
    raise StageInterrupted(signum)


def install() -> dict[int, object]:
    """Route SIGTERM and SIGINT of this process to `StageInterrupted` (main thread only);
    returns the handlers it replaced, for `restore`."""
    global _received
    _received = None
    return {signum: signal.signal(signum, _handler) for signum in HANDLED}


def reclaim() -> None:
    """Take SIGTERM / SIGINT back from a library that installed its own handler meanwhile
    (Lightning's ends the run with exit status 0), keeping what was already received."""
    if signal.getsignal(signal.SIGTERM) is not _handler or signal.getsignal(signal.SIGINT) is not _handler:
        for signum in HANDLED:
            signal.signal(signum, _handler)


def restore(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def pending() -> Optional[int]:
    """The signal received while deferred, if any."""
    return _received


def raise_if_pending(detail: str = "") -> None:
    if _received is not None:
        raise StageInterrupted(_received, detail)


@contextmanager
def deferred() -> Iterator[None]:
    """Record SIGTERM / SIGINT inside the block instead of raising mid-statement."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
