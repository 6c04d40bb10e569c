"""The measuring process: one per trial, the only module that runs inference.

The runner starts ``python -m autotune.worker --job FILE --result-fd N`` with one WorkerJob as
JSON in FILE and reads one result document from file descriptor N. stdout and stderr stay free for
ONNX Runtime's own logging. Exit code 0 means a result was written, whatever it says.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autotune.config import RESULT_SCHEMA, Measurement, MeasureSettings, WorkerJob


def _loop(
    run: Callable[[], Any], *, min_runs: int, min_s: float, max_runs: int, max_s: float
) -> list[float]:
    """Run until both minimums are met or either cap is hit; per-run times in seconds."""
    clock = time.perf_counter
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


def measure(job: WorkerJob, import_s: float) -> Measurement:
    from autotune.model import make_feeds
    from autotune.session import create_session, make_runner
    from autotune.stats import latency_stats

    settings: MeasureSettings = job.measure
    feeds = make_feeds(job.feeds, job.config.batch_size)
    t0 = time.perf_counter()
    session = create_session(job.model_path, job.config)
    create_s = time.perf_counter() - t0
    run = make_runner(session, feeds, job.config)
    t0 = time.perf_counter()
    run()
    first_run_s = time.perf_counter() - t0
    warmup = _loop(
        run,
        min_runs=settings.warmup_runs,
        min_s=settings.warmup_s,
        max_runs=max(settings.warmup_runs, 1000),
        max_s=max(settings.warmup_s, 5.0),
    )
    times = _loop(
        run,
        min_runs=settings.min_runs,
        min_s=settings.min_time_s,
        max_runs=settings.max_runs,
        max_s=settings.max_time_s,
    )
    timed_s = sum(times)
    return Measurement(
        batch_size=job.config.batch_size,
        import_s=import_s,
        create_s=create_s,
        first_run_s=first_run_s,
        latency_ms=latency_stats(times),
        throughput=job.config.batch_size * len(times) / timed_s,
        timed_s=timed_s,
        warmup_runs=len(warmup),
        providers=tuple(session.get_providers()),
    )


def run_job(job: WorkerJob, import_s: float) -> dict[str, Any]:
    """The result document for one job. ONNX Runtime failures become data, not exits."""
    from autotune.session import ProviderFallbackError

    try:
        measurement = measure(job, import_s)
    except ProviderFallbackError as exc:
        return {
            "schema": RESULT_SCHEMA,
            "status": "failed",
            "kind": "fallback",
            "message": str(exc),
        }
    except Exception as exc:  # onnxruntime raises its own pybind exception classes
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return {"schema": RESULT_SCHEMA, "status": "failed", "kind": "error", "message": message}
    return {"schema": RESULT_SCHEMA, "status": "ok", "measurement": measurement.to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autotune.worker")
    parser.add_argument("--job", required=True, help="WorkerJob JSON file")
    parser.add_argument("--result-fd", type=int, required=True)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    import onnxruntime  # noqa: F401  (timed: part of every deployment's startup)

    import_s = time.perf_counter() - t0
    job = WorkerJob.from_json(Path(args.job).read_text())
    document = run_job(job, import_s)
    with os.fdopen(args.result_fd, "w") as out:
        json.dump(document, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
