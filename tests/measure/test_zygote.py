"""The fork server: forked workers are as isolated as started ones, and faults stay contained.

Faulty workers are real forks of the real zygote running small functions of this module
(``run_trial``'s ``entry=``) instead of the measuring code: a segfault, a memory bomb, a hang
with a grandchild. After each, the same zygote forks a real worker that measures a real model.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from autotune.config import RESULT_SCHEMA, Measurement, TrialFailure
from autotune.measure import zygote as zygotes
from autotune.measure.runner import minimal_env, run_trial
from tests.conftest import worker_job as _job

HERE = "tests.measure.test_zygote"


def _report(facts: dict[str, Any]) -> dict[str, Any]:
    """A failure document carrying facts about the worker back to the test."""
    return {"schema": RESULT_SCHEMA, "status": "failed", "kind": "error",
            "message": json.dumps(facts)}  # fmt: skip


def facts(job: Any, import_s: float) -> dict[str, Any]:
    me = os.getpid()
    return _report({
        "pid": me, "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
        "env": sorted(os.environ), "import_s": import_s,
    })  # fmt: skip


def segfault(job: Any, import_s: float) -> dict[str, Any]:
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    raise AssertionError("unreachable")


def memory_bomb(job: Any, import_s: float) -> dict[str, Any]:
    hoard = []
    while True:
        hoard.append(bytearray(32 * 2**20))


def hang_with_child(job: Any, import_s: float) -> dict[str, Any]:
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(job.model_path).with_name("grandchild.pid").write_text(str(grandchild.pid))
    time.sleep(600)
    raise AssertionError("unreachable")


def raises(job: Any, import_s: float) -> dict[str, Any]:
    raise RuntimeError("a bug in the measuring code")


@pytest.fixture()
def zygote_pid(tiny_model: Path) -> int:
    """The shared zygote, started by a first real trial; its pid."""
    assert isinstance(run_trial(_job(tiny_model), timeout_s=60), Measurement)
    zygote = zygotes._SHARED.get("zygote")
    assert zygote is not None and zygote.alive(), "the runner did not use a zygote"
    return zygote.proc.pid


def _still_serves(tiny_model: Path, zygote_pid: int) -> None:
    outcome = run_trial(_job(tiny_model), timeout_s=60)
    assert isinstance(outcome, Measurement), outcome
    zygote = zygotes._SHARED.get("zygote")
    assert zygote is not None and zygote.proc.pid == zygote_pid, "the zygote was replaced"


def test_a_forked_worker_is_a_fresh_isolated_process(tiny_model: Path, zygote_pid: int) -> None:
    outcome = run_trial(_job(tiny_model), timeout_s=60, entry=f"{HERE}:facts")
    assert isinstance(outcome, TrialFailure), outcome
    seen = json.loads(outcome.message)
    assert seen["ppid"] == zygote_pid and seen["pid"] != zygote_pid
    assert seen["sid"] == seen["pid"] == seen["pgid"], "not in a session of its own"
    assert set(seen["env"]) <= set(minimal_env()) | {"LC_CTYPE"}
    # The import time is the zygote's, measured once: every trial reports the same figure.
    first = run_trial(_job(tiny_model), timeout_s=60)
    second = run_trial(_job(tiny_model), timeout_s=60)
    assert isinstance(first, Measurement) and isinstance(second, Measurement)
    assert first.import_s == second.import_s == seen["import_s"] > 0


def test_segfault_in_a_forked_worker_is_a_crash(tiny_model: Path, zygote_pid: int) -> None:
    outcome = run_trial(_job(tiny_model), timeout_s=60, entry=f"{HERE}:segfault")
    assert isinstance(outcome, TrialFailure) and outcome.kind == "crash", outcome
    assert "SIGSEGV" in outcome.message
    _still_serves(tiny_model, zygote_pid)


def test_memory_bomb_in_a_forked_worker_is_killed_at_the_cap(
    tiny_model: Path, zygote_pid: int
) -> None:
    outcome = run_trial(
        _job(tiny_model), timeout_s=60, max_memory_mb=400, entry=f"{HERE}:memory_bomb"
    )
    assert isinstance(outcome, TrialFailure) and outcome.kind == "oom", outcome
    assert "memory cap of 400 MB" in outcome.message
    assert psutil.Process(zygote_pid).memory_info().rss < 400 * 2**20
    _still_serves(tiny_model, zygote_pid)


def test_hang_in_a_forked_worker_is_killed_with_its_children(
    tiny_model: Path, tmp_path: Path, zygote_pid: int
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_model.read_bytes())
    outcome = run_trial(_job(model), timeout_s=3, entry=f"{HERE}:hang_with_child")
    assert isinstance(outcome, TrialFailure) and outcome.kind == "timeout", outcome
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != "zombie":
        assert time.monotonic() < deadline, "the hung worker's child outlived it"
        time.sleep(0.1)
    _still_serves(tiny_model, zygote_pid)


def test_an_exception_in_a_forked_worker_is_no_result_with_its_traceback(
    tiny_model: Path, zygote_pid: int
) -> None:
    outcome = run_trial(_job(tiny_model), timeout_s=60, entry=f"{HERE}:raises")
    assert isinstance(outcome, TrialFailure) and outcome.kind == "no_result", outcome
    assert "exited with code 1" in outcome.message
    assert "a bug in the measuring code" in outcome.message
    _still_serves(tiny_model, zygote_pid)


def test_a_dead_zygote_is_replaced(tiny_model: Path, zygote_pid: int) -> None:
    os.kill(zygote_pid, 9)
    psutil.Process(zygote_pid).wait(10) if psutil.pid_exists(zygote_pid) else None
    outcome = run_trial(_job(tiny_model), timeout_s=60)
    assert isinstance(outcome, Measurement), outcome
    zygote = zygotes._SHARED.get("zygote")
    assert zygote is not None and zygote.proc.pid != zygote_pid


def test_exec_start_is_still_available(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_WORKER_START", "exec")
    outcome = run_trial(_job(tiny_model), timeout_s=60)
    assert isinstance(outcome, Measurement), outcome
    assert outcome.import_s > 0
