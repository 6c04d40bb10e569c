"""The autotuner service end to end: submit, agents, jobs, cancel, export and load by job.

Everything runs for real: a throwaway PostgreSQL server, ``autotune`` commands in their own
processes, agents that tune magika. Two agents on this machine stand for two kinds of machine
by pinning their class name (``AUTOTUNE_CLASS_FOR_TESTS``). Each test has a database of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from tests.conftest import PgServer, free_port, study_of

FAST = ["--min-time", "0.05", "--min-runs", "5", "--seed", "1", "--finalists", "0",
        "--batch-sizes", "1,2"]  # fmt: skip
#: Trials long enough that an agent is caught mid-job.
SLOW = ["--min-time", "0.3", "--min-runs", "5", "--seed", "1", "--finalists", "0",
        "--batch-sizes", "1,2"]  # fmt: skip
CLI = [sys.executable, "-m", "autotune.cli"]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of this test's commands: a cache of their own, fast heartbeats, and
    the test's own measuring lock (its agents take turns; another test's trials under
    pytest -n do not delay them)."""
    return {**os.environ, "AUTOTUNE_CACHE_DIR": str(tmp_path / "cache"),
            "AUTOTUNE_AGENT_HEARTBEAT_S": "1",
            "AUTOTUNE_LOCK_FILE": str(tmp_path / "measure.lock")}  # fmt: skip


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def submit(env: dict[str, str], url: str, model: Path, *args: str) -> int:
    done = cli(env, "submit", str(model), "--storage", url, "--json", *args)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["job"])


def agent(
    env: dict[str, str], url: str, log: Path, machine_class: str, *args: str
) -> subprocess.Popen[str]:
    """An agent of ``machine_class`` whose output goes to ``log``."""
    command = [*CLI, "agent", "--storage", url, "--out", str(log.parent / log.stem),
               "--poll-s", "0.2", *args]  # fmt: skip
    with log.open("w") as sink:
        return subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, text=True,
            env={**env, "AUTOTUNE_CLASS_FOR_TESTS": machine_class},
        )  # fmt: skip


def job_of(env: dict[str, str], url: str, job: int) -> dict[str, Any]:
    shown = cli(env, "jobs", str(job), "--storage", url, "--json")
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def task_of(env: dict[str, str], url: str, job: int, machine_class: str) -> dict[str, Any]:
    return next(t for t in job_of(env, url, job)["tasks"] if t["class"] == machine_class)


def trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return study_of(url, study).get_trials(deepcopy=False)
    except KeyError:  # the study does not exist yet
        return []


def counted(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return [
        t for t in trials(url, study)
        if t.state.is_finished() and t.user_attrs.get("failure_kind") not in ("repeat", "interrupted")
    ]  # fmt: skip


def wait_for(
    condition: Callable[[], bool], what: str, alive: subprocess.Popen[str], log: Path
) -> None:
    deadline = time.monotonic() + 180
    while not condition():
        assert alive.poll() is None, f"{what}: the agent exited\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what}: timed out\n{log.read_text()}"
        time.sleep(0.1)


def finish(process: subprocess.Popen[str], log: Path) -> None:
    assert process.wait(timeout=300) == 0, log.read_text()


def test_submit_two_classes_tune_store_export_and_load(
    pg_url: str, env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    """One job for two kinds of machine: each agent tunes it for its class with the job's own
    input data (shipped with the job), the results sit side by side, and each class loads its
    own config; a third class is told which one is closest."""
    rng = np.random.default_rng(0)
    pool = tmp_path / "pool.npz"
    np.savez(pool, bytes=rng.integers(0, 256, (6, 2048)).astype(np.int32))
    job = submit(env, pg_url, magika, "--trials", "3", "--inputs", str(pool),
                 "--classes", "class-a,class-b", *FAST)  # fmt: skip
    pool.unlink()  # the agents use the job's copy, not the submitter's file

    first = agent(env, pg_url, tmp_path / "a.log", "class-a", "--exit-when-idle")
    second = agent(env, pg_url, tmp_path / "b.log", "class-b", "--exit-when-idle")
    finish(first, tmp_path / "a.log")
    finish(second, tmp_path / "b.log")

    shown = job_of(env, pg_url, job)
    assert {t["class"]: t["state"] for t in shown["tasks"]} == {
        "class-a": "done",
        "class-b": "done",
    }
    for task in shown["tasks"]:
        best = task["best"]
        assert task["study"] == f"job{job}-{task['class']}" == best["study"]["name"]
        assert best["inputs"]["data_path"].startswith(str(tmp_path / "cache")), best["inputs"]
        assert len(counted(pg_url, task["study"])) == 3
    side_by_side = cli(env, "jobs", str(job), "--storage", pg_url).stdout
    assert re.search(r"^\s+class-a\s+class-b$", side_by_side, re.M), side_by_side
    listed = cli(env, "jobs", "--storage", pg_url).stdout
    assert "class-a" in listed and "class-b" in listed and "done" in listed
    assert cli(env, "show", "--job", str(job), "--storage", pg_url).stdout == side_by_side
    report = cli(
        env, "report", "--job", str(job), "--storage", pg_url, "--dest", str(tmp_path / "r")
    )
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r" / "index.html").read_text()
    assert "class-a" in page and "class-b" in page
    assert (tmp_path / "r" / "class-a" / "index.html").is_file(), "each class's study report"

    exported = cli(env, "export", "--job", str(job), "--class", "class-a", "--storage", pg_url,
                   "--dest", f"{tmp_path / 'deploy'}/")  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    written = json.loads((tmp_path / "deploy" / "best.json").read_text())
    assert written["study"]["name"] == f"job{job}-class-a"
    assert Path(written["model"]["path"]).is_file()

    load = (
        "import autotune, numpy as np, warnings; warnings.simplefilter('ignore');"
        f"s = autotune.load_session(job={job}, storage={pg_url!r});"
        "print(s.run(None, {'bytes': np.zeros((1, 2048), np.int32)})[0].shape);"
        f"p = autotune.load_pool(job={job}, storage={pg_url!r}); print(p.tuned.study_name)"
    )
    here = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True,
                          env={**env, "AUTOTUNE_CLASS_FOR_TESTS": "class-b"})  # fmt: skip
    assert here.returncode == 0, here.stderr
    assert here.stdout.splitlines()[-1] == f"job{job}-class-b", "this machine's class's config"
    elsewhere = cli({**env, "AUTOTUNE_CLASS_FOR_TESTS": "class-c"}, "export", "--job", str(job),
                    "--storage", pg_url)  # fmt: skip
    assert elsewhere.returncode == 1
    [line] = elsewhere.stderr.splitlines()
    assert "no config measured for this machine's class class-c" in line
    assert "the closest is class-a" in line, line


def test_two_agents_of_one_class_share_one_study(
    pg_url: str, env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    """Agents of one class on one job share its study: one budget, one baseline, both measure."""
    job = submit(env, pg_url, magika, "--trials", "8", *FAST)
    study = f"job{job}-shared"
    logs = tmp_path / "a.log", tmp_path / "b.log"
    first = agent(env, pg_url, logs[0], "shared", "--exit-when-idle")
    wait_for(lambda: bool(trials(pg_url, study)), "the first agent's baseline", first, logs[0])
    os.kill(first.pid, signal.SIGSTOP)  # held still until the second has joined
    try:
        second = agent(env, pg_url, logs[1], "shared", "--exit-when-idle")
        # Joined: waiting for the first's baseline, or holding a trial of its own (which
        # waits for the measuring lock if the first was stopped holding it).
        wait_for(
            lambda: "measuring this study's baseline" in logs[1].read_text()
            or any(t.user_attrs.get("pid") == second.pid for t in trials(pg_url, study)),
            "the second agent joining the study", second, logs[1],
        )  # fmt: skip
    finally:
        os.kill(first.pid, signal.SIGCONT)
    finish(first, logs[0])
    finish(second, logs[1])

    finished = counted(pg_url, study)
    assert len(finished) == 8, [(t.number, t.state.name) for t in finished]
    assert [t.user_attrs["baseline"] for t in finished].count(True) == 1
    assert {t.user_attrs["pid"] for t in finished} == {first.pid, second.pid}
    assert task_of(env, pg_url, job, "shared")["state"] == "done"


def test_an_agent_killed_mid_job_has_its_job_finished_by_another(
    pg_url: str, env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    job = submit(env, pg_url, magika, "--trials", "8", *SLOW)
    study = f"job{job}-k"
    logs = tmp_path / "a.log", tmp_path / "b.log"
    doomed = agent(env, pg_url, logs[0], "k")
    wait_for(lambda: len(counted(pg_url, study)) >= 2, "two trials", doomed, logs[0])
    doomed.kill()
    doomed.wait()
    assert task_of(env, pg_url, job, "k")["state"] == "running"

    rescuer = agent(env, pg_url, logs[1], "k", "--exit-when-idle")
    finish(rescuer, logs[1])
    task = task_of(env, pg_url, job, "k")
    assert task["state"] == "done", task
    assert task["finished_by"].split(":")[1] == str(rescuer.pid)
    assert len(counted(pg_url, study)) == 8
    assert not [t for t in trials(pg_url, study) if t.state == optuna.trial.TrialState.RUNNING]


def test_an_agent_outlives_a_database_restart(
    env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    server = PgServer()  # its own: the restart must not touch the other tests' databases
    try:
        url = server.url
        job = submit(env, url, magika, "--trials", "8", *SLOW)
        log = tmp_path / "agent.log"
        worker = agent(env, url, log, "r", "--exit-when-idle")
        wait_for(lambda: len(counted(url, f"job{job}-r")) >= 2, "two trials", worker, log)
        server.stop()
        time.sleep(3)  # long enough for a trial's write and a heartbeat to meet the outage
        server.start()
        finish(worker, log)
        said = log.read_text()
        assert "heartbeat not written" in said or "unreachable" in said, "the outage was met"
        assert task_of(env, url, job, "r")["state"] == "done", said
        assert len(counted(url, f"job{job}-r")) == 8
    finally:
        server.remove()


def test_a_swapped_model_is_refused_by_the_agent(
    pg_url: str, env: dict[str, str], magika: Path, rapid: Path, tmp_path: Path
) -> None:
    """A job whose model stays on a shared path: the file there is replaced after submitting,
    and the agent refuses it by its identity instead of tuning another model."""
    shared = tmp_path / "shared" / "model.onnx"
    shared.parent.mkdir()
    shutil.copy(magika, shared)
    job = submit(env, pg_url, shared, "--model-url", shared.as_uri(), "--trials", "2", *FAST)
    shutil.copy(rapid, shared)
    log = tmp_path / "agent.log"
    finish(agent(env, pg_url, log, "s", "--exit-when-idle"), log)
    task = task_of(env, pg_url, job, "s")
    assert task["state"] == "failed"
    assert "swapped or corrupted" in task["error"], task["error"]
    assert not trials(pg_url, f"job{job}-s"), "nothing was tuned"


def test_sigterm_hands_the_job_back_and_cancel_withdraws_it(
    pg_url: str, env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    job = submit(env, pg_url, magika, "--trials", "30", *SLOW)
    study = f"job{job}-t"
    log = tmp_path / "agent.log"
    worker = agent(env, pg_url, log, "t")
    wait_for(lambda: len(counted(pg_url, study)) >= 1, "a trial", worker, log)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, log.read_text()
    assert task_of(env, pg_url, job, "t")["state"] == "queued", "handed back"
    assert counted(pg_url, study), "its trials are kept"
    assert not [t for t in trials(pg_url, study) if t.state == optuna.trial.TrialState.RUNNING]

    cancelled = cli(env, "cancel", str(job), "--storage", pg_url)
    assert cancelled.returncode == 0, cancelled.stderr
    log = tmp_path / "after.log"
    finish(agent(env, pg_url, log, "t", "--exit-when-idle"), log)
    assert f"job {job}:" not in log.read_text(), "a cancelled job is not taken"
    assert task_of(env, pg_url, job, "t")["state"] == "cancelled"
    assert job_of(env, pg_url, job)["cancelled"] is True


def test_options_the_machine_refuses_fail_the_job_with_the_reason(
    pg_url: str, env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    """--concurrency 64 holds at submit, but not on a 2-CPU machine's agent, which says why."""
    cpus = len(os.sched_getaffinity(0))
    job = submit(env, pg_url, magika, "--concurrency", str(64 * cpus), "--trials", "2", *FAST)
    log = tmp_path / "agent.log"
    finish(agent(env, pg_url, log, "c", "--exit-when-idle"), log)
    task = task_of(env, pg_url, job, "c")
    assert task["state"] == "failed" and "--concurrency" in task["error"], task


def test_bad_input_is_one_line_and_writes_nothing(
    pg_url: str, env: dict[str, str], magika: Path, tmp_path: Path
) -> None:
    def refused(*args: str, code: int = 2) -> str:
        done = cli(env, *args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        *waits, line = done.stderr.strip().splitlines()
        assert line.startswith("Error: ")
        assert all(w.startswith("database unreachable: retrying") for w in waits), waits
        return line

    assert "below 1" in refused("submit", str(magika), "--storage", pg_url, "--trials", "0")
    assert "not found" in refused("submit", str(tmp_path / "none.onnx"), "--storage", pg_url)
    assert "unknown objective" in refused("submit", str(magika), "--storage", pg_url, "-o", "speed")
    assert "PostgreSQL" in refused("submit", str(magika), "--storage", f"sqlite:///{tmp_path}/x.db")
    assert "no job 7" in refused("jobs", "7", "--storage", pg_url)
    assert "no job 7" in refused("cancel", "7", "--storage", pg_url)
    assert "no job 7" in refused("export", "--job", "7", "--storage", pg_url)
    dead = f"postgresql://autotune@127.0.0.1:{free_port()}/postgres"
    assert "unreachable" in refused(
        "submit", str(magika), "--storage", dead, "--storage-retry-s", "1", code=1
    )
    assert "unreachable" in refused(
        "agent", "--storage", dead, "--storage-retry-s", "1", "--exit-when-idle", code=1
    )
    listed = cli(env, "jobs", "--storage", pg_url, "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], "no job was written"
