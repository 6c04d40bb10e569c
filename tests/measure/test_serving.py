"""A trial under open-loop traffic: real workers at a rate, the capacity search, the batcher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autotune.config import (
    AccuracyCheck,
    Measurement,
    MeasureSettings,
    RateProbe,
    Traffic,
    TrialConfig,
    TrialFailure,
    WorkerJob,
    Workload,
)
from autotune.measure.openloop import OpenLoopWindow
from autotune.measure.runner import run_trial
from autotune.measure.serving import (
    MAX_PROBES,
    RESOLUTION,
    RateServer,
    between_rungs,
    find_capacity,
)
from autotune.model import read_model, resolve_inputs

QUICK = MeasureSettings(warmup_runs=1, warmup_s=0.0, min_runs=5, min_time_s=0.2)
ONE_THREAD = {"intra_op_num_threads": 1}


def _job(model: Path, config: TrialConfig, traffic: Traffic) -> WorkerJob:
    plan = resolve_inputs(read_model(model)).plan
    return WorkerJob(str(model), config, plan, QUICK, AccuracyCheck(), Workload(traffic=traffic))


def test_a_fixed_rate_is_served_and_every_request_accounted_for(magika: Path) -> None:
    config = TrialConfig(session_options=ONE_THREAD, server_threads=2)
    outcome = run_trial(_job(magika, config, Traffic(rate=50.0)), timeout_s=120)
    assert isinstance(outcome, Measurement), outcome
    figures = outcome.open_loop
    assert figures is not None and figures.capacity is None
    assert figures.sent == figures.completed + figures.unfinished
    assert figures.server_threads == 2 and outcome.concurrency == 2
    assert figures.mean_batch == 1.0  # no batcher
    assert len(figures.probes) == 1 and figures.probes[0].offered_rate == figures.offered_rate
    assert outcome.latency_ms.count == figures.sent  # unfinished ones count, at their wait
    # the figures survive the trip through JSON (the study, best.json)
    assert Measurement.from_dict(outcome.to_dict()) == outcome


def test_the_capacity_search_reports_the_highest_rate_that_held(magika: Path) -> None:
    traffic = Traffic(max_latency_ms=200.0)
    config = TrialConfig(session_options=ONE_THREAD, server_threads=2)
    outcome = run_trial(_job(magika, config, traffic), timeout_s=300)
    assert isinstance(outcome, Measurement), outcome
    figures = outcome.open_loop
    assert figures is not None and 1 <= len(figures.probes) <= MAX_PROBES
    held = [p.offered_rate for p in figures.probes if p.met]
    if figures.capacity is None:
        assert not held
    else:  # between the highest rate that held and the next one up that did not
        above = [p.offered_rate for p in figures.probes if not p.met and p.offered_rate > max(held)]
        assert max(held) <= figures.capacity < min(above, default=math.inf)
        assert figures.offered_rate == max(held)  # the figures are that window's
        assert figures.completed / figures.sent >= traffic.min_completed


def test_the_batcher_joins_requests_whose_answers_hold(tiny_model: Path) -> None:
    config = TrialConfig(
        session_options=ONE_THREAD, server_threads=1, max_batch=8, max_queue_delay_ms=20.0
    )
    outcome = run_trial(_job(tiny_model, config, Traffic(rate=400.0)), timeout_s=120)
    assert isinstance(outcome, Measurement), outcome
    assert outcome.open_loop is not None and outcome.open_loop.mean_batch > 1


def test_batching_that_changes_the_answers_is_a_mismatch(
    batch_mixing_model: tuple[Path, Path],
) -> None:
    model, pool = batch_mixing_model
    plan = resolve_inputs(read_model(model), data_path=str(pool)).plan
    config = TrialConfig(server_threads=1, max_batch=4, max_queue_delay_ms=1.0)
    job = WorkerJob(
        str(model), config, plan, QUICK, AccuracyCheck(), Workload(traffic=Traffic(rate=20.0))
    )
    outcome = run_trial(job, timeout_s=120)
    assert isinstance(outcome, TrialFailure) and outcome.kind == "mismatch", outcome
    assert "served in a batch of 4 answers differently from alone" in outcome.message


def _window(rate: float, capacity: float) -> OpenLoopWindow:
    """A constructed window: every request answered in 1 ms below ``capacity``, none above."""
    sent = 200
    fast = rate <= capacity
    return OpenLoopWindow(
        offered_rate=rate,
        achieved_rate=rate if fast else capacity,
        latencies_s=(0.001,) * sent if fast else (),
        sent=sent,
        completed=sent if fast else 0,
        unfinished=0 if fast else sent,
        duration_s=sent / rate,
        wall_s=sent / rate,
        queue_depth_max=0,
        queue_depth_mean=0.0,
        batch_sizes=(1,) * sent,
        samples=sent,
        cpu_cores=1.0,
        late_dispatch_s=0.0,
        unfinished_waits_s=() if fast else (1.0,) * sent,
    )


class _Constructed(RateServer):
    """The capacity search's server side with constructed windows: a config that holds the
    SLO exactly up to ``capacity`` requests/s."""

    def __init__(self, capacity: float) -> None:
        self.traffic = Traffic(max_latency_ms=10.0)
        self.capacity = capacity
        self.rates: list[float] = []

    def at_rate(self, rate: float) -> OpenLoopWindow:
        self.rates.append(rate)
        return _window(rate, self.capacity)


@pytest.mark.parametrize(("seed_rate", "capacity"), [(100, 90), (100, 400), (100, 20), (50, 49)])
def test_the_rate_search_brackets_the_capacity_within_its_resolution(
    seed_rate: float, capacity: float
) -> None:
    server = _Constructed(capacity)
    found, window, probes = find_capacity(server, seed_rate)
    assert len(probes) == len(server.rates) <= MAX_PROBES
    held = max(r for r in server.rates if r <= capacity)
    failed = [r for r in server.rates if r > capacity]
    assert found is not None and window.offered_rate == held <= capacity
    assert held <= found < min(failed, default=math.inf)  # interpolated between the two
    if failed:  # the bracket narrowed to the resolution, or the probes ran out
        assert min(failed) / held <= RESOLUTION or len(probes) == MAX_PROBES


def test_between_rungs_interpolates_where_the_latency_crosses_the_limit() -> None:
    traffic = Traffic(max_latency_ms=100.0)
    held = RateProbe(
        offered_rate=100.0, achieved_rate=100.0, latency_ms=10.0, completed=1, met=True
    )
    miss = RateProbe(
        offered_rate=200.0, achieved_rate=150.0, latency_ms=1000.0, completed=1, met=False
    )
    assert between_rungs([held, miss], traffic) == pytest.approx(150.0)  # log 100 is half way
    assert between_rungs([held], traffic) == 100.0  # nothing failed above it
    unanswered = RateProbe(200.0, 150.0, 50.0, 0.9, False)  # failed by unanswered requests
    assert between_rungs([held, unanswered], traffic) == 100.0
    assert between_rungs([miss], traffic) is None


def test_a_config_that_never_holds_the_slo_has_no_capacity() -> None:
    server = _Constructed(capacity=0.0)
    found, window, probes = find_capacity(server, 100.0)
    assert found is None and len(probes) == MAX_PROBES
    assert window.offered_rate == min(p.offered_rate for p in probes)
    assert not any(p.met for p in probes) and math.isfinite(probes[-1].latency_ms)
