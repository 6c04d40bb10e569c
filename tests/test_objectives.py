from __future__ import annotations

from dataclasses import replace

import pytest

from autotune.errors import UsageError
from autotune.objectives import parse_objective
from tests.conftest import MEASUREMENT


@pytest.mark.parametrize(
    ("text", "name", "direction", "value"),
    [
        ("throughput", "throughput", "maximize", 6666.6),
        ("latency", "latency:p50", "minimize", 1.0),
        ("latency:p90", "latency:p90", "minimize", 2.0),
        ("LATENCY:P99", "latency:p99", "minimize", 3.0),
        ("memory", "memory", "minimize", 120.5),
        ("startup", "startup", "minimize", 0.25),
    ],
)
def test_objectives_pick_their_figure(text: str, name: str, direction: str, value: float) -> None:
    objective = parse_objective(text)
    assert (objective.name, objective.direction) == (name, direction)
    assert objective.value(MEASUREMENT) == pytest.approx(value)


@pytest.mark.parametrize("text", ["speed", "latency:p42", "throughput:p99", ""])
def test_unknown_objective_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="unknown objective"):
        parse_objective(text)


def test_gain_is_above_one_when_better_in_either_direction() -> None:
    faster = replace(MEASUREMENT, throughput=2 * MEASUREMENT.throughput)
    assert parse_objective("throughput").gain(faster, MEASUREMENT) == pytest.approx(2.0)
    lower = replace(MEASUREMENT, latency_ms=replace(MEASUREMENT.latency_ms, p99=1.5))
    assert parse_objective("latency:p99").gain(lower, MEASUREMENT) == pytest.approx(2.0)
    assert parse_objective("latency:p99").gain(MEASUREMENT, lower) == pytest.approx(0.5)
    assert parse_objective("memory").better(100.0, 120.0)
    assert parse_objective("throughput").better(120.0, 100.0)


def test_gpu_memory_objective_needs_an_nvml_figure() -> None:
    objective = parse_objective("gpu-memory")
    assert objective.direction == "minimize" and objective.unit == "MB"
    assert objective.value(replace(MEASUREMENT, peak_gpu_mb=812.0)) == 812.0
    with pytest.raises(ValueError, match="no GPU memory figure"):
        objective.value(MEASUREMENT)


def test_pareto_front_keeps_the_non_dominated_points() -> None:
    from autotune.objectives import pareto_front, parse_objectives

    throughput, memory = parse_objectives(["throughput", "memory"])
    points = [
        (0, [100.0, 50.0]),  # dominated by 1
        (1, [120.0, 40.0]),
        (2, [200.0, 90.0]),  # faster, bigger: on the front
        (3, [120.0, 40.0]),  # a tie with 1: neither dominates
        (4, [90.0, 30.0]),  # smallest: on the front
    ]
    assert pareto_front(points, [throughput, memory]) == [1, 2, 3, 4]
    with pytest.raises(UsageError, match="repeats"):
        parse_objectives(["latency", "latency:p50"])
    assert [o.name for o in parse_objectives("throughput,memory")] == ["throughput", "memory"]
