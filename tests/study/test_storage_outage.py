"""The study's database going away mid-study: a real PostgreSQL server stopped and started
under running tuners, and a real SQLite file held locked by another process.

Each time the study must reach its budget with no trial lost or duplicated and none left
RUNNING; a database gone past the retry bound ends in one line, and the same command resumes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.conftest import PgServer, study_of, tuner_log

FAST = ["--min-time", "0.05", "--min-runs", "5", "--seed", "1", "--finalists", "1",
        "--rounds", "1", "--batch-sizes", "1,2"]  # fmt: skip
#: For the tests whose subject is not the confirmation (the first test restarts the server
#: during one): no finalists, and so no seconds spent confirming.
UNCONFIRMED = ["--finalists", "0"]


@pytest.fixture()
def server() -> Iterator[PgServer]:
    pg = PgServer()
    try:
        yield pg
    finally:
        pg.remove()


def _tuner(model: Path, storage: str, out: Path, trials: int, *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "autotune.cli", "run", str(model), "--storage", storage,
        "--study", "outage", "--out", str(out), "--trials", str(trials), *FAST, *extra,
    ]  # fmt: skip
    # The test's own measuring lock: another test's trials (pytest -n) must not delay these.
    env = {**os.environ, "AUTOTUNE_LOCK_FILE": str(out.parent / "measure.lock")}
    with Path(f"{out}.log").open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_measuring(url: str, procs: list[subprocess.Popen[str]], out: Path) -> None:
    """Until a trial is being measured: claimed, its config written, not finished."""
    deadline = time.monotonic() + 120
    while True:
        try:
            running = study_of(url, "outage").get_trials(states=(optuna.trial.TrialState.RUNNING,))
        except Exception:  # the study is being created
            running = []
        if any("config" in t.user_attrs for t in running):
            return
        assert all(p.poll() is None for p in procs), tuner_log(out)
        assert time.monotonic() < deadline, "no trial was measured"
        time.sleep(0.05)


def _finished_count(url: str) -> int:
    try:
        return len(_counted(study_of(url, "outage").trials))
    except Exception:  # the study does not exist yet, or the server is down
        return 0


def _wait_for(url: str, count: int, procs: list[subprocess.Popen[str]], out: Path) -> None:
    deadline = time.monotonic() + 120
    while _finished_count(url) < count:
        assert all(p.poll() is None for p in procs), tuner_log(out)
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.1)


def _counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward the budget: finished, not a half-written interrupted one, not a
    repeated proposal (recorded, never measured)."""
    return [
        t for t in trials
        if t.state.is_finished()
        and t.user_attrs.get("failure_kind") not in ("interrupted", "repeat")
    ]  # fmt: skip


def _check_whole(url: str, trials: int) -> None:
    study = study_of(url, "outage")
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
    counted = _counted(study.trials)
    assert len(counted) == trials, [(t.number, t.state.name) for t in study.trials]
    assert sum(bool(t.user_attrs.get("baseline")) for t in counted) == 1


def _outage(server: PgServer, seconds: float, mode: str = "fast") -> None:
    server.stop(mode)
    time.sleep(seconds)
    server.start()


def test_restarts_mid_study_lose_and_repeat_nothing(
    server: PgServer, magika: Path, tmp_path: Path
) -> None:
    """Three outages of a few seconds each: one in the search (a measurement or a write in
    flight), one killing the server outright, one in the confirmation after the last trial;
    the tuner waits them out and finishes."""
    out, trials = tmp_path / "a", 8
    tuner = _tuner(magika, server.url, out, trials)
    _wait_for(server.url, 2, [tuner], out)
    _outage(server, 3)
    _wait_for(server.url, 5, [tuner], out)
    _outage(server, 3, mode="immediate")
    _wait_for(server.url, trials, [tuner], out)
    _outage(server, 3)  # the paired confirmation is measuring (it takes 5 s at least)
    assert tuner.wait(timeout=240) == 0, tuner_log(out)
    assert study_of(server.url, "outage").user_attrs["confirmation"]["trials"] == trials
    log = tuner_log(out)
    assert "database unreachable: retrying in" in log and "Traceback" not in log
    assert "not-shown" not in log
    _check_whole(server.url, trials)


def test_two_tuners_share_a_study_through_an_outage(
    server: PgServer, magika: Path, tmp_path: Path
) -> None:
    trials = 8
    first = _tuner(magika, server.url, tmp_path / "a", trials, *UNCONFIRMED)
    _wait_for(server.url, 1, [first], tmp_path / "a")
    second = _tuner(magika, server.url, tmp_path / "b", trials, *UNCONFIRMED)
    _wait_for(server.url, 3, [first, second], tmp_path / "a")
    _outage(server, 3)
    assert first.wait(timeout=240) == 0, tuner_log(tmp_path / "a")
    assert second.wait(timeout=240) == 0, tuner_log(tmp_path / "b")
    _check_whole(server.url, trials)


def test_a_database_gone_for_good_ends_in_one_line_and_the_command_resumes(
    server: PgServer, magika: Path, tmp_path: Path
) -> None:
    out, trials = tmp_path / "a", 5
    # Trials of 2 s timed each, so the server goes away while one is being measured.
    slow = ["--storage-retry-s", "3", "--min-time", "2", *UNCONFIRMED]
    tuner = _tuner(magika, server.url, out, trials, *slow)
    _wait_for(server.url, 2, [tuner], out)
    _wait_measuring(server.url, [tuner], out)
    server.stop("immediate")
    assert tuner.wait(timeout=120) == 1, tuner_log(out)
    log = tuner_log(out)
    last = log.strip().splitlines()[-1]
    assert last.startswith("Error: the study storage 'postgresql+psycopg://autotune:***@"), log
    assert "unreachable" in last and "Traceback" not in log and "not-shown" not in log
    spooled = list(out.glob("*/spool/*.json"))
    assert len(spooled) == 1, "the trial measured during the outage was not kept"
    assert "joins the study when it resumes: re-run the same command" in last

    server.start()
    again = _tuner(magika, server.url, out, trials, "--storage-retry-s", "3", *UNCONFIRMED)
    assert again.wait(timeout=240) == 0, tuner_log(out)
    _check_whole(server.url, trials)
    assert not list(out.glob("*/spool/*.json")), "a spooled trial was left behind"
    joined = [t for t in study_of(server.url, "outage").trials if t.user_attrs.get("spool_id")]
    assert len(joined) == len(spooled)


def test_a_sqlite_file_locked_for_a_while_is_waited_out(magika: Path, tmp_path: Path) -> None:
    out, trials = tmp_path / "results", 10  # trials left to run when the lock is taken
    storage = f"sqlite:///{out / 'autotune.db'}"
    tuner = _tuner(magika, storage, out, trials, *UNCONFIRMED)
    db = out / "autotune.db"
    deadline = time.monotonic() + 120
    while _finished_count(storage) < 2:
        assert tuner.poll() is None, tuner_log(out)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    held = threading.Event()

    def hold() -> None:
        """Another process's write lock, held until the tuner has said it is waiting for it:
        SQLite's own busy wait (5 s) hides a lock the tuner meets late in a fixed hold."""
        connection = sqlite3.connect(db, timeout=30, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        held.set()
        until = time.monotonic() + 120
        while (
            "database unreachable: retrying in" not in tuner_log(out) and time.monotonic() < until
        ):
            time.sleep(0.2)
        connection.execute("COMMIT")
        connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    holder.join()
    assert tuner.wait(timeout=240) == 0, tuner_log(out)
    log = tuner_log(out)
    assert "database unreachable: retrying in" in log and "database is locked" in log
    _check_whole(storage, trials)
