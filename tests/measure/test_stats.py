from __future__ import annotations

import numpy as np
import pytest

from autotune.measure.stats import (
    instability,
    latency_stats,
    noise,
    noisy,
    relative_spread,
    warmup_prefix,
)


def test_latency_stats_in_milliseconds() -> None:
    stats = latency_stats([0.001, 0.002, 0.003, 0.004, 0.100])
    assert (
        stats.count == 5 and stats.min == pytest.approx(1.0) and stats.max == pytest.approx(100.0)
    )
    assert stats.p50 == pytest.approx(3.0)
    assert stats.mad == pytest.approx(1.0)  # |1-3|,|2-3|,0,|4-3|,97 -> median 1
    assert stats.outliers == 1  # the 100 ms run
    assert stats.mean == pytest.approx(22.0)
    with pytest.raises(ValueError):
        latency_stats([])


def test_identical_timings_have_no_outliers() -> None:
    stats = latency_stats([0.002] * 20)
    assert stats.mad == 0 and stats.outliers == 0 and stats.std == 0


def test_warmup_prefix_counts_slow_leading_runs_only() -> None:
    rng = np.random.default_rng(0)
    steady = list(0.010 + rng.normal(0, 0.0001, 40))
    assert warmup_prefix([0.05, 0.03, *steady]) == 2
    assert warmup_prefix(steady) == 0
    # a slow run later on is noise, not warm-up
    assert warmup_prefix([*steady[:5], 0.05, *steady[5:]]) == 0
    # never more than the cap, even when everything looks slow at first
    assert warmup_prefix([0.05] * 8 + steady[:20], max_share=0.2) == 5


def test_stable_timings_are_not_flagged() -> None:
    rng = np.random.default_rng(1)
    stats = latency_stats(list(0.005 + rng.normal(0, 0.00005, 200)))
    assert instability(stats) == ()


@pytest.mark.parametrize(
    ("times", "reason"),
    [
        ([0.005] * 5, "only 5 timed runs"),
        (list(np.random.default_rng(2).uniform(0.002, 0.008, 100)), "spread is"),
        ([0.005] * 80 + [0.05] * 20, "20 of 100 runs are outliers"),
        ([2e-7] * 50, "timer's resolution"),
    ],
)
def test_instability_reasons_say_what_to_do(times: list[float], reason: str) -> None:
    reasons = instability(latency_stats(times))
    assert any(reason in r for r in reasons), reasons
    assert all(":" in r for r in reasons)  # each names the fix after a colon


def test_relative_spread() -> None:
    assert relative_spread([10, 10, 10]) == 0
    assert relative_spread([9, 10, 11, 12]) == pytest.approx((11.25 - 9.75) / 10.5)
    assert relative_spread([5]) == 0


def test_noise_ranks_windows_and_noisy_ignores_what_a_retry_cannot_fix() -> None:
    rng = np.random.default_rng(0)
    steady = latency_stats(0.002 * (1 + 0.01 * rng.standard_normal(200)))
    bursty = latency_stats(np.r_[0.002 * np.ones(160), 0.006 * np.ones(40)])  # 20 % outliers
    wide = latency_stats(0.002 * (1 + 0.3 * rng.standard_normal(200)).clip(0.2))
    assert not noisy(steady) and noisy(bursty) and noisy(wide)
    assert noise(steady) < noise(bursty) and noise(steady) < noise(wide)
    few = latency_stats([0.002, 0.002, 0.002])  # too few runs: more of the same would not help
    assert instability(few) and not noisy(few)
