from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune.errors import AutotuneError
from autotune.measure.lock import machine_lock

HOLD = """
import sys, time
from autotune.measure.lock import machine_lock
with machine_lock():
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
    print(time.monotonic(), flush=True)  # the last moment it held the lock
"""


@pytest.fixture
def lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "measure.lock"
    monkeypatch.setenv("AUTOTUNE_LOCK_FILE", str(path))
    return path


def _holder(seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(seconds)], stdout=subprocess.PIPE, text=True,
        env=os.environ.copy(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_no_wait_fails_at_once_naming_the_holder(lock_file: Path) -> None:
    proc = _holder(30)
    try:
        with (
            pytest.raises(AutotuneError, match=f"pid {proc.pid}.*--no-wait"),
            machine_lock(wait=False),  # refused, not waited for: the holder keeps it 30 s
        ):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_waiting_says_so_and_gets_the_lock_when_released(lock_file: Path) -> None:
    proc = _holder(1.0)
    messages: list[str] = []
    with machine_lock(wait=True, on_wait=messages.append):
        acquired = time.monotonic()  # one clock for every process on Linux
    assert proc.stdout is not None
    assert acquired >= float(proc.stdout.readline())  # only once the holder let go
    proc.wait()
    assert messages and f"pid {proc.pid}" in messages[0]


def test_a_killed_holder_releases_the_lock(lock_file: Path) -> None:
    proc = _holder(60)
    proc.kill()
    proc.wait()
    with machine_lock(wait=False):
        assert lock_file.read_text() == str(os.getpid())


def test_a_stop_request_ends_the_wait(lock_file: Path) -> None:
    import threading

    proc = _holder(30)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    try:
        with pytest.raises(KeyboardInterrupt), machine_lock(wait=True, stop=stop):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_no_wait_with_the_lock_held_leaves_no_study_behind(
    lock_file: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """The refusal comes before the study is made: a later run does not meet an empty study."""
    import optuna

    from autotune.tuning import RunOptions, run_tuning

    proc = _holder(60)
    try:
        with pytest.raises(AutotuneError, match="--no-wait"):
            run_tuning(
                RunOptions(model=tiny_model, out=tmp_path, trials=2, wait=False, finalists=0),
                echo=lambda line: None,
            )
    finally:
        proc.kill()
        proc.wait()
    storage = f"sqlite:///{tmp_path / 'autotune.db'}"
    assert not (tmp_path / "autotune.db").exists() or not optuna.get_all_study_summaries(storage)
