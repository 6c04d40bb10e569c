"""The concurrency sweep after the search, as Triton Model Analyzer draws it.

The chosen config and ONNX Runtime's defaults are measured at concurrency 1, 2, 4, ... up to
twice the usable CPUs, interleaved (defaults, chosen, next level, ...), so the user sees how each
scales and where the chosen one stops meeting a p99 limit. A config's sessions are capped at the
callers of each level: a session without a caller does nothing but hold memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from autotune.config import (
    ConcurrencySweep,
    Measurement,
    ShapePoint,
    SweepPoint,
    TrialConfig,
    TrialOutcome,
    Workload,
)


def sweep_levels(cpus: int, concurrency: int = 1) -> tuple[int, ...]:
    """1, 2, 4, ... up to twice the usable CPUs, with the study's own concurrency included."""
    levels = {1, concurrency}
    level = 2
    while level <= 2 * cpus:
        levels.add(level)
        level *= 2
    return tuple(sorted(levels))


def run_sweep(
    baseline: tuple[int, TrialConfig],
    chosen: tuple[int, TrialConfig],
    *,
    levels: Sequence[int],
    shapes: Sequence[ShapePoint],
    measure: Callable[[TrialConfig, Workload], TrialOutcome],
    max_latency_ms: float | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
    stop: threading.Event | None = None,
) -> ConcurrencySweep:
    """Measure both configs at every level (the chosen one once when it is the baseline)."""
    contenders = [("baseline", *baseline)]
    if chosen[0] != baseline[0]:
        contenders.append(("chosen", *chosen))
    points: list[SweepPoint] = []
    for level in levels:
        for role, number, config in contenders:
            if stop is not None and stop.is_set():
                break
            sessions = min(config.sessions, level)
            outcome = measure(
                replace(config, sessions=sessions),
                Workload(concurrency=level, shapes=tuple(shapes)),
            )
            point = SweepPoint(
                role=role,  # type: ignore[arg-type]
                trial_number=number,
                concurrency=level,
                sessions=sessions,
                measurement=outcome if isinstance(outcome, Measurement) else None,
                failure=None
                if isinstance(outcome, Measurement)
                else f"{outcome.kind}: {outcome.message[:200]}",
            )
            points.append(point)
            if on_point is not None:
                on_point(point)
    return ConcurrencySweep(
        points=tuple(points),
        max_latency_ms=max_latency_ms,
        highest_ok=highest_within(points, contenders[-1][0], max_latency_ms),
    )


def highest_within(
    points: Sequence[SweepPoint], role: str, max_latency_ms: float | None
) -> int | None:
    """The highest concurrency at which ``role`` met the p99 limit (None: no limit, or never)."""
    if max_latency_ms is None:
        return None
    ok = [
        p.concurrency
        for p in points
        if p.role == role and p.measurement and p.measurement.latency_ms.p99 <= max_latency_ms
    ]
    return max(ok, default=None)


def sweep_verdict(sweep: ConcurrencySweep) -> str | None:
    """With a p99 limit: the highest concurrency the chosen config served within it."""
    if sweep.max_latency_ms is None:
        return None
    if sweep.highest_ok is None:
        return (
            f"p99 limit {sweep.max_latency_ms:g} ms: not met at any measured concurrency; "
            "lower the load or relax --max-latency-ms"
        )
    return (
        f"p99 limit {sweep.max_latency_ms:g} ms: met up to {sweep.highest_ok} concurrent "
        "callers (the highest measured level within it)"
    )
