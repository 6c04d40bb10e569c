"""One measuring trial per machine: two tuners on one host never time each other's noise.

An advisory ``flock`` on a lock file shared by every autotune process of the machine
(``$AUTOTUNE_LOCK_FILE``, default ``<tmp>/autotune-measure.lock``), held for the length of one
trial. The kernel drops it when the holder dies, so a killed tuner never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from autotune.errors import AutotuneError

# A waiter tries this often. The holder, between two of its trials, lets go of the lock only for
# the few tens of milliseconds it takes to record one trial and ask for the next; a slower poll
# would let one tuner keep the machine for a whole study while another waits.
WAIT_POLL_S = 0.01


def lock_path() -> Path:
    default = Path(tempfile.gettempdir()) / "autotune-measure.lock"
    return Path(os.environ.get("AUTOTUNE_LOCK_FILE", default))


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return "another process"
    return f"pid {text}" if text.isdigit() else "another process"


def _wait_for(fd: int, stop: threading.Event | None) -> None:
    """Block until the lock is ours; a stop request ends the wait with KeyboardInterrupt."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt from None
            time.sleep(WAIT_POLL_S)


@contextmanager
def machine_lock(
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> Iterator[None]:
    """Hold the machine's measuring lock; wait for it (saying so) or fail at once.

    Raises:
        AutotuneError: ``wait`` is False and another autotune is measuring here.
    """
    path = lock_path()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise AutotuneError(
                    f"another autotune ({holder}) is measuring on this machine (lock {path}); "
                    "wait for it, or run without --no-wait to queue behind it"
                ) from None
            if on_wait is not None:
                on_wait(f"waiting for another autotune ({holder}) measuring on this machine")
            _wait_for(fd, stop)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
