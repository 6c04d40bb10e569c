"""Statistics of timed runs: percentiles, spread, outliers, warm-up and instability.

Robust figures (median, MAD, modified z-scores) rather than mean and std alone: a shared machine
adds long-tailed noise, and one preempted run must not move the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from autotune.config import LatencyStats

MAD_SCALE = 1.4826  # MAD * this estimates the standard deviation of normal data
OUTLIER_Z = 3.5  # modified z-score above which a run is an outlier (Iglewicz and Hoaglin)
MAX_SPREAD = 0.10  # robust spread (scaled MAD / median) above which a trial is unstable
MAX_OUTLIER_SHARE = 0.10
MIN_SAMPLES = 10
SLOW_FIRST_RUN = 10.0  # first inference this many times the median is worth telling
CLOCK_RESOLUTION_S = time.get_clock_info("perf_counter").resolution


def _robust_scale(values: np.ndarray, median: float) -> float:
    mad = float(np.median(np.abs(values - median)))
    # A MAD of 0 (identical, quantised timings) must not make every other run an outlier.
    return max(MAD_SCALE * mad, 1e-3 * abs(median), 1e-12)


def outlier_mask(values: Sequence[float] | np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    median = float(np.median(data))
    return np.abs(data - median) / _robust_scale(data, median) > OUTLIER_Z


def warmup_prefix(seconds: Sequence[float], *, max_share: float = 0.3) -> int:
    """How many leading runs are still warming up: slow outliers before the first normal run."""
    data = np.asarray(seconds, dtype=float)
    if len(data) < 4:
        return 0
    median = float(np.median(data))
    slow = (data - median) / _robust_scale(data, median) > OUTLIER_Z
    count = 0
    while count < int(len(data) * max_share) and slow[count]:
        count += 1
    return count


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Percentiles, mean, std, MAD, outliers, min and max in milliseconds of per-run seconds."""
    if not len(seconds):
        raise ValueError("no timed runs")
    ms = np.asarray(seconds, dtype=float) * 1e3
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    return LatencyStats(
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        mean=float(ms.mean()),
        std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min=float(ms.min()),
        max=float(ms.max()),
        count=int(len(ms)),
        mad=float(np.median(np.abs(ms - p50))),
        outliers=int(outlier_mask(ms).sum()),
    )


def noise(stats: LatencyStats) -> float:
    """How noisy a window of runs is: robust spread over the median plus the outlier share."""
    spread = MAD_SCALE * stats.mad / stats.p50 if stats.p50 > 0 else 0.0
    return spread + (stats.outliers / stats.count if stats.count else 0.0)


def noisy(stats: LatencyStats) -> bool:
    """Unstable for a reason a second window might not share (not too few runs, not the timer)."""
    spread = MAD_SCALE * stats.mad / stats.p50 if stats.p50 > 0 else 0.0
    share = stats.outliers / stats.count if stats.count else 0.0
    return spread >= MAX_SPREAD or share > MAX_OUTLIER_SHARE


def instability(stats: LatencyStats) -> tuple[str, ...]:
    """Why these timings should not be trusted, each with what to try; empty when stable."""
    reasons = []
    if stats.count < MIN_SAMPLES:
        reasons.append(
            f"only {stats.count} timed runs (< {MIN_SAMPLES}): raise --min-time or --min-runs"
        )
    spread = MAD_SCALE * stats.mad / stats.p50 if stats.p50 > 0 else 0.0
    if spread >= MAX_SPREAD:
        reasons.append(
            f"run-to-run spread is {spread:.0%} of the median (>= {MAX_SPREAD:.0%}): the machine "
            "is busy or the runs vary; close other programs or raise --min-time"
        )
    if stats.count and stats.outliers / stats.count > MAX_OUTLIER_SHARE:
        reasons.append(
            f"{stats.outliers} of {stats.count} runs are outliers: something else competes for "
            "the CPU; close other programs"
        )
    if stats.p50 * 1e-3 < 1000 * CLOCK_RESOLUTION_S:
        reasons.append(
            f"a run takes {stats.p50 * 1e3:.2f} us, within 1000x the timer's resolution: "
            "use a larger batch size"
        )
    return tuple(reasons)


def relative_spread(values: Sequence[float]) -> float:
    """Interquartile range over the median: the spread of a handful of repeated figures."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return 0.0
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    return float((q3 - q1) / abs(median)) if median else 0.0
