"""Figures in the tables of ``run``, ``show`` and ``report`` are printed plainly, whatever their
size: never in exponent notation (issue 20: a sweep table printed ``1.206e+04``)."""

from __future__ import annotations

import math
import re

import pytest

from autotune.config import ConcurrencySweep, LatencyStats, Measurement, SweepPoint
from autotune.results.tables import fmt_number, sweep_table

EXPONENT = re.compile(r"\d[eE][+-]?\d")

# The realistic range: throughput up to 1e6 samples/s, latency from 0.001 ms to 1e5 ms.
FIGURES = [
    12060.3, 120603.7, 999999.9, 1_000_000.0, 1_234_567.8, 100_000.5, 99_999.94, 1234.5, 100.05,
    12.345, 1.005, 0.5, 0.0268, 0.0069, 0.001, 0.0012345, 0.00042, 3.0, 0.0,
]  # fmt: skip


@pytest.mark.parametrize("value", FIGURES)
def test_numbers_are_plain_with_three_significant_digits(value: float) -> None:
    text = fmt_number(value)
    assert not EXPONENT.search(text) and "e" not in text, text
    assert math.isclose(float(text), value, rel_tol=5e-3, abs_tol=0), (value, text)


def test_large_figures_read_as_whole_numbers() -> None:
    assert fmt_number(12060.3) == "12060"
    assert fmt_number(1_234_567.8) == "1234568"
    assert fmt_number(0.00042) == "0.000420"
    assert fmt_number(float("nan")) == "nan"


def _measured(throughput: float, p99_ms: float, concurrency: int) -> Measurement:
    latency = LatencyStats(
        p50=p99_ms / 2, p90=p99_ms, p95=p99_ms, p99=p99_ms, mean=p99_ms / 2, std=0.0,
        min=p99_ms / 4, max=p99_ms, count=100, mad=0.0, outliers=0,
    )  # fmt: skip
    return Measurement(
        batch_size=1, import_s=0.2, create_s=0.01, first_run_s=0.001, latency_ms=latency,
        throughput=throughput, timed_s=1.0, warmup_runs=1, providers=("CPUExecutionProvider",),
        work_s=1.0, concurrency=concurrency,
    )  # fmt: skip


def test_the_sweep_table_prints_figures_plainly() -> None:
    """A fast model's sweep: five- and six-digit throughput, sub-millisecond and long p99."""
    points = []
    for level, (base, chosen) in enumerate([(12060.3, 98765.4), (56551.2, 987654.3)]):
        concurrency = 2**level
        points += [
            SweepPoint("baseline", 0, concurrency, 1, _measured(base, 0.00123, concurrency)),
            SweepPoint("chosen", 4, concurrency, 1, _measured(chosen, 12345.6, concurrency)),
        ]
    rows = sweep_table(ConcurrencySweep(points=tuple(points)))
    assert rows[0][1] == "defaults samples/s" and len({len(r) for r in rows}) == 1
    cells = [cell for row in rows[1:] for cell in row]
    assert not any(EXPONENT.search(cell) for cell in cells), rows
    assert rows[1][1:5] == ("12060", "0.00123", "98765", "12346")
