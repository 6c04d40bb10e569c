"""A pre-imported fork server: one fresh worker process per trial without paying the imports.

Starting ``python -m autotune.measure.worker`` costs about 0.2 s per trial, most of it importing numpy
and onnxruntime. The zygote (``python -m autotune.measure.zygote``) imports them once, never creates a
session, and forks one child per trial. The child is a fresh process like any other worker: its
own session (process group), a minimal environment inherited from the zygote, the memory cap and
wall-clock limit the runner enforces from outside, and a crash that kills only itself. What it
skips is the interpreter start and the imports; the import time the zygote measured once is
reported in every trial's figures, as a deployment pays it once too.

Protocol, JSON lines. The runner writes ``{"job": FILE, "result": FILE, "log": FILE}`` to the
zygote's stdin; the zygote forks and answers ``{"pid": N}`` at once, and ``{"pid": N, "status":
S, "maxrss_kb": K}`` (``os.wait4``'s figures) when that child has exited. The child writes its
result document to the ``result`` file and its stdout/stderr to ``log``. The zygote is
single-threaded (a SIGCHLD wake-up pipe, no helper threads), so forking it is safe; at end of
input (the tuner exited, even by SIGKILL) it kills its children and exits, and each child asks
the kernel for SIGKILL should the zygote die first.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 60.0
ENTRY = "autotune.measure.worker:run_job"
PR_SET_PDEATHSIG = 1


# --- the tuner's side ----------------------------------------------------------------------


class Zygote:
    """The tuner's handle on one zygote process: start it, fork a worker, learn how it exited."""

    def __init__(self, env: dict[str, str]) -> None:
        scratch = tempfile.gettempdir()  # in argv so a test can tell one tuner's workers apart
        self.env, self.cwd = env, str(Path.cwd())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autotune.measure.zygote", "--scratch", scratch],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        self._buffer = b""
        self.exits: dict[int, tuple[int, int]] = {}
        ready = self._reply(READY_TIMEOUT_S)
        if ready is None or "import_s" not in ready:
            self.close()
            raise OSError("the zygote did not start")
        self.import_s = float(ready["import_s"])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, job_file: Path, result_file: Path, log_file: Path, entry: str = ENTRY) -> int:
        """Start one worker for ``job_file``; its pid. Raises OSError if the zygote is gone.

        ``entry`` (``module:function``, called with the job and the import time, returning the
        result document) is the worker's code; tests point it at faulty functions.
        """
        request = {
            "job": str(job_file),
            "result": str(result_file),
            "log": str(log_file),
            "entry": entry,
        }
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise OSError("the zygote has exited") from exc
        while True:
            reply = self._reply(READY_TIMEOUT_S)
            if reply is None:
                raise OSError("the zygote did not answer")
            if "error" in reply:
                raise OSError(f"the zygote could not fork: {reply['error']}")
            if "status" not in reply:
                return int(reply["pid"])
            self.exits[int(reply["pid"])] = (int(reply["status"]), int(reply["maxrss_kb"]))

    def reap(self, pid: int, timeout_s: float) -> tuple[int, int] | None:
        """``(wait status, peak RSS kB)`` of a forked worker once it has exited, else None.

        If the zygote itself died, its children died with it (SIGKILL, as the kernel reports).
        """
        deadline = time.monotonic() + timeout_s
        while pid not in self.exits:
            left = deadline - time.monotonic()
            reply = self._reply(max(0.0, left))
            if reply is None:
                if not self.alive():
                    return (signal.SIGKILL, 0)  # a wait status: killed by SIGKILL
                if left <= 0:
                    return None
                continue
            if "status" in reply:
                self.exits[int(reply["pid"])] = (int(reply["status"]), int(reply["maxrss_kb"]))
        return self.exits.pop(pid)

    def _reply(self, timeout_s: float) -> dict[str, Any] | None:
        """One JSON line from the zygote within ``timeout_s``, else None."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


_SHARED: dict[str, Zygote | None] = {}
_LOCK = threading.Lock()


def enabled() -> bool:
    """Fork servers are the default; ``AUTOTUNE_WORKER_START=exec`` starts plain processes."""
    return os.environ.get("AUTOTUNE_WORKER_START", "fork") != "exec" and hasattr(os, "fork")


def acquire(env: dict[str, str]) -> Zygote | None:
    """This tuner's zygote, started on first use, or None when it is busy with another
    thread's trial or cannot start (the runner then starts a plain worker process)."""
    if not _LOCK.acquire(blocking=False):
        return None
    zygote = _SHARED.get("zygote")
    if zygote is not None and not (
        zygote.alive() and zygote.env == env and zygote.cwd == str(Path.cwd())
    ):
        zygote.close()  # dead, or its children would not see this process's environment
        zygote = None
    if zygote is None and "failed" not in _SHARED:
        try:
            zygote = Zygote(env)
        except OSError:
            _SHARED["failed"] = None  # do not try again in every trial
            zygote = None
    _SHARED["zygote"] = zygote
    if zygote is None:
        _LOCK.release()
    return zygote


def release() -> None:
    _LOCK.release()


def shutdown() -> None:
    zygote = _SHARED.pop("zygote", None)
    if zygote is not None:
        zygote.close()


atexit.register(shutdown)


# --- the zygote's side ---------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent (single-threaded here) exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child(request: dict[str, Any], import_s: float, keep: set[int]) -> None:
    """In the forked child: become a worker process, run the job, write the result. Never
    returns."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in keep:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        import importlib

        from autotune.config import WorkerJob

        module, _, function = request.get("entry", ENTRY).partition(":")
        run_job = getattr(importlib.import_module(module), function)
        job = WorkerJob.from_json(Path(request["job"]).read_text())
        document = run_job(job, import_s)
        Path(request["result"]).write_text(json.dumps(document))
        code = 0
    except BaseException:  # noqa: BLE001  (the log carries the traceback; exit code 1)
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(scratch: str) -> int:
    del scratch  # only in argv, to tell tuners' workers apart
    t0 = time.perf_counter()
    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401

    import_s = time.perf_counter() - t0
    # What every job imports, so a child starts with it loaded (no session is ever created).
    import autotune.measure.accuracy  # noqa: F401
    import autotune.measure.callers  # noqa: F401
    import autotune.measure.session  # noqa: F401
    import autotune.measure.stats  # noqa: F401
    import autotune.measure.worker  # noqa: F401
    import autotune.model  # noqa: F401

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer.fileno()

    def answer(document: dict[str, Any]) -> None:
        out.write((json.dumps(document) + "\n").encode())
        out.flush()

    answer({"import_s": import_s, "pid": os.getpid()})
    children: set[int] = set()
    pending = b""
    keep = {stdin, out.fileno(), wake_read, wake_write}
    while True:
        try:
            ready, _, _ = select.select([stdin, wake_read], [], [])
        except InterruptedError:
            continue
        if wake_read in ready:
            os.read(wake_read, 4096)
        while children:  # reap every child that has exited
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            answer({"pid": pid, "status": status, "maxrss_kb": usage.ru_maxrss})
        if stdin not in ready:
            continue
        chunk = os.read(stdin, 65536)
        if not chunk:  # the tuner is gone: take the workers along
            for pid in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            return 0
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            try:
                pid = os.fork()
            except OSError as exc:
                answer({"error": str(exc)})
                continue
            if pid == 0:
                _child(request, import_s, keep)
            children.add(pid)
            answer({"pid": pid})


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autotune.measure.zygote")
    parser.add_argument("--scratch", default="", help="the tuner's temporary folder")
    args = parser.parse_args(argv)
    return serve(args.scratch)


if __name__ == "__main__":
    sys.exit(main())
