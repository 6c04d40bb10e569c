"""Runs one trial in a fresh worker process and classifies what happened.

The worker is forked from a zygote that has imported onnxruntime once (:mod:`autotune.measure.zygote`),
or started as ``python -m autotune.measure.worker`` where forking does not apply. Either way it gets a
minimal environment, its own process group and a wall-clock limit; when the limit is hit the
whole group is killed, and past the memory cap too. Peak RSS is the worker's own ``VmHWM``, or
the OS's ``wait4`` figure when it exits without one. Every outcome is returned as data
(:class:`Measurement` or :class:`TrialFailure`); nothing a trial does makes this module raise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.config import RESULT_SCHEMA, Measurement, TrialFailure, TrialOutcome, WorkerJob
from autotune.gpu import GpuMemoryMonitor
from autotune.interrupt import STOP  # the running worker is killed at the next poll
from autotune.rules import GPU_PROVIDERS

if TYPE_CHECKING:
    from autotune.measure.zygote import Zygote

#: Environment variables handed to the worker: what Python, ONNX Runtime and GPU stacks read.
ENV_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT"}
ENV_KEEP_PREFIXES = ("LD_", "CUDA", "NVIDIA", "ORT_", "OMP_", "MKL_", "OPENBLAS_", "CUDNN", "TRT_")
POLL_S = 0.01
GPU_POLL_EVERY = 5  # NVML is slower than /proc: sample GPU memory every 50 ms
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
LOG_TAIL_CHARS = 2000
REAP_AFTER_KILL_S = 30.0  # a killed worker's exit, as its zygote reports it


def worker_command() -> list[str]:
    return [sys.executable, "-m", "autotune.measure.worker"]


def minimal_env(source: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if source is None else source
    return {k: v for k, v in source.items() if k in ENV_KEEP or k.startswith(ENV_KEEP_PREFIXES)}


def log_tail(path: Path) -> str:
    """The last lines of a worker's log, on one line (for failure messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-5:])[-LOG_TAIL_CHARS:]


def kill_group(pid: int) -> None:
    """SIGKILL a worker's whole process group (it runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _read_all(fd: int, sink: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        sink.append(pipe.read())


def run_trial(
    job: WorkerJob,
    *,
    timeout_s: float,
    max_memory_mb: float | None = None,
    max_gpu_memory_mb: float | None = None,
    command: Sequence[str] | None = None,
    entry: str | None = None,
) -> TrialOutcome:
    """Run ``job`` in a fresh worker and return its measurement or the reason it failed.

    Args:
        job: what to measure.
        timeout_s: wall-clock limit for the whole trial, process start included.
        max_memory_mb: resident memory cap of the worker, polled every few milliseconds; past
            it the worker is killed and the trial is out of memory.
        max_gpu_memory_mb: the same for the worker's GPU memory (NVML), for GPU providers.
        command: the worker program (``--job FILE --result-fd N`` are appended); tests point it
            at faulty programs. A plain process is then started, not a fork of the zygote.
        entry: the forked worker's code (``module:function``); tests point it at faulty
            functions.

    The worker is a fork of this tuner's zygote (:mod:`autotune.measure.zygote`), which has imported
    onnxruntime once, except for GPU providers, a ``command``, ``AUTOTUNE_WORKER_START=exec``
    or a zygote that cannot start; those start ``python -m autotune.measure.worker``.
    """
    from autotune.measure import zygote as zygotes

    forked = command is None and (entry is not None or not _uses_gpu(job)) and zygotes.enabled()
    zygote = zygotes.acquire(minimal_env()) if forked else None
    try:
        with tempfile.TemporaryDirectory(prefix="autotune-trial-") as tmp:
            return _run(
                job, Path(tmp), timeout_s, max_memory_mb, max_gpu_memory_mb, command,
                zygote, entry or zygotes.ENTRY,
            )  # fmt: skip
    finally:
        if zygote is not None:
            zygotes.release()


def _run(
    job: WorkerJob,
    tmp: Path,
    timeout_s: float,
    max_memory_mb: float | None,
    max_gpu_memory_mb: float | None,
    command: Sequence[str] | None,
    zygote: Zygote | None,
    entry: str,
) -> TrialOutcome:
    job_file = tmp / "job.json"
    job_file.write_text(job.to_json())
    log_file = tmp / "worker.log"
    result_file = tmp / "result.json"
    chunks: list[bytes] = []
    start = time.perf_counter()
    started: tuple[int, Reap, threading.Thread | None] | None = None
    if zygote is not None:
        try:
            pid = zygote.fork(job_file, result_file, log_file, entry)
            started = (pid, _zygote_reaper(zygote, pid), None)
        except OSError:
            started = None  # the zygote is gone: a plain process instead
    if started is None:
        execed = _exec(list(command or worker_command()), job_file, log_file, chunks)
        if isinstance(execed, TrialFailure):
            return execed
        started = execed
    pid, reap, reader = started
    gpu = GpuMemoryMonitor(pid) if _uses_gpu(job) else None
    try:
        status, maxrss_kb, stop = _watch(
            pid, reap, start + timeout_s, max_memory_mb, gpu, max_gpu_memory_mb
        )
    finally:
        kill_group(pid)  # on Ctrl-C too: never leave a worker behind
        if gpu is not None:
            gpu.close()
    peak_gpu_mb = gpu.peak_mb if gpu is not None else None
    wall_s = time.perf_counter() - start
    if reader is not None:
        reader.join(timeout=5)
    elif result_file.exists():
        chunks.append(result_file.read_bytes())
    peak_rss_mb = maxrss_kb / 1024  # kilobytes on Linux
    if stop == "timeout":
        return TrialFailure("timeout", f"no result within {timeout_s:.0f} s; worker killed")
    if stop == "interrupted":
        return TrialFailure("interrupted", "stopped by the user; the worker was killed")
    if stop == "memory":
        return TrialFailure(
            "oom",
            f"worker exceeded the memory cap of {max_memory_mb:.0f} MB "
            f"(peak {peak_rss_mb:.0f} MB); killed. Raise --max-memory-mb if the host has room",
            {"peak_rss_mb": peak_rss_mb, "max_memory_mb": max_memory_mb},
        )
    if stop == "gpu_memory":
        return TrialFailure(
            "oom",
            f"worker exceeded the GPU memory cap of {max_gpu_memory_mb:.0f} MB "
            f"(reached {peak_gpu_mb or 0:.0f} MB); killed",
            {"peak_gpu_mb": peak_gpu_mb, "max_gpu_memory_mb": max_gpu_memory_mb},
        )
    return _classify(
        status=status,
        payload=b"".join(chunks),
        log_tail=log_tail(log_file),
        peak_rss_mb=peak_rss_mb,
        peak_gpu_mb=peak_gpu_mb,
        wall_s=wall_s,
    )


Reap = Callable[[bool], "tuple[int, int] | None"]


def _exec(
    argv: list[str], job_file: Path, log_file: Path, chunks: list[bytes]
) -> tuple[int, Reap, threading.Thread] | TrialFailure:
    """A plain worker process (``command``, GPU providers, or no zygote): its pid, its reaper
    and the thread reading its result pipe."""
    import subprocess

    read_fd, write_fd = os.pipe()
    with Path(log_file).open("wb") as log:
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
    reader = threading.Thread(target=_read_all, args=(read_fd, chunks), daemon=True)
    reader.start()

    def reap(block: bool) -> tuple[int, int] | None:
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
        if not pid:
            return None
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        return status, usage.ru_maxrss

    return proc.pid, reap, reader


def _zygote_reaper(zygote: Zygote, pid: int) -> Reap:
    def reap(block: bool) -> tuple[int, int] | None:
        found = zygote.reap(pid, REAP_AFTER_KILL_S if block else 0.0)
        return (signal.SIGKILL, 0) if found is None and block else found

    return reap


def _rss_mb(pid: int) -> float:
    """Resident memory of one process from /proc (cheap enough to read every poll)."""
    try:
        with Path(f"/proc/{pid}/statm").open() as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _uses_gpu(job: WorkerJob) -> bool:
    return job.config.providers[0].name in GPU_PROVIDERS if job.config.providers else False


def _watch(
    pid: int,
    reap: Reap,
    deadline: float,
    max_memory_mb: float | None,
    gpu: GpuMemoryMonitor | None = None,
    max_gpu_memory_mb: float | None = None,
) -> tuple[int, int, str | None]:
    """Wait for the worker; kill its group at the deadline or past a memory cap.

    Returns its wait status, its peak RSS in kB (the OS's figure) and why it was stopped.
    """
    polls = 0
    while True:
        exited = reap(False)
        if exited:
            return exited[0], exited[1], None
        stop = None
        polls += 1
        gpu_mb = gpu.sample() if gpu is not None and polls % GPU_POLL_EVERY == 0 else None
        if STOP.is_set():
            stop = "interrupted"
        elif time.perf_counter() >= deadline:
            stop = "timeout"
        elif max_memory_mb is not None and _rss_mb(pid) > max_memory_mb:
            stop = "memory"
        elif max_gpu_memory_mb is not None and gpu_mb is not None and gpu_mb > max_gpu_memory_mb:
            stop = "gpu_memory"
        if stop:
            kill_group(pid)
            status, maxrss_kb = reap(True) or (signal.SIGKILL, 0)
            return status, maxrss_kb, stop
        time.sleep(POLL_S)


def _classify(
    *,
    status: int,
    payload: bytes,
    log_tail: str,
    peak_rss_mb: float,
    wall_s: float,
    peak_gpu_mb: float | None = None,
) -> TrialOutcome:
    detail = f": {log_tail}" if log_tail else ""
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
            own = measurement.peak_rss_mb  # the worker's own peak; wait4's counts the tuner's too
            return measurement.with_process(
                peak_rss_mb=own if own is not None else peak_rss_mb,
                wall_s=wall_s,
                peak_gpu_mb=peak_gpu_mb,
            )
        return TrialFailure(document["kind"], document["message"], document.get("details", {}))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        what = "no result" if not payload else f"a malformed result ({exc})"
        return TrialFailure("no_result", f"worker exited with {what}{detail}")
