"""The measuring process: one per trial, the only module that runs inference.

The runner starts ``python -m autotune.measure.worker --job FILE --result-fd N`` with one WorkerJob as
JSON in FILE and reads one result document from file descriptor N. stdout and stderr stay free for
ONNX Runtime's own logging. Exit code 0 means a result was written, whatever it says.

Order of work: import onnxruntime (timed), create the config's sessions (timed), then for each
shape of the workload: each session's first inference at that shape (timed, part of startup),
the accuracy check over the guarded pool batches against the baseline's outputs (a mismatch ends
the trial before any timing), then the load (:mod:`autotune.measure.callers`): one caller, or the
workload's concurrent callers sharing the sessions, warm-up first, then a timed window. Under
open-loop traffic (``--rate``, ``--trace``, capacity) the config's server threads serve
requests arriving on their own schedule instead (:mod:`autotune.measure.serving`).

With ``--serve FD`` the worker stays warm for a paired confirmation (:mod:`autotune.confirm.duel`): it
prepares and warms up once, then runs one short block per command read from FD.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from autotune.config import (
    RESULT_SCHEMA,
    LatencyStats,
    Measurement,
    MeasureSettings,
    ShapeFigures,
    ShapePoint,
    WorkerJob,
)

if TYPE_CHECKING:
    from autotune.config import OpenLoopFigures
    from autotune.measure.callers import Window
    from autotune.measure.openloop import OpenLoopWindow
    from autotune.measure.session import Runner

T = TypeVar("T")

clock = time.perf_counter


class OutputMismatch(Exception):
    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def write_reference(job: WorkerJob, session: Any, points: Sequence[ShapePoint | None]) -> None:
    """The baseline's outputs for every batch size, pooled batch and shape the guard compares."""
    from autotune.measure.accuracy import reference_key, save_reference
    from autotune.measure.session import outputs_of
    from autotune.model import make_feeds

    names = [o.name for o in session.get_outputs()]
    by_key: dict[int | str, dict[str, Any]] = {}
    for point in points:
        for batch in job.accuracy.write_batches:
            for slot in range(guarded_slots(job, batch)):
                feeds = make_feeds(job.feeds, batch, index=slot, dims=point.dims if point else None)
                key = reference_key(batch, slot, point.label if point else "")
                by_key[key] = dict(zip(names, outputs_of(session, feeds), strict=True))
    assert job.accuracy.reference_path is not None
    save_reference(job.accuracy.reference_path, by_key)


def guarded_slots(job: WorkerJob, batch: int) -> int:
    """Pool batches the guard compares: those covering the first ACCURACY_ROWS samples."""
    from autotune.measure.accuracy import ACCURACY_ROWS
    from autotune.model import pool_batches

    rows = min(job.feeds.pool_rows, ACCURACY_ROWS)
    return min(pool_batches(job.feeds, batch), -(-rows // batch))


def check_accuracy(job: WorkerJob, run: Runner, point: ShapePoint | None) -> dict[str, Any]:
    """Compare this trial's outputs over the guarded pool batches with the baseline's.

    The outputs come from runs on this trial's own path (IO binding included). Raises
    OutputMismatch beyond tolerance, naming the pool batch and shape.
    """
    from autotune.measure.accuracy import (
        compare,
        judged,
        load_judge,
        load_references,
        reference_key,
    )

    check = job.accuracy
    if check.reference_path is None or check.write_batches:
        return {}
    references = {
        key: judged(ref, check.outputs, floats_only=not check.judge)
        for key, ref in load_references(check.reference_path).items()
    }
    judge = load_judge(check.judge) if check.judge else None
    names = [o.name for o in run.session.get_outputs()]
    batch = job.config.batch_size
    slots = guarded_slots(job, batch)
    worst: dict[str, Any] = {}
    top1s: list[float] = []
    for slot in range(slots):
        key = reference_key(batch, slot, point.label if point else "")
        reference = references.get(key)
        if reference is None:
            continue
        run.run_slot(slot)
        outputs = dict(zip(names, run.outputs(), strict=True))
        result = compare(
            outputs,
            reference,
            rtol=check.rtol,
            atol=check.atol,
            metric=check.metric,
            threshold=check.threshold,
            mask=run.pool[slot].get(check.mask_input) if check.mask_input else None,
            judge=judge,
        )
        figures = {
            "max_abs_err": max(result.max_abs_err, worst.get("max_abs_err", 0.0)),
            "max_rel_err": max(result.max_rel_err, worst.get("max_rel_err", 0.0)),
            "cosine": _lowest(result.cosine, worst.get("cosine")),
        }
        if result.top1_agreement is not None:
            top1s.append(result.top1_agreement)
        figures["top1_agreement"] = sum(top1s) / len(top1s) if top1s else None
        figures["skipped"] = sorted(set(worst.get("skipped", [])) | set(result.skipped))
        worst = figures
        if not result.ok:
            where = f"pool batch {slot + 1} of {slots}" + (
                f", shape {point.label}" if point else ""
            )
            raise OutputMismatch(
                f"{result.message} ({where})",
                {**figures, "worst_output": result.worst_output, "pool_batch": slot},
            )
    return worst


def _lowest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _aggregate(shapes: Sequence[ShapeFigures]) -> tuple[LatencyStats, float]:
    """A shape mix's figures: per-shape latencies averaged by weight, and the throughput of
    a stream whose per-sample time is the weighted mean of the shapes' (weights sum to 1)."""
    total = sum(f.weight for f in shapes) or 1.0
    weights = [f.weight / total for f in shapes]
    mixed = {}
    for name in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max", "mad"):
        mixed[name] = sum(
            w * getattr(f.latency_ms, name) for w, f in zip(weights, shapes, strict=True)
        )
    stats = LatencyStats(
        **mixed,
        count=sum(f.latency_ms.count for f in shapes),
        outliers=sum(f.latency_ms.outliers for f in shapes),
    )
    per_sample = sum(w / f.throughput for w, f in zip(weights, shapes, strict=True))
    return stats, 1.0 / per_sample


@dataclass
class Stage:
    """One shape of the workload, ready to measure: its callers' runners, its first runs."""

    point: ShapePoint | None
    runners: list[Runner]
    first_run_s: float


@dataclass
class Prepared:
    sessions: list[Any]
    stages: list[Stage]
    create_s: float
    accuracy: dict[str, Any]
    started: float
    notes: list[str]  # what the accuracy guard could not compare


def prepare(job: WorkerJob) -> Prepared:
    """Create the sessions; per shape, the callers' runners, each session's first run and the
    accuracy check (OutputMismatch ends the trial before any timing)."""
    from autotune.measure.session import Runner, create_session
    from autotune.model import make_feeds, pool_batches

    started = clock()
    config, workload = job.config, job.workload
    callers = workload.concurrency
    if workload.traffic is not None:  # open loop: the config's server threads call the sessions
        from autotune.measure.serving import servers_of

        callers = servers_of(config.server_threads)
    if config.sessions > callers:
        raise ValueError(
            f"the config asks for {config.sessions} sessions but the workload has only "
            f"{callers} concurrent callers"
        )
    t0 = clock()
    sessions = [
        create_session(job.model_path, config, feeds=job.feeds, shapes=workload.shapes)
        for _ in range(config.sessions)
    ]
    create_s = clock() - t0
    points: Sequence[ShapePoint | None] = workload.shapes or (None,)
    if job.accuracy.reference_path and job.accuracy.write_batches:
        write_reference(job, sessions[0], points)
    batch = config.batch_size
    accuracy: dict[str, Any] = {}
    notes: list[str] = []
    stages = []
    for point in points:
        dims = point.dims if point else None
        pool = [
            make_feeds(job.feeds, batch, index=k, dims=dims)
            for k in range(pool_batches(job.feeds, batch))
        ]
        runners = [
            Runner(
                sessions[i % len(sessions)],
                pool,
                config,
                start=i * len(pool) // callers,
            )
            for i in range(callers)
        ]
        t0 = clock()
        for runner in runners[: len(sessions)]:  # each session's first run at this shape
            runner()
        first = clock() - t0
        for key, value in check_accuracy(job, runners[0], point).items():
            if key == "skipped":
                notes += [f"accuracy guard skipped output {why}" for why in value]
                continue
            if value is None:
                continue
            lowest = key in ("cosine", "top1_agreement")
            old = accuracy.get(key, value)
            accuracy[key] = min(old, value) if lowest else max(old, value)
        stages.append(Stage(point, runners, first))
    return Prepared(sessions, stages, create_s, accuracy, started, sorted(set(notes)))


def assemble(
    job: WorkerJob, prepared: Prepared, windows: Sequence[Window], import_s: float
) -> Measurement:
    """The measurement of one window per shape (a shape mix aggregated by weight)."""
    from autotune.measure.stats import SLOW_FIRST_RUN, instability, latency_stats

    batch = job.config.batch_size
    shapes: list[ShapeFigures] = []
    notes: list[str] = list(prepared.notes)
    unstable: list[str] = []
    for stage, window in zip(prepared.stages, windows, strict=True):
        point, first = stage.point, stage.first_run_s
        stats = latency_stats(window.times)
        label = f"shape {point.label}: " if point else ""
        notes += [label + n for n in window.notes]
        unstable += [label + u for u in instability(stats)]
        if first * 1e3 > SLOW_FIRST_RUN * stats.p50:
            notes.append(
                f"{label}first inference took {first * 1e3:.1f} ms, "
                f"{first * 1e3 / stats.p50:.0f}x a steady run: it is part of startup"
            )
        shapes.append(
            ShapeFigures(
                label=point.label if point else "",
                weight=point.weight if point else 1.0,
                latency_ms=stats,
                throughput=window.throughput(batch),
                first_run_s=first,
            )
        )
    if len(shapes) == 1:
        stats, throughput = shapes[0].latency_ms, shapes[0].throughput
        per_shape: tuple[ShapeFigures, ...] = ()
    else:
        (stats, throughput), per_shape = _aggregate(shapes), tuple(shapes)
    timed_s = sum(w.wall_s for w in windows)
    accuracy = prepared.accuracy
    return Measurement(
        batch_size=batch,
        import_s=import_s,
        create_s=prepared.create_s,
        first_run_s=sum(s.first_run_s for s in prepared.stages),
        latency_ms=stats,
        throughput=throughput,
        timed_s=timed_s,
        warmup_runs=sum(w.warmup_runs for w in windows),
        providers=tuple(prepared.sessions[0].get_providers()),
        work_s=clock() - prepared.started,
        unstable=tuple(unstable),
        notes=tuple(notes),
        cpu_cores=round(sum(w.cpu_cores * w.wall_s for w in windows) / max(timed_s, 1e-9), 3),
        max_abs_err=accuracy.get("max_abs_err"),
        max_rel_err=accuracy.get("max_rel_err"),
        cosine=accuracy.get("cosine"),
        top1_agreement=accuracy.get("top1_agreement"),
        concurrency=job.workload.concurrency,
        per_shape=per_shape,
    )


def open_loop_requests(job: WorkerJob) -> list[dict[str, Any]]:
    """The requests open-loop traffic cycles through: the pool's batches at each shape of the
    workload, the shapes interleaved by weight (smooth weighted round robin)."""
    from autotune.model import make_feeds, pool_batches

    batch = job.config.batch_size
    points: Sequence[ShapePoint | None] = job.workload.shapes or (None,)
    pools = [
        [
            make_feeds(job.feeds, batch, index=k, dims=point.dims if point else None)
            for k in range(pool_batches(job.feeds, batch))
        ]
        for point in points
    ]
    weights = [point.weight if point else 1.0 for point in points]
    credit = [0.0] * len(points)
    taken = [0] * len(points)
    requests = []
    for _ in range(max(len(points) * 8, max(len(p) for p in pools))):
        credit = [c + w for c, w in zip(credit, weights, strict=True)]
        pick = credit.index(max(credit))
        credit[pick] -= sum(weights)
        requests.append(pools[pick][taken[pick] % len(pools[pick])])
        taken[pick] += 1
    return requests


def open_loop_setup(job: WorkerJob, prepared: Prepared) -> tuple[list[Any], list[dict[str, Any]]]:
    """The sessions' run functions and the requests, every session warmed up; a batching
    config's batched answers checked against the unbatched ones (OutputMismatch)."""
    from autotune.measure.serving import check_batching
    from autotune.measure.session import run_function

    runs = [run_function(session) for session in prepared.sessions]
    requests = open_loop_requests(job)
    for run in runs:  # a short warm-up of every session
        for feeds in requests[:OPEN_LOOP_WARMUP]:
            run(feeds)
    if job.config.max_batch > 1:
        names = [o.name for o in prepared.sessions[0].get_outputs()]
        why = check_batching(runs, requests, names, job.accuracy)
        if why:
            raise OutputMismatch(why, {"batching": True, "max_batch": job.config.max_batch})
    return runs, requests


OPEN_LOOP_WARMUP = 3  # requests per session before any window


def open_loop_measurement(
    job: WorkerJob,
    prepared: Prepared,
    import_s: float,
    window: OpenLoopWindow,
    figures: OpenLoopFigures,
) -> Measurement:
    """The trial's figures from the open-loop window they come from."""
    from autotune.measure.serving import window_stats

    accuracy = prepared.accuracy
    return Measurement(
        batch_size=job.config.batch_size,
        import_s=import_s,
        create_s=prepared.create_s,
        first_run_s=sum(s.first_run_s for s in prepared.stages),
        latency_ms=window_stats(window),
        throughput=window.samples / window.wall_s,
        timed_s=window.wall_s,
        warmup_runs=OPEN_LOOP_WARMUP,
        providers=tuple(prepared.sessions[0].get_providers()),
        work_s=clock() - prepared.started,
        notes=tuple(prepared.notes),
        cpu_cores=round(window.cpu_cores, 3),
        max_abs_err=accuracy.get("max_abs_err"),
        max_rel_err=accuracy.get("max_rel_err"),
        cosine=accuracy.get("cosine"),
        top1_agreement=accuracy.get("top1_agreement"),
        concurrency=figures.server_threads,
        open_loop=figures,
    )


def measure_open_loop(job: WorkerJob, prepared: Prepared, import_s: float) -> Measurement:
    """The trial under open-loop traffic (:mod:`autotune.measure.serving`)."""
    from autotune.measure.serving import serve_traffic

    runs, requests = open_loop_setup(job, prepared)
    window, figures = serve_traffic(job, runs, requests, prepared.stages[0].runners)
    return open_loop_measurement(job, prepared, import_s, window, figures)


def serve_open_loop(
    job: WorkerJob,
    prepared: Prepared,
    import_s: float,
    commands: TextIO,
    answer: Callable[[dict[str, Any]], None],
) -> None:
    """A warm worker under open-loop traffic: each block is one window per offered rate in
    the command (the same arrivals for every worker of a cycle); ``quit`` answers with the
    block of median capacity (or p99) and this process's peak memory."""
    from autotune.measure.serving import serve_ladder

    setup = _guard(lambda: open_loop_setup(job, prepared))
    if isinstance(setup, dict):
        answer(setup)
        return
    runs, requests = setup
    answer({"schema": RESULT_SCHEMA, "status": "ready", "create_s": prepared.create_s})
    measured: list[Measurement] = []
    for line in commands:
        command = json.loads(line)
        if command.get("op") == "quit":
            if measured:
                ranked = sorted(measured, key=_served)
                middle = replace(ranked[len(ranked) // 2], peak_rss_mb=own_peak_rss_mb())
                answer({"schema": RESULT_SCHEMA, "status": "ok", "measurement": middle.to_dict()})
            return
        rates, cycle = [float(r) for r in command["rates"]], int(command.get("cycle", 0))

        def one_block(rates: list[float] = rates, cycle: int = cycle) -> Measurement:
            window, figures = serve_ladder(job, runs, requests, rates, cycle)
            return open_loop_measurement(job, prepared, import_s, window, figures)

        result = _guard(one_block)
        if not isinstance(result, Measurement):
            answer(result)
            return
        measured.append(result)
        answer({"schema": RESULT_SCHEMA, "status": "ok", "measurement": result.to_dict()})


def _served(m: Measurement) -> tuple[float, float]:
    """How well a block served: its capacity, then its p99 (lower is better)."""
    capacity = m.open_loop.capacity if m.open_loop is not None else None
    return (capacity or 0.0, -m.latency_ms.p99)


def measure(job: WorkerJob, import_s: float) -> Measurement:
    from autotune.measure.callers import many_callers, one_caller

    prepared = prepare(job)
    if job.workload.traffic is not None:
        return measure_open_loop(job, prepared, import_s)
    windows = [
        one_caller(stage.runners[0], job.measure)
        if len(stage.runners) == 1
        else many_callers(stage.runners, job.measure)
        for stage in prepared.stages
    ]
    return assemble(job, prepared, windows, import_s)


def serve(job: WorkerJob, import_s: float, commands: TextIO, out: TextIO) -> None:
    """A warm worker for a paired confirmation: prepare and warm up once, then run one block
    per ``{"op": "block", "seconds": S, "min_runs": N}`` line and answer each with its
    measurement; ``{"op": "quit"}`` answers with all blocks as one measurement and this
    process's peak memory. One JSON line per answer; a failure answers and ends the worker."""
    from autotune.measure.callers import block, merge, warm_up

    def answer(document: dict[str, Any]) -> None:
        out.write(json.dumps(document) + "\n")
        out.flush()

    document = _guard(lambda: prepare(job))
    if not isinstance(document, Prepared):
        answer(document)
        return
    prepared = document
    if job.workload.traffic is not None:
        serve_open_loop(job, prepared, import_s, commands, answer)
        return
    for stage in prepared.stages:
        for runner in stage.runners:
            warm_up(runner, job.measure)
    answer({"schema": RESULT_SCHEMA, "status": "ready", "create_s": prepared.create_s})
    blocks: list[list[Window]] = [[] for _ in prepared.stages]
    for line in commands:
        command = json.loads(line)
        if command.get("op") == "quit":
            if blocks[0]:
                total = assemble(job, prepared, [merge(b) for b in blocks], import_s)
                total = replace(total, peak_rss_mb=own_peak_rss_mb())
                answer(
                    {
                        "schema": RESULT_SCHEMA,
                        "status": "ok",
                        "measurement": total.to_dict(),
                    }
                )
            return
        share = float(command["seconds"]) / len(prepared.stages)
        settings = MeasureSettings(
            warmup_runs=0,
            warmup_s=0.0,
            min_runs=int(command.get("min_runs", 3)),
            min_time_s=share,
            max_time_s=max(5.0, 20 * share),
        )

        def one_block(settings: MeasureSettings = settings) -> Measurement:
            windows = [block(stage.runners, settings) for stage in prepared.stages]
            for own, window in zip(blocks, windows, strict=True):
                own.append(window)
            return assemble(job, prepared, windows, import_s)

        result = _guard(one_block)
        if not isinstance(result, Measurement):
            answer(result)
            return
        answer({"schema": RESULT_SCHEMA, "status": "ok", "measurement": result.to_dict()})


def _failed(kind: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "status": "failed",
        "kind": kind,
        "message": message,
        "details": details or {},
    }


def _guard(action: Callable[[], T]) -> T | dict[str, Any]:
    """``action()``, or the failure document of what it raised. ONNX Runtime failures are data."""
    from autotune.measure.session import ProviderFallbackError

    try:
        return action()
    except ProviderFallbackError as exc:
        return _failed("fallback", str(exc))
    except OutputMismatch as exc:
        return _failed("mismatch", str(exc), exc.details)
    except Exception as exc:  # onnxruntime raises its own pybind exception classes
        return _failed("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}")


def run_job(job: WorkerJob, import_s: float) -> dict[str, Any]:
    """The result document for one job."""
    measurement = _guard(lambda: measure(job, import_s))
    if not isinstance(measurement, Measurement):
        return measurement
    measurement = replace(measurement, peak_rss_mb=own_peak_rss_mb())
    return {
        "schema": RESULT_SCHEMA,
        "status": "ok",
        "measurement": measurement.to_dict(),
    }


def own_peak_rss_mb() -> float | None:
    """This worker's peak resident memory, from its own address space (Linux ``VmHWM``).

    Not the parent's ``wait4`` figure: on Linux a child's ``ru_maxrss`` starts from the memory it
    had before ``exec``, a copy of the tuner's, so every trial would read at least the tuner's
    own size. None where /proc is missing; the runner then falls back to ``ru_maxrss``.
    """
    try:
        with Path("/proc/self/status").open() as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autotune.measure.worker")
    parser.add_argument("--job", required=True, help="WorkerJob JSON file")
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument(
        "--serve",
        type=int,
        metavar="FD",
        help="stay warm: read block commands from this fd",
    )
    args = parser.parse_args(argv)
    t0 = clock()
    import onnxruntime  # noqa: F401  (timed: part of every deployment's startup)

    import_s = clock() - t0
    job = WorkerJob.from_json(Path(args.job).read_text())
    if args.serve is not None:
        with (
            os.fdopen(args.serve, "r") as commands,
            os.fdopen(args.result_fd, "w") as out,
        ):
            serve(job, import_s, commands, out)
        return 0
    document = run_job(job, import_s)
    with os.fdopen(args.result_fd, "w") as out:
        json.dump(document, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
