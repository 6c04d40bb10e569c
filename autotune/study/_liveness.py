"""Other tuners on the same study: the heartbeat that tells live ones from dead ones, the trials
they left running when they died, and the ones they are measuring now."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from autotune.interrupt import STOP
from autotune.study._records import optuna_module

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import FrozenTrial, Trial

WAIT_POLL_S = 1.0  # polling another tuner's running baseline
HEARTBEAT_S = 10  # a running trial's heartbeat; one silent for GRACE_S is failed on resume
GRACE_S = 60
HOST = socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(trial: Trial) -> Trial:
    """Mark a just-asked trial as this tuner's (host and pid), first thing after ``ask``, so
    other tuners can tell whether it is alive. The pid goes first: a trial with a host has one."""
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", HOST)
    return trial


def _alive(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's tuner still runs, as far as this host can tell: on this host by
    its pid; elsewhere by its heartbeat (Optuna fails stale ones). Unclaimed: not alive."""
    attrs = trial.user_attrs
    if "host" not in attrs or "pid" not in attrs:
        return False
    return attrs["host"] != HOST or _pid_alive(int(attrs["pid"]))


def fail_orphaned_trials(study: Study) -> int:
    """Mark trials left RUNNING by a tuner that died (kill -9, power loss) as failed.

    A trial of this host whose tuner process is gone fails at once; any other stops counting as
    running once its heartbeat is older than the grace period (Optuna's stale-trial check). One
    its tuner never claimed (killed between ``ask`` and ``claim``) fails after the grace period.
    """
    optuna = optuna_module()
    storage = study._storage
    failed = 0
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        claimed = "host" in trial.user_attrs and "pid" in trial.user_attrs
        started = trial.datetime_start or now
        if claimed and _alive(trial):
            continue
        if not claimed and (now - started).total_seconds() < GRACE_S:
            continue  # being claimed right now, or not yet known to be dead
        storage.set_trial_user_attr(trial._trial_id, "failure_kind", "interrupted")
        storage.set_trial_user_attr(
            trial._trial_id, "failure_message", "the tuner running it died before it finished"
        )
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        failed += 1
    optuna.storages.fail_stale_trials(study)
    return failed


class Heartbeat:
    """Records a running trial's heartbeat in the storage while it is measured."""

    def __init__(self, study: Study, trial: Trial) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(study._storage, trial._trial_id), daemon=True
        )

    def _beat(self, storage: Any, trial_id: int) -> None:
        while not self._stop.is_set():
            storage.record_heartbeat(trial_id)
            self._stop.wait(HEARTBEAT_S)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def running_trials(study: Study, *, baseline: bool = False) -> list[FrozenTrial]:
    """Trials live tuners are running now; between its own trials, this tuner has none, so they
    are others'. A dead tuner's trial does not count, even before it is marked failed."""
    optuna = optuna_module()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    live = [t for t in running if _alive(t)]
    return [t for t in live if t.user_attrs.get("baseline")] if baseline else live


def await_baseline(study: Study, say: Callable[[str], None]) -> bool:
    """Wait while another tuner measures this study's baseline; whether there was one."""
    if not running_trials(study, baseline=True):
        return False
    say("another tuner is measuring this study's baseline: waiting for it")
    while running_trials(study, baseline=True):
        if STOP.wait(WAIT_POLL_S):
            raise KeyboardInterrupt
        fail_orphaned_trials(study)  # a dead tuner's baseline stops counting after the grace
    return True
