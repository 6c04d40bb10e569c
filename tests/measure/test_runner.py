"""The runner against the real worker and against small faulty worker programs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from autotune.config import Measurement, TrialConfig, TrialFailure
from autotune.measure.runner import minimal_env, run_trial
from tests.conftest import worker_job


def _faulty(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_real_worker_measures_a_real_model(magika: Path) -> None:
    config = TrialConfig(batch_size=2, session_options={"intra_op_num_threads": 1})
    outcome = run_trial(worker_job(magika, config), timeout_s=120)
    assert isinstance(outcome, Measurement), outcome
    assert outcome.batch_size == 2 and outcome.providers == ("CPUExecutionProvider",)
    lat = outcome.latency_ms
    assert lat.count >= 5 and lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
    assert outcome.throughput == pytest.approx(2 * lat.count / outcome.timed_s)
    assert outcome.create_s > 0 and outcome.first_run_s > 0 and outcome.import_s > 0
    assert outcome.peak_rss_mb is not None and outcome.peak_rss_mb > 30
    assert outcome.wall_s is not None and outcome.wall_s > outcome.timed_s
    # One intra-op thread: the timed runs keep at most one core busy.
    assert outcome.cpu_cores is not None and 0.05 < outcome.cpu_cores <= 1.1, outcome.cpu_cores


def test_peak_memory_is_the_workers_own_not_the_tuners(tiny_model: Path) -> None:
    """A child's wait4 ru_maxrss starts from its parent's memory at fork; the figure must not."""
    ballast = bytearray(600 * 2**20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: resident
    outcome = run_trial(worker_job(tiny_model), timeout_s=120)
    assert isinstance(outcome, Measurement), outcome
    assert outcome.peak_rss_mb is not None and 20 < outcome.peak_rss_mb < 500, outcome.peak_rss_mb
    del ballast


def test_io_binding_path_runs(tiny_model: Path) -> None:
    outcome = run_trial(
        worker_job(tiny_model, TrialConfig(io_binding=True, batch_size=3)), timeout_s=60
    )
    assert isinstance(outcome, Measurement), outcome


def test_onnxruntime_error_is_data_with_its_message(tiny_model: Path) -> None:
    config = TrialConfig(session_options={"graph_optimization_level": "ORT_ENABLE_WARP_DRIVE"})
    outcome = run_trial(worker_job(tiny_model, config), timeout_s=60)
    assert isinstance(outcome, TrialFailure) and outcome.kind == "error"
    assert "ORT_ENABLE_WARP_DRIVE" in outcome.message


def test_provider_fallback_is_a_failed_trial(tiny_model: Path) -> None:
    """onnxruntime-gpu without CUDA libraries runs on CPU with only a warning: caught here."""
    from autotune.config import ProviderSpec

    config = TrialConfig(
        providers=(ProviderSpec("CUDAExecutionProvider"), ProviderSpec("CPUExecutionProvider"))
    )
    outcome = run_trial(worker_job(tiny_model, config), timeout_s=60)
    assert isinstance(outcome, TrialFailure) and outcome.kind in ("fallback", "error"), outcome
    assert "CUDAExecutionProvider" in outcome.message


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crash", "SIGSEGV"),
        ("import os; os.abort()", "crash", "SIGABRT"),
        ("import sys; print('bad things'); sys.exit(3)", "no_result", "code 3: bad things"),
        ("pass", "no_result", "no result"),
        (
            "import os, sys; os.write(int(sys.argv[sys.argv.index('--result-fd') + 1]), b'{nope')",
            "no_result",
            "malformed",
        ),
        ("import time; time.sleep(60)", "timeout", "no result within 2 s"),
    ],
)
def test_faulty_workers_are_classified(tiny_model: Path, code: str, kind: str, text: str) -> None:
    outcome = run_trial(worker_job(tiny_model), timeout_s=2, command=_faulty(code))
    assert isinstance(outcome, TrialFailure), outcome
    assert outcome.kind == kind and text in outcome.message


def test_timeout_kills_the_whole_process_group(tiny_model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    # 5 s: room for two interpreters to start on a loaded 2-core machine before the kill
    outcome = run_trial(worker_job(tiny_model), timeout_s=5, command=_faulty(code))
    assert isinstance(outcome, TrialFailure) and outcome.kind == "timeout"
    pid = int(marker.read_text())
    import psutil

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 3  # SIGKILL is delivered asynchronously
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()


def test_worker_environment_is_minimal() -> None:
    env = minimal_env({"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "x", "OMP_NUM_THREADS": "2"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
