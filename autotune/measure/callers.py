"""The load a worker puts on its sessions: one caller in a loop, or N caller threads at once.

Used only inside the measuring worker. ``one_caller`` is the classic loop: a short warm-up, timed
runs until both minimums are met, leading slow runs counted as warm-up. ``many_callers`` starts
N threads, each issuing its requests back to back (ONNX Runtime releases the GIL during
``run``), and times a window in which all of them are busy: throughput is the samples of the
requests completed inside the window over its length, latency is per request under that load.
A caller that raises ends the window and the trial with its message; a caller that hangs is left
to the runner's trial timeout, which kills the whole worker.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from autotune.config import MeasureSettings

clock = time.perf_counter
POLL_S = 0.005


@dataclass(frozen=True)
class Window:
    """The timed requests of one measurement."""

    times: list[float]  # per-request latency in seconds
    wall_s: float  # the window's length (one caller: the sum of its run times)
    cpu_cores: float  # CPU time of every thread over the window's wall time
    warmup_runs: int
    notes: tuple[str, ...] = ()

    def throughput(self, batch_size: int) -> float:
        return batch_size * len(self.times) / self.wall_s


def run_loop(
    run: Callable[[], Any], *, min_runs: int, min_s: float, max_runs: int, max_s: float
) -> list[float]:
    """Run until both minimums are met or either cap is hit; per-run times in seconds."""
    times: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        run()
        t1 = clock()
        times.append(t1 - t0)
        elapsed = t1 - start
        if len(times) >= max_runs or elapsed >= max_s:
            return times
        if len(times) >= min_runs and elapsed >= min_s:
            return times


def warm_up(run: Callable[[], Any], settings: MeasureSettings) -> int:
    if settings.warmup_runs <= 0 and settings.warmup_s <= 0:
        return 0
    return len(
        run_loop(
            run,
            min_runs=settings.warmup_runs,
            min_s=settings.warmup_s,
            max_runs=max(settings.warmup_runs, 1000),
            max_s=max(settings.warmup_s, 5.0),
        )
    )


def timed(
    run: Callable[[], Any], *, min_runs: int, min_s: float, max_runs: int, max_s: float
) -> tuple[list[float], float]:
    """:func:`run_loop`'s times, and the CPU cores every thread of the process kept busy."""
    cpu0, wall0 = time.process_time(), clock()
    times = run_loop(run, min_runs=min_runs, min_s=min_s, max_runs=max_runs, max_s=max_s)
    return times, (time.process_time() - cpu0) / max(clock() - wall0, 1e-9)


def one_caller(run: Callable[[], Any], settings: MeasureSettings) -> Window:
    """One caller: warm up, time runs, count slow leading runs as warm-up, maybe retry."""
    from autotune.measure.stats import latency_stats, noise, noisy, warmup_prefix

    warmed = warm_up(run, settings)
    cap_runs, cap_s = settings.max_runs, settings.max_time_s
    times, cpu_cores = timed(
        run, min_runs=settings.min_runs, min_s=settings.min_time_s, max_runs=cap_runs, max_s=cap_s
    )
    notes = []
    trimmed = warmup_prefix(times)
    if trimmed:
        times = times[trimmed:] + run_loop(
            run, min_runs=trimmed, min_s=0.0, max_runs=trimmed, max_s=cap_s
        )
        notes.append(f"{trimmed} slow leading runs counted as warm-up")
    stats = latency_stats(times)
    if settings.retry_noisy and noisy(stats):
        again, again_cores = timed(
            run, min_runs=len(times), min_s=sum(times), max_runs=cap_runs, max_s=cap_s
        )
        before = noise(stats)
        if noise(latency_stats(again)) < before:
            times, cpu_cores = again, again_cores
        notes.append(
            f"timings were noisy (noise {before:.0%}): measured a second window of {len(again)} "
            f"runs and kept the {'second' if times is again else 'first'}, steadier one"
        )
    return Window(times, sum(times), cpu_cores, warmed + trimmed, tuple(notes))


def many_callers(runners: Sequence[Callable[[], Any]], settings: MeasureSettings) -> Window:
    """N caller threads, each with its own runner, all busy for the whole timed window.

    Each caller warms up on its own, then all start together. The window ends once
    ``min_runs`` requests have completed and ``min_time_s`` has passed (or a cap is hit); only
    requests completed inside it count.
    """
    count = len(runners)
    stop = threading.Event()
    start_line = threading.Barrier(count + 1)
    spans: list[list[tuple[float, float]]] = [[] for _ in runners]
    warmups = [0] * count
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        run = runners[index]
        try:
            warmups[index] = warm_up(run, settings)
            start_line.wait()
            own = spans[index]
            while not stop.is_set():
                t0 = clock()
                run()
                own.append((t0, clock()))
        except threading.BrokenBarrierError:
            return  # another caller failed during warm-up
        except BaseException as exc:  # onnxruntime's own exception classes included
            errors.append(exc)
            stop.set()
            start_line.abort()

    threads = [
        threading.Thread(target=caller, args=(i,), name=f"caller-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start_line.wait()
    cpu0, start = time.process_time(), clock()
    while not errors:
        time.sleep(POLL_S)
        elapsed = clock() - start
        done = sum(len(s) for s in spans)
        if done >= settings.max_runs or elapsed >= settings.max_time_s:
            break
        if done >= settings.min_runs and elapsed >= settings.min_time_s:
            break
    end = clock()
    cpu_cores = (time.process_time() - cpu0) / max(end - start, 1e-9)
    stop.set()
    for thread in threads:
        thread.join()  # a hung caller hangs here: the runner's trial timeout kills the worker
    if errors:
        raise errors[0]
    times = [t1 - t0 for own in spans for t0, t1 in own if t1 <= end]
    if not times:
        raise RuntimeError(
            f"no request completed within the {end - start:.1f} s timed window; "
            "raise --min-time or --trial-timeout"
        )
    return Window(times, end - start, cpu_cores, sum(warmups))


def block(runners: Sequence[Callable[[], Any]], settings: MeasureSettings) -> Window:
    """One short block of a warm worker's requests (a paired confirmation), no warm-up."""
    if len(runners) > 1:
        return many_callers(runners, replace(settings, warmup_runs=0, warmup_s=0.0))
    times, cpu_cores = timed(
        runners[0],
        min_runs=settings.min_runs,
        min_s=settings.min_time_s,
        max_runs=settings.max_runs,
        max_s=settings.max_time_s,
    )
    return Window(times, sum(times), cpu_cores, 0)


def merge(windows: Sequence[Window]) -> Window:
    """Several blocks of one shape as one window: all their requests, their summed time."""
    wall = sum(w.wall_s for w in windows)
    return Window(
        times=[t for w in windows for t in w.times],
        wall_s=wall,
        cpu_cores=sum(w.cpu_cores * w.wall_s for w in windows) / max(wall, 1e-9),
        warmup_runs=sum(w.warmup_runs for w in windows),
    )
