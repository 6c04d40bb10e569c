"""Stopping a run: Ctrl-C or SIGTERM sets one event that every long step checks.

The CLI installs the handler before it does anything else, so a stop that arrives while the run
is still preparing (reading the model, making variants, opening the study) ends it there. The
running worker is killed at the runner's next poll; nothing is raised at an arbitrary point,
except by a second Ctrl-C, which raises at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP = threading.Event()


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` when a stop was requested: the caller's step is not begun."""
    if STOP.is_set():
        raise KeyboardInterrupt


@contextmanager
def stop_on_signals(say: Callable[[str], None]) -> Iterator[None]:
    """Turn Ctrl-C and SIGTERM into a stop request for the length of the block.

    A stop left over from an earlier run in this process is cleared first: a stop request
    belongs to the run it interrupted.
    """

    def request_stop(signum: int, frame: object) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.set()
        say("stopping: the running trial is killed, completed trials are kept...")

    STOP.clear()
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
