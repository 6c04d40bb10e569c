"""The measuring process: one per trial, the only module that runs inference.

The runner starts ``python -m autotune.worker --job FILE --result-fd N`` with one WorkerJob as
JSON in FILE and reads one result document from file descriptor N. stdout and stderr stay free for
ONNX Runtime's own logging. Exit code 0 means a result was written, whatever it says.

Order of work: import onnxruntime (timed), create the session (timed), first inference (timed),
accuracy check against the baseline's outputs (a mismatch ends the trial before any timing), a
short warm-up, then timed runs until both minimums are met; leading timed runs that are still
slow outliers are counted as warm-up and replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.config import RESULT_SCHEMA, Measurement, WorkerJob

clock = time.perf_counter


class OutputMismatch(Exception):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def _loop(
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


def check_accuracy(job: WorkerJob, session: Any, run: Any) -> dict[str, float | None]:
    """Write the reference (baseline) or compare with it; raise OutputMismatch beyond tolerance."""
    from autotune.accuracy import compare, load_reference, save_reference
    from autotune.model import make_feeds
    from autotune.session import outputs_of

    check = job.accuracy
    names = [o.name for o in session.get_outputs()]
    if check.reference_path is None:
        return {}
    if check.write_batches:
        by_batch = {
            b: dict(zip(names, outputs_of(session, make_feeds(job.feeds, b)), strict=True))
            for b in check.write_batches
        }
        save_reference(check.reference_path, by_batch)
        return {"max_abs_err": 0.0, "max_rel_err": 0.0, "cosine": 1.0}
    reference = load_reference(check.reference_path, job.config.batch_size)
    if reference is None:
        return {}
    outputs = dict(zip(names, run.outputs(), strict=True))  # the first run's, on this trial's path
    result = compare(
        outputs,
        reference,
        rtol=check.rtol,
        atol=check.atol,
        metric=check.metric,
        threshold=check.threshold,
    )
    figures = {
        "max_abs_err": result.max_abs_err,
        "max_rel_err": result.max_rel_err,
        "cosine": result.cosine,
        "top1_agreement": result.top1_agreement,
    }
    if not result.ok:
        raise OutputMismatch(result.message, {**figures, "worst_output": result.worst_output})
    return figures


def measure(job: WorkerJob, import_s: float) -> Measurement:
    from autotune.model import make_feeds
    from autotune.session import Runner, create_session
    from autotune.stats import (
        SLOW_FIRST_RUN,
        instability,
        latency_stats,
        noise,
        noisy,
        warmup_prefix,
    )

    started = clock()
    settings = job.measure
    feeds = make_feeds(job.feeds, job.config.batch_size)
    t0 = clock()
    session = create_session(job.model_path, job.config)
    create_s = clock() - t0
    run = Runner(session, feeds, job.config)
    t0 = clock()
    run()
    first_run_s = clock() - t0
    accuracy = check_accuracy(job, session, run)
    warmup = _loop(
        run,
        min_runs=settings.warmup_runs,
        min_s=settings.warmup_s,
        max_runs=max(settings.warmup_runs, 1000),
        max_s=max(settings.warmup_s, 5.0),
    )
    cap_runs, cap_s = settings.max_runs, settings.max_time_s
    cpu0, wall0 = time.process_time(), clock()
    times = _loop(
        run, min_runs=settings.min_runs, min_s=settings.min_time_s, max_runs=cap_runs, max_s=cap_s
    )
    cpu_cores = (time.process_time() - cpu0) / max(clock() - wall0, 1e-9)  # every thread's time
    notes = []
    trimmed = warmup_prefix(times)
    if trimmed:
        times = times[trimmed:] + _loop(
            run, min_runs=trimmed, min_s=0.0, max_runs=trimmed, max_s=cap_s
        )
        notes.append(f"{trimmed} slow leading runs counted as warm-up")
    stats = latency_stats(times)
    if settings.retry_noisy and noisy(stats):
        cpu0, wall0 = time.process_time(), clock()
        again = _loop(run, min_runs=len(times), min_s=sum(times), max_runs=cap_runs, max_s=cap_s)
        again_cores = (time.process_time() - cpu0) / max(clock() - wall0, 1e-9)
        again_stats = latency_stats(again)
        before = noise(stats)
        if noise(again_stats) < before:
            times, stats, cpu_cores = again, again_stats, again_cores
        notes.append(
            f"timings were noisy (noise {before:.0%}): measured a second window of {len(again)} "
            f"runs and kept the {'second' if times is again else 'first'}, steadier one"
        )
    if first_run_s * 1e3 > SLOW_FIRST_RUN * stats.p50:
        notes.append(
            f"first inference took {first_run_s * 1e3:.1f} ms, "
            f"{first_run_s * 1e3 / stats.p50:.0f}x a steady run: it is part of startup"
        )
    timed_s = sum(times)
    return Measurement(
        batch_size=job.config.batch_size,
        import_s=import_s,
        create_s=create_s,
        first_run_s=first_run_s,
        latency_ms=stats,
        throughput=job.config.batch_size * len(times) / timed_s,
        timed_s=timed_s,
        warmup_runs=len(warmup) + trimmed,
        providers=tuple(session.get_providers()),
        work_s=clock() - started,
        unstable=instability(stats),
        notes=tuple(notes),
        cpu_cores=round(cpu_cores, 3),
        max_abs_err=accuracy.get("max_abs_err"),
        max_rel_err=accuracy.get("max_rel_err"),
        cosine=accuracy.get("cosine"),
        top1_agreement=accuracy.get("top1_agreement"),
    )


def _failed(kind: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "status": "failed",
        "kind": kind,
        "message": message,
        "details": details or {},
    }


def run_job(job: WorkerJob, import_s: float) -> dict[str, Any]:
    """The result document for one job. ONNX Runtime failures become data, not exits."""
    from autotune.session import ProviderFallbackError

    try:
        measurement = measure(job, import_s)
    except ProviderFallbackError as exc:
        return _failed("fallback", str(exc))
    except OutputMismatch as exc:
        return _failed("mismatch", str(exc), exc.details)
    except Exception as exc:  # onnxruntime raises its own pybind exception classes
        return _failed("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    measurement = replace(measurement, peak_rss_mb=own_peak_rss_mb())
    return {"schema": RESULT_SCHEMA, "status": "ok", "measurement": measurement.to_dict()}


def own_peak_rss_mb() -> float | None:
    """This worker's peak resident memory, from its own address space (Linux ``VmHWM``).

    Not the parent's ``wait4`` figure: on Linux a child's ``ru_maxrss`` starts from the memory it
    had before ``exec``, a copy of the tuner's, so every trial would read at least the tuner's
    own size. None where /proc is missing; the runner then falls back to ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autotune.worker")
    parser.add_argument("--job", required=True, help="WorkerJob JSON file")
    parser.add_argument("--result-fd", type=int, required=True)
    args = parser.parse_args(argv)
    t0 = clock()
    import onnxruntime  # noqa: F401  (timed: part of every deployment's startup)

    import_s = clock() - t0
    job = WorkerJob.from_json(Path(args.job).read_text())
    document = run_job(job, import_s)
    with os.fdopen(args.result_fd, "w") as out:
        json.dump(document, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
