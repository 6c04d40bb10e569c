"""Several tuners on one study: one budget, one baseline, on SQLite and a real PostgreSQL server.

The cases about a study's storage run over both (the ``storage`` fixture), as Optuna's own
storage tests do. The server is a throwaway cluster started here from the PostgreSQL binaries (Debian's
``postgresql`` package; ``.ci/run`` installs it), on a free loopback port, removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from autotune.measure.runner import STOP
from autotune.storage import storage_url
from autotune.study import _liveness
from autotune.study._liveness import await_baseline, claim, fail_orphaned_trials, running_trials
from tests.conftest import PgServer, free_port, study_of, tuner_log

# No confirmation (the outage tests confirm through a restart) and two batch sizes: these tests
# are about sharing a study, and every second of measuring is a second of the suite.
FAST = ["--min-time", "0.05", "--min-runs", "5", "--seed", "1", "--finalists", "0",
        "--batch-sizes", "1,2"]  # fmt: skip


@pytest.fixture()
def postgres(pg_server: PgServer) -> str:
    """The URL of the server's first database."""
    return pg_server.url


def _tuner(model: Path, url: str, out: Path, study: str, trials: int) -> subprocess.Popen[str]:
    """A tuner whose output goes to OUT.log (a pipe left unread could stall it mid-trial)."""
    command = [
        sys.executable, "-m", "autotune.cli", "run", str(model), "--storage", url,
        "--study", study, "--out", str(out), "--trials", str(trials), *FAST,
    ]  # fmt: skip
    with Path(f"{out}.log").open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)


def _trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials; none while the study does not exist yet."""
    with contextlib.suppress(Exception):  # the study does not exist yet
        return study_of(url, name).get_trials(deepcopy=False)
    return []


def _await(
    condition: Callable[[], bool], tuner: subprocess.Popen[str], log: Path, what: str
) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert tuner.poll() is None, tuner_log(log)
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same cases over both storages a study lives in, as Optuna's own storage tests run:
    a new SQLite file, or a new database on the module's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_url"))


def _new_study(storage: str) -> optuna.Study:
    return optuna.create_study(storage=storage_url(storage, Path()), study_name="s")


def test_two_tuners_share_one_study_one_budget_and_one_baseline(
    postgres: str, magika: Path, tmp_path: Path
) -> None:
    """Two machines' worth of tuners (here on one host, so they also share its measuring lock)
    on one study: the budget is the study's, the baseline is measured once, both add trials.
    (On PostgreSQL only: its SQLite run doubled the time two tuners load the 2-CPU machine,
    beside the outage tests' own.)"""
    storage = postgres
    name, trials = "shared", 8
    first = _tuner(magika, storage, tmp_path / "a", name, trials)
    _await(
        lambda: any(t.user_attrs.get("baseline") for t in _trials_of(storage, name)),
        first, tmp_path / "a", "the first tuner never started its baseline",
    )  # fmt: skip
    # Held still until the second has joined, so the first cannot spend the whole budget
    # while the second is still importing (a quick model on a quiet machine did, once).
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = _tuner(magika, storage, tmp_path / "b", name, trials)
        _await(
            lambda: "measuring this study's baseline" in tuner_log(tmp_path / "b")
            or any(t.user_attrs.get("pid") == second.pid for t in _trials_of(storage, name)),
            second, tmp_path / "b", "the second tuner never joined the study",
        )  # fmt: skip
    finally:
        os.kill(first.pid, signal.SIGCONT)
    first.wait(timeout=240)
    second.wait(timeout=240)
    out_first, out_second = tuner_log(tmp_path / "a"), tuner_log(tmp_path / "b")
    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second

    finished = [
        t for t in study_of(storage, name).trials
        if t.state.is_finished() and t.user_attrs.get("failure_kind") != "repeat"
    ]  # fmt: skip
    assert len(finished) == trials, [(t.number, t.state.name) for t in finished]
    assert [t.user_attrs["baseline"] for t in finished].count(True) == 1
    pids = {t.user_attrs["pid"] for t in finished}
    assert pids == {first.pid, second.pid}, "both tuners measured trials"

    for out in ("a", "b"):
        [best] = (tmp_path / out).glob("*/best.json")
        text = best.read_text()
        assert "not-shown" not in text
        if storage.startswith("postgresql"):
            stored = json.loads(text)["study"]["storage"]
            assert stored.startswith("postgresql+psycopg://autotune:***@")
    assert "not-shown" not in out_first + out_second


def test_show_lists_a_shared_study(storage: str, magika: Path, tmp_path: Path) -> None:
    tuner = _tuner(magika, storage, tmp_path / "o", "listed", 2)
    assert tuner.wait(timeout=120) == 0, tuner_log(tmp_path / "o")
    shown = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "show", "--storage", storage, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert "listed" in rows, rows


def test_an_unreachable_server_is_waited_for_then_one_clear_line(
    magika: Path, tmp_path: Path
) -> None:
    url = f"postgresql://autotune:not-shown@127.0.0.1:{free_port()}/postgres"
    done = subprocess.run(
        [sys.executable, "-m", "autotune.cli", "run", str(magika), "--storage", url,
         "--out", str(tmp_path), "--trials", "2", "--storage-retry-s", "3", *FAST],
        capture_output=True, text=True,
    )  # fmt: skip
    if "PostgreSQL driver" in done.stderr:
        pytest.skip("no PostgreSQL driver installed")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "database unreachable: retrying in 0.5 s (attempt 1, gives up after 3 s)" in lines[0]
    assert lines[-1].startswith("Error: the study storage 'postgresql+psycopg://autotune:***@")
    assert "is unreachable (gave up after" in lines[-1]
    assert "not-shown" not in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*/best.json"))
    for command in (["show"], ["export", "--study", "x"], ["report", "--study", "x"]):
        read = subprocess.run(
            [sys.executable, "-m", "autotune.cli", *command, "--storage", url,
             "--storage-retry-s", "1"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert read.returncode == 1, (command, read.stderr)
        last = read.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: the study storage") and "unreachable" in last, command
        assert "Traceback" not in read.stderr


def test_a_tuner_waits_for_the_baseline_another_tuner_is_measuring(storage: str) -> None:
    study = _new_study(storage)
    said: list[str] = []
    assert await_baseline(study, said.append) is False and not said  # nothing to wait for
    trial = claim(study.ask())
    trial.set_user_attr("baseline", True)
    threading.Timer(1.0, lambda: study.tell(trial, 1.0)).start()
    started = time.monotonic()
    assert await_baseline(study, said.append) is True
    assert time.monotonic() - started >= 0.9
    assert said == ["another tuner is measuring this study's baseline: waiting for it"]


def test_waiting_for_another_tuners_baseline_stops_on_ctrl_c(storage: str) -> None:
    study = _new_study(storage)
    claim(study.ask()).set_user_attr("baseline", True)  # never finishes
    threading.Timer(0.5, STOP.set).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            await_baseline(study, lambda line: None)
    finally:
        STOP.clear()


def test_a_dead_tuners_trials_never_hold_the_budget(
    storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between ``ask`` and ``claim`` leaves an unclaimed RUNNING trial, and after the
    claim one with a dead pid: neither counts as another tuner's running trial."""
    study = _new_study(storage)
    live = claim(study.ask())
    unclaimed = study.ask()
    dead = study.ask()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead.set_user_attr("host", _liveness.HOST)
    dead.set_user_attr("pid", int(done.stdout))  # that process has exited
    assert [t.number for t in running_trials(study)] == [live.number]
    assert fail_orphaned_trials(study) == 1  # the dead pid at once; the unclaimed one is young
    monkeypatch.setattr(_liveness, "GRACE_S", 0)
    assert fail_orphaned_trials(study) == 1  # the unclaimed one, past the grace period
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {live.number: "RUNNING", unclaimed.number: "FAIL", dead.number: "FAIL"}


def test_processes_opening_a_new_database_at_once_all_get_it(storage: str) -> None:
    """Tuners, `show` and the dashboard may create a new database's tables at the same moment;
    Optuna's schema creation alone fails some of them (5 of 30 processes, measured)."""
    code = (
        "import sys, time\n"
        "from autotune.study._open import rdb_storage\n"
        "while time.time() < float(sys.argv[2]): pass\n"
        "rdb_storage(sys.argv[1])\n"
    )
    url, start = storage_url(storage, Path()), time.time() + 3  # after the imports
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(start)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=60)[1] for p in openers]
    assert all(p.returncode == 0 for p in openers), [e[-300:] for e in errors if e]
