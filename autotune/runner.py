"""Runs one trial in a fresh worker process and classifies what happened.

The worker gets a minimal environment, its own process group and a wall-clock limit; when the
limit is hit the whole group is killed. Peak RSS comes from the OS (``wait4`` rusage) when the
worker exits. Every outcome is returned as data (:class:`Measurement` or :class:`TrialFailure`);
nothing a trial does makes this module raise.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from autotune.config import RESULT_SCHEMA, Measurement, TrialFailure, TrialOutcome, WorkerJob

#: Environment variables handed to the worker: what Python, ONNX Runtime and GPU stacks read.
ENV_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT"}
ENV_KEEP_PREFIXES = ("LD_", "CUDA", "NVIDIA", "ORT_", "OMP_", "MKL_", "OPENBLAS_", "CUDNN", "TRT_")
POLL_S = 0.01
LOG_TAIL_CHARS = 2000


def worker_command() -> list[str]:
    return [sys.executable, "-m", "autotune.worker"]


def minimal_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if source is None else source
    return {k: v for k, v in source.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-5:])[-LOG_TAIL_CHARS:]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_all(fd: int, sink: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        sink.append(pipe.read())


def run_trial(
    job: WorkerJob,
    *,
    timeout_s: float,
    command: Sequence[str] | None = None,
) -> TrialOutcome:
    """Run ``job`` in a fresh worker and return its measurement or the reason it failed.

    Args:
        job: what to measure.
        timeout_s: wall-clock limit for the whole trial, process start included.
        command: the worker program (``--job FILE --result-fd N`` are appended); tests point it
            at faulty programs.
    """
    import subprocess

    argv = list(command or worker_command())
    with tempfile.TemporaryDirectory(prefix="autotune-trial-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(job.to_json())
        log_file = Path(tmp) / "worker.log"
        read_fd, write_fd = os.pipe()
        chunks: list[bytes] = []
        reader = threading.Thread(target=_read_all, args=(read_fd, chunks), daemon=True)
        start = time.perf_counter()
        with open(log_file, "wb") as log:
            try:
                proc = subprocess.Popen(
                    [*argv, "--job", str(job_file), "--result-fd", str(write_fd)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                    env=minimal_env(),
                )
            except OSError as exc:
                os.close(read_fd)
                os.close(write_fd)
                return TrialFailure("no_result", f"cannot start the worker {argv[0]}: {exc}")
        os.close(write_fd)
        reader.start()
        timed_out = False
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() >= deadline:
                timed_out = True
                _kill_group(proc.pid)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(POLL_S)
        wall_s = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        _kill_group(proc.pid)  # anything the worker left behind in its group
        reader.join(timeout=5)
        peak_rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
        return _classify(
            status=status,
            timed_out=timed_out,
            timeout_s=timeout_s,
            payload=b"".join(chunks),
            log_tail=_tail(log_file),
            peak_rss_mb=peak_rss_mb,
            wall_s=wall_s,
        )


def _classify(
    *,
    status: int,
    timed_out: bool,
    timeout_s: float,
    payload: bytes,
    log_tail: str,
    peak_rss_mb: float,
    wall_s: float,
) -> TrialOutcome:
    detail = f": {log_tail}" if log_tail else ""
    if timed_out:
        return TrialFailure("timeout", f"no result within {timeout_s:.0f} s; worker killed")
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        hint = " (likely the kernel's out-of-memory killer)" if sig == "SIGKILL" else ""
        return TrialFailure("crash", f"worker killed by {sig}{hint}{detail}")
    code = os.WEXITSTATUS(status)
    if code != 0:
        return TrialFailure("no_result", f"worker exited with code {code}{detail}")
    try:
        document = json.loads(payload)
        if document.get("schema") != RESULT_SCHEMA:
            raise ValueError(f"schema {document.get('schema')!r}")
        if document["status"] == "ok":
            measurement = Measurement.from_dict(document["measurement"])
            return measurement.with_process(peak_rss_mb=peak_rss_mb, wall_s=wall_s)
        return TrialFailure(document["kind"], document["message"], document.get("details", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        what = "no result" if not payload else f"a malformed result ({exc})"
        return TrialFailure("no_result", f"worker exited with {what}{detail}")
