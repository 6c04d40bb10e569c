"""A trial under open-loop traffic: its server threads, its batcher, its capacity at the SLO.

Used only inside the measuring worker, after :func:`autotune.measure.worker.prepare` made the
config's sessions and ran their first inferences. The config decides how requests are served:
``server_threads`` threads (0: one per usable CPU, what an untuned server does) take them off
the queue and run them on session ``i % sessions``, joined into batches by Triton's dynamic
batcher when ``max_batch`` is above 1 (:mod:`autotune.measure.openloop`).

- At a fixed rate (``--rate``) or a replayed trace, one window; its latencies count from each
  request's scheduled arrival, unfinished ones at what they had waited by the close.
- For ``--objective capacity``, a bounded search over offered rates: seeded by the config's
  closed-loop throughput, it brackets the highest rate that keeps the latency quantile under
  the limit with at least 99 % of the requests answered, then narrows the bracket to about
  10 %. The figures are those of the highest rate that held.

A batching config first proves that a batched answer matches the unbatched ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autotune.config import (
    AccuracyCheck,
    LatencyStats,
    Measurement,
    MeasureSettings,
    OpenLoopFigures,
    RateProbe,
    Traffic,
    WorkerJob,
)
from autotune.machine import usable_cpus
from autotune.measure.openloop import (
    OpenLoopWindow,
    arrival_times,
    join_requests,
    serve_open_loop,
    split_rows,
)

clock = time.perf_counter
Feeds = dict[str, Any]
Run = Callable[[Feeds], Sequence[Any]]

MIN_REQUESTS = 200  # a window long enough for its p99 to rest on a couple of requests
MAX_WINDOW_S = 5.0
#: The closed-loop run that seeds the capacity search.
SEED = MeasureSettings(warmup_runs=0, warmup_s=0.0, min_runs=2, min_time_s=0.3)
MAX_PROBES = 7
RESOLUTION = 1.1  # the capacity search stops once the bracket is this narrow (hi / lo)
FIRST_PROBE = 0.8  # of the closed-loop throughput
QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def servers_of(server_threads: int) -> int:
    """How many server threads a config runs: its own number, or one per usable CPU."""
    return server_threads or usable_cpus()


def quantile_of(traffic: Traffic) -> float:
    return QUANTILES[traffic.quantile]


def check_batching(
    runs: Sequence[Run], requests: Sequence[Feeds], names: Sequence[str], accuracy: AccuracyCheck
) -> str:
    """Why batched answers differ from the unbatched ones beyond the accuracy guard's own
    tolerances or metric ("" when they do not): batching counts in the guard."""
    from autotune.measure.accuracy import compare

    chosen = list(requests[:4]) if len(requests) >= 2 else [requests[0]] * 2
    together = split_rows(runs[0](join_requests(chosen)), [1] * len(chosen))
    for k, (feeds, joined) in enumerate(zip(chosen, together, strict=True)):
        alone = dict(zip(names, runs[0](feeds), strict=True))
        result = compare(
            dict(zip(names, joined, strict=True)),
            {n: np.asarray(v) for n, v in alone.items() if isinstance(v, np.ndarray)},
            rtol=accuracy.rtol,
            atol=accuracy.atol,
            metric=accuracy.metric,
            threshold=accuracy.threshold,
        )
        if not result.ok:
            return (
                f"request {k} served in a batch of {len(chosen)} answers differently from alone "
                f"({result.message}): server-side batching changes this model's answers beyond "
                "the accuracy guard; loosen --rtol/--atol or --accuracy if that is acceptable"
            )
    return ""


def closed_loop_rate(runners: Sequence[Callable[[], Any]]) -> float:
    """Requests/s the config's callers complete back to back (one per server thread, as
    :func:`autotune.measure.callers.block` drives them): the capacity search's seed."""
    from autotune.measure.callers import block

    window = block(runners, SEED)
    return len(window.times) / max(window.wall_s, 1e-9)


class RateServer:
    """The config's way of serving: its sessions, server threads and batcher, at any rate."""

    def __init__(
        self, job: WorkerJob, runs: Sequence[Run], requests: Sequence[Feeds], seed: int
    ) -> None:
        self.job, self.runs, self.requests, self.seed = job, runs, requests, seed
        traffic = job.workload.traffic
        assert traffic is not None
        self.traffic = traffic
        self.servers = servers_of(job.config.server_threads)
        slo_s = (traffic.max_latency_ms or 1000.0) / 1e3
        self.drain_s = min(max(0.2, 2 * slo_s), 5.0)  # answers later than that are misses anyway

    def window_s(self, rate: float) -> float:
        return min(MAX_WINDOW_S, max(self.job.measure.min_time_s, MIN_REQUESTS / rate))

    def at(self, arrivals: np.ndarray, duration_s: float | None = None) -> OpenLoopWindow:
        config = self.job.config
        return serve_open_loop(
            self.runs,
            self.requests,
            arrivals,
            server_threads=self.servers,
            max_batch=config.max_batch,
            max_queue_delay_s=config.max_queue_delay_ms / 1e3,
            drain_s=self.drain_s,
            duration_s=duration_s,
        )

    def at_rate(self, rate: float) -> OpenLoopWindow:
        self.seed += 1  # each probe its own arrivals, reproducible from the job's seed
        length = self.window_s(rate)
        arrivals = arrival_times(
            rate,
            length,
            kind=self.traffic.arrivals,  # type: ignore[arg-type]
            seed=self.seed,
        )
        if not arrivals.size:
            arrivals = np.zeros(1)
        return self.at(arrivals, duration_s=length)

    def probe(self, window: OpenLoopWindow) -> RateProbe:
        traffic = self.traffic
        if traffic.max_latency_ms is None:  # a fixed rate: held when it was answered
            met = window.completed_fraction >= traffic.min_completed
        else:
            met = window.meets(traffic.max_latency_ms, quantile_of(traffic), traffic.min_completed)
        charged = window.charged_latencies_s or (0.0,)
        return RateProbe(
            offered_rate=window.offered_rate,
            achieved_rate=window.achieved_rate,
            latency_ms=float(np.quantile(charged, quantile_of(traffic))) * 1e3,
            completed=window.completed_fraction,
            met=met,
        )


def find_capacity(
    server: RateServer, seed_rate: float
) -> tuple[float | None, OpenLoopWindow, list[RateProbe]]:
    """The capacity: where the latency crosses the limit between the highest offered rate that
    held (as served, not the nominal one) and the next that did not (None: not even the lowest
    held); the window of the rate that held (else the lowest one's); every probe in order."""
    rate, lo, hi = FIRST_PROBE * seed_rate, 0.0, math.inf
    probes: list[RateProbe] = []
    held: OpenLoopWindow | None = None
    lowest: tuple[float, OpenLoopWindow] | None = None
    for _ in range(MAX_PROBES):
        window = server.at_rate(rate)
        probe = server.probe(window)
        probes.append(probe)
        if lowest is None or rate < lowest[0]:
            lowest = (rate, window)
        if probe.met and rate > lo:
            lo, held = rate, window
        elif not probe.met:
            hi = min(hi, rate)
        if math.isinf(hi):
            rate *= 1.5
        elif lo == 0.0:
            rate *= 0.5
        elif hi / lo <= RESOLUTION:
            break
        else:
            rate = math.sqrt(lo * hi)
    assert lowest is not None
    if held is None:
        return None, lowest[1], probes
    return between_rungs(probes, server.traffic), held, probes


def figures(
    window: OpenLoopWindow, servers: int, capacity: float | None, probes: Sequence[RateProbe]
) -> OpenLoopFigures:
    runs = window.batch_sizes
    return OpenLoopFigures(
        offered_rate=window.offered_rate,
        achieved_rate=window.achieved_rate,
        sent=window.sent,
        completed=window.completed,
        unfinished=window.unfinished,
        queue_depth_max=window.queue_depth_max,
        queue_depth_mean=round(window.queue_depth_mean, 3),
        mean_batch=round(sum(runs) / len(runs), 3) if runs else 0.0,
        late_dispatch_s=round(window.late_dispatch_s, 4),
        server_threads=servers,
        capacity=capacity,
        probes=tuple(probes),
    )


def serve_traffic(
    job: WorkerJob,
    runs: Sequence[Run],
    requests: Sequence[Feeds],
    callers: Sequence[Callable[[], Any]],
) -> tuple[OpenLoopWindow, OpenLoopFigures]:
    """Serve the job's traffic with its config: the window its figures come from, and them
    (``callers``, one per server thread, seed a capacity search closed-loop)."""
    server = RateServer(job, runs, requests, job.feeds.seed)
    traffic = server.traffic
    if traffic.trace:
        window = server.at(np.asarray(traffic.trace))
        return window, figures(window, server.servers, None, [server.probe(window)])
    if traffic.rate is not None:
        window = server.at_rate(traffic.rate)
        return window, figures(window, server.servers, None, [server.probe(window)])
    seed_rate = closed_loop_rate(callers)
    capacity, window, probes = find_capacity(server, seed_rate)
    return window, figures(window, server.servers, capacity, probes)


LADDER_MISSES = 2  # failed rates in a row that end a ladder: the ones above it fail too


def serve_ladder(
    job: WorkerJob,
    runs: Sequence[Run],
    requests: Sequence[Feeds],
    rates: Sequence[float],
    cycle: int,
) -> tuple[OpenLoopWindow, OpenLoopFigures]:
    """One window per offered rate, lowest first (a paired confirmation's block): with a
    capacity objective, the highest rate that held and its window, stopping after
    ``LADDER_MISSES`` failures in a row (a config that holds none goes below the ladder, up to
    ``BELOW_LADDER`` rates, each 1.5x lower); else the one rate's window. Every worker of a
    cycle gets the same arrivals at a rate (seeded by the cycle and the rate's place)."""
    server = RateServer(job, runs, requests, job.feeds.seed)
    ordered = sorted(rates)
    if not server.traffic.finds_capacity:
        server.seed = 1_000_003 * (cycle + 1)  # at_rate adds one
        window = server.at_rate(ordered[0])
        return window, figures(window, server.servers, None, [server.probe(window)])
    probes: list[RateProbe] = []
    windows: list[OpenLoopWindow] = []

    def probe_at(index: int, rate: float) -> bool:
        server.seed = 1_000_003 * (cycle + 1) + index  # at_rate adds one
        windows.append(server.at_rate(rate))
        probes.append(server.probe(windows[-1]))
        return probes[-1].met

    held: OpenLoopWindow | None = None
    misses = 0
    for index, rate in enumerate(ordered):
        if probe_at(index, rate):
            held, misses = windows[-1], 0
        else:
            misses += 1
            if misses >= LADDER_MISSES:
                break
    for k in range(1, BELOW_LADDER + 1 if held is None else 0):
        if probe_at(len(ordered) + k, ordered[0] / 1.5**k):
            held = windows[-1]
            break
    lowest = min(windows, key=lambda w: w.offered_rate)
    capacity = between_rungs(probes, server.traffic) if held is not None else None
    return held or lowest, figures(held or lowest, server.servers, capacity, probes)


def between_rungs(probes: Sequence[RateProbe], traffic: Traffic) -> float | None:
    """Where the latency quantile crosses the limit between the highest rate that held and
    the next one up that did not, on a log scale of latency (a ladder's rungs are 10-20 %
    apart; without this every capacity would be one of them). The rate that held when there
    is no failed rate above it, or the limit is not crossed between them."""
    held = [p for p in probes if p.met]
    if not held or traffic.max_latency_ms is None:
        return None
    top = max(held, key=lambda p: p.offered_rate)
    above = [p for p in probes if not p.met and p.offered_rate > top.offered_rate]
    if not above:
        return top.offered_rate
    miss = min(above, key=lambda p: p.offered_rate)
    limit = traffic.max_latency_ms
    if not (0 < top.latency_ms <= limit < miss.latency_ms) or not math.isfinite(miss.latency_ms):
        return top.offered_rate  # failed by unanswered requests, or a noisy crossing
    share = math.log(limit / top.latency_ms) / math.log(miss.latency_ms / top.latency_ms)
    return top.offered_rate + share * (miss.offered_rate - top.offered_rate)


BELOW_LADDER = 2


def ladder(capacities: Sequence[float], points: int = 7) -> tuple[float, ...]:
    """Offered rates a paired confirmation measures every contender at: ``points`` rates
    spaced evenly on a log scale from 0.6x the lowest capacity the search found to 1.3x the
    highest."""
    found = [c for c in capacities if c > 0]
    if not found:
        return ()
    lo, hi = 0.6 * min(found), 1.3 * max(found)
    step = (hi / lo) ** (1 / (points - 1))
    return tuple(round(lo * step**i, 3) for i in range(points))


def shared_rates(traffic: Traffic | None, measured: Sequence[object]) -> tuple[float, ...]:
    """The offered rates a paired confirmation measures every contender at, the same for all:
    the one ``--rate``, or a capacity's ladder around what ``measured`` (the contenders'
    earlier measurements) found; none for closed-loop callers or a replayed trace."""
    if traffic is None or traffic.trace:
        return ()
    if not traffic.finds_capacity:
        return (traffic.rate,) if traffic.rate else ()
    return ladder(
        [
            m.open_loop.capacity or 0.0
            for m in measured
            if isinstance(m, Measurement) and m.open_loop
        ]
    )


def window_stats(window: OpenLoopWindow) -> LatencyStats:
    """The window's latency figures, unfinished requests counted at their wait by the close."""
    from autotune.measure.stats import latency_stats

    return latency_stats(window.charged_latencies_s or (0.0,))
