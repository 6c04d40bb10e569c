"""One retry policy for every call the tuner makes to the study's storage.

A database restarts (failover, an upgrade, a network blip) and SQLite's file is locked while
another process writes: both are transient. :class:`RetryingStorage` wraps Optuna's storage and
retries each call that fails transiently, with a bounded backoff and a progress line
(``database unreachable: retrying in 4 s (attempt 3, gives up after 120 s)``). Past the bound it
raises :class:`StorageUnavailable`: one line naming the storage (password masked).

Retried writes are idempotent where it matters: attribute writes set the same value again, and
a ``tell`` whose commit landed before the connection dropped is recognised (the trial is already
in the state asked for) instead of failing as "already finished". A trial created by an
``ask`` whose answer was lost stays unclaimed; the liveness check fails it as interrupted, so it
never counts.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from autotune.errors import AutotuneError
from autotune.storage import shown
from autotune.study._records import optuna_module

T = TypeVar("T")

DEFAULT_BOUND_S = 120.0
#: The bound for storages opened without one (``show``, ``export``, ``report``, ``dashboard``):
#: their ``--storage-retry-s`` sets it for the process.
BOUND = {"s": DEFAULT_BOUND_S}
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 8.0
#: What transient storage failures say (drivers word them differently).
TRANSIENT = (
    "database is locked",
    "connection refused",
    "could not connect",
    "connection reset",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "connection is closed",
    "connection already closed",
    "consuming input failed",
    "ssl syscall",
    "could not serialize access",
    "serialization failure",
    "deadlock detected",
    "broken pipe",
    "timeout expired",
    "no connection to the server",
)


class StorageUnavailable(AutotuneError):
    """The study's storage stayed unreachable past the retry bound."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a storage failure worth waiting out."""
    import sqlalchemy.exc

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        text = str(current).lower()
        if any(marker in text for marker in TRANSIENT):
            return True
        current = current.__cause__ or current.__context__
    return False


def _cause(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    return " ".join(str(inner).split())[:200]


class RetryPolicy:
    """Bounded exponential backoff for transient storage failures."""

    def __init__(
        self,
        storage: str,
        bound_s: float | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.storage = storage
        self.bound_s = BOUND["s"] if bound_s is None else bound_s
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))

    def call(
        self, action: Callable[[], T], *, on_retry: Callable[[BaseException], Any] | None = None
    ) -> T:
        """``action()``, retried while it fails transiently and the bound allows.

        ``on_retry(exc)``, when given, runs before each retry and may return a result that
        ends the call (a write that had landed after all)."""
        started = time.monotonic()
        attempt, wait = 0, FIRST_WAIT_S
        while True:
            try:
                return action()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                waited = time.monotonic() - started
                if waited + wait > self.bound_s:
                    raise StorageUnavailable(
                        f"the study storage {shown(self.storage)!r} is unreachable "
                        f"(gave up after {waited:.0f} s, {attempt} attempts: {_cause(exc)})"
                    ) from None
                self.say(
                    f"database unreachable: retrying in {wait:g} s (attempt {attempt}, "
                    f"gives up after {self.bound_s:.0f} s): {_cause(exc)[:120]}"
                )
                time.sleep(wait)
                wait = min(LONGEST_WAIT_S, wait * 2)
                if on_retry is not None:
                    try:
                        done = on_retry(exc)
                    except Exception as again:
                        if not is_transient(again):
                            raise
                        done = None
                    if done is not None:
                        return done  # type: ignore[no-any-return]


def retrying_storage(inner: Any, policy: RetryPolicy) -> Any:
    """``inner`` (an Optuna RDB storage) with every call under ``policy``."""
    optuna = optuna_module()
    from optuna.storages._heartbeat import BaseHeartbeat

    base = optuna.storages.BaseStorage

    class RetryingStorage(base, BaseHeartbeat):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.inner = inner
            self.policy = policy

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            def landed(_: BaseException) -> bool | None:
                # The commit may have landed before the connection dropped.
                trial = inner.get_trial(trial_id)
                return True if trial.state == state and trial.state.is_finished() else None

            return policy.call(
                lambda: inner.set_trial_state_values(trial_id, state, values), on_retry=landed
            )

        # The heartbeat thread: a missed beat is harmless, and the main thread reports outages.
        def record_heartbeat(self, trial_id: int) -> None:
            with contextlib.suppress(Exception):
                inner.record_heartbeat(trial_id)

        def get_heartbeat_interval(self) -> int | None:
            return inner.get_heartbeat_interval()  # type: ignore[no-any-return]

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return inner.get_heartbeat_stale_trial_callback()

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            return policy.call(lambda: inner._get_stale_trial_ids(study_id))

        def remove_session(self) -> None:
            inner.remove_session()

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    def retried(name: str) -> Callable[..., Any]:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return policy.call(lambda: getattr(inner, name)(*args, **kwargs))

        method.__name__ = name
        return method

    for name in dir(base):
        if name.startswith("_") or name in RetryingStorage.__dict__:
            continue
        if callable(getattr(base, name)):
            setattr(RetryingStorage, name, retried(name))
    RetryingStorage.__abstractmethods__ = frozenset()
    return RetryingStorage()
