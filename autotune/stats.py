"""Summary statistics of timed runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autotune.config import LatencyStats


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Percentiles, mean, std, min and max in milliseconds of per-run times given in seconds."""
    if not seconds:
        raise ValueError("no timed runs")
    ms = np.asarray(seconds, dtype=float) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return LatencyStats(
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        mean=float(ms.mean()),
        std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        min=float(ms.min()),
        max=float(ms.max()),
        count=int(len(ms)),
    )
