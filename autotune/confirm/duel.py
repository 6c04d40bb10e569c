"""Paired confirmation at a fine grain: warm workers taking turns in short blocks.

A cloud VM's speed can flip between modes every few seconds, so one fresh process per config and
round pairs configs measured under different host states. Here every contender (the baseline,
a twin of the baseline, the finalists) gets one warm worker (``python -m autotune.measure.worker
--serve``), started one after another so startup and memory are still measured alone. Then, cycle
after cycle, each worker in turn runs one short block of requests under the study's workload
while the others wait, with a short settle pause before each block so the previous worker's
spinning threads go quiet. Blocks of one cycle lie a fraction of a second apart: the paired
ratio of a finalist's block to the baseline's block in the same cycle cancels the host's state.

The twin is the baseline's own config in a second worker: its paired ratios show how far two
identical configs disagree on this host right now, which is the noise a win must exceed.

Used by :mod:`autotune.confirm.paired` for throughput, latency and capacity objectives (under
open-loop traffic each block is one window per offered rate of a shared ladder); memory and
startup are properties of a process measured alone and keep their fresh-process rounds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.config import Measurement, TrialFailure, WorkerJob
from autotune.interrupt import STOP
from autotune.measure.runner import kill_group, log_tail, minimal_env, worker_command

SETTLE_S = 0.05  # quiet before each block: the previous worker's threads spin ~30 ms after it
READY_TIMEOUT_S = 600.0


@dataclass
class Contender:
    """One warm worker: its job, its process and the pipes to talk to it."""

    name: str
    job: WorkerJob
    proc: subprocess.Popen[bytes] | None = None
    commands: Any = None  # file object: JSON lines to the worker
    replies: Any = None  # file object: JSON lines from the worker
    ready: dict[str, Any] = field(default_factory=dict)
    failure: TrialFailure | None = None
    blocks: list[Measurement | None] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    tmp: Any = None
    retired: bool = False  # settled early (a clear loser): it runs no more blocks


def _read_line(contender: Contender, timeout_s: float) -> dict[str, Any] | None:
    """One JSON reply, or None when the worker died, timed out or was stopped.

    At end of file (the worker closed its answers: it is exiting) this waits for the process a
    little, so the caller can tell a death from a hang by ``proc.poll()``.
    """
    assert contender.proc is not None
    fd = contender.replies.fileno()
    deadline = time.perf_counter() + timeout_s
    while True:
        if STOP.is_set():
            return None
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], min(left, 0.05))
        if readable:
            line = contender.replies.readline()
            if not line:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    contender.proc.wait(timeout=5)
                return None
            return json.loads(line)


def _kill(contender: Contender) -> None:
    if contender.proc is None:
        return
    kill_group(contender.proc.pid)
    contender.proc.wait()
    for pipe in (contender.commands, contender.replies):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _fail(contender: Contender, kind: str, message: str) -> None:
    contender.failure = TrialFailure(kind, message)  # type: ignore[arg-type]
    _kill(contender)


def _log_tail(contender: Contender) -> str:
    return log_tail(Path(contender.tmp.name) / "worker.log")


def start(contender: Contender, *, timeout_s: float, command: Sequence[str] | None) -> None:
    """Start the worker and wait until it has built its sessions and warmed up."""
    contender.tmp = tempfile.TemporaryDirectory(prefix="autotune-duel-")
    folder = Path(contender.tmp.name)
    (folder / "job.json").write_text(contender.job.to_json())
    to_worker_r, to_worker_w = os.pipe()
    from_worker_r, from_worker_w = os.pipe()
    argv = [*(command or worker_command()), "--job", str(folder / "job.json")]
    argv += ["--result-fd", str(from_worker_w), "--serve", str(to_worker_r)]
    with (folder / "worker.log").open("wb") as log:
        try:
            contender.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(to_worker_r, from_worker_w),
                start_new_session=True,
                env=minimal_env(),
            )
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
    contender.commands = os.fdopen(to_worker_w, "w", buffering=1)
    contender.replies = os.fdopen(from_worker_r, "r")
    reply = _read_line(contender, min(timeout_s, READY_TIMEOUT_S))
    if reply is None:
        code = contender.proc.poll()
        if code is not None and code < 0:
            kind, why = "crash", f"killed by {signal.Signals(-code).name} while starting"
        elif code is None:
            kind, why = "timeout", f"not ready within {min(timeout_s, READY_TIMEOUT_S):.0f} s"
        else:
            kind, why = "no_result", f"exited with code {code} while starting"
        _fail(contender, kind, f"the confirmation worker {why}: {_log_tail(contender)}")
    elif reply.get("status") == "failed":
        _fail(contender, reply["kind"], reply["message"])
    else:
        contender.ready = reply


def block(
    contender: Contender,
    *,
    seconds: float,
    min_runs: int,
    timeout_s: float,
    rates: Sequence[float] = (),
    cycle: int = 0,
) -> None:
    """Ask for one block of requests (with ``rates``: one open-loop window at each offered
    rate, the same arrivals for every contender in a cycle); record its figures, or the
    failure that ended it."""
    if contender.failure is not None or contender.retired:
        contender.blocks.append(None)
        return
    command: dict[str, Any] = {"op": "block", "seconds": seconds, "min_runs": min_runs}
    if rates:
        command.update(rates=list(rates), cycle=cycle)
    with contextlib.suppress(OSError):
        contender.commands.write(json.dumps(command) + "\n")
    reply = _read_line(contender, timeout_s)
    if reply is None or reply.get("status") == "failed":
        if reply is not None:
            kind, why = reply["kind"], reply["message"]
        elif contender.proc is not None and contender.proc.poll() is None:
            kind, why = "timeout", f"no answer to a block within {timeout_s:.0f} s; worker killed"
        else:
            code = contender.proc.returncode if contender.proc is not None else None
            how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else "died"
            kind, why = "crash", f"the worker {how} in a block: {_log_tail(contender)}".rstrip(": ")
        _fail(contender, kind, why)
        contender.blocks.append(None)
        return
    contender.blocks.append(Measurement.from_dict(reply["measurement"]))


def finish(contender: Contender) -> None:
    """Ask for the worker's closing figures (its peak memory), then stop it."""
    if contender.failure is None and contender.proc is not None:
        try:
            contender.commands.write(json.dumps({"op": "quit"}) + "\n")
            reply = _read_line(contender, 10.0)
            if reply is not None:
                contender.final = reply
        except OSError:
            pass
    _kill(contender)
    if contender.tmp is not None:
        contender.tmp.cleanup()


@dataclass(frozen=True)
class DuelPlan:
    """How long the duel runs: ``cycles`` at least, up to ``max_cycles`` while undecided."""

    cycles: int
    max_cycles: int
    block_s: float  # the timed length of one block
    min_runs: int  # requests a block completes at least (all callers together)
    # After these many cycles every contender still running gets a fresh worker: pairing in
    # time cancels the host's speed, not a process's own luck (where its threads and pages
    # landed), so each contender is measured in more than one process.
    restarts: tuple[int, ...] = ()
    # Open-loop traffic: each block is one window per offered rate, the same rates for every
    # contender (a capacity's ladder, or the one --rate).
    rates: tuple[float, ...] = ()

    def legs(self, cycles: int) -> list[range]:
        """The cycles each set of workers ran, for a duel that ran ``cycles``."""
        edges = [0, *(r for r in self.restarts if r < cycles), cycles]
        return [range(a, b) for a, b in itertools.pairwise(edges) if b > a]


def run_duel(
    contenders: Sequence[Contender],
    plan: DuelPlan,
    *,
    timeout_s: float,
    command: Sequence[str] | None = None,
    decided: Callable[[int], bool] | None = None,
    over: Callable[[], bool] | None = None,
    on_cycle: Callable[[int], None] | None = None,
    block_timeout_s: float | None = None,
    budget_s: float | None = None,
) -> int:
    """Start every contender (one at a time), run cycles of blocks, stop them; cycles run.

    ``decided(cycles_done)``, asked after every cycle, may retire contenders (they run no
    more blocks) and ends the duel once every verdict is settled (after ``plan.cycles`` at
    least); ``over()``, asked after that, ends it at once, whatever the plan's minimum (nothing
    is left to compare). After each of ``plan.restarts`` cycles every contender still running
    is stopped and started again (a worker that fails to restart drops out). Past
    ``budget_s`` seconds the duel adds no cycles beyond ``plan.cycles``, settled or not. Each cycle runs the contenders in a fresh (seeded) random
    order, so none keeps following the same one (a block can carry over into the next one:
    caches, a thread pool still spinning). A worker that crashes, fails or hangs past
    ``block_timeout_s`` (default: 20 blocks, 30 s at least) is killed and drops out; the
    others go on.
    """
    done = 0
    began = time.perf_counter()
    try:
        for contender in contenders:
            if STOP.is_set():
                break
            start(contender, timeout_s=timeout_s, command=command)
        block_timeout = block_timeout_s or max(30.0, 20 * plan.block_s)
        while done < plan.max_cycles and not STOP.is_set():
            order = list(contenders)
            random.Random(done).shuffle(order)  # every contender follows each of the others
            for contender in order:
                if contender.retired:
                    contender.blocks.append(None)
                    continue
                time.sleep(SETTLE_S)
                block(
                    contender,
                    seconds=plan.block_s,
                    min_runs=plan.min_runs,
                    timeout_s=block_timeout,
                    rates=plan.rates,
                    cycle=done,
                )
            done += 1
            if on_cycle is not None:
                on_cycle(done)
            settled = decided is None or decided(done)
            spent = budget_s is not None and time.perf_counter() - began >= budget_s
            if (done >= plan.cycles and (settled or spent)) or (over is not None and over()):
                break
            if done in plan.restarts:
                for contender in contenders:
                    if contender.failure is None and not contender.retired and not STOP.is_set():
                        finish(contender)
                        start(contender, timeout_s=timeout_s, command=command)
    finally:
        for contender in contenders:
            finish(contender)
    return done
