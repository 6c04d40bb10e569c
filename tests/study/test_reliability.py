"""Faults a trial can have, interruptions of the tuner, and resuming: all real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from autotune import zoo
from autotune.config import Measurement, TrialConfig, TrialFailure, WorkerJob
from autotune.measure.runner import run_trial
from autotune.measure.session import read_tuned
from autotune.model import read_model, resolve_inputs
from tests.conftest import QUICK_MEASURE as FAST

FAST_FLAGS = ["--min-time", "0.05", "--min-runs", "5", "--finalists", "1", "--rounds", "2"]


@pytest.fixture(scope="module")
def vgg19() -> Path:
    """ONNX's light VGG-19: a 9 KB file whose weights expand to ~950 MB at session creation."""
    return zoo.fetch("light-vgg19")


def _job(model: Path, config: TrialConfig | None = None) -> WorkerJob:
    plan = resolve_inputs(read_model(model)).plan
    return WorkerJob(str(model), config or TrialConfig(), plan, FAST)


def test_unbounded_allocation_is_killed_at_the_memory_cap(tiny_model: Path) -> None:
    code = "x = []\nwhile True: x.append(bytearray(32 * 2**20))"
    started = time.monotonic()
    outcome = run_trial(
        _job(tiny_model), timeout_s=60, max_memory_mb=300, command=[sys.executable, "-c", code]
    )
    assert isinstance(outcome, TrialFailure) and outcome.kind == "oom", outcome
    assert "memory cap of 300 MB" in outcome.message and "--max-memory-mb" in outcome.message
    # Killed near the cap, not by the host running out: the runner polls /proc's resident size
    # every 10 ms, the reported peak is the OS's rusage figure (a few MB apart, and a loaded
    # machine may poll late while 32 MB blocks keep coming).
    assert 0.8 * 300 <= outcome.details["peak_rss_mb"] < 4000
    assert time.monotonic() - started < 60


def test_real_model_over_the_memory_cap_is_out_of_memory(vgg19: Path) -> None:
    outcome = run_trial(_job(vgg19), timeout_s=120, max_memory_mb=400)
    assert isinstance(outcome, TrialFailure) and outcome.kind == "oom", outcome


def test_real_model_load_longer_than_the_timeout(vgg19: Path) -> None:
    outcome = run_trial(_job(vgg19), timeout_s=1)
    assert isinstance(outcome, TrialFailure) and outcome.kind == "timeout", outcome


def test_consecutive_failures_stop_the_study(vgg19: Path, tmp_path: Path) -> None:
    """Baseline fine (it has its own generous limit); every trial after it times out."""
    from typer.testing import CliRunner

    from autotune.cli import app

    result = CliRunner().invoke(
        app,
        ["run", str(vgg19), "-o", "latency", "--trials", "10", "--out", str(tmp_path),
         "--trial-timeout", "1", "--max-failures", "2", *FAST_FLAGS],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "2 trials failed in a row (last: timeout" in result.stderr
    assert "--max-failures" in result.stderr
    best = list(tmp_path.glob("*/best.json"))
    assert best, "the best so far (the baseline) is still written"
    tuned = read_tuned(best[0])
    assert tuned.config.session_options == {}


def test_a_study_whose_every_trial_fails_alike_is_an_error(vgg19: Path, tmp_path: Path) -> None:
    """Not "no trial beat the defaults": the same failure three times over is the tool's
    setup, so the run stops there, names it with the fix and exits 1."""
    from typer.testing import CliRunner

    from autotune.cli import app

    result = CliRunner().invoke(
        app,
        ["run", str(vgg19), "-o", "latency", "--trials", "10", "--out", str(tmp_path),
         "--trial-timeout", "1", *FAST_FLAGS],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "every trial after the baseline failed the same way (3 of 3): timeout" in result.stderr
    assert "--trial-timeout" in result.stderr and "Traceback" not in result.stderr


def _command(model: Path, out: Path, trials: int) -> list[str]:
    return [
        sys.executable, "-m", "autotune.cli", "run", str(model), "--out", str(out),
        "--trials", str(trials), "--batch-sizes", "1,2", "--seed", "5", *FAST_FLAGS,
        "--finalists", "0",  # about interrupting and resuming the search, not confirming
    ]  # fmt: skip


def _finished(out: Path) -> list[optuna.trial.FrozenTrial]:
    db = out / "autotune.db"
    if not db.exists():
        return []
    try:
        summaries = optuna.get_all_study_summaries(f"sqlite:///{db}")
        if not summaries:
            return []
        study = optuna.load_study(study_name=summaries[0].study_name, storage=f"sqlite:///{db}")
        return [
            t
            for t in study.trials
            if t.state.is_finished() and t.user_attrs.get("failure_kind") != "repeat"
        ]  # fmt: skip  (a repeated proposal is recorded, never measured or counted)
    except Exception:  # the database is being created
        return []


def _wait_for_trials(out: Path, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while len(_finished(out)) < count:
        if proc.poll() is not None:
            _, stderr = proc.communicate()
            pytest.fail(f"the tuner ended before it was interrupted: {stderr.decode()[-2000:]}")
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.2)
    time.sleep(0.3)  # into the next trial


def _workers_left(tmp: Path) -> list[psutil.Process]:
    """Live workers (started or forked) and zygotes of the tuner that was given ``TMPDIR=tmp``:
    the job files and the zygote's ``--scratch`` name it.

    (Workers of other autotune runs on this machine, a benchmark or another test, do not count.)
    """
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if ("autotune.measure.worker" in line or "autotune.measure.zygote" in line) and str(
            tmp
        ) in line:
            try:
                if proc.status() != "zombie":
                    found.append(proc)
            except psutil.NoSuchProcess:
                pass
    return found


def _own_tmp(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A TMPDIR for one tuner: the runner hands it on, so its workers' job files land there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return tmp, {**os.environ, "TMPDIR": str(tmp)}


def test_sigkill_mid_study_then_resume_loses_and_repeats_nothing(
    magika: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    tmp, env = _own_tmp(tmp_path)
    proc = subprocess.Popen(
        _command(magika, out, 6), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    _wait_for_trials(out, 3, proc)
    assert _workers_left(tmp), "the tuner's zygote is not found: the check below is void"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while _workers_left(tmp):  # the zygote reads end of input and kills its worker
        assert time.monotonic() < deadline, "a worker or the zygote outlived the killed tuner"
        time.sleep(0.1)
    before = {t.number: t.values for t in _finished(out) if t.state.name == "COMPLETE"}
    assert len(before) >= 3

    resumed = subprocess.run(_command(magika, out, 6), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = _finished(out)
    after = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert all(after[n] == v for n, v in before.items()), "a completed trial changed"
    interrupted = [t for t in trials if t.user_attrs.get("failure_kind") == "interrupted"]
    assert len(interrupted) <= 1
    assert len(trials) - len(interrupted) == 6
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert not any(t.state.name == "RUNNING" for t in trials)
    assert list(out.glob("*/best.json"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_writes_results_and_resumes(
    magika: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "results"
    tmp, env = _own_tmp(tmp_path)
    proc = subprocess.Popen(
        _command(magika, out, 8), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    _wait_for_trials(out, 2, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert b"Re-run the same command to resume" in stderr
    assert b"Traceback" not in stderr
    [best] = out.glob("*/best.json")
    tuned = read_tuned(best)
    assert tuned.metrics.throughput > 0
    # the search's pick is one measurement, and says so (the defaults need no confirmation)
    assert tuned.confirmed == (tuned.trial_number == 0)
    assert (b"UNCONFIRMED: the run was interrupted" in stdout) == (not tuned.confirmed)
    time.sleep(0.5)
    assert not _workers_left(tmp), "a worker outlived the interrupted tuner"
    trials = _finished(out)
    assert not any(t.state.name == "RUNNING" for t in trials)

    resumed = subprocess.run(_command(magika, out, 8), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = _finished(out)
    counted = [t for t in trials if t.user_attrs.get("failure_kind") != "interrupted"]
    assert len(counted) == 8
    if sig != signal.SIGINT:
        return
    # a later run interrupted in its search leaves the best.json a deployment loads as it was
    before = best.read_bytes()
    proc = subprocess.Popen(
        _command(magika, out, 12), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    _wait_for_trials(out, len(_finished(out)) + 1, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()
    assert best.read_bytes() == before
    assert b"best.json is left as it was" in stdout


def test_best_json_is_replaced_atomically(tmp_path: Path) -> None:
    from autotune.results.export import write_json_atomic

    path = tmp_path / "best.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_best_json_is_readable_per_the_users_umask(tmp_path: Path, umask: int) -> None:
    """Not mkstemp's 0600: a service running as another user reads the deployed config."""
    from autotune.results.export import write_json_atomic

    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "best.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "best.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_worker_crash_inside_a_study_is_recorded_and_the_study_goes_on(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A worker that segfaults on every non-baseline config: failures become data."""
    code = (
        "import json, os, signal, sys\n"
        "job = json.load(open(sys.argv[sys.argv.index('--job') + 1]))\n"
        "if job['config']['session_options']:\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)\n"
        "from autotune.measure.worker import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    from autotune.tuning import RunOptions, run_tuning

    outcome = run_tuning(
        RunOptions(
            model=tiny_model, objective="latency", trials=4, out=tmp_path, min_time_s=0.05,
            min_runs=5, finalists=1, rounds=2, worker_command=[sys.executable, "-c", code],
        ),
        echo=lambda line: None,
    )  # fmt: skip
    study = optuna.load_study(
        study_name=outcome.tuned.study_name, storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    measured = [t for t in study.trials[1:] if t.user_attrs.get("failure_kind") != "repeat"]
    assert [t.user_attrs.get("failure_kind") for t in measured] == ["crash"] * 3
    assert all("SIGSEGV" in t.user_attrs["failure_message"] for t in measured)
    assert isinstance(outcome.tuned.metrics, Measurement)
    assert outcome.tuned.config.session_options == {}
    assert "3 failed: crash" in outcome.table


def test_a_stop_before_the_study_starts_ends_the_run_with_nothing_written(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A stop requested while the run prepares is not thrown away when the study starts."""
    from autotune.interrupt import STOP
    from autotune.tuning import RunOptions, run_tuning

    STOP.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_tuning(RunOptions(model=tiny_model, out=tmp_path, trials=3), echo=lambda _: None)
    finally:
        STOP.clear()
    assert not (tmp_path / "autotune.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_in_the_first_seconds_exits_130_promptly(
    magika: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C as soon as the header is out (the study not yet measured): exit 130, not a whole
    study run to the end with exit 0."""
    out = tmp_path / "results"
    tmp, env = _own_tmp(tmp_path)
    proc = subprocess.Popen(
        _command(magika, out, 6), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    seen = b""
    while b"model:" not in seen:
        line = proc.stderr.readline()
        assert line, f"the tuner ended before its header: {seen.decode()}"
        seen += line
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + stderr).decode()
    assert b"Traceback" not in stderr
    assert not list(out.glob("*/best.json"))


def test_overloaded_trials_end_at_their_timeout(vgg19: Path, tmp_path: Path) -> None:
    """Sixteen callers on a slow model, the most this 2-CPU machine accepts: every trial after
    the baseline is killed at --trial-timeout, as the README states, and the run says why."""
    from typer.testing import CliRunner

    from autotune.cli import app

    result = CliRunner().invoke(
        app,
        ["run", str(vgg19), "-o", "latency", "--trials", "6", "--out", str(tmp_path),
         "--concurrency", "16", "--trial-timeout", "1", *FAST_FLAGS],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "failed the same way (3 of 3): timeout: no result within 1 s" in result.stderr
